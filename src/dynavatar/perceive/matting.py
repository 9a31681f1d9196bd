"""Foreground mattes behind one protocol; default: mediapipe selfie segmentation (offline)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError
from .quiet import quiet_native_logs, settle_graph

__all__ = ["Matter", "MediapipeSelfieMatte", "keep_person", "refine_matte"]


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


def keep_person(alpha: np.ndarray, points: np.ndarray, margin: int | None = None) -> np.ndarray:
    """``alpha`` without the foreground that is not part of the person whose face ``points`` mark.

    Selfie segmentation marks some background objects as person, solid or faintly (a bottle on a
    shelf, plants in a busy room). Splats bound to a head cannot draw them, so they only add error
    and floaters; on the eight shared clips they are 3.5 % of the matte of the cluttered-room clip
    and 2.2 % of the busy-room landscape one, and 0.0-0.1 % of the others. The person is the
    connected regions (alpha > 0.5, 8-connected) holding any of the face's landmarks; alpha further
    than ``margin`` pixels from them (default 1/32 of the side: the soft edge of hair stays) is
    cleared. A hand held apart from the body goes too (no head avatar can draw it).
    alpha: float [H, W] in [0, 1]; points: [L, 2] landmarks in the same pixels (x, y). -> float [H, W]"""
    import cv2

    h, w = alpha.shape
    margin = max(3, round(min(h, w) / 32)) if margin is None else margin
    fg = (alpha > 0.5).astype(np.uint8)
    n, comp = cv2.connectedComponents(fg, connectivity=8)
    if n < 2 or len(points) == 0:  # no foreground, or nothing to tell the person by
        return alpha
    xy = np.floor(np.asarray(points, dtype=np.float64)[:, :2]).astype(np.int64)  # pixel edges -> indices
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    face = sorted(set(np.unique(comp[xy[inside, 1], xy[inside, 0]]).tolist()) - {0})
    if not face:  # no landmark on the foreground (a bad matte or detection): leave it as it is
        return alpha
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    near = cv2.dilate(np.isin(comp, face).astype(np.uint8), kernel).astype(bool)  # the person and its edge
    if near.all() or not alpha[~near].any():
        return alpha
    return np.where(near, alpha, 0.0).astype(alpha.dtype)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges normalised (cv2.boxFilter's reflected border, normalised)."""
    import cv2

    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def refine_matte(image: np.ndarray, alpha: np.ndarray, inside: np.ndarray | None = None, radius: int | None = None,
                 eps: float = 1e-4) -> np.ndarray:
    """``alpha`` snapped to the image's edges by a colour guided filter (He et al., "Guided Image
    Filtering"): within every window alpha is fitted as an affine function of the RGB colour, so a
    boundary that the segmenter drew a few pixels off (its 256 px input, upsampled) moves onto the
    colour edge, and hair strands against the wall get fractional alpha instead of a blurred band of
    wall. Pixels the segmenter left at 0 far from the person stay 0, so ``keep_person``'s clearing
    holds. Where the crop runs past the video frame (``inside`` False: black padding, no colour to
    follow) and within a window of it, alpha is left as it was: a dark top against black padding
    would otherwise fade out along the frame's edge. image: uint8 [H, W, 3]; alpha: float [H, W] in
    [0, 1]; inside: bool [H, W] or None (all inside); radius: window half-side (default 1/64 of the
    side); eps: regularisation (larger = smoother, closer to ``alpha``). -> float32 [H, W]"""
    import cv2

    h, w = alpha.shape
    r = max(2, round(min(h, w) / 64)) if radius is None else radius
    guide = image.astype(np.float32) / 255.0  # [H, W, 3]
    p = alpha.astype(np.float32)
    mean_i = _box(guide, r)  # [H, W, 3]
    mean_p = _box(p, r)  # [H, W]
    cov_ip = _box(guide * p[..., None], r) - mean_i * mean_p[..., None]  # [H, W, 3]
    sigma = np.empty((h, w, 3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            sigma[..., a, b] = sigma[..., b, a] = _box(guide[..., a] * guide[..., b], r) - mean_i[..., a] * mean_i[..., b]
    sigma += eps * np.eye(3, dtype=np.float32)
    coef = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]  # [H, W, 3]
    offset = mean_p - (coef * mean_i).sum(-1)
    q = (_box(coef, r) * guide).sum(-1) + _box(offset, r)
    q = np.clip(q, 0.0, 1.0)
    support = cv2.dilate((p > 0.02).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    q = np.where(support, q, 0.0)  # nothing grows where the segmenter saw no person at all
    if inside is not None and not inside.all():
        window = np.ones((4 * r + 1, 4 * r + 1), np.uint8)
        near_edge = cv2.dilate((~inside).astype(np.uint8), window).astype(bool)
        q = np.where(near_edge, p, q)
    return np.where(q < 0.02, 0.0, np.where(q > 0.98, 1.0, q)).astype(np.float32)
