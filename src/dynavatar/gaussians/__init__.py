"""Gaussian avatar state, binding to the posed mesh, and binding-preserving densification."""

from .avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from .binding import WorldGaussians, bind, bind_transform_torch

__all__ = ["GaussianAvatar", "WorldGaussians", "bind", "bind_transform_torch", "rgb_to_sh", "sh_to_rgb"]
