"""Black bars baked into a video (letterbox / pillarbox): found once per clip, treated as no picture.

Some clips carry black rows or columns at their edges (a 16:9 film padded to a square, a phone
recording padded by an editor). The segmenter takes the bars next to a dark top for clothes, the
avatar learns a black slab under the shoulders, and the torso rule reads "the person reaches the
frame's edge" one bar too low. A bar is an edge row (column) that is dark in every pixel of every
frame, so a dark top or a black wall, which have texture and noise, is not one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LetterboxMeter", "DARK"]

#: The brightest value (0-255, any channel) a bar's pixel may take in any frame: codecs leave bars at
#: 0-4 (16 in limited-range video decoded without expanding it is out of scope: it is not black).
DARK = 10


class LetterboxMeter:
    """Feed it every frame (``add``), then read the bars (``bars``): the brightest value each row
    and column reached over the clip is all it keeps, so it costs two vectors."""

    def __init__(self) -> None:
        self.row_max: np.ndarray | None = None  # [H] uint8
        self.col_max: np.ndarray | None = None  # [W] uint8

    def add(self, frame: np.ndarray) -> None:
        """frame: uint8 [H, W, 3] (or [H, W])."""
        lum = frame.max(axis=2) if frame.ndim == 3 else frame
        rows, cols = lum.max(axis=1), lum.max(axis=0)
        if self.row_max is None or self.row_max.shape != rows.shape or self.col_max.shape != cols.shape:
            self.row_max, self.col_max = rows.copy(), cols.copy()
        else:
            np.maximum(self.row_max, rows, out=self.row_max)
            np.maximum(self.col_max, cols, out=self.col_max)

    def bars(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right): how many edge rows / columns were dark in every frame; all 0
        when nothing was fed, or when every row is dark (a black clip has no bars, only no picture)."""
        if self.row_max is None:
            return (0, 0, 0, 0)
        top, bottom = _run(self.row_max <= DARK), _run(self.row_max[::-1] <= DARK)
        left, right = _run(self.col_max <= DARK), _run(self.col_max[::-1] <= DARK)
        if top + bottom >= len(self.row_max) or left + right >= len(self.col_max):
            return (0, 0, 0, 0)
        return (top, bottom, left, right)


def _run(dark: np.ndarray) -> int:
    """Length of the leading run of True."""
    return int(np.argmin(dark)) if not dark.all() else len(dark)
