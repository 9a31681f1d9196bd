"""The gallery sheet of ``dynavatar bench edit -o DIR``: prompts x poses, before over after.

One row per prompt; one column per pose (held-out frames, then the turned heads); each cell the
render before the edit above the render after it, so a person can judge, prompt by prompt, what
looks real and what does not. Titles are drawn into the picture (no fonts needed: OpenCV's).
"""

from __future__ import annotations

import numpy as np

__all__ = ["gallery_sheet"]


def _text(img: np.ndarray, text: str, scale: float = 0.45) -> np.ndarray:
    import cv2

    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def gallery_sheet(rows: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]], titles: list[str],
                  cell: int = 192) -> np.ndarray:
    """rows: (prompt, [(before, after) uint8 [H, W, 3] per pose]); titles: one per pose.
    -> uint8 [rows * (2 cell + 20) + 20, poses * cell, 3]."""
    import cv2

    n = max(len(r[1]) for r in rows)
    head = np.full((20, n * cell, 3), 255, np.uint8)
    for j, t in enumerate(titles[:n]):
        head[:, j * cell:(j + 1) * cell] = _text(np.full((20, cell, 3), 60, np.uint8), t)
    out = [head]
    for prompt, pairs in rows:
        band = _text(np.full((20, n * cell, 3), 30, np.uint8), f"{prompt}  (top: before, bottom: after)")
        cells = np.full((2 * cell, n * cell, 3), 255, np.uint8)
        for j, (a, b) in enumerate(pairs):
            for k, img in enumerate((a, b)):
                cells[k * cell:(k + 1) * cell, j * cell:(j + 1) * cell] = cv2.resize(
                    np.ascontiguousarray(img), (cell, cell), interpolation=cv2.INTER_AREA)
        out += [band, cells]
    return np.concatenate(out, 0)
