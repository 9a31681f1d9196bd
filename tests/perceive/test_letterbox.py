"""Black bars baked into a video are found, and a dark top or a black wall is not taken for one."""

import numpy as np

from dynavatar.perceive.letterbox import LetterboxMeter


def _clip(n=5, h=40, w=30, bottom=6, left=3, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        f = rng.integers(20, 230, (h, w, 3), dtype=np.uint8)
        f[h - bottom:] = rng.integers(0, 4, (bottom, w, 3))  # codec noise on black
        f[:, :left] = 0
        frames.append(f)
    return frames


def test_bars_are_the_edge_rows_and_columns_dark_in_every_frame():
    meter = LetterboxMeter()
    for f in _clip():
        meter.add(f)
    assert meter.bars() == (0, 6, 3, 0)


def test_a_dark_top_that_is_not_black_everywhere_is_no_bar():
    """A dark top at the bottom: dark on average, but one frame (or one pixel of its texture) is brighter
    than a bar can be, so it keeps its rows."""
    frames = _clip(bottom=0, left=0)
    for f in frames:
        f[-8:] = 6
    frames[2][-8:, 10] = 40  # a fold of the top catching light in one frame
    meter = LetterboxMeter()
    for f in frames:
        meter.add(f)
    assert meter.bars() == (0, 0, 0, 0)


def test_no_frames_or_an_all_black_clip_has_no_bars():
    assert LetterboxMeter().bars() == (0, 0, 0, 0)
    meter = LetterboxMeter()
    meter.add(np.zeros((8, 8, 3), np.uint8))
    assert meter.bars() == (0, 0, 0, 0)
