"""Registration of one triangle mesh onto another: a similarity, then non-rigid ICP (numpy + scipy).

Written for this project (no third-party registration code):

- **Similarity.**  Both heads face +z with y up, so it starts from the surfaces' centres, RMS sizes and the
  identity rotation (or from landmark pairs, ``umeyama``), then runs point-to-plane ICP on trimmed,
  normal-compatible, symmetric closest-point pairs.
- **Non-rigid ICP with a stiffness schedule.**  Per-vertex positions, a symmetric point-to-surface data
  term (source vertices to the target surface, target vertices to the source surface through fixed
  barycentrics) and a bending term (uniform Laplacian) that is strong at first and relaxed stage by
  stage.  With correspondences fixed that energy is quadratic in the vertex positions, so each ICP
  iteration is one sparse SPD solve (scipy; one factorisation, three right-hand sides) instead of
  hundreds of gradient steps.  See :func:`_nonrigid_stage` for the two choices that make it converge
  (bending of the increment, over-relaxation).

Pairs are rejected when normals disagree, when they are far, or when the target point lies on an open
boundary (a FLAME head's neck and eye holes): that keeps parts one mesh has and the other lacks (a mouth
bag, eye-socket cups, a closed neck) from pulling on the fit.  Used by ``flame.transfer`` to carry the
default head's landmark embedding and regions onto another head model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..errors import DynavatarError
from .closest_point import TriangleSearch, closest_points
from .mesh import as_float64, as_index_array, boundary_vertices, rms_radius, uniform_laplacian, vertex_normals

__all__ = ["Registration", "register_mesh", "compute_registration", "umeyama", "DEFAULT_STIFFNESS",
           "OVER_RELAXATION"]

logger = logging.getLogger("dynavatar.geometry")


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
        self.cand = TriangleSearch(verts, faces, None)
        self.vnormals, area = vertex_normals(verts, faces)
        self.area = area / area.sum()
        self.boundary = boundary_vertices(faces, len(verts))
        self.scale = rms_radius(verts, faces)  # the head's size (m): distance limits are relative to it


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
    f_s, b_s = closest_points(x, tgt.cand, flip * src_n, min_cos, max_dist, k=12, exact=False)
    ok_s = f_s >= 0
    q_s = np.zeros_like(x)
    q_s[ok_s] = (tgt.verts[tgt.faces[f_s[ok_s]]] * b_s[ok_s, :, None]).sum(1)
    ok_s[ok_s] &= ~_on_boundary(tgt.faces[f_s[ok_s]], b_s[ok_s], tgt.boundary)
    d_s = np.where(ok_s, np.linalg.norm(q_s - x, axis=1), np.inf)
    # target vertices -> source surface
    src_cand = TriangleSearch(x, src_faces, None)
    f_d, b_d = closest_points(tgt.verts, src_cand, flip * tgt.vnormals, min_cos, max_dist, k=12, exact=False)
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
    f, b = closest_points(points, TriangleSearch(verts, faces, None), None, 0.0, None, k=8)
    q = (verts[faces[f]] * b[:, :, None]).sum(1)
    return np.linalg.norm(q - points, axis=1)


def _landmark_points(x: np.ndarray, faces: np.ndarray, lmk: Any) -> np.ndarray:
    """Source landmarks as points: ``lmk`` is vertex ids [L] or (face ids [L], bary [L,3])."""
    if isinstance(lmk, tuple):
        lf, lb = as_index_array(lmk[0]), as_float64(lmk[1])
        return (x[faces[lf]] * lb[:, :, None]).sum(1)
    return x[as_index_array(lmk)]


def _landmark_matrix(faces: np.ndarray, lmk: Any, n_verts: int) -> sp.csr_matrix:
    """[L, Vs] sparse map from source vertices to source landmark points."""
    if isinstance(lmk, tuple):
        lf, lb = as_index_array(lmk[0]), as_float64(lmk[1])
        n_lmk, rows, cols, vals = len(lf), np.repeat(np.arange(len(lf)), 3), faces[lf].ravel(), lb.ravel()
    else:
        ids = as_index_array(lmk)
        n_lmk, rows, cols, vals = len(ids), np.arange(len(ids)), ids, np.ones(len(ids))
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_lmk, n_verts))


def _orientation(x: np.ndarray, src_faces: np.ndarray, tgt: _Target) -> float:
    """+1 if the two meshes' normals agree (both outward), -1 if one of them is wound inside out."""
    src_n, _ = vertex_normals(x, src_faces)
    f, _ = closest_points(x, tgt.cand, None, 0.0, None, k=8, exact=False)
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

    Why not Umeyama here: point-to-point ICP creeps towards a small misalignment's answer in tiny
    steps; point-to-plane lets surfaces slide and converges in a few iterations.
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

    Two choices make it converge:
    - the bending term acts on the *increment* x - p, not on the whole displacement: a stiff stage
      then smooths the closest-point pulls, and a large smooth deformation accumulates over the
      iterations instead of being held back (with the total displacement penalised, the stiff
      stages barely move and features that must travel far, such as the eyes, stay off);
    - over-relaxation (a step of ``OVER_RELAXATION`` x the solved increment) needs fewer solves.
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


def compute_registration(src_verts: Any, src_faces: Any, dst_verts: Any, dst_faces: Any, *,
                         landmarks_src: Any = None, landmarks_dst: Any = None, iterations: int = 4,
                         stiffness: tuple[float, ...] = DEFAULT_STIFFNESS, rigid_iterations: int = 10,
                         progress: bool = False) -> Registration:
    """:func:`register_mesh` with its outcome: the registered vertices, the similarity, and the distances
    each way between the registered source and the target surface (to judge the fit)."""
    t0 = time.perf_counter()
    xs, fs = as_float64(src_verts), as_index_array(src_faces)
    tgt = _Target(as_float64(dst_verts), as_index_array(dst_faces))
    if (landmarks_src is None) != (landmarks_dst is None):
        raise DynavatarError("register_mesh: give both landmarks_src and landmarks_dst, or neither")
    lmk_dst = None if landmarks_dst is None else as_float64(landmarks_dst).reshape(-1, 3)
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
    ``iterations``: ICP iterations (sparse solves) per stage.
    Returns numpy float64; :func:`compute_registration` also says how well the surfaces met.
    """
    return compute_registration(src_verts, src_faces, dst_verts, dst_faces, landmarks_src=landmarks_src,
                     landmarks_dst=landmarks_dst, iterations=iterations, stiffness=stiffness,
                     rigid_iterations=rigid_iterations, progress=progress).verts
