"""Landmark embeddings and vertex regions for FLAME-format models that lack ours.

Why this exists: the tracker fits mediapipe's 478 landmarks and the editor works on vertex regions.
The embedded default head carries both (made by ``assets/flame/build_default_head.py``); a user's
FLAME 2020/2023 file (5023 vertices, another topology) carries neither. So we register the default
head's neutral mesh onto the user's template, carry every landmark over as (triangle, barycentric)
on the user's mesh, and give every user vertex the region of the nearest registered default-head
surface point. The result is cached beside the model file (``<stem>.dynavatar-embedding.npz``).

Algorithms (written for this project; no third-party registration code):

- **Closest point on a mesh**: the exact point-triangle closest point from the Voronoi regions of
  a triangle (three vertex regions, three edge regions, the face), vectorised over (point,
  triangle) pairs. Candidates come from a KD-tree over triangle centroids: the k nearest centroids
  give an upper bound ``d`` on the distance, then every triangle whose lower bound
  ``|p - centroid| - radius`` is below ``d`` is evaluated too, so the answer is exact, not
  approximate (ICP iterations skip that second pass).
- **Registration**: a similarity first (both heads face +z with y up, so it starts from centres,
  RMS sizes and the identity rotation, then point-to-plane ICP on trimmed, normal-compatible,
  symmetric closest-point pairs), then non-rigid ICP with a stiffness schedule: per-vertex
  positions, a symmetric point-to-surface data term (source vertices to the target surface,
  target vertices to the source surface through fixed barycentrics) and a bending term (uniform
  Laplacian) that is strong at first and relaxed stage by stage. With correspondences fixed, that
  energy is quadratic in the vertex positions, so each ICP iteration is one sparse SPD solve
  (scipy; one factorisation, three right-hand sides) instead of hundreds of gradient steps.
  Pairs are rejected when normals disagree, when they are far, or when the target point lies on an
  open boundary (FLAME's neck and eye holes): that keeps the default head's mouth bag, eye-socket
  cups and closed neck from pulling on the fit. See :func:`_nonrigid_stage` for the two choices
  that made it converge (bending of the increment, over-relaxation) and what they were measured on.

numpy/scipy rather than torch for all of it: the sizes are small (5k vertices), sparse
factorisations are what the non-rigid step needs, and torch's intra-op threads were ten times
slower than plain numpy on a busy 2-core machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from ..errors import DynavatarError, FlameFileError
from .file_format import FlameData, arrays_sha256, read_flame_file

__all__ = ["closest_point_on_mesh", "closest_point_on_triangles", "register_mesh", "Registration",
           "transfer_embedding", "ensure_embedding", "needs_embedding", "embedding_cache_path",
           "EMBEDDING_CACHE_SUFFIX"]

logger = logging.getLogger("dynavatar.flame")

TRANSFER_VERSION = 1  # bump when the algorithm changes: old caches are then recomputed
EMBEDDING_CACHE_SUFFIX = ".dynavatar-embedding.npz"
CACHE_FORMAT = "dynavatar-embedding/1"
MIN_VERTICES = 1000  # a mesh coarser than this is no head model worth registering (test stand-ins are)


# ====================================================================== small mesh helpers
def _np64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _faces_np(faces: Any) -> np.ndarray:
    if isinstance(faces, torch.Tensor):
        faces = faces.detach().cpu().numpy()
    return np.asarray(faces, dtype=np.int64)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals [F,3] (zero for degenerate triangles) and areas [F]."""
    tri = verts[faces]  # [F, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1)
    return n / np.maximum(length, 1e-30)[:, None], 0.5 * length


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted unit vertex normals [V,3] and vertex areas [V] (a third of each adjacent face)."""
    fn, area = face_normals(verts, faces)
    n = np.zeros_like(verts)
    a = np.zeros(len(verts))
    for k in range(3):
        np.add.at(n, faces[:, k], fn * area[:, None])
        np.add.at(a, faces[:, k], area / 3.0)
    return n / np.maximum(np.linalg.norm(n, axis=1), 1e-30)[:, None], a


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges [E,2] (sorted pairs) and how many faces use each [E]."""
    e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def _adjacency(faces: np.ndarray, n_verts: int) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency [V,V]."""
    e, _ = _edges(faces)
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_verts, n_verts))
    return ((a + a.T) > 0).astype(np.float64).tocsr()


def boundary_vertices(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """[V] bool: vertices on an edge used by one face only (holes, the open neck)."""
    e, count = _edges(faces)
    out = np.zeros(n_verts, dtype=bool)
    out[e[count == 1].ravel()] = True
    return out


def uniform_laplacian(faces: np.ndarray, n_verts: int) -> sp.csr_matrix:
    """[V,V] ``L x = x_v - mean(neighbours)``; rows of unreferenced vertices are zero."""
    adj = _adjacency(faces, n_verts)
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    return (sp.diags((deg > 0).astype(np.float64)) - sp.diags(inv) @ adj).tocsr()


def vertex_components(faces: np.ndarray, n_verts: int) -> np.ndarray:
    """[V] connected-component label per vertex (head, eyeballs, ... are separate components)."""
    return connected_components(_adjacency(faces, n_verts), directed=False)[1].astype(np.int64)


# ====================================================================== closest points
def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [N,3] of the point of triangle (a, b, c) closest to p (all [N,3]).

    The standard region test: the closest point is a vertex, a point on an edge, or the projection
    onto the face, decided by the signs of dot products with the edges. Tests are applied from the
    last region to the first, so the first one that holds wins (as in the sequential version).
    Degenerate triangles give a point on the triangle (possibly not the closest one of it).
    numpy, not torch: single-threaded numpy is as fast here and does not fight other processes
    for cores (torch's intra-op threads slowed this ten-fold on a busy 2-core machine).
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


class _Candidates:
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


def _evaluate_pairs(pts: np.ndarray, pid: np.ndarray, cid: np.ndarray, cand: _Candidates,
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
    pts, v, f = _np64(points).reshape(-1, 3), _np64(verts), _faces_np(faces)
    nrm = None if normals is None else _np64(normals).reshape(-1, 3)
    allowed = None if allowed_faces is None else np.asarray(_np64(allowed_faces) > 0)
    cand = _Candidates(v, f, allowed)
    face_idx, bary = _closest(pts, cand, nrm, min_cos, max_distance, k)
    if as_torch:
        dtype = points.dtype if points.is_floating_point() else torch.float64
        return torch.from_numpy(face_idx), torch.from_numpy(bary).to(dtype)
    return face_idx, bary


def _closest(pts: np.ndarray, cand: _Candidates, normals: np.ndarray | None, min_cos: float,
             max_distance: float | None, k: int, exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Closest acceptable triangle per point. ``exact=False`` stops after the k nearest centroids
    (what ICP iterations use: three times faster, and the next iteration corrects a near miss)."""
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


