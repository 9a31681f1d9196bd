"""Synthetic FLAME-format files for tests (random, small, written the way the official ones are)."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import imageio.v3 as iio
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


def ellipsoid_head(n_lat: int = 24, n_lon: int = 32, n_shape: int = 20, n_expr: int = 20, n_lmk: int = 478,
                   seed: int = 0):
    """A small head-like FLAME-format model (FlameData) with a 'mediapipe' landmark embedding on its
    front, smooth blendshapes and a jaw: enough geometry for tracking tests without the default head."""
    from dynavatar.flame.file_format import FlameData

    rng = np.random.default_rng(seed)
    lat = np.linspace(0.15, np.pi - 0.15, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([0.075 * np.sin(la) * np.sin(lo), 0.11 * np.cos(la), 0.09 * np.sin(la) * np.cos(lo)], -1).reshape(-1, 3)
    faces = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, c, b], [b, c, d]]
    faces = np.array(faces, dtype=np.int64)
    n_v = len(v)
    # Smooth blendshapes: low-order polynomials of position, localised by random Gaussian bumps.
    def smooth_dirs(k, scale):
        d = np.zeros((n_v, 3, k))
        for i in range(k):
            centre = v[rng.integers(n_v)]
            bump = np.exp(-((v - centre) ** 2).sum(1) / (2 * 0.04**2))
            d[:, :, i] = bump[:, None] * rng.normal(size=3) * scale
        return d
    shapedirs = np.concatenate([smooth_dirs(n_shape, 0.004), smooth_dirs(n_expr, 0.003)], -1)
    jaw = (v[:, 1] < -0.03) & (v[:, 2] > 0)
    weights = np.zeros((n_v, 5))
    weights[:, 1] = 1.0
    weights[jaw, 1], weights[jaw, 2] = 0.3, 0.7
    weights[v[:, 1] < -0.09, :] = [1, 0, 0, 0, 0]
    jreg = np.zeros((5, n_v))
    for j, target in enumerate([(0, -0.12, 0), (0, -0.08, -0.01), (0, -0.02, 0.02), (0.03, 0.02, 0.06), (-0.03, 0.02, 0.06)]):
        near = np.argsort(((v - np.array(target)) ** 2).sum(1))[:4]
        jreg[j, near] = 0.25
    front = np.flatnonzero(np.mean(v[faces][:, :, 2], 1) > 0.03)
    lmk_faces = rng.choice(front, n_lmk, replace=True)
    bary = rng.dirichlet(np.ones(3), n_lmk)
    return FlameData(v_template=v, faces=faces, shapedirs=shapedirs, posedirs=np.zeros((n_v, 3, 36)),
                     J_regressor=jreg, weights=weights, parents=np.array([-1, 0, 1, 1, 1]), n_shape_total=n_shape,
                     n_expr_total=n_expr, landmarks={"mediapipe": (lmk_faces, bary)}, meta={"name": "ellipsoid-test"})


def vhap_export(root, n: int = 4, side: int = 40, focal: float = 70.0):
    """A GaussianAvatars/VHAP export (``track.importers.import_vhap``'s input) in ``root``: ``n``
    flat ``side``-pixel frames with the default head's component counts and a jaw opening by frame."""
    for d in ("images", "fg_masks", "flame_param"):
        (root / d).mkdir(parents=True)
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, 1.0]
    frames = []
    for t in range(n):
        iio.imwrite(root / f"images/{t:05d}_00.png", np.full((side, side, 3), 60 + 30 * t, np.uint8))
        iio.imwrite(root / f"fg_masks/{t:05d}_00.png", np.full((side, side), 255, np.uint8))
        np.savez(root / f"flame_param/{t:05d}.npz", translation=np.zeros((1, 3)), rotation=np.zeros((1, 3)),
                 neck_pose=np.zeros((1, 3)), jaw_pose=np.array([[0.05 * t, 0, 0]]), eyes_pose=np.zeros((1, 6)),
                 shape=np.zeros(65), expr=np.zeros((1, 55)))
        frames.append({"timestep_index": t, "camera_index": 0, "file_path": f"images/{t:05d}_00.png",
                       "fg_mask_path": f"fg_masks/{t:05d}_00.png", "flame_param_path": f"flame_param/{t:05d}.npz",
                       "transform_matrix": c2w.tolist()})
    (root / "transforms.json").write_text(json.dumps({"fl_x": focal, "fl_y": focal, "cx": side / 2, "cy": side / 2,
                                                      "w": side, "h": side, "frames": frames}))
    return root
