"""Landmark embeddings and vertex regions for FLAME-format models that lack ours.

Why this exists: the tracker fits mediapipe's 478 landmarks and the editor works on vertex regions.
The embedded default head carries both (made by ``assets/flame/build_default_head.py``); a user's
FLAME 2020/2023 file (5023 vertices, another topology) carries neither. So we register the default
head's neutral mesh onto the user's template (``geometry.registration``), carry every landmark over as
(triangle, barycentric) on the user's mesh, and give every user vertex the region of the nearest
registered default-head surface point. Both go component by component (head to head, eyeball to
eyeball) and prefer normal-compatible triangles, so an upper-lip landmark does not land on the lower lip.

The result is cached beside the model file (``<stem>.dynavatar-embedding.npz``), keyed by the user's
template and faces, the reference head and the algorithm version (``ensure_embedding``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import DynavatarError, FlameFileError
from ..geometry.closest_point import TriangleSearch, closest_point_on_mesh, closest_points
from ..geometry.mesh import (as_float64, as_index_array, face_normals, rms_radius, vertex_adjacency,
                             vertex_components, vertex_normals)
from ..geometry.registration import compute_registration
from .file_format import FlameData, arrays_sha256, read_flame_file

__all__ = ["transfer_embedding", "ensure_embedding", "needs_embedding", "embedding_cache_path", "embedding_key",
           "EMBEDDING_CACHE_SUFFIX"]

logger = logging.getLogger("dynavatar.flame")

TRANSFER_VERSION = 1  # bump when the algorithm changes: old caches are then recomputed
EMBEDDING_CACHE_SUFFIX = ".dynavatar-embedding.npz"
CACHE_FORMAT = "dynavatar-embedding/1"
MIN_VERTICES = 1000  # a mesh coarser than this is no head model worth registering (test stand-ins are)


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
        return _Mesh(as_float64(model.v_template), as_index_array(model.faces), dict(model.landmarks),
                     model.vertex_region, model.region_names)
    lmk = {name: (as_index_array(getattr(model, f"lmk_{name}_faces")),
                  as_float64(getattr(model, f"lmk_{name}_bary")))
           for name in getattr(model, "landmark_sets", ())}
    region = getattr(model, "vertex_region", None)
    return _Mesh(as_float64(model.v_template), as_index_array(model.faces), lmk,
                 None if region is None else as_index_array(region), getattr(model, "region_names", None))


def _component_maps(x: np.ndarray, src: _Mesh, dst: _Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected components of both meshes and which component of one each component of the other
    lies on (majority of closest points): head to head, eyeball to eyeball.

    Returns vertex components (src [Vs], dst [Vd]) and maps src comp -> dst comp, dst comp -> src comp.
    """
    comp_s, comp_d = vertex_components(src.faces, len(x)), vertex_components(dst.faces, len(dst.verts))

    def majority(points: np.ndarray, comp_pts: np.ndarray, verts: np.ndarray, faces: np.ndarray,
                 comp_other: np.ndarray) -> np.ndarray:
        f, _ = closest_points(points, TriangleSearch(verts, faces, None), None, 0.0, None, k=8, exact=False)
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


def _transfer_landmarks(x: np.ndarray, src: _Mesh, dst: _Mesh, comps) -> tuple[dict, dict]:
    """Each source landmark, evaluated on the registered source, projected onto the target surface of
    the matching component(s)."""
    comp_s, comp_d, s2d, d2s = comps
    fcomp_d = comp_d[dst.faces[:, 0]]
    src_fn, _ = face_normals(x, src.faces)
    tol = 0.05 * rms_radius(dst.verts, dst.faces)
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
    adj = vertex_adjacency(faces, len(labels))
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
    tol = 0.05 * rms_radius(dst.verts, dst.faces)
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
    reg = compute_registration(src.verts, src.faces, dst.verts, dst.faces, progress=progress, **register_kwargs)
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
