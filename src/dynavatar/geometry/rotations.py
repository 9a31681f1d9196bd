"""Rotation conversions: the one module that owns them.

Conventions (DESIGN.md §3): quaternions are ``(w, x, y, z)``; axis-angle vectors are
``angle * unit_axis``; matrices act on column vectors (``x' = R @ x``).
Every function is pure, batched over leading dimensions and differentiable, including at
the identity (axis-angle of zero), where naive formulas divide by zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "normalize_quaternion",
    "axis_angle_to_quaternion",
    "skew",
]


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix: ``skew(v) @ u == cross(v, u)``.  v: [..., 3] -> [..., 3, 3]."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula.  axis_angle: [..., 3] -> R: [..., 3, 3].

    ``R = I + A K + B K^2`` with ``K = skew(v)``, ``A = sin t / t``, ``B = (1 - cos t) / t^2``.
    Near ``t = 0`` both coefficients use their Taylor series, so values and gradients stay finite
    (FLAME's rest pose is exactly zero, and trackers start there).
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def normalize_quaternion(q: Tensor, eps: float = 1e-12) -> Tensor:
    """q: [..., 4] -> unit quaternion [..., 4] (w, x, y, z)."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """(w, x, y, z) quaternion [..., 4] (normalised here) -> rotation matrix [..., 3, 3]."""
    w, x, y, z = normalize_quaternion(q).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrix [..., 3, 3] -> unit quaternion [..., 4] (w, x, y, z) with w >= 0.

    Uses the numerically best of the four candidate formulas per element (the one with the
    largest diagonal term), so gradients stay finite for 180-degree rotations too.
    """
    m = R
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * q_i^2 for each candidate, clamped so sqrt never sees a negative number.
    cand = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    r = cand.clamp_min(1e-12).sqrt()  # [..., 4] = 2 |q_i|
    # Each row: the quaternion derived from candidate i, scaled by 2 q_i (later divided out).
    q_w = torch.stack([r[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    q_x = torch.stack([m[..., 2, 1] - m[..., 1, 2], r[..., 1] ** 2, m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1)
    q_y = torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], r[..., 2] ** 2, m[..., 2, 1] + m[..., 1, 2]], -1)
    q_z = torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], r[..., 3] ** 2], -1)
    cands = torch.stack([q_w, q_x, q_y, q_z], -2) / (2 * r[..., :, None])  # [..., 4, 4]
    best = cand.argmax(-1)  # [...]
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = normalize_quaternion(q)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` (apply b, then a).  a, b: [..., 4] -> [..., 4]."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def axis_angle_to_quaternion(axis_angle: Tensor) -> Tensor:
    """[..., 3] -> (w, x, y, z) [..., 4]; finite gradients at zero."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    half_sinc = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2))
    return torch.cat([w, half_sinc * axis_angle], dim=-1)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrix [..., 3, 3] -> axis-angle [..., 3] with angle in [0, pi]."""
    q = matrix_to_quaternion(R)
    w, xyz = q[..., :1], q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, w)
    small = s < 1e-7
    scale = torch.where(small, 2.0 / w.clamp_min(1e-12), angle / torch.where(small, torch.ones_like(s), s))
    return xyz * scale
