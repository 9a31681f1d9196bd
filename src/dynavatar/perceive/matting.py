"""Foreground mattes behind one protocol; default: mediapipe selfie segmentation (offline)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError

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
        try:
            from mediapipe.python.solutions import selfie_segmentation
        except ImportError as exc:  # pragma: no cover
            raise MissingDependencyError("mediapipe is needed for matting: pip install mediapipe==0.10.21") from exc
        self._seg = selfie_segmentation.SelfieSegmentation(model_selection=model_selection)

    def matte(self, image: np.ndarray) -> np.ndarray:
        res = self._seg.process(np.ascontiguousarray(image))
        if res.segmentation_mask is None:
            return np.zeros(image.shape[:2], dtype=np.float32)
        return np.clip(res.segmentation_mask, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        self._seg.close()
