"""Pictures of how rendered label masks agree with a parser's: one row per frame.

Columns: the frame; the parser's labels over it; the avatar's rendered labels over it; then, per
judged label group, the two masks compared on the darkened frame (green: both, red: only the
parser, blue: only the render) with the group's IoU written in the corner.
"""

from __future__ import annotations

import numpy as np

from ..geometry.labels import label_index
from .metrics import LABEL_GROUPS, group_iou

__all__ = ["comparison_tile", "label_comparison_row", "label_comparison_grid", "mask_route_tile"]

_BOTH, _PARSER_ONLY, _RENDER_ONLY = (40, 200, 60), (230, 40, 40), (50, 90, 255)


def comparison_tile(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Two bool masks [H, W] over a darkened uint8 image [H, W, 3] -> uint8 [H, W, 3]."""
    out = (np.asarray(image, dtype=np.float32) * 0.45).astype(np.uint8)
    out[truth & pred] = _BOTH
    out[truth & ~pred] = _PARSER_ONLY
    out[pred & ~truth] = _RENDER_ONLY
    return out


def _write(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    scale = max(tile.shape[0] / 512, 0.35)
    cv2.putText(tile, text, (4, int(22 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255),
                max(1, int(2 * scale)), cv2.LINE_AA)
    return tile


def label_comparison_row(image: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                         groups: tuple[str, ...] = ("skin", "hair", "lips")) -> np.ndarray:
    """image uint8 [H, W, 3], parser labels and rendered labels (label indices [H, W]) -> one row
    uint8 [H, (3 + len(groups)) W, 3]."""
    from ..perceive.parsing import overlay

    ious = group_iou(pred, truth, {g: LABEL_GROUPS[g] for g in groups})
    tiles = [np.array(image), _write(overlay(image, truth), "parser"), _write(overlay(image, pred), "render")]
    for g in groups:
        idx = [label_index(n) for n in LABEL_GROUPS[g]]
        tiles.append(_write(comparison_tile(image, np.isin(truth, idx), np.isin(pred, idx)), f"{g} IoU {ious[g]:.2f}"))
    return np.concatenate(tiles, 1)


def label_comparison_grid(avatar, frames, groups: tuple[str, ...] = ("skin", "hair", "lips"),
                          scale: float = 0.5) -> np.ndarray:
    """Rows of ``label_comparison_row`` for an avatar's frames (indices into its clip) that have a
    parsing, rendered labels decided per group (``group_argmax``). -> uint8 [rows H', W', 3]"""
    import cv2

    from .metrics import group_argmax

    frame_data = getattr(avatar, "frame_data", None)  # a loaded avatar reads its frames back here
    data = frame_data(required=False) if frame_data is not None else getattr(avatar, "data", None)
    if data is None or data.parsing is None:
        raise ValueError("the avatar has no parsed frames to compare with (fit it from a parsed clip)")
    rows = []
    for i in frames:
        image = data.images[i].cpu().numpy()
        truth = data.parsing[i].cpu().numpy()
        pred = group_argmax(avatar.render_masks(frame=i))
        row = label_comparison_row(image, truth, pred, groups)
        if scale != 1.0:
            row = cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rows.append(row)
    return np.concatenate(rows, 0)


def mask_route_tile(image: np.ndarray, exact: np.ndarray, learned: np.ndarray, caption: str,
                    size: int = 192) -> np.ndarray:
    """The learned mask against the exact route's (bool [H, W] each) over a render (uint8 [H, W, 3]),
    cropped to a square around them (a lip is a few pixels thick in the frame) and resized to
    ``size``: green both, red exact only, blue learned only. -> uint8 [size, size, 3]"""
    import cv2

    both = exact | learned
    H, W = both.shape
    if both.any():
        ys, xs = np.nonzero(both)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min(), 16) * 0.75
    else:
        cy, cx, half = H / 2, W / 2, max(H, W) / 2
    y0, x0 = int(max(0, cy - half)), int(max(0, cx - half))
    y1, x1 = int(min(H, cy + half)), int(min(W, cx + half))
    tile = comparison_tile(image, exact, learned)[y0:y1, x0:x1]
    tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_NEAREST)
    return _write(np.ascontiguousarray(tile), caption)
