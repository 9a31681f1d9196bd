"""Per-triangle frames of a mesh: the coordinate systems that Gaussians are bound to.

DESIGN.md §3 (binding): for a triangle (v0, v1, v2)

    e = norm(v1 - v0)              first edge direction
    n = norm(e x (v2 - v0))        face normal
    b = e x n                      in-plane, orthogonal to the edge
    R = [e, n, b]                  as COLUMNS, so R @ x maps local to world directions
    k = (|v1 - v0| + |b . (v2 - v0)|) / 2   mean of edge length and the height over that edge
    T = (v0 + v1 + v2) / 3         centroid

(e, n, b) is right-handed (e x n = b), so det R = +1.

Degenerate triangles (zero-length edge, zero area) must not poison a whole optimisation with
NaNs: every normalisation divides by ``sqrt(max(|v|^2, eps^2))``, which is exact for ordinary
triangles and has a finite value and gradient at ``v = 0`` (the clamp kills the gradient there
instead of dividing by zero). R is then not a rotation for such a triangle, but everything stays
finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["safe_norm", "safe_normalize", "gather_triangles", "triangle_frames", "TriangleFrames"]

_EPS = 1e-8


def safe_norm(v: Tensor, eps: float = _EPS) -> Tensor:
    """Euclidean norm with a finite gradient at zero.  v: [..., 3] -> [...]."""
    return (v * v).sum(-1).clamp_min(eps * eps).sqrt()


def safe_normalize(v: Tensor, eps: float = _EPS) -> Tensor:
    """v / |v|, finite (value and gradient) for v = 0.  v: [..., 3] -> [..., 3]."""
    return v / safe_norm(v, eps)[..., None]


def gather_triangles(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Corner positions of every face.

    vertices: [..., V, 3], faces: [F, 3] long -> (v0, v1, v2), each [..., F, 3].
    """
    tri = vertices.index_select(-2, faces.reshape(-1).to(vertices.device))  # [..., F*3, 3]
    tri = tri.reshape(*vertices.shape[:-2], faces.shape[0], 3, 3)  # [..., F, 3 corners, 3]
    return tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]


@dataclass
class TriangleFrames:
    """Frames of every triangle; see the module docstring for the definitions."""

    rotations: Tensor  # [..., F, 3, 3]  columns (e, n, e x n)
    scales: Tensor  # [..., F]  k
    centroids: Tensor  # [..., F, 3]  T

    def __iter__(self):  # allows ``R, k, T = triangle_frames(...)``
        return iter((self.rotations, self.scales, self.centroids))


def triangle_frames(vertices: Tensor, faces: Tensor, eps: float = _EPS) -> TriangleFrames:
    """Rotation, scale and origin of each triangle's local frame.

    vertices: [..., V, 3] (any leading batch dims, e.g. frames), faces: [F, 3] long.
    Returns TriangleFrames(R [..., F, 3, 3], k [..., F], T [..., F, 3]); it unpacks as a tuple.
    """
    v0, v1, v2 = gather_triangles(vertices, faces)  # [..., F, 3] each
    d1 = v1 - v0  # [..., F, 3]
    d2 = v2 - v0  # [..., F, 3]
    e = safe_normalize(d1, eps)
    n = safe_normalize(torch.cross(e, d2, dim=-1), eps)
    b = torch.cross(e, n, dim=-1)
    R = torch.stack([e, n, b], dim=-1)  # [..., F, 3, 3], columns e, n, b
    k = 0.5 * (safe_norm(d1, eps) + (b * d2).sum(-1).abs())  # [..., F]
    T = (v0 + v1 + v2) / 3.0  # [..., F, 3]
    return TriangleFrames(R, k, T)
