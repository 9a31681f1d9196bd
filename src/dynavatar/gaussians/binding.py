"""bind(): from triangle-local splats to world-space Gaussians for posed meshes.

DESIGN.md §3. With the frame (R, k, T) of the splat's triangle (``geometry.triangle_frames``):

    mu = k R mu_l + T          q = q(R) * q_l          s = k exp(s_l)

so the world covariance is ``k^2 R R_l S_l^2 R_l^T R^T``: a splat follows its triangle's
rotation, translation and size. ``bind`` is pure and differentiable and batched over frames.
The heavy part has two interchangeable implementations, selected by ``binding_cuda.bind_transform``:
the PyTorch reference ``bind_transform_torch`` below, and a fused CUDA kernel (``cuda/binding.cu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..geometry.rotations import matrix_to_quaternion, normalize_quaternion, quaternion_multiply
from ..geometry.triangles import triangle_frames
from .avatar import GaussianAvatar

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


def bind(
    avatar: GaussianAvatar, vertices: Tensor, faces: Tensor, backend: str = "auto"
) -> WorldGaussians:
    """Place the avatar's splats on posed meshes.

    vertices: [B, V, 3] or [V, 3] (treated as B = 1); faces: [F, 3] long.
    backend: "auto" (fused CUDA kernel for CUDA tensors when it builds, else PyTorch), "torch"
    or "cuda". Opacities stay per splat ``[N]`` (they do not depend on the frame).
    """
    from .binding_cuda import bind_transform  # local: keeps the CUDA loader off the import path

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