# ====================================================================== registration
@dataclasses.dataclass
class Registration:
    """Outcome of :func:`register_mesh` with what is needed to judge it."""

    verts: np.ndarray  # [Vs, 3] registered source vertices
    scale: float  # similarity of the rigid stage: x -> scale * R x + t
    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]
    dst_to_src: np.ndarray  # [Vd] distance of each target vertex to the registered source surface (m)
    src_to_dst: np.ndarray  # [Vs] distance of each registered source vertex to the target surface (m)
    seconds: float


def umeyama(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity ``y ~ s R x + t`` (Umeyama 1991).  x, y [N,3], w [N]."""
    w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    mx, my = w @ x, w @ y
    xc, yc = x - mx, y - my
    cov = (yc * w[:, None]).T @ xc  # [3, 3]
    u, d, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = u @ fix @ vt
    var_x = float(w @ (xc ** 2).sum(1))
    s = float(np.trace(np.diag(d) @ fix) / max(var_x, 1e-30))
    return s, r, my - s * r @ mx


@dataclasses.dataclass
class _Pairs:
    """Symmetric correspondences for one ICP iteration: source vertex -> target surface point, and
    source surface point (fixed triangle + barycentrics) -> target vertex, each with the target's
    unit normal there and an area weight."""

    src_idx: np.ndarray  # [Ns] source vertices with a target...
    src_target: np.ndarray  # [Ns, 3] ...point on the target surface
    src_normal: np.ndarray  # [Ns, 3] target face normal there
    src_w: np.ndarray  # [Ns]
    dst_idx: np.ndarray  # [Nd] target vertices with a source point...
    dst_faces: np.ndarray  # [Nd, 3] ...on source triangle (vertex ids)...
    dst_bary: np.ndarray  # [Nd, 3] ...at these barycentrics
    dst_normal: np.ndarray  # [Nd, 3] target vertex normal
    dst_w: np.ndarray  # [Nd]

    def dst_points(self, x: np.ndarray) -> np.ndarray:
        """[Nd, 3] the source surface points of the target-vertex pairs for source vertices x."""
        return (x[self.dst_faces] * self.dst_bary[:, :, None]).sum(1)

    def source_points(self, x: np.ndarray) -> np.ndarray:
        """[Ns + Nd, 3] the source side of every pair."""
        return np.concatenate([x[self.src_idx], self.dst_points(x)])

    def target_points(self, dst_v: np.ndarray) -> np.ndarray:
        return np.concatenate([self.src_target, dst_v[self.dst_idx]])

    def weights(self) -> np.ndarray:
        return np.concatenate([self.src_w, self.dst_w])


class _Target:
    """The fixed mesh being registered onto, with its search structure, normals and boundary."""

    def __init__(self, verts: np.ndarray, faces: np.ndarray) -> None:
        self.verts, self.faces = verts, faces
        self.cand = _Candidates(verts, faces, None)
        self.vnormals, area = vertex_normals(verts, faces)
        self.area = area / area.sum()
        self.boundary = boundary_vertices(faces, len(verts))
        self.scale = _rms_radius(verts, faces)  # the head's size (m): distance limits are relative to it


def _on_boundary(faces: np.ndarray, bary: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """[N] bool: the surface point (face vertex ids [N,3], bary [N,3]) lies on an open boundary:
    every vertex it depends on is a boundary vertex (a boundary vertex or edge)."""
    used = bary > 1e-6
    return np.all(~used | boundary[faces], axis=1) & (used.sum(1) < 3)


def _correspondences(x: np.ndarray, src_faces: np.ndarray, src_boundary: np.ndarray, tgt: _Target,
                     max_dist: float, min_cos: float, flip: float, trim: float | None = None
                     ) -> tuple[_Pairs, np.ndarray, np.ndarray]:
    """Closest-point pairs in both directions, normal-compatible, within ``max_dist`` (not on open
    boundaries); with ``trim``, also within ``trim x median`` distance. Also returns the distances.

    Only the similarity stage trims: in the non-rigid stages, trimming would call the parts that
    still differ most (a nose, the eyes) outliers and never pull them."""
    src_n, src_a = vertex_normals(x, src_faces)
    src_a = src_a / src_a.sum()
    # source vertices -> target surface
    f_s, b_s = _closest(x, tgt.cand, flip * src_n, min_cos, max_dist, k=12, exact=False)
    ok_s = f_s >= 0
    q_s = np.zeros_like(x)
    q_s[ok_s] = (tgt.verts[tgt.faces[f_s[ok_s]]] * b_s[ok_s, :, None]).sum(1)
    ok_s[ok_s] &= ~_on_boundary(tgt.faces[f_s[ok_s]], b_s[ok_s], tgt.boundary)
    d_s = np.where(ok_s, np.linalg.norm(q_s - x, axis=1), np.inf)
    # target vertices -> source surface
    src_cand = _Candidates(x, src_faces, None)
    f_d, b_d = _closest(tgt.verts, src_cand, flip * tgt.vnormals, min_cos, max_dist, k=12, exact=False)
    ok_d = f_d >= 0
    fv = np.zeros((len(f_d), 3), dtype=np.int64)
    fv[ok_d] = src_faces[f_d[ok_d]]
    bd = np.where(ok_d[:, None], b_d, 0.0)
    p_d = (x[fv] * bd[:, :, None]).sum(1)
    ok_d[ok_d] &= ~_on_boundary(fv[ok_d], bd[ok_d], src_boundary)
    d_d = np.where(ok_d, np.linalg.norm(p_d - tgt.verts, axis=1), np.inf)
    # trimming relative to the current fit
    finite = np.concatenate([d_s[ok_s], d_d[ok_d]])
    if trim is not None and len(finite):
        cut = max(trim * float(np.median(finite)), 0.01 * tgt.scale)
        ok_s &= d_s <= cut
        ok_d &= d_d <= cut
    n_s = np.zeros_like(x)
    n_s[ok_s] = tgt.cand.normals[f_s[ok_s]]
    pairs = _Pairs(np.flatnonzero(ok_s), q_s[ok_s], n_s[ok_s], src_a[ok_s], np.flatnonzero(ok_d), fv[ok_d], bd[ok_d],
                   tgt.vnormals[ok_d], tgt.area[ok_d])
    return pairs, d_s, d_d


def _surface_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[P] unrestricted distance of points to a mesh surface."""
    f, b = _closest(points, _Candidates(verts, faces, None), None, 0.0, None, k=8)
    q = (verts[faces[f]] * b[:, :, None]).sum(1)
    return np.linalg.norm(q - points, axis=1)


def _landmark_points(x: np.ndarray, faces: np.ndarray, lmk: Any) -> np.ndarray:
    """Source landmarks as points: ``lmk`` is vertex ids [L] or (face ids [L], bary [L,3])."""
    if isinstance(lmk, tuple):
        lf, lb = _faces_np(lmk[0]), _np64(lmk[1])
        return (x[faces[lf]] * lb[:, :, None]).sum(1)
    return x[_faces_np(lmk)]


def _landmark_matrix(faces: np.ndarray, lmk: Any, n_verts: int) -> sp.csr_matrix:
    """[L, Vs] sparse map from source vertices to source landmark points."""
    if isinstance(lmk, tuple):
        lf, lb = _faces_np(lmk[0]), _np64(lmk[1])
        n_lmk, rows, cols, vals = len(lf), np.repeat(np.arange(len(lf)), 3), faces[lf].ravel(), lb.ravel()
    else:
        ids = _faces_np(lmk)
        n_lmk, rows, cols, vals = len(ids), np.arange(len(ids)), ids, np.ones(len(ids))
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_lmk, n_verts))


