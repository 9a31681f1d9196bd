"""The face-parser contract: the ``FaceParser`` protocol, the input checks every backend applies, and
what turns its probabilities into label maps and pictures.

A parser gives per-pixel probabilities over the project's fixed label set (``geometry.labels.LABEL_NAMES``):
``float32 [B, K, H, W]`` summing to 1 over K at every pixel.  ``parse_to_labels`` takes the argmax,
``colourise`` and ``overlay`` draw label maps for people to look at.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidParametersError
from ..geometry.labels import LABEL_COLOURS, LABEL_NAMES, NUM_LABELS
from ..geometry.landmark_sets import N_MESH_POINTS

__all__ = ["FaceParser", "check_images", "check_landmarks", "check_mattes", "detect_landmarks", "parse_to_labels",
           "colourise", "overlay"]

_L = {name: i for i, name in enumerate(LABEL_NAMES)}


@runtime_checkable
class FaceParser(Protocol):
    """Anything that turns RGB images into per-pixel label probabilities over ``LABEL_NAMES``."""

    name: str

    def parse(self, images: np.ndarray, landmarks: np.ndarray | None = None, *,
              mattes: np.ndarray | None = None) -> np.ndarray:
        """images: uint8 [B, H, W, 3]; landmarks: mediapipe 478 points in pixels [B, 478, 2|3] (x right,
        y down) or None; mattes: foreground alpha float [B, H, W] or None.
        Returns float32 probabilities [B, K, H, W] summing to 1 over K."""
        ...


def check_images(images: np.ndarray) -> np.ndarray:
    """A parser's ``images`` argument, checked: uint8 [B, H, W, 3]."""
    images = np.asarray(images)
    if images.ndim == 3:
        raise InvalidParametersError(f"images must be a batch uint8 [B, H, W, 3]; got {images.shape} "
                                     "(add a batch axis)")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidParametersError(f"images must be uint8 [B, H, W, 3]; got {images.dtype} {images.shape}")
    return images


def check_landmarks(landmarks: np.ndarray | None, batch: int) -> np.ndarray | None:
    """A parser's ``landmarks`` argument, checked: None or mediapipe's points float64 [B, 478, 2|3], finite."""
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[0] != batch or lm.shape[1] != N_MESH_POINTS or lm.shape[2] not in (2, 3):
        raise InvalidParametersError(
            f"landmarks must be mediapipe face-mesh points [B={batch}, {N_MESH_POINTS}, 2|3] in pixels; got "
            f"{lm.shape}. Other landmark sets (e.g. 68 points) are not enough: pass None to detect them.")
    if not np.isfinite(lm[..., :2]).all():
        raise InvalidParametersError("landmarks contain NaN or inf")
    return lm


def check_mattes(mattes: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A parser's ``mattes`` argument, checked: None or float32 [B, H, W] clipped to [0, 1]."""
    if mattes is None:
        return None
    m = np.asarray(mattes, dtype=np.float32)
    if m.shape != shape[:3]:
        raise InvalidParametersError(f"mattes must be float [B, H, W] = {shape[:3]}; got {m.shape}")
    return np.clip(m, 0.0, 1.0)


def detect_landmarks(detector, image: np.ndarray) -> np.ndarray | None:
    """The largest face's 478 points [478, 3] (x, y, relative depth) in ``image`` or None."""
    faces = detector.detect(image)
    if not faces:
        return None
    return max(faces, key=lambda f: f.size).points


def parse_to_labels(probs: np.ndarray) -> np.ndarray:
    """Probabilities [B, K, H, W] (or [K, H, W]) -> uint8 label indices [B, H, W] (or [H, W])."""
    probs = np.asarray(probs)
    if probs.ndim not in (3, 4) or probs.shape[-3] != NUM_LABELS:
        raise InvalidParametersError(f"probs must be [B, {NUM_LABELS}, H, W] or [{NUM_LABELS}, H, W]; "
                                     f"got {probs.shape}")
    return np.argmax(probs, axis=-3).astype(np.uint8)


def colourise(labels: np.ndarray) -> np.ndarray:
    """uint8 label indices [..., H, W] -> uint8 RGB [..., H, W, 3] with ``LABEL_COLOURS``."""
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) >= NUM_LABELS:
        raise InvalidParametersError(f"label index {int(labels.max())} is out of range (there are {NUM_LABELS} labels)")
    palette = np.asarray(LABEL_COLOURS, dtype=np.uint8)  # [K, 3]
    return palette[labels.astype(np.intp)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised ``labels`` [H, W] over ``image`` uint8 [H, W, 3]; background stays as is."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape[-2:] or image.ndim != 3:
        raise InvalidParametersError(f"image {image.shape} and labels {labels.shape} must share H, W")
    col = colourise(labels).astype(np.float32)
    a = np.where(labels[..., None] == _L["background"], 0.0, float(alpha))
    return np.clip(image.astype(np.float32) * (1 - a) + col * a, 0, 255).round().astype(np.uint8)
