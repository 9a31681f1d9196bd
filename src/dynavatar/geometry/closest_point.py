"""Exact closest points on a triangle mesh (numpy + scipy KD-trees).

The point-triangle closest point comes from the Voronoi regions of a triangle (three vertex regions,
three edge regions, the face), vectorised over (point, triangle) pairs.  Candidate triangles come from a
KD-tree over triangle centroids: the k nearest centroids give an upper bound ``d`` on the distance, then
every triangle whose lower bound ``|p - centroid| - radius`` is below ``d`` is evaluated too, so the
answer is exact, not approximate.  ICP iterations may skip that second pass (``exact=False``): it is the
expensive part, and the next iteration corrects a near miss.  Options used by the registration restrict
the search to normal-compatible triangles, to a subset of faces, or to a maximum distance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..errors import DynavatarError
from .mesh import as_float64, as_index_array, face_normals

__all__ = ["closest_point_on_triangles", "closest_point_on_mesh", "TriangleSearch", "closest_points"]


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [N,3] of the point of triangle (a, b, c) closest to p (all [N,3]).

    The standard region test: the closest point is a vertex, a point on an edge, or the projection
    onto the face, decided by the signs of dot products with the edges. Tests are applied from the
    last region to the first, so the first one that holds wins (as in the sequential version).
    Degenerate triangles give a point on the triangle (possibly not the closest one of it).
    numpy, not torch: single-threaded numpy is as fast here and does not fight other processes
    for cores the way torch's intra-op threads do.
    """
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    dot = lambda u, v: np.einsum("ij,ij->i", u, v)  # noqa: E731
    d1, d2, d3, d4, d5, d6 = dot(ab, ap), dot(ac, ap), dot(ab, bp), dot(ac, bp), dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

    denom = va + vb + vc
    v, w = div(vb, denom), div(vc, denom)
    bary = np.stack([1 - v - w, v, w], -1)  # face region
    zero, one = np.zeros_like(d1), np.ones_like(d1)
    t_bc = np.clip(div(d4 - d3, (d4 - d3) + (d5 - d6)), 0, 1)
    t_ac = np.clip(div(d2, d2 - d6), 0, 1)
    t_ab = np.clip(div(d1, d1 - d3), 0, 1)
    regions = [  # (condition, barycentrics), last applied wins: listed from the last test to the first
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (zero, 1 - t_bc, t_bc)),  # edge BC
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, zero, t_ac)),  # edge AC
        ((d6 >= 0) & (d5 <= d6), (zero, zero, one)),  # vertex C
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, zero)),  # edge AB
        ((d3 >= 0) & (d4 <= d3), (zero, one, zero)),  # vertex B
        ((d1 <= 0) & (d2 <= 0), (one, zero, zero)),  # vertex A
    ]
    for cond, new in regions:
        bary = np.where(cond[:, None], np.stack(new, -1), bary)
    bary = np.clip(bary, 0, None)
    return bary / bary.sum(-1, keepdims=True)


class TriangleSearch:
    """What the closest-point search needs about a mesh (built once per mesh state).

    Triangles are split by size: a KD-tree over the centroids of the ordinary ones (searched with
    their largest radius as slack) and a short list of the largest ones (bounded one by one), so
    one big cap triangle does not widen every ball query.
    """

    def __init__(self, verts: np.ndarray, faces: np.ndarray, allowed: np.ndarray | None) -> None:
        self.ids = np.arange(len(faces)) if allowed is None else np.flatnonzero(allowed)  # [Fa] -> face index
        if len(self.ids) == 0:
            raise DynavatarError("closest_point_on_mesh: no triangles to search")
        self.tri = verts[faces[self.ids]]  # [Fa, 3, 3] float64
        self.centroids = self.tri.mean(1)  # [Fa, 3]
        self.radius = np.linalg.norm(self.tri - self.centroids[:, None], axis=-1).max(1)  # [Fa]
        self.normals = face_normals(verts, faces)[0][self.ids]  # [Fa, 3]
        self.tree = cKDTree(self.centroids)
        cut = float(np.quantile(self.radius, 0.98))
        self.small = np.flatnonzero(self.radius <= cut)  # [Fs] candidate ids
        self.large = np.flatnonzero(self.radius > cut)  # [Fl]
        self.small_tree = cKDTree(self.centroids[self.small])
        self.small_radius = float(self.radius[self.small].max())


def _evaluate_pairs(pts: np.ndarray, pid: np.ndarray, cid: np.ndarray, cand: TriangleSearch,
                    normals: np.ndarray | None, min_cos: float,
                    best: np.ndarray, best_face: np.ndarray, best_bary: np.ndarray, chunk: int = 1 << 19) -> None:
    """Exact distances for (point pid, candidate cid) pairs; keep the best per point (in place)."""
    for s in range(0, len(pid), chunk):
        p_i, c_i = pid[s:s + chunk], cid[s:s + chunk]
        tri = cand.tri[c_i]  # [N, 3, 3]
        p = pts[p_i]  # [N, 3]
        bary = closest_point_on_triangles(p, tri[:, 0], tri[:, 1], tri[:, 2])  # [N, 3]
        d = np.linalg.norm(np.einsum("nk,nkc->nc", bary, tri) - p, axis=1)
        if normals is not None:
            d = np.where((normals[p_i] * cand.normals[c_i]).sum(-1) >= min_cos, d, np.inf)
        order = np.lexsort((d, p_i))  # grouped by point, nearest first
        first = order[np.r_[True, p_i[order][1:] != p_i[order][:-1]]]
        win = first[d[first] < best[p_i[first]]]
        best[p_i[win]] = d[win]
        best_face[p_i[win]] = cand.ids[c_i[win]]
        best_bary[p_i[win]] = bary[win]


