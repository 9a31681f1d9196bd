"""Square head crops that do not jitter: one side length per clip, a smoothed centre per frame.

A crop maps original-frame pixels to crop pixels by ``crop = (orig - [x0, y0]) * res / side``;
with one side length for the whole clip, the crop camera's focal length is the same in every
frame and only its principal point moves, which is what the tracker wants.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interpolate_missing", "smooth_series", "plan_crops", "crop_image", "to_crop", "to_original"]


def interpolate_missing(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of rows where ``valid`` is False (edges hold the nearest).

    values: [N, ...]; valid: [N] bool (at least one True) -> [N, ...]
    """
    values = np.asarray(values, dtype=np.float64)
    idx = np.flatnonzero(valid)
    flat = values.reshape(len(values), -1)
    out = np.empty_like(flat)
    t = np.arange(len(values))
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(t, idx, flat[idx, c])
    return out.reshape(values.shape)


def smooth_series(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0 with reflected edges.  x: [N, D]"""
    if sigma <= 0 or len(x) < 3:
        return x.copy()
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((radius, radius), (0, 0)), mode="reflect" if len(x) > radius else "edge")
    return np.stack([np.convolve(pad[:, d], k, mode="valid") for d in range(x.shape[1])], 1)


def plan_crops(bboxes: np.ndarray, valid: np.ndarray, fps: float, scale: float = 1.9,
               smooth_seconds: float = 0.15, lift: float = 0.12) -> np.ndarray:
    """Crop windows for all frames.

    bboxes: [N, 4] landmark boxes (x0, y0, x1, y1); valid: [N] bool.
    ``scale`` times the clip's 90th-percentile face size gives the one side length; centres are
    the box centres lifted by ``lift`` x size (to include hair), interpolated where no face was
    found, and smoothed with a Gaussian of ``smooth_seconds``.
    Returns [N, 3] = (x0, y0, side) in the same pixels as ``bboxes``.
    """
    boxes = interpolate_missing(bboxes, valid)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side = float(np.percentile(sizes[valid], 90)) * scale
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    centre[:, 1] -= lift * sizes
    centre = smooth_series(centre, sigma=max(smooth_seconds * (fps or 25.0), 0.0))
    return np.concatenate([centre - side / 2, np.full((len(boxes), 1), side)], 1)


def crop_image(image: np.ndarray, window: np.ndarray, resolution: int, interpolation: int | None = None) -> np.ndarray:
    """Cut ``window`` = (x0, y0, side) out of ``image`` and resize to ``resolution``^2 (zeros outside)."""
    import cv2

    x0, y0, side = (float(v) for v in window)
    s = resolution / side
    # Points use the pixel-edge convention (pixel i spans [i, i+1], as mediapipe and gsplat do);
    # cv2 maps pixel centres, hence the half-pixel terms.
    m = np.array([[s, 0, (0.5 - x0) * s - 0.5], [0, s, (0.5 - y0) * s - 0.5]], dtype=np.float64)
    if interpolation is None:
        interpolation = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (resolution, resolution), flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def to_crop(points: np.ndarray, window: np.ndarray, resolution: int) -> np.ndarray:
    """Original-frame pixels [..., 2] -> crop pixels [..., 2]."""
    return (points - window[:2]) * (resolution / window[2])


def to_original(points: np.ndarray, window: np.ndarray, resolution: int) -> np.ndarray:
    """Crop pixels [..., 2] -> original-frame pixels [..., 2]."""
    return points * (window[2] / resolution) + window[:2]
