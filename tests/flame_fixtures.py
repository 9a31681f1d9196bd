"""Synthetic FLAME-format files for tests (random, small, written the way the official ones are)."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse


def synthetic_flame_arrays(n_vertices: int = 64, n_faces: int = 96, seed: int = 0) -> dict:
    """A random FLAME-format model with FLAME's exact layout (400 = 300 + 100 blendshapes)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(scale=0.05, size=(n_vertices, 3))
    faces = np.stack([rng.choice(n_vertices, 3, replace=False) for _ in range(n_faces)]).astype(np.uint32)
    jreg = rng.random((5, n_vertices)) * (rng.random((5, n_vertices)) < 0.3)
    jreg[:, 0] += 1e-3  # no empty rows
    jreg /= jreg.sum(1, keepdims=True)
    weights = rng.random((n_vertices, 5)) ** 3
    weights /= weights.sum(1, keepdims=True)
    return {
        "v_template": v,
        "f": faces,
        "shapedirs": rng.normal(scale=0.002, size=(n_vertices, 3, 400)),
        "posedirs": rng.normal(scale=0.01, size=(n_vertices, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(jreg),
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_plain_pickle(path: Path, arrays: dict, protocol: int = 2) -> Path:
    """A chumpy-free FLAME pickle (what smplx and many re-exports use)."""
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    return path


def write_chumpy_pickle(path: Path, arrays: dict, chumpy_keys=("v_template", "shapedirs", "posedirs")) -> Path:
    """A pickle that names chumpy classes like the official releases, without chumpy installed:
    a throwaway ``chumpy.ch`` module is registered only while pickling."""
    ch_mod = types.ModuleType("chumpy.ch")
    pkg = types.ModuleType("chumpy")

    class Ch:  # mimics chumpy.ch.Ch's pickled form: class reference + state dict with 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    pkg.ch = ch_mod
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, ch_mod
    try:
        data = {k: (Ch(v) if k in chumpy_keys else v) for k, v in arrays.items()}
        path.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod
    return path
