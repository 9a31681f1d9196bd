"""Importers for tracking that users already have.

GaussianAvatars / VHAP export folder ("NeRF-style" export)::

    transforms.json           {"frames": [{"file_path", "fg_mask_path"?, "flame_param_path",
                               "transform_matrix" (camera-to-world, OpenGL axes), "fl_x", "fl_y",
                               "cx", "cy", "w", "h", "timestep_index", "camera_index"}, ...]}
                              (intrinsics may also sit at the top level)
    images/..., fg_masks/..., flame_param/00000.npz  with translation [1,3], rotation [1,3],
                              neck_pose [1,3], jaw_pose [1,3], eyes_pose [1,6], shape [S],
                              expr [1,E] (static_offset, if present, is not used)

:func:`import_vhap` writes the frames of one camera as a dynavatar dataset (square, padded, not
cropped, so nothing is lost) plus its tracking, so ``Avatar.from_dataset`` trains on it directly.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DynavatarError
from ..flame import FlameParams
from ..perceive.dataset import DATASET_FORMAT, FrameDataset
from ..geometry.cameras import Cameras
from .result import TrackingResult

__all__ = ["import_vhap", "read_vhap_params", "opengl_c2w_to_viewmat"]

logger = logging.getLogger("dynavatar.track")

_ALIASES = {"rotation": ("rotation", "global_pose", "root_pose"), "neck": ("neck_pose", "neck"),
            "jaw": ("jaw_pose", "jaw"), "eyes": ("eyes_pose", "eyes"), "translation": ("translation", "transl"),
            "shape": ("shape", "betas"), "expr": ("expr", "expression")}


def opengl_c2w_to_viewmat(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenGL axes (y up, z back) -> OpenCV world-to-camera.  [4,4] -> [4,4]"""
    c2w = np.asarray(c2w, dtype=np.float64).copy()
    c2w[:3, 1:3] *= -1.0
    return np.linalg.inv(c2w)


def read_vhap_params(path: Path) -> dict[str, np.ndarray]:
    """One per-frame FLAME parameter file, by our field names (row vectors)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise DynavatarError(f"cannot read FLAME parameters {path} ({exc})") from exc
    out = {}
    for ours, names in _ALIASES.items():
        key = next((n for n in names if n in raw), None)
        if key is None:
            if ours in ("neck", "eyes"):
                out[ours] = np.zeros((1, 6 if ours == "eyes" else 3))
                continue
            raise DynavatarError(f"{path}: no '{names[0]}' (expected keys like {list(_ALIASES)})")
        out[ours] = np.asarray(raw[key], dtype=np.float32).reshape(1, -1)
    if "static_offset" in raw and np.abs(raw["static_offset"]).max() > 1e-6:
        logger.warning("%s: static_offset is not used by dynavatar (the mesh is FLAME's own)", path.name)
    return out


def import_vhap(src: str | os.PathLike, out_dir: str | os.PathLike, camera: int | None = None,
                resolution: int = 512) -> tuple[FrameDataset, TrackingResult]:
    """Convert a GaussianAvatars/VHAP export folder (one camera) into a dataset + tracking."""
    import cv2
    import imageio.v3 as iio

    src, out = Path(src), Path(out_dir)
    tf = src / "transforms.json"
    if not tf.is_file():
        raise DynavatarError(f"{src} has no transforms.json; is it a GaussianAvatars/VHAP export folder?")
    meta = json.loads(tf.read_text())
    frames = meta.get("frames") or []
    if not frames:
        raise DynavatarError(f"{tf} lists no frames")
    cams = sorted({int(f.get("camera_index", 0)) for f in frames})
    camera = cams[0] if camera is None else camera
    frames = sorted((f for f in frames if int(f.get("camera_index", 0)) == camera),
                    key=lambda f: int(f.get("timestep_index", 0)))
    if not frames:
        raise DynavatarError(f"camera {camera} not in {tf} (cameras: {cams})")
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "mattes").mkdir(exist_ok=True)
    params, viewmats, Ks, crops = [], [], [], []
    for k, f in enumerate(frames):
        get = lambda key: f.get(key, meta.get(key))  # noqa: E731
        img = np.asarray(iio.imread(src / f["file_path"]))[..., :3]
        h, w = img.shape[:2]
        side = max(h, w)
        px, py = (side - w) // 2, (side - h) // 2
        square = np.zeros((side, side, 3), np.uint8)
        square[py:py + h, px:px + w] = img
        mask = np.zeros((side, side), np.uint8)
        if f.get("fg_mask_path") and (src / f["fg_mask_path"]).is_file():
            m = np.asarray(iio.imread(src / f["fg_mask_path"]))
            mask[py:py + h, px:px + w] = m[..., 0] if m.ndim == 3 else m
        else:
            mask[py:py + h, px:px + w] = 255
        s = resolution / side
        iio.imwrite(out / "frames" / f"{k:06d}.jpg", cv2.resize(square, (resolution, resolution), interpolation=cv2.INTER_AREA), quality=95)
        iio.imwrite(out / "mattes" / f"{k:06d}.png", cv2.resize(mask, (resolution, resolution), interpolation=cv2.INTER_AREA))
        fx, fy, cx, cy = (float(get(key)) for key in ("fl_x", "fl_y", "cx", "cy"))
        Ks.append([[fx * s, 0, (cx + px) * s], [0, fy * s, (cy + py) * s], [0, 0, 1]])
        viewmats.append(opengl_c2w_to_viewmat(np.asarray(f["transform_matrix"])))
        crops.append([-px, -py, side])
        params.append(read_vhap_params(src / f["flame_param_path"]))
    n = len(frames)
    p = FlameParams(**{key: torch.from_numpy(np.concatenate([q[key] for q in params])) for key in _ALIASES})
    cameras = Cameras(torch.tensor(np.array(viewmats), dtype=torch.float32), torch.tensor(Ks, dtype=torch.float32),
                      resolution, resolution)
    idx = np.array([int(f.get("timestep_index", i)) for i, f in enumerate(frames)], dtype=np.int64)
    crop = np.array(crops, dtype=np.float64)
    np.savez_compressed(out / "landmarks.npz", frame_index=idx, detected=np.ones(n, bool), n_faces=np.ones(n, np.int64),
                        lmk_crop=np.zeros((n, 0, 3), np.float32), lmk_orig=np.zeros((n, 0, 2), np.float32), crop=crop)
    (out / "meta.json").write_text(json.dumps({
        "format": DATASET_FORMAT, "source": {"path": str(src.resolve()), "importer": "vhap", "camera": camera},
        "settings": {}, "resolution": resolution, "fps": float(meta.get("fps", 25.0)), "n_frames": n,
        "original_size": [int(frames[0].get("w", meta.get("w", 0))), int(frames[0].get("h", meta.get("h", 0)))],
        "landmarks": None, "n_landmarks": 0, "matte": "imported", "missing_frames": []}, indent=1))
    result = TrackingResult(params=p, cameras=cameras, frame_index=idx, crop=crop, detected=np.ones(n, bool),
                            landmarks_2d=np.zeros((n, 0, 2), np.float32), lmk_error=np.full(n, np.nan),
                            head={"source": "imported from VHAP/GaussianAvatars (needs the FLAME file it was tracked with)",
                                  "n_shape": int(p.shape.shape[1]), "n_expr": int(p.expr.shape[1])})
    result.save(out / "tracking")
    return FrameDataset.load(out), result