def _orientation(x: np.ndarray, src_faces: np.ndarray, tgt: _Target) -> float:
    """+1 if the two meshes' normals agree (both outward), -1 if one of them is wound inside out."""
    src_n, _ = vertex_normals(x, src_faces)
    f, _ = _closest(x, tgt.cand, None, 0.0, None, k=8, exact=False)
    return 1.0 if float(np.median((src_n * tgt.cand.normals[f]).sum(1))) >= 0 else -1.0


def _rotation(omega: np.ndarray) -> np.ndarray:
    """Rotation matrix [3,3] of an axis-angle vector [3] (Rodrigues)."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    k = omega / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _similarity_step(p: np.ndarray, q: np.ndarray, n: np.ndarray, w: np.ndarray,
                     point_weight: float = 0.1) -> tuple[float, np.ndarray, np.ndarray]:
    """One linearised similarity update ``y = s R p + t`` that moves p [N,3] onto the tangent planes
    (q [N,3], normals n [N,3]), plus ``point_weight`` of the point-to-point error for stability.

    Why not Umeyama here: point-to-point ICP creeps (a few tenths of a degree per iteration on a
    5 degree misalignment, measured); point-to-plane lets surfaces slide and converges in a few.
    Unknowns (ds, omega, t) around the identity, with p centred so rotation and translation decouple.
    """
    w = w / w.sum()
    mu = w @ p
    pc = p - mu
    # point-to-plane rows: n.(ds pc + omega x pc + t) = n.(q - p)
    a_pl = np.concatenate([(n * pc).sum(1, keepdims=True), np.cross(pc, n), n], 1)  # [N, 7]
    b_pl = (n * (q - p)).sum(1)
    # point-to-point rows, one per coordinate: ds pc + omega x pc + t = q - p
    eye = np.eye(3)
    a_pt = np.concatenate([pc[:, :, None], np.einsum("cij,nj->nci", _CROSS, pc), np.broadcast_to(eye, (len(p), 3, 3))],
                          2).reshape(-1, 7)  # [3N, 7]
    b_pt = (q - p).reshape(-1)
    w_pt = np.repeat(w * point_weight, 3)
    ata = (a_pl * w[:, None]).T @ a_pl + (a_pt * w_pt[:, None]).T @ a_pt
    atb = (a_pl * w[:, None]).T @ b_pl + (a_pt * w_pt[:, None]).T @ b_pt
    sol = np.linalg.solve(ata + 1e-12 * np.eye(7), atb)
    s, r = 1.0 + float(sol[0]), _rotation(sol[1:4])
    return s, r, mu + sol[4:] - s * r @ mu


# omega x p = _CROSS-contraction: (omega x p)_c = sum_ij eps_cij omega_i p_j -> d/d omega_i = eps_cij p_j
_CROSS = np.zeros((3, 3, 3))
for _c, _i, _j in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
    _CROSS[_c, _i, _j], _CROSS[_c, _j, _i] = 1.0, -1.0


def _rigid_stage(x: np.ndarray, src_faces: np.ndarray, src_boundary: np.ndarray, tgt: _Target,
                 lmk_src: Any, lmk_dst: np.ndarray | None, iterations: int
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Similarity ICP (symmetric, trimmed, point-to-plane). Returns aligned vertices and (s, R, t)."""
    _, src_a = vertex_normals(x, src_faces)
    src_a = src_a / src_a.sum()
    if lmk_dst is not None:
        s, r, t = umeyama(_landmark_points(x, src_faces, lmk_src), lmk_dst)
    else:  # centres and RMS radii of the surfaces; both heads face +z, y up: identity rotation
        c_s, c_d = src_a @ x, tgt.area @ tgt.verts
        s = tgt.scale / float(np.sqrt(src_a @ ((x - c_s) ** 2).sum(1)))
        r, t = np.eye(3), c_d - s * c_s
    x = s * x @ r.T + t
    flip = _orientation(x, src_faces, tgt)
    for it in range(iterations):
        max_dist = tgt.scale * (0.4 if it < iterations // 2 else 0.2)
        pairs, _, _ = _correspondences(x, src_faces, src_boundary, tgt, max_dist, 0.3, flip, trim=3.0)
        p, q, w = pairs.source_points(x), pairs.target_points(tgt.verts), pairs.weights()
        n = np.concatenate([pairs.src_normal, pairs.dst_normal])
        if lmk_dst is not None:  # landmarks as point-to-point pairs: zero normal, full point weight
            p = np.concatenate([p, _landmark_points(x, src_faces, lmk_src)])
            q = np.concatenate([q, lmk_dst])
            n = np.concatenate([n, np.zeros_like(lmk_dst)])
            w = np.concatenate([w, np.full(len(lmk_dst), 5.0 / len(lmk_dst))])
        if len(p) < 7:
            break
        ds, dr, dt = _similarity_step(p, q, n, w)
        x = ds * x @ dr.T + dt
        s, r, t = ds * s, dr @ r, ds * dr @ t + dt
        if abs(ds - 1) < 1e-6 and np.abs(dr - np.eye(3)).max() < 1e-6 and np.linalg.norm(dt) < 1e-6 * tgt.scale:
            break
    return x, s, r, t


def _nonrigid_stage(x0: np.ndarray, src_faces: np.ndarray, src_boundary: np.ndarray, tgt: _Target,
                    lmk_src: Any, lmk_dst: np.ndarray | None, stiffness: tuple[float, ...], iterations: int,
                    progress: bool) -> np.ndarray:
    """Non-rigid ICP: per stiffness stage, ``iterations`` sparse solves with fresh correspondences.

    Each solve minimises (x new positions, p previous ones, areas normalised to sum 1)
    ``sum_i a_i |x_i - c_i|^2 + sum_j b_j |B_j x - q_j|^2 + lam sum_v a_v |L (x - p)|_v^2
    + eps |x - p|^2 (+ landmarks)``: linear in x, one matrix for x, y and z.

    Two choices, both measured on synthetic heads (default head vs. itself with its identity
    blendshapes at 1 sigma, i.e. features moved ~1 cm relative to the neck, remeshed):
    - the bending term acts on the *increment* x - p, not on the whole displacement: a stiff stage
      then smooths the closest-point pulls, and a large smooth deformation accumulates over the
      iterations instead of being held back (with the total displacement penalised, the stiff
      stages barely moved and the eyes stayed 8 mm off after 27 solves; now ~1-2 mm);
    - over-relaxation (step 1.7x the solved increment) roughly halves the solves needed.
    ``lam`` is scaled by (head size / edge length)^4 so that it means the same at any resolution.
    """
    n = len(x0)
    lap = uniform_laplacian(src_faces, n)
    _, a0 = vertex_normals(x0, src_faces)
    edge = float(np.median(np.linalg.norm(x0[src_faces[:, 1]] - x0[src_faces[:, 0]], axis=1)))
    bend = (lap.T @ sp.diags(a0 / a0.sum()) @ lap) * (tgt.scale / edge) ** 4  # [Vs, Vs]
    lmk_mat = None if lmk_dst is None else _landmark_matrix(src_faces, lmk_src, n)
    eps = 1e-3 / n
    flip = _orientation(x0, src_faces, tgt)
    x = x0.copy()
    for stage, lam in enumerate(stiffness):
        max_dist = tgt.scale * (0.3, 0.2, 0.1)[min(stage, 2)]
        for it in range(iterations):
            pairs, d_s, d_d = _correspondences(x, src_faces, src_boundary, tgt, max_dist, 0.5, flip)
            ws = np.zeros(n)
            ws[pairs.src_idx] = pairs.src_w
            rows = np.repeat(np.arange(len(pairs.dst_idx)), 3)
            b = sp.csr_matrix((pairs.dst_bary.ravel(), (rows, pairs.dst_faces.ravel())), shape=(len(pairs.dst_idx), n))
            m = sp.diags(ws + eps) + b.T @ sp.diags(pairs.dst_w) @ b + lam * bend  # [Vs, Vs] SPD
            rhs = np.zeros_like(x)
            rhs[pairs.src_idx] = pairs.src_w[:, None] * pairs.src_target
            rhs += b.T @ (pairs.dst_w[:, None] * tgt.verts[pairs.dst_idx]) + lam * (bend @ x) + eps * x
            if lmk_mat is not None:
                wl = 0.5 / len(lmk_dst)
                m = m + wl * (lmk_mat.T @ lmk_mat)
                rhs += wl * (lmk_mat.T @ lmk_dst)
            solved = splu(sp.csc_matrix(m), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(rhs)
            x = x + OVER_RELAXATION * (solved - x)
            if progress:
                fin = np.concatenate([d_s[np.isfinite(d_s)], d_d[np.isfinite(d_d)]])
                logger.info("registration stage %d/%d (stiffness %.3g) iter %d: %d+%d pairs, median %.3f mm",
                            stage + 1, len(stiffness), lam, it + 1, len(pairs.src_idx), len(pairs.dst_idx),
                            1e3 * float(np.median(fin)) if len(fin) else float("nan"))
    return x


DEFAULT_STIFFNESS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
OVER_RELAXATION = 1.7


def _register(src_verts: Any, src_faces: Any, dst_verts: Any, dst_faces: Any, *, landmarks_src: Any = None,
              landmarks_dst: Any = None, iterations: int = 4, stiffness: tuple[float, ...] = DEFAULT_STIFFNESS,
              rigid_iterations: int = 10, progress: bool = False) -> Registration:
    t0 = time.perf_counter()
    xs, fs = _np64(src_verts), _faces_np(src_faces)
    tgt = _Target(_np64(dst_verts), _faces_np(dst_faces))
    if (landmarks_src is None) != (landmarks_dst is None):
        raise DynavatarError("register_mesh: give both landmarks_src and landmarks_dst, or neither")
    lmk_dst = None if landmarks_dst is None else _np64(landmarks_dst).reshape(-1, 3)
    src_boundary = boundary_vertices(fs, len(xs))
    x, s, r, t = _rigid_stage(xs, fs, src_boundary, tgt, landmarks_src, lmk_dst, rigid_iterations)
    if progress:
        logger.info("registration: similarity scale %.4f, rotation %.2f deg", s,
                    np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
    x = _nonrigid_stage(x, fs, src_boundary, tgt, landmarks_src, lmk_dst, tuple(stiffness), iterations, progress)
    return Registration(verts=x, scale=s, rotation=r, translation=t,
                        dst_to_src=_surface_distance(tgt.verts, x, fs),
                        src_to_dst=_surface_distance(x, tgt.verts, tgt.faces), seconds=time.perf_counter() - t0)


def register_mesh(src_verts: Any, src_faces: Any, dst_verts: Any, dst_faces: Any, *, landmarks_src: Any = None,
                  landmarks_dst: Any = None, iterations: int = 4, stiffness: tuple[float, ...] = DEFAULT_STIFFNESS,
                  rigid_iterations: int = 10, progress: bool = False) -> np.ndarray:
    """Deform the source mesh onto the target surface; returns registered source vertices [Vs,3].

    src_verts [Vs,3], src_faces [Fs,3], dst_verts [Vd,3], dst_faces [Fd,3] (numpy or torch; any
    topologies, open or closed, several components). Optional correspondences: ``landmarks_src``
    (source vertex ids [L], or (face ids [L], barycentrics [L,3])) with ``landmarks_dst`` ([L,3]
    target points) start the similarity from them and keep pulling during the non-rigid stages.
    ``stiffness``: the bending weight of each non-rigid stage (strong to weak; resolution-independent),
    ``iterations``: ICP iterations (sparse solves) per stage; about 0.2 s each at 5k vertices.
    Returns numpy float64. :func:`transfer_embedding` reports how well the surfaces met.
    """
    return _register(src_verts, src_faces, dst_verts, dst_faces, landmarks_src=landmarks_src,
                     landmarks_dst=landmarks_dst, iterations=iterations, stiffness=stiffness,
                     rigid_iterations=rigid_iterations, progress=progress).verts


# ====================================================================== transfer
@dataclasses.dataclass
class _Mesh:
    """The parts of a head model that the transfer reads."""

    verts: np.ndarray  # [V, 3] neutral template
    faces: np.ndarray  # [F, 3]
    landmarks: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (faces [L], bary [L, 3])
    region: np.ndarray | None  # [V]
    region_names: list[str] | None


def _mesh_of(model: Any) -> _Mesh:
    """A FlameData or a FlameModel as a :class:`_Mesh` (numpy)."""
    if isinstance(model, FlameData):
        return _Mesh(_np64(model.v_template), _faces_np(model.faces), dict(model.landmarks), model.vertex_region,
                     model.region_names)
    lmk = {name: (_faces_np(getattr(model, f"lmk_{name}_faces")), _np64(getattr(model, f"lmk_{name}_bary")))
           for name in getattr(model, "landmark_sets", ())}
    region = getattr(model, "vertex_region", None)
    return _Mesh(_np64(model.v_template), _faces_np(model.faces), lmk,
                 None if region is None else _faces_np(region), getattr(model, "region_names", None))


def _component_maps(x: np.ndarray, src: _Mesh, dst: _Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of both meshes and which component of one each component of the other
    lies on (majority of closest points): head to head, eyeball to eyeball.

    Returns vertex components (src [Vs], dst [Vd]) and maps src comp -> dst comp, dst comp -> src comp.
    """
    comp_s, comp_d = vertex_components(src.faces, len(x)), vertex_components(dst.faces, len(dst.verts))

    def majority(points: np.ndarray, comp_pts: np.ndarray, verts: np.ndarray, faces: np.ndarray,
                 comp_other: np.ndarray) -> np.ndarray:
        f, _ = _closest(points, _Candidates(verts, faces, None), None, 0.0, None, k=8, exact=False)
        other = comp_other[faces[f, 0]]
        out = np.zeros(comp_pts.max() + 1, dtype=np.int64)
        for c in range(len(out)):
            out[c] = np.bincount(other[comp_pts == c]).argmax()
        return out

    s2d = majority(x, comp_s, dst.verts, dst.faces, comp_d)
    d2s = majority(dst.verts, comp_d, x, src.faces, comp_s)
    return comp_s, comp_d, s2d, d2s


def _project(points: np.ndarray, normals: np.ndarray, verts: np.ndarray, faces: np.ndarray,
             allowed: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Closest point among the allowed faces, preferring faces whose normal agrees with ``normals``
    unless that point is more than ``tol`` farther than the closest one. (Keeps an upper-lip
    landmark off the lower lip and a lid landmark off the eyeball, without sending an iris point
    across the head when the user's mesh has no eyeball.)"""
    f_any, b_any = closest_point_on_mesh(points, verts, faces, allowed_faces=allowed)
    f_n, b_n = closest_point_on_mesh(points, verts, faces, normals=normals, min_cos=0.0, allowed_faces=allowed)
    dist = lambda f, b: np.linalg.norm((verts[faces[f]] * b[:, :, None]).sum(1) - points, axis=1)  # noqa: E731
    ok = f_n >= 0
    ok[ok] = dist(f_n[ok], b_n[ok]) <= dist(f_any[ok], b_any[ok]) + tol
    return np.where(ok, f_n, f_any), np.where(ok[:, None], b_n, b_any)


def _rms_radius(verts: np.ndarray, faces: np.ndarray) -> float:
    """Area-weighted RMS distance of the surface from its centroid: the head's size (m)."""
    _, area = vertex_normals(verts, faces)
    area = area / area.sum()
    return float(np.sqrt(area @ ((verts - area @ verts) ** 2).sum(1)))


def _transfer_landmarks(x: np.ndarray, src: _Mesh, dst: _Mesh, comps) -> tuple[dict, dict]:
    """Each source landmark, evaluated on the registered source, projected onto the target surface of
    the matching component(s)."""
    comp_s, comp_d, s2d, d2s = comps
    fcomp_d = comp_d[dst.faces[:, 0]]
    src_fn, _ = face_normals(x, src.faces)
    tol = 0.05 * _rms_radius(dst.verts, dst.faces)
    out, diag = {}, {}
    for name, (lf, lb) in src.landmarks.items():
        pts = (x[src.faces[lf]] * lb[:, :, None]).sum(1)  # [L, 3]
        faces_out, bary_out = np.zeros(len(lf), dtype=np.int64), np.zeros((len(lf), 3))
        lcomp = comp_s[src.faces[lf, 0]]
        for c in np.unique(lcomp):
            sel = lcomp == c
            allowed = np.isin(fcomp_d, np.union1d([s2d[c]], np.flatnonzero(d2s == c)))
            faces_out[sel], bary_out[sel] = _project(pts[sel], src_fn[lf[sel]], dst.verts, dst.faces, allowed, tol)
        moved = np.linalg.norm((dst.verts[dst.faces[faces_out]] * bary_out[:, :, None]).sum(1) - pts, axis=1)
        out[name] = (faces_out, bary_out)
        diag[f"landmarks_{name}_shift_mean_mm"] = 1e3 * float(moved.mean())
        diag[f"landmarks_{name}_shift_max_mm"] = 1e3 * float(moved.max())
    return out, diag


def _majority_cleanup(labels: np.ndarray, faces: np.ndarray, passes: int = 2) -> tuple[np.ndarray, int]:
    """Relabel vertices that no neighbour shares a label with, when half of their neighbours or more
    agree on another label (isolated specks only: thin regions such as brows survive)."""
    adj = _adjacency(faces, len(labels))
    deg = np.asarray(adj.sum(1)).ravel()
    labels = labels.copy()
    changed = 0
    for _ in range(passes):
        onehot = sp.csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)),
                               shape=(len(labels), labels.max() + 1))
        counts = (adj @ onehot).toarray()  # [V, R] neighbours per label
        own = counts[np.arange(len(labels)), labels]
        top = counts.argmax(1)
        flip = (deg > 0) & (own == 0) & (2 * counts[np.arange(len(labels)), top] >= deg)
        if not flip.any():
            break
        labels[flip] = top[flip]
        changed += int(flip.sum())
    return labels, changed


def _transfer_regions(x: np.ndarray, src: _Mesh, dst: _Mesh, comps) -> tuple[np.ndarray, int]:
    """Each target vertex takes the region of the nearest registered source surface point (of the
    matching component, normal-compatible): the label with the largest barycentric weight."""
    comp_s, comp_d, s2d, d2s = comps
    fcomp_s = comp_s[src.faces[:, 0]]
    dst_n, _ = vertex_normals(dst.verts, dst.faces)
    tol = 0.05 * _rms_radius(dst.verts, dst.faces)
    region = np.zeros(len(dst.verts), dtype=np.int64)
    for k in np.unique(comp_d):
        sel = comp_d == k
        allowed = np.isin(fcomp_s, np.union1d([d2s[k]], np.flatnonzero(s2d == k)))
        f, b = _project(dst.verts[sel], dst_n[sel], x, src.faces, allowed, tol)
        lab = src.region[src.faces[f]]  # [N, 3]
        score = np.stack([(b * (lab == lab[:, [j]])).sum(1) for j in range(3)], 1)
        region[sel] = lab[np.arange(len(lab)), score.argmax(1)]
    return _majority_cleanup(region, dst.faces)


def transfer_embedding(default_model: Any, user_model_data: Any, *, progress: bool = False,
                       **register_kwargs: Any) -> dict[str, Any]:
    """The default head's landmark embeddings and vertex regions, carried onto another head model.

    ``default_model`` / ``user_model_data``: FlameData or FlameModel (neutral templates are used).
    Returns ``{"landmarks": {name: (faces [L], bary [L,3])}, "vertex_region": [Vd], "region_names":
    [...], "diagnostics": {...}}``; diagnostics (mm) say how well the surfaces met
    (``registration_*``: distance of each user vertex to the registered default head) and how far
    the landmarks moved when put onto the user's surface (``landmarks_<set>_shift_*``).
    """
    src, dst = _mesh_of(default_model), _mesh_of(user_model_data)
    if src.region is None or src.region_names is None or not src.landmarks:
        raise DynavatarError("transfer_embedding: the reference model has no landmark embedding or regions")
    reg = _register(src.verts, src.faces, dst.verts, dst.faces, progress=progress, **register_kwargs)
    comps = _component_maps(reg.verts, src, dst)
    landmarks, lmk_diag = _transfer_landmarks(reg.verts, src, dst, comps)
    region, cleaned = _transfer_regions(reg.verts, src, dst, comps)
    angle = float(np.degrees(np.arccos(np.clip((np.trace(reg.rotation) - 1) / 2, -1, 1))))
    diag = {
        "registration_seconds": round(reg.seconds, 3),
        "registration_mean_mm": 1e3 * float(reg.dst_to_src.mean()),
        "registration_p95_mm": 1e3 * float(np.quantile(reg.dst_to_src, 0.95)),
        "registration_max_mm": 1e3 * float(reg.dst_to_src.max()),
        "similarity_scale": reg.scale,
        "similarity_rotation_deg": angle,
        **lmk_diag,
        "regions_cleaned_vertices": cleaned,
    }
    return {"landmarks": landmarks, "vertex_region": region, "region_names": list(src.region_names),
            "diagnostics": diag}


# ====================================================================== cache
def needs_embedding(data: FlameData) -> bool:
    """True when the model lacks our mediapipe landmark embedding or vertex regions."""
    return "mediapipe" not in data.landmarks or data.vertex_region is None or data.region_names is None


def embedding_cache_path(model_path: str | os.PathLike) -> Path:
    """``<dir>/<stem>.dynavatar-embedding.npz`` beside the model file."""
    p = Path(model_path).expanduser()
    return p.with_name(p.stem + EMBEDDING_CACHE_SUFFIX)


def _default_reference() -> FlameData:
    from .resolve import default_head_path

    return read_flame_file(default_head_path())


def _reference_digest(ref: FlameData) -> str:
    arrays = {"v": ref.v_template.astype(np.float32), "f": ref.faces.astype(np.int64),
              "region": np.asarray(ref.vertex_region, dtype=np.int64), "names": np.array(ref.region_names or [])}
    for name, (lf, lb) in ref.landmarks.items():
        arrays[f"{name}_f"], arrays[f"{name}_b"] = lf.astype(np.int64), lb.astype(np.float32)
    return arrays_sha256(arrays)


def embedding_key(data: FlameData, reference: FlameData) -> str:
    """What the embedding depends on: the user's template and faces (float32, so a .pkl and its
    converted .npz agree), the reference head's geometry/embedding, and the algorithm version."""
    h = hashlib.sha256(f"{CACHE_FORMAT}|v{TRANSFER_VERSION}|".encode())
    geometry = {"v_template": data.v_template.astype(np.float32), "f": data.faces.astype(np.int64)}
    h.update(arrays_sha256(geometry).encode())
    h.update(_reference_digest(reference).encode())
    return h.hexdigest()


def _save_cache(path: Path, key: str, data: FlameData, emb: dict[str, Any]) -> None:
    from ..io.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {
        "format": np.array(CACHE_FORMAT), "key": np.array(key),
        "n_vertices": np.array(data.n_vertices, dtype=np.int64), "n_faces": np.array(len(data.faces), dtype=np.int64),
        "vertex_region": emb["vertex_region"].astype(np.int64), "region_names": np.array(emb["region_names"]),
        "diagnostics": np.array(json.dumps(emb["diagnostics"], sort_keys=True)),
    }
    for name, (lf, lb) in emb["landmarks"].items():
        arrays[f"lmk_{name}_faces"], arrays[f"lmk_{name}_bary"] = lf.astype(np.int64), lb.astype(np.float64)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def _load_cache(path: Path, key: str, data: FlameData, reference: FlameData) -> dict[str, Any]:
    """The cached embedding, validated; raises FlameFileError saying why it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is simply recomputed
        raise FlameFileError(f"unreadable ({type(exc).__name__}: {exc})") from exc

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise FlameFileError(msg)

    need(all(k in raw for k in ("format", "key", "vertex_region", "region_names")), "missing entries")
    need(str(raw["format"]) == CACHE_FORMAT, f"format {str(raw['format'])!r}")
    need(str(raw["key"]) == key, "made for another model or another version (key mismatch)")
    n_v, n_f = data.n_vertices, len(data.faces)
    landmarks = {}
    for name, (ref_f, _) in reference.landmarks.items():
        lf, lb = raw.get(f"lmk_{name}_faces"), raw.get(f"lmk_{name}_bary")
        need(lf is not None and lb is not None, f"landmark set '{name}' missing")
        need(lf.shape == ref_f.shape and np.issubdtype(lf.dtype, np.integer), f"lmk_{name}_faces shape/dtype")
        need(lb.shape == (len(ref_f), 3) and np.issubdtype(lb.dtype, np.floating), f"lmk_{name}_bary shape/dtype")
        need(bool(((lf >= 0) & (lf < n_f)).all()), f"lmk_{name}_faces outside [0, {n_f})")
        need(bool(np.isfinite(lb).all()) and bool((lb >= -1e-6).all()) and bool(np.allclose(lb.sum(1), 1, atol=1e-4)),
             f"lmk_{name}_bary not finite barycentrics")
        landmarks[name] = (lf.astype(np.int64), lb.astype(np.float64))
    region, names = raw["vertex_region"], [str(s) for s in raw["region_names"].reshape(-1)]
    need(region.shape == (n_v,) and np.issubdtype(region.dtype, np.integer), "vertex_region shape/dtype")
    need(names == list(reference.region_names or []), "region_names differ from the reference head's")
    need(bool(((region >= 0) & (region < len(names))).all()), "vertex_region outside region_names")
    diag = json.loads(str(raw["diagnostics"])) if "diagnostics" in raw else {}
    return {"landmarks": landmarks, "vertex_region": region.astype(np.int64), "region_names": names,
            "diagnostics": diag}


def _merge(data: FlameData, emb: dict[str, Any], info: dict[str, Any]) -> FlameData:
    """``data`` plus what it lacked (its own landmark sets and regions win)."""
    has_regions = data.vertex_region is not None and data.region_names is not None
    meta = dict(data.meta)
    meta["embedding"] = info
    return dataclasses.replace(
        data, landmarks={**emb["landmarks"], **data.landmarks},
        vertex_region=data.vertex_region if has_regions else emb["vertex_region"],
        region_names=data.region_names if has_regions else list(emb["region_names"]), meta=meta)


def ensure_embedding(path_or_data: str | os.PathLike | FlameData, *, path: str | os.PathLike | None = None,
                     reference: FlameData | None = None, min_vertices: int = MIN_VERTICES,
                     progress: bool = False) -> FlameData:
    """The model with our mediapipe/iBUG-68 landmark embeddings and vertex regions.

    A model that has them is returned unchanged. Otherwise the embedding comes from
    ``<stem>.dynavatar-embedding.npz`` beside the model file when that cache is valid for this
    model (its key hashes the template, faces, reference head and algorithm version), else it is
    computed (:func:`transfer_embedding`, seconds) and cached atomically; a folder that cannot be
    written keeps it in memory with a warning. ``path`` names the model file when a FlameData is
    passed (default: ``data.meta['source_file']``). Meshes with fewer than ``min_vertices``
    vertices are returned unchanged: they are not head models worth registering.
    ``meta['embedding']`` records where the embedding came from and the diagnostics.
    """
    if isinstance(path_or_data, FlameData):
        data = path_or_data
        path = path if path is not None else data.meta.get("source_file")
    else:
        path = path_or_data if path is None else path
        data = read_flame_file(path_or_data)
    if not needs_embedding(data):
        return data
    if data.n_vertices < min_vertices:
        logger.info("head model has %d vertices (< %d): no landmark embedding / regions transferred",
                    data.n_vertices, min_vertices)
        return data
    reference = _default_reference() if reference is None else reference
    key = embedding_key(data, reference)
    cache = None if path is None else embedding_cache_path(path)
    if cache is not None and cache.is_file():
        try:
            emb = _load_cache(cache, key, data, reference)
            logger.info("landmark embedding and regions of %s: loaded from %s", Path(path).name, cache)
            return _merge(data, emb, {"source": "cache", "cache": str(cache), "diagnostics": emb["diagnostics"]})
        except FlameFileError as exc:
            logger.warning("ignoring embedding cache %s: %s; recomputing", cache, exc)
    name = Path(path).name if path is not None else "head model"
    logger.info("%s has no mediapipe landmark embedding / vertex regions: registering the default head "
                "onto it (a few seconds)", name)
    emb = transfer_embedding(reference, data, progress=progress)
    d = emb["diagnostics"]
    logger.info("registered in %.1fs: user surface to registered default head %.2f mm mean, %.2f mm p95; "
                "landmarks moved %.2f mm mean onto the user surface", d["registration_seconds"],
                d["registration_mean_mm"], d["registration_p95_mm"], d.get("landmarks_mediapipe_shift_mean_mm", 0.0))
    info: dict[str, Any] = {"source": "computed", "cache": None, "diagnostics": d}
    if cache is not None:
        try:
            _save_cache(cache, key, data, emb)
            info["cache"] = str(cache)
            logger.info("cached the embedding at %s", cache)
        except OSError as exc:
            logger.warning("cannot write the embedding cache %s (%s); keeping it in memory only, it will be "
                           "recomputed next time", cache, exc)
    return _merge(data, emb, info)
