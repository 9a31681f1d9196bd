"""Reading, validating and writing FLAME-format head model files.

A FLAME-format file holds (names as in the official releases):

==================  ==============  =====================================================
key                 shape           meaning
==================  ==============  =====================================================
``v_template``      [V, 3]          neutral mesh, metres, y up, z forward, x = subject's left
``f``               [F, 3]          triangles (int)
``shapedirs``       [V, 3, S+E]     identity then expression blendshapes
``posedirs``        [V, 3, 36]      pose correctives on flatten(R_j - I) for joints 1..4
``J_regressor``     [5, V]          joints from the shaped mesh (dense or scipy sparse)
``weights``         [V, 5]          skinning weights (root, neck, jaw, left eye, right eye)
``kintree_table``   [2, 5]          parents (row 0) of joints (row 1)
==================  ==============  =====================================================

Official pickles carry S=300 identity and E=100 expression components. Our ``.npz`` files may
add ``n_shape_total``/``n_expr_total`` (the split), landmark embeddings
``lmk_<set>_faces [L]`` + ``lmk_<set>_bary [L,3]``, ``vertex_region [V]`` + ``region_names``,
``expr_names`` and a ``meta`` JSON string; ``.npz`` files are always read with
``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FlameFileError
from .safe_pickle import safe_load_pickle, to_numpy

__all__ = ["FlameData", "read_flame_file", "write_flame_npz", "arrays_sha256"]

N_JOINTS = 5
FLAME_SHAPE_COMPONENTS = 300  # split of the official releases' 400 blendshapes
FLAME_EXPR_COMPONENTS = 100
MAX_FILE_BYTES = 2 << 30  # no real head model comes near 2 GiB; refuse before reading it all


@dataclasses.dataclass
class FlameData:
    """The arrays of one FLAME-format model, validated, as numpy (float64 / int64)."""

    v_template: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3] int64
    shapedirs: np.ndarray  # [V, 3, S+E]
    posedirs: np.ndarray  # [V, 3, 36]
    J_regressor: np.ndarray  # [5, V]
    weights: np.ndarray  # [V, 5]
    parents: np.ndarray  # [5] int64, parents[0] == -1
    n_shape_total: int
    n_expr_total: int
    landmarks: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (faces [L], bary [L, 3])
    vertex_region: np.ndarray | None = None  # [V] int64
    region_names: list[str] | None = None
    expr_names: list[str] | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Content hash of named arrays (names, dtypes, shapes, bytes), independent of zip layout."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "meta":
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _raw_from_pickle(path: Path) -> dict[str, Any]:
    obj = safe_load_pickle(path.read_bytes(), source=str(path))
    if not isinstance(obj, dict):
        raise FlameFileError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}


# An .npz member's header says how big its array is, and numpy allocates that before reading a byte:
# a few hundred compressed bytes can ask for gigabytes. The declared sizes are checked first.
_NPZ_MAX_RATIO = 200  # uncompressed / compressed bytes over the whole archive (real FLAME files: < 5)
_NPZ_MAX_BYTES = 2 << 30


def _check_npz_sizes(path: Path) -> None:
    """Refuse an archive whose members declare more data than they hold, or far more than its size."""
    budget = min(_NPZ_MAX_BYTES, _NPZ_MAX_RATIO * path.stat().st_size + (64 << 20))
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            total += info.file_size
            if total > budget:
                raise FlameFileError(f"{path}: refused, its members unpack to over {budget / 2**20:,.0f} MB "
                                     f"from a {path.stat().st_size:,}-byte file; not a FLAME file?")
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                # public readers in numpy 1 and 2; format 3.0 differs from 2.0 only in the header's text encoding
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if declared > info.file_size:
                raise FlameFileError(f"{path}: refused, member {info.filename} claims an array of shape {shape} "
                                     f"({declared:,} bytes) but holds {info.file_size:,}; the file is corrupt")


def _raw_from_npz(path: Path) -> dict[str, Any]:
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FlameFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise FlameFileError(
            f"{path}: not a readable .npz ({type(exc).__name__}: {exc}); it is truncated, corrupt "
            "or holds pickled objects (refused). Convert the original FLAME .pkl again with "
            "`dynavatar flame convert`."
        ) from exc


def _get(raw: dict[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in raw:
        raise FlameFileError(
            f"{path}: missing '{key}'; a FLAME file needs v_template, f, shapedirs, posedirs, "
            f"J_regressor, weights and kintree_table (found: {sorted(raw)})"
        )
    return to_numpy(raw[key], key)


def _expect(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise FlameFileError(f"{path}: {msg}")


def _as_str_list(a: np.ndarray) -> list[str]:
    return [str(x) for x in np.asarray(a).reshape(-1).tolist()]


def read_flame_file(path: str | os.PathLike) -> FlameData:
    """Read and validate a FLAME-format file (``.pkl`` with or without chumpy, or ``.npz``).

    Raises :class:`FlameFileError` with a message that says what is wrong for missing,
    truncated, unsafe or wrongly shaped files.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlameFileError(
            f"FLAME file not found: {path}. Download FLAME from https://flame.is.tue.mpg.de "
            "(registration required) and pass its path, or set DYNAVATAR_FLAME."
        )
    size = path.stat().st_size
    _expect(0 < size <= MAX_FILE_BYTES, path, f"implausible file size ({size} bytes)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"PK"):
        raw = _raw_from_npz(path)
    elif magic[:1] == b"\x80" or path.suffix == ".pkl":
        raw = _raw_from_pickle(path)
    else:
        raise FlameFileError(f"{path}: neither a pickle nor an .npz (first bytes {magic!r})")

    v = _get(raw, "v_template", path).astype(np.float64)
    _expect(v.ndim == 2 and v.shape[1] == 3 and v.shape[0] >= 3, path, f"v_template must be [V,3], got {v.shape}")
    n_v = v.shape[0]
    faces = _get(raw, "f", path)
    _expect(faces.ndim == 2 and faces.shape[1] == 3 and faces.shape[0] >= 1, path, f"f must be [F,3], got {faces.shape}")
    _expect(np.issubdtype(faces.dtype, np.integer) or np.all(np.mod(faces, 1) == 0), path, "f must hold integers")
    faces = faces.astype(np.int64)
    _expect(faces.min() >= 0 and faces.max() < n_v, path, f"face indices outside [0, {n_v})")

    shapedirs = _get(raw, "shapedirs", path).astype(np.float64)
    _expect(shapedirs.ndim == 3 and shapedirs.shape[:2] == (n_v, 3), path,
            f"shapedirs must be [V,3,K] with V={n_v}, got {shapedirs.shape}")
    posedirs = _get(raw, "posedirs", path).astype(np.float64)
    if posedirs.ndim == 2 and posedirs.shape == (n_v * 3, 36):
        posedirs = posedirs.reshape(n_v, 3, 36)
    _expect(posedirs.shape == (n_v, 3, 36), path, f"posedirs must be [V,3,36], got {posedirs.shape}")
    jreg = _get(raw, "J_regressor", path).astype(np.float64)
    _expect(jreg.shape == (N_JOINTS, n_v), path, f"J_regressor must be [5,V], got {jreg.shape}")
    weights = _get(raw, "weights", path).astype(np.float64)
    _expect(weights.shape == (n_v, N_JOINTS), path, f"weights must be [V,5], got {weights.shape}")
    kin = _get(raw, "kintree_table", path).astype(np.int64)
    _expect(kin.shape == (2, N_JOINTS), path, f"kintree_table must be [2,5], got {kin.shape}")
    parents = kin[0].copy()
    parents[0] = -1  # stored as 4294967295 (uint32 -1) in the official files
    _expect(all(0 <= parents[j] < j for j in range(1, N_JOINTS)), path,
            f"kintree_table parents {parents.tolist()} are not a tree ordered root-first")

    for name, arr in (("v_template", v), ("shapedirs", shapedirs), ("posedirs", posedirs),
                      ("J_regressor", jreg), ("weights", weights)):
        _expect(bool(np.isfinite(arr).all()), path, f"{name} contains NaN or inf")

    n_total = shapedirs.shape[2]
    if "n_shape_total" in raw:
        n_shape = int(np.asarray(raw["n_shape_total"]).reshape(()))
        n_expr = int(np.asarray(raw["n_expr_total"]).reshape(())) if "n_expr_total" in raw else n_total - n_shape
    elif n_total == FLAME_SHAPE_COMPONENTS + FLAME_EXPR_COMPONENTS:
        n_shape, n_expr = FLAME_SHAPE_COMPONENTS, FLAME_EXPR_COMPONENTS
    elif n_total == FLAME_SHAPE_COMPONENTS:
        n_shape, n_expr = FLAME_SHAPE_COMPONENTS, 0  # FLAME 2017 shape-only releases
    else:
        raise FlameFileError(
            f"{path}: shapedirs has {n_total} components; cannot tell identity from expression "
            "(expected 400 = 300 + 100, or n_shape_total/n_expr_total in an .npz)"
        )
    _expect(n_shape >= 0 and n_expr >= 0 and n_shape + n_expr == n_total, path,
            f"n_shape_total + n_expr_total = {n_shape}+{n_expr} != {n_total} components")

    landmarks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in raw:
        if key.startswith("lmk_") and key.endswith("_faces"):
            name = key[4:-6]
            lf = to_numpy(raw[key], key).astype(np.int64).reshape(-1)
            bary_key = f"lmk_{name}_bary"
            _expect(bary_key in raw, path, f"{key} without {bary_key}")
            lb = to_numpy(raw[bary_key], bary_key).astype(np.float64)
            _expect(lb.shape == (lf.shape[0], 3), path, f"{bary_key} must be [{lf.shape[0]},3], got {lb.shape}")
            _expect(lf.size == 0 or (lf.min() >= 0 and lf.max() < faces.shape[0]), path, f"{key} indexes missing faces")
            _expect(bool(np.isfinite(lb).all()), path, f"{bary_key} contains NaN or inf")
            landmarks[name] = (lf, lb)

    region = names = expr_names = None
    if "vertex_region" in raw:
        region = to_numpy(raw["vertex_region"], "vertex_region").astype(np.int64).reshape(-1)
        names = _as_str_list(_get(raw, "region_names", path))
        _expect(region.shape == (n_v,), path, f"vertex_region must be [V], got {region.shape}")
        _expect(region.min() >= 0 and region.max() < len(names), path, "vertex_region indexes missing region_names")
    if "expr_names" in raw:
        expr_names = _as_str_list(to_numpy(raw["expr_names"], "expr_names"))
        _expect(len(expr_names) == n_expr, path, f"{len(expr_names)} expr_names for {n_expr} components")

    meta: dict[str, Any] = {}
    if "meta" in raw:
        try:
            meta = json.loads(str(np.asarray(raw["meta"]).reshape(())))
        except (json.JSONDecodeError, ValueError) as exc:
            raise FlameFileError(f"{path}: 'meta' is not valid JSON") from exc
        expected = meta.get("arrays_sha256")
        if expected is not None:
            arrays = {k: np.asarray(raw[k]) for k in raw if not isinstance(raw[k], (dict, list))}
            if arrays_sha256(arrays) != expected:
                raise FlameFileError(f"{path}: content does not match its recorded sha256; the file "
                                     "was modified or corrupted. Convert the original again.")
    meta.setdefault("source_file", str(path))
    return FlameData(
        v_template=v, faces=faces, shapedirs=shapedirs, posedirs=posedirs, J_regressor=jreg,
        weights=weights, parents=parents, n_shape_total=n_shape, n_expr_total=n_expr,
        landmarks=landmarks, vertex_region=region, region_names=names, expr_names=expr_names, meta=meta,
    )


def write_flame_npz(data: FlameData, out: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Write ``data`` as a clean, pickle-free ``.npz`` (atomically), with sha256s in ``meta``.

    ``meta`` records the sha256 of the source file (if given) and of the array contents; the
    reader verifies the latter, so a modified or damaged conversion is detected.
    """
    out = Path(out).expanduser()
    arrays: dict[str, np.ndarray] = {
        "v_template": data.v_template.astype(np.float32),
        "f": data.faces.astype(np.int64),
        "shapedirs": data.shapedirs.astype(np.float32),
        "posedirs": data.posedirs.astype(np.float32),
        "J_regressor": data.J_regressor.astype(np.float32),
        "weights": data.weights.astype(np.float32),
        "kintree_table": np.stack([np.where(data.parents < 0, -1, data.parents), np.arange(N_JOINTS)]).astype(np.int64),
        "n_shape_total": np.array(data.n_shape_total, dtype=np.int64),
        "n_expr_total": np.array(data.n_expr_total, dtype=np.int64),
    }
    for name, (lf, lb) in data.landmarks.items():
        arrays[f"lmk_{name}_faces"] = lf.astype(np.int64)
        arrays[f"lmk_{name}_bary"] = lb.astype(np.float32)
    if data.vertex_region is not None and data.region_names is not None:
        arrays["vertex_region"] = data.vertex_region.astype(np.int64)
        arrays["region_names"] = np.array(data.region_names)
    if data.expr_names is not None:
        arrays["expr_names"] = np.array(data.expr_names)
    meta = {k: v for k, v in data.meta.items() if k != "source_file"}
    meta["format"] = "dynavatar-flame-npz/1"
    if source is not None:
        meta["source_name"] = Path(source).name
        meta["source_sha256"] = _sha256_file(Path(source))
    meta["arrays_sha256"] = arrays_sha256(arrays)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    from ..io.atomic import atomic_path

    with atomic_path(out, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return out
