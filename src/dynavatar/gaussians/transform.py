"""The binding transform's PyTorch reference: triangle frames applied to triangle-local splats.

It is the fallback where the fused kernel (``binding_cuda``) is not built, and the reference the
kernel is tested against.
"""

from __future__ import annotations

from torch import Tensor

from ..geometry.rotations import matrix_to_quaternion, normalize_quaternion, quaternion_multiply
from ..geometry.triangles import triangle_frames

__all__ = ["bind_transform_torch"]


def bind_transform_torch(
    vertices: Tensor,  # [B, V, 3]
    faces: Tensor,  # [F, 3] long
    binding: Tensor,  # [N] long
    means_local: Tensor,  # [N, 3]
    quats_local: Tensor,  # [N, 4]
    log_scales_local: Tensor,  # [N, 3]
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference implementation of the binding transform -> (means, quats, scales), each [B, N, .].

    Only the triangles that carry splats matter, but all frames are computed (F is small next to
    N after densification, and index_select of the result is cheap).
    """
    R, k, T = triangle_frames(vertices, faces)  # [B,F,3,3], [B,F], [B,F,3]
    R = R.index_select(1, binding)  # [B, N, 3, 3]
    k = k.index_select(1, binding)[..., None]  # [B, N, 1]
    T = T.index_select(1, binding)  # [B, N, 3]
    means = k * (R @ means_local[..., None])[..., 0] + T  # [B, N, 3]
    quats = quaternion_multiply(matrix_to_quaternion(R), normalize_quaternion(quats_local))  # [B,N,4]
    scales = k * log_scales_local.exp()  # [B, N, 3]
    return means, quats, scales
