"""``TrackingResult``: per-frame FLAME parameters and cameras of a clip, saved without pickle."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch


from ..errors import DynavatarError
from ..flame import FlameParams
from ..io.atomic import atomic_path
from ..io.output_dir import mark_output_dir
from ..geometry.cameras import Cameras

__all__ = ["TrackingResult", "TRACKING_FORMAT"]

TRACKING_FORMAT = "dynavatar-tracking/1"


@dataclasses.dataclass
class TrackingResult:
    params: FlameParams  # [N] per frame (shape repeated: it is shared by the clip)
    cameras: Cameras  # [N] crop cameras (pixels of the square crop)
    frame_index: np.ndarray  # [N] source video frame of each entry
    crop: np.ndarray  # [N, 3] crop window (x0, y0, side) in original-frame pixels
    detected: np.ndarray  # [N] bool: a face was detected (else the frame was interpolated)
    landmarks_2d: np.ndarray  # [N, L, 2] fitted landmarks projected into the crop, pixels
    lmk_error: np.ndarray  # [N] mean landmark error / inter-ocular distance (NaN where not detected)
    head: dict  # which head model: {"source": ..., "n_shape": ..., "n_expr": ...}
    timings: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_index)

    @property
    def resolution(self) -> int:
        return int(self.cameras.width)

    def project_landmarks(self, frame: int) -> np.ndarray:
        """Fitted landmarks of entry ``frame`` in ORIGINAL video pixels, [L, 2] (pixel-edge convention)."""
        x0, y0, side = self.crop[frame]
        return self.landmarks_2d[frame] * (side / self.resolution) + np.array([x0, y0])

    def summary(self) -> dict:
        e = self.lmk_error[np.isfinite(self.lmk_error)]
        return {"frames": len(self), "detected": int(self.detected.sum()),
                "lmk_error_mean": float(e.mean()) if e.size else None,
                "lmk_error_max": float(e.max()) if e.size else None, **self.timings}

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``tracking.safetensors`` + ``tracking.json`` into folder ``path`` (atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"params.{k}": v.detach().cpu().contiguous() for k, v in self.params.fields()}
        tensors.update({
            "cameras.viewmats": self.cameras.viewmats.detach().cpu().contiguous(),
            "cameras.Ks": self.cameras.Ks.detach().cpu().contiguous(),
            "frame_index": torch.from_numpy(np.ascontiguousarray(self.frame_index, dtype=np.int64)),
            "crop": torch.from_numpy(np.ascontiguousarray(self.crop, dtype=np.float64)),
            "detected": torch.from_numpy(np.ascontiguousarray(self.detected, dtype=np.bool_)),
            "landmarks_2d": torch.from_numpy(np.ascontiguousarray(self.landmarks_2d, dtype=np.float32)),
            "lmk_error": torch.from_numpy(np.ascontiguousarray(self.lmk_error, dtype=np.float64)),
        })
        meta = {"format": TRACKING_FORMAT, "width": self.cameras.width, "height": self.cameras.height,
                "head": self.head, "timings": self.timings, "summary": self.summary()}
        for name, write in (("tracking.safetensors", lambda p: save_file(tensors, str(p))),
                            ("tracking.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1)))):
            with atomic_path(path / name) as tmp:
                write(tmp)
        mark_output_dir(path, "tracking")  # the folder is dynavatar's: a later run may replace it
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrackingResult":
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "tracking.json").read_text())
            t = load_file(str(path / "tracking.safetensors"))
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            raise DynavatarError(f"{path} holds no readable tracking result ({exc}); run `dynavatar track` again") from exc
        if meta.get("format") != TRACKING_FORMAT:
            raise DynavatarError(f"{path}: unknown tracking format {meta.get('format')!r}")
        params = FlameParams.from_dict(t, prefix="params.")
        cams = Cameras(t["cameras.viewmats"], t["cameras.Ks"], int(meta["width"]), int(meta["height"]))
        return cls(params=params, cameras=cams, frame_index=t["frame_index"].numpy(), crop=t["crop"].numpy(),
                   detected=t["detected"].numpy(), landmarks_2d=t["landmarks_2d"].numpy(),
                   lmk_error=t["lmk_error"].numpy(), head=meta["head"], timings=meta.get("timings", {}))


