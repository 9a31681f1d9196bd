"""Foreground mattes behind one protocol; default: mediapipe selfie segmentation (offline)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError
from .quiet import quiet_native_logs, settle_graph

__all__ = ["Matter", "MediapipeSelfieMatte"]


class Matter(Protocol):
    name: str

    def matte(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 [H, W, 3] -> foreground alpha float32 [H, W] in [0, 1]."""
        ...


class MediapipeSelfieMatte:
    """mediapipe selfie segmentation (general model, 256x256 input), run on the head crop."""

    name = "mediapipe-selfie"

    def __init__(self, model_selection: int = 0) -> None:
        with quiet_native_logs():  # mediapipe's native logs (glog/absl/TF-Lite) stay off the terminal
            try:
                from mediapipe.python.solutions import selfie_segmentation
            except ImportError as exc:  # pragma: no cover
                raise MissingDependencyError("mediapipe is needed for matting: pip install mediapipe==0.10.21") from exc
            self._seg = selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
            settle_graph(self._seg)  # its model loads (and logs) on the graph's threads: wait for it here

    def matte(self, image: np.ndarray) -> np.ndarray:
        with quiet_native_logs():  # the graph starts (and logs) on the first call
            res = self._seg.process(np.ascontiguousarray(image))
        if res.segmentation_mask is None:
            return np.zeros(image.shape[:2], dtype=np.float32)
        return np.clip(res.segmentation_mask, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        with quiet_native_logs():
            self._seg.close()
