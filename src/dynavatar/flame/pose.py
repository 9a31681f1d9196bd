"""Posing helpers on FlameParams."""

from __future__ import annotations

import torch

from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .params import FlameParams

__all__ = ["rotate_head"]


def rotate_head(params: FlameParams, yaw: float, pitch: float = 0.0) -> FlameParams:
    """The same frame with the head turned by (yaw, pitch) in camera space, about FLAME's root.

    Turning the head in front of a fixed camera shows the same thing as orbiting the camera, and
    keeps the clip's camera, so novel views need no new intrinsics."""
    if yaw == 0.0 and pitch == 0.0:
        return params
    dev, dt = params.rotation.device, params.rotation.dtype
    extra = axis_angle_to_matrix(torch.tensor([0.0, yaw, 0.0], device=dev, dtype=dt)) @ \
        axis_angle_to_matrix(torch.tensor([pitch, 0.0, 0.0], device=dev, dtype=dt))
    R = extra @ axis_angle_to_matrix(params.rotation)
    return params.replace(rotation=matrix_to_axis_angle(R))
