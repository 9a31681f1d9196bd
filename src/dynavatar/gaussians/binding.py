"""bind(): from triangle-local splats to world-space Gaussians for posed meshes.

DESIGN.md §3. With the frame (R, k, T) of the splat's triangle (``geometry.triangle_frames``):

    mu = k R mu_l + T          q = q(R) * q_l          s = k exp(s_l)

so the world covariance is ``k^2 R R_l S_l^2 R_l^T R^T``: a splat follows its triangle's
rotation, translation and size. ``bind`` is pure and differentiable and batched over frames.
The heavy part has two interchangeable implementations, selected by ``binding_cuda.bind_transform``:
the PyTorch reference ``transform.bind_transform_torch``, and a fused CUDA kernel (``cuda/binding.cu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .avatar import GaussianAvatar
from .binding_cuda import bind_transform
from .transform import bind_transform_torch

__all__ = ["WorldGaussians", "bind", "bind_transform_torch"]


@dataclass
class WorldGaussians:
    """World-space Gaussians for B frames, the input of every renderer.

    ``colors`` follows gsplat's convention: with ``sh_degree=None`` they are RGB (or any channels)
    ``[N, D]`` / ``[B, N, D]``; with an int they are SH coefficients ``[N, K, 3]`` / ``[B, N, K, 3]``
    evaluated per camera (rgb = max(SH(dir) + 0.5, 0)).
    """

    means: Tensor  # [B, N, 3]
    quats: Tensor  # [B, N, 4]  (w, x, y, z), unit
    scales: Tensor  # [B, N, 3]  linear (not log)
    opacities: Tensor  # [N] or [B, N]  in (0, 1)
    colors: Tensor  # [N, D] / [B, N, D] or SH [N, K, 3] / [B, N, K, 3]
    sh_degree: Optional[int] = None

    @property
    def num_frames(self) -> int:
        return self.means.shape[0]

    @property
    def num_splats(self) -> int:
        return self.means.shape[1]


def bind(
    avatar: GaussianAvatar, vertices: Tensor, faces: Tensor, backend: str = "auto"
) -> WorldGaussians:
    """Place the avatar's splats on posed meshes.

    vertices: [B, V, 3] or [V, 3] (treated as B = 1); faces: [F, 3] long.
    backend: "auto" (fused CUDA kernel for CUDA tensors when it builds, else PyTorch), "torch"
    or "cuda". Opacities stay per splat ``[N]`` (they do not depend on the frame).
    """
    if vertices.dim() == 2:
        vertices = vertices[None]
    faces = faces.to(device=vertices.device, dtype=torch.long)
    binding = avatar.binding.to(device=vertices.device, dtype=torch.long)
    means, quats, scales = bind_transform(
        vertices, faces, binding, avatar.means_local, avatar.quats_local, avatar.log_scales_local,
        backend=backend,
    )
    return WorldGaussians(
        means=means,
        quats=quats,
        scales=scales,
        opacities=torch.sigmoid(avatar.opacity_logits),
        colors=avatar.sh,
        sh_degree=avatar.sh_degree,
    )
