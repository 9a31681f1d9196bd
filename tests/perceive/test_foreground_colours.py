"""``matting.foreground_colours``: the person's colour at the matte's soft edge, without the room's."""

import types

import numpy as np

from dynavatar.perceive.matting import foreground_colours


def _scene(person, wall, alpha):
    """image = alpha F + (1 - alpha) B, uint8; person/wall: float [H, W, 3] in [0, 1]."""
    a = alpha[..., None]
    return np.clip((a * person + (1 - a) * wall) * 255, 0, 255).round().astype(np.uint8)


def _on_white(colour_u8, alpha):
    a = alpha[..., None]
    return colour_u8.astype(np.float64) / 255 * a + (1 - a)


def _disc(h=128, soft=6.0):
    """alpha of a disc (radius 40) whose edge ramps over ``soft`` px: float [h, h]."""
    yy, xx = np.mgrid[:h, :h]
    return np.clip((40 + soft / 2 - np.hypot(yy - h / 2, xx - h / 2)) / soft, 0, 1).astype(np.float32)


def test_a_uniform_person_on_a_uniform_wall_comes_back_exactly():
    """Dark hair on a grey wall with a 6-px soft edge: every edge pixel gets the hair's colour back
    (to 8-bit rounding), so the composite over white has no grey in it; before, the edge pixel
    composited as alpha * image kept (1 - alpha) alpha of the wall."""
    alpha = _disc()
    hair, wall = np.array([0.1, 0.08, 0.07]), np.array([0.45, 0.47, 0.5])
    person, room = np.broadcast_to(hair, alpha.shape + (3,)), np.broadcast_to(wall, alpha.shape + (3,))
    image = _scene(person, room, alpha)
    out = foreground_colours(image, alpha, radius=8)
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() > 500
    assert np.abs(out[edge].astype(int) - np.round(hair * 255)).max() <= 2
    truth = _on_white((person * 255).round().astype(np.uint8), alpha)
    err_new = np.abs(_on_white(out, alpha) - truth)[edge].mean()
    err_old = np.abs(_on_white(image, alpha) - truth)[edge].mean()
    assert err_new < 0.05 * err_old


def test_textured_hair_and_wall_keep_most_of_the_gain_and_confident_pixels_stay():
    """Strands (stripes of two hair colours) over a wall with a gradient: the composite's error at
    the edge falls to a fraction of the old one; confident person and background pixels are
    untouched; a crop with no soft pixel comes back as it was."""
    h = 128
    alpha = _disc(h)
    yy, xx = np.mgrid[:h, :h]
    strands = np.where(((xx + yy) // 3) % 2 == 0, 0.08, 0.2)[..., None] * np.array([1.0, 0.9, 0.8])
    wall = (0.3 + 0.4 * xx / h)[..., None] * np.array([0.9, 1.0, 1.0])
    image = _scene(strands, wall, alpha)
    out = foreground_colours(image, alpha, radius=8)
    edge = (alpha > 0.05) & (alpha < 0.95)
    truth = _on_white((strands * 255).round().astype(np.uint8), alpha)
    err_new = np.abs(_on_white(out, alpha) - truth)[edge].mean()
    err_old = np.abs(_on_white(image, alpha) - truth)[edge].mean()
    assert err_new < 0.35 * err_old, (err_new, err_old)
    sure = (alpha >= 0.98) | (alpha <= 0.02)
    assert np.array_equal(out[sure], image[sure])
    hard = (alpha > 0.5).astype(np.float32)
    assert foreground_colours(image, hard) is image


def test_padding_past_the_video_frame_is_not_taken_for_the_wall():
    """The crop runs past the frame on the right: those pixels are black padding (alpha 0). With
    ``inside`` they are not background, so the edge's wall is the light wall on the left; without it,
    the black pulls the wall estimate down and the edge near the padding comes out lighter than the
    hair."""
    h = 128
    alpha = _disc(h)
    hair, wall = np.array([0.1, 0.08, 0.07]), np.array([0.8, 0.8, 0.82])
    person, room = np.broadcast_to(hair, alpha.shape + (3,)), np.broadcast_to(wall, alpha.shape + (3,))
    image = _scene(person, room, alpha)
    inside = np.ones((h, h), bool)
    inside[:, 106:] = False  # the padding starts 2 px past the disc's right edge
    image[~inside] = 0
    near = (alpha > 0.05) & (alpha < 0.95) & (np.arange(h)[None, :] > 96)  # the edge beside the padding
    with_inside = foreground_colours(image, alpha, inside, radius=8)
    without = foreground_colours(image, alpha, radius=8)
    err_in = np.abs(with_inside[near].astype(int) - np.round(hair * 255)).mean()
    err_out = np.abs(without[near].astype(int) - np.round(hair * 255)).mean()
    assert err_in <= 2 and err_out > 3 * err_in + 2, (err_in, err_out)


def test_picture_rows_and_columns_follow_the_crop_window_and_the_bars():
    """A 100x80 video with a 10-px black bar at the bottom; the crop window (x0, y0, side) =
    (60, 20, 80) at 8 training pixels (10 video px each): a pixel shows the picture when its
    footprint lies inside it, EDGE_MARGIN_PX (2) from its edges (x in [2, 98], y in [2, 68]);
    one that straddles an edge does not; a dataset without the video's size shows picture everywhere."""
    from dynavatar.reconstruct.data import _picture_rows_cols

    class OneCrop(types.SimpleNamespace):
        def __len__(self):
            return 1

    ds = OneCrop(meta={"original_size": [100, 80], "letterbox": [0, 10, 0, 0]}, crop=np.array([[60.0, 20.0, 80.0]]))
    rows, cols = _picture_rows_cols(ds, 8)
    assert rows.shape == cols.shape == (1, 8)
    assert cols[0].tolist() == [True] * 3 + [False] * 5  # x = 60-70, 70-80, 80-90 | 90-100 (the edge), 100-110 ...
    assert rows[0].tolist() == [True] * 4 + [False] * 4  # y = 20-30 ... 50-60 | 60-70 (next to the bar), 70-80 ...
    ds.crop = np.array([[55.0, 15.0, 80.0]])  # half a pixel further: x = 95-105 and y = 65-75 straddle the edges
    rows, cols = _picture_rows_cols(ds, 8)
    assert cols[0].tolist() == [True] * 4 + [False] * 4 and rows[0].tolist() == [True] * 5 + [False] * 3
    ds.meta = {}
    rows, cols = _picture_rows_cols(ds, 8)
    assert rows.all() and cols.all()