def closest_point_on_mesh(points: Any, verts: Any, faces: Any, *, normals: Any = None, min_cos: float = 0.0,
                          allowed_faces: Any = None, max_distance: float | None = None, k: int = 8):
    """Exact closest surface point of each query point: ``(face_idx [P] long, bary [P,3])``.

    points [P,3], verts [V,3], faces [F,3]; numpy or torch (torch in -> torch out, numpy otherwise).
    Barycentrics are non-negative and sum to 1. Options (used by the registration):
    ``normals [P,3]`` with ``min_cos`` only accept triangles whose unit normal n has n . normal >=
    min_cos; ``allowed_faces`` ([F] bool) restricts the search; ``max_distance`` ignores anything
    farther. A point with no acceptable triangle gets face -1 and NaN barycentrics.
    """
    as_torch = isinstance(points, torch.Tensor)
    pts, v, f = as_float64(points).reshape(-1, 3), as_float64(verts), as_index_array(faces)
    nrm = None if normals is None else as_float64(normals).reshape(-1, 3)
    allowed = None if allowed_faces is None else np.asarray(as_float64(allowed_faces) > 0)
    cand = TriangleSearch(v, f, allowed)
    face_idx, bary = closest_points(pts, cand, nrm, min_cos, max_distance, k)
    if as_torch:
        dtype = points.dtype if points.is_floating_point() else torch.float64
        return torch.from_numpy(face_idx), torch.from_numpy(bary).to(dtype)
    return face_idx, bary


def closest_points(pts: np.ndarray, cand: TriangleSearch, normals: np.ndarray | None, min_cos: float,
             max_distance: float | None, k: int, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Closest acceptable triangle per point [P] (face -1 and NaN barycentrics where none is acceptable).
    ``exact=False`` stops after the k nearest centroids (what ICP iterations use: much cheaper, and the
    next iteration corrects a near miss)."""
    n = len(pts)
    best = np.full(n, np.inf)
    best_face = np.full(n, -1, dtype=np.int64)
    best_bary = np.full((n, 3), np.nan)
    if n == 0:
        return best_face, best_bary
    # 1) the k nearest centroids give an upper bound on each point's distance
    kk = min(k, len(cand.ids))
    _, nn = cand.tree.query(pts, k=kk)
    nn = np.asarray(nn).reshape(n, kk)
    _evaluate_pairs(pts, np.repeat(np.arange(n), kk), nn.ravel(), cand, normals, min_cos, best, best_face, best_bary)
    # 2) every triangle that could still beat the bound: its lower bound |p - centroid| - radius
    #    is below the point's bound (ball query for ordinary triangles, one by one for large ones)
    limit = np.inf if max_distance is None else float(max_distance)
    bound = np.minimum(best, limit)
    search = np.isfinite(bound) & exact
    far = ~np.isfinite(bound) & exact  # no acceptable triangle among the k nearest and no distance limit: all triangles
    if search.any():
        idx = np.flatnonzero(search)
        lists = cand.small_tree.query_ball_point(pts[idx], bound[idx] + cand.small_radius + 1e-12)
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        pid = [np.repeat(idx, lengths)]
        cid = [cand.small[np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])]] if lengths.sum() else []
        if len(cand.large):
            lb = np.linalg.norm(pts[idx, None] - cand.centroids[cand.large][None], axis=-1) - cand.radius[cand.large]
            pi, li = np.nonzero(lb <= bound[idx, None] + 1e-12)
            pid.append(idx[pi])
            cid.append(cand.large[li])
        pid, cid = np.concatenate(pid), np.concatenate(cid) if cid else np.zeros(0, dtype=np.int64)
        lb = np.linalg.norm(pts[pid] - cand.centroids[cid], axis=1) - cand.radius[cid]
        keep = lb <= bound[pid] + 1e-12
        _evaluate_pairs(pts, pid[keep], cid[keep], cand, normals, min_cos, best, best_face, best_bary)
    if far.any():
        idx = np.flatnonzero(far)
        n_c = len(cand.ids)
        step = max(1, (1 << 21) // n_c)
        for s in range(0, len(idx), step):
            sub = idx[s:s + step]
            _evaluate_pairs(pts, np.repeat(sub, n_c), np.tile(np.arange(n_c), len(sub)), cand, normals, min_cos,
                            best, best_face, best_bary)
    if max_distance is not None:
        too_far = best > max_distance
        best_face[too_far], best_bary[too_far] = -1, np.nan
    return best_face, best_bary
