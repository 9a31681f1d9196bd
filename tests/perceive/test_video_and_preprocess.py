"""Preprocessing: video reading, bad input, face following, crops, cache."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pytest

from dynavatar.errors import NoFaceError, VideoError
from dynavatar.perceive import preprocess, probe_video
from dynavatar.perceive.crop import crop_image, plan_crops, smooth_series, to_crop, to_original
from dynavatar.perceive.video import iter_frames


def _write_video(path, frames, fps=25, pix_fmt_in="rgb24"):
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, pix_fmt_in=pix_fmt_in, macro_block_size=1,
                                         output_params=["-crf", "12"])
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


def _noise(n, h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_missing_empty_and_corrupt_videos(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError, match="cannot read"):
        probe_video(tmp_path / "junk.mp4")
    good = _write_video(tmp_path / "good.mp4", _noise(10))
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[:300])
    with pytest.raises(VideoError):
        list(iter_frames(tmp_path / "cut.mp4"))
    (tmp_path / "no_images").mkdir()
    with pytest.raises(VideoError, match="without images"):
        probe_video(tmp_path / "no_images")


def test_frames_indices_stride_fps(tmp_path):
    frames = [np.full((64, 80, 3), i * 10, np.uint8) for i in range(20)]
    v = _write_video(tmp_path / "v.mp4", frames, fps=20)
    info = probe_video(v)
    assert (info.width, info.height, info.fps, info.n_frames) == (80, 64, 20.0, 20)
    got = list(iter_frames(v))
    assert [i for i, _ in got] == list(range(20))
    assert abs(int(got[7][1].mean()) - 70) <= 3  # frame i really is the i-th frame
    assert [i for i, _ in iter_frames(v, stride=3)] == list(range(0, 20, 3))
    assert [i for i, _ in iter_frames(v, fps=5)] == [0, 4, 8, 12, 16]
    assert len(list(iter_frames(v, max_frames=4))) == 4


def test_grayscale_video_and_image_folder(tmp_path):
    gray = [np.full((48, 64), 100 + i, np.uint8) for i in range(5)]
    v = _write_video(tmp_path / "g.mp4", gray, pix_fmt_in="gray")
    _, f = next(iter_frames(v))
    assert f.shape == (48, 64, 3) and f.dtype == np.uint8
    import imageio.v3 as iio

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"{i:03d}.png", np.full((32, 40), 50 * i, np.uint8))
    out = list(iter_frames(folder))
    assert [i for i, _ in out] == [0, 1, 2] and out[2][1].shape == (32, 40, 3)


def test_rotation_metadata_is_honoured(tmp_path):
    import subprocess

    frames = [np.zeros((40, 80, 3), np.uint8) for _ in range(3)]
    for f in frames:
        f[:, :40] = 255  # left half white
    src = _write_video(tmp_path / "src.mp4", frames)
    rotated = tmp_path / "rot.mp4"
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    r = subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-display_rotation", "90", "-i", str(src), "-c", "copy",
                        str(rotated)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"this ffmpeg cannot write rotation metadata: {r.stderr[-200:]!r}")
    info = probe_video(rotated)
    assert (info.width, info.height) == (40, 80)
    _, f = next(iter_frames(rotated))
    assert f.shape == (80, 40, 3)


def test_no_face_anywhere(tmp_path):
    v = _write_video(tmp_path / "noise.mp4", _noise(6, 128, 128))
    with pytest.raises(NoFaceError, match="no usable face in any of the 6 frames"):
        preprocess(v, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_crop_maths_round_trip_and_smoothing():
    rng = np.random.default_rng(0)
    window = np.array([12.5, -7.0, 210.0])
    pts = rng.uniform(0, 300, (50, 2))
    np.testing.assert_allclose(to_original(to_crop(pts, window, 256), window, 256), pts)
    # A checkerboard-free test of crop_image: a single bright pixel lands where to_crop says.
    img = np.zeros((300, 300, 3), np.uint8)
    img[100, 150] = 255
    c = crop_image(img, np.array([50.0, 40.0, 150.0]), 150)  # scale 1: pure shift
    assert np.unravel_index(c[..., 0].argmax(), c.shape[:2]) == (60, 100)
    noisy = np.cumsum(rng.normal(size=(200, 2)), 0) + rng.normal(scale=5, size=(200, 2))
    smooth = smooth_series(noisy, sigma=4)
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.5 * np.abs(np.diff(noisy, axis=0)).mean()
    boxes = np.tile([100.0, 100.0, 200.0, 220.0], (10, 1))
    valid = np.ones(10, bool)
    valid[3:6] = False
    boxes[3:6] = 0  # garbage where no face: must be interpolated, not used
    w = plan_crops(boxes, valid, fps=25)
    assert np.allclose(w[:, 2], w[0, 2]) and np.allclose(w[:, :2], w[0, :2])


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory):
    from conftest import REAL_DATA

    path = REAL_DATA / "wojtek_512.mp4"
    if not path.is_file():
        pytest.skip("real shared data not available")
    frames = [f for _, f in iter_frames(path, max_frames=12)]
    return tmp_path_factory.mktemp("clip"), frames


def test_real_clip_with_faceless_frames_and_cache(real_clip):
    tmp, frames = real_clip
    frames = [f.copy() for f in frames]
    frames[4][:] = 30  # no face in frames 4 and 5
    frames[5][:] = 30
    v = _write_video(tmp / "gap.mp4", frames)
    ds = preprocess(v, tmp / "out", progress=False)
    assert len(ds) == 12 and ds.missing_frames == [4, 5]
    assert ds.detected.sum() == 10 and ds.lmk_crop.shape == (12, 478, 3)
    # Landmarks map back to the original frame: the nose tip (index 1) lies inside the face.
    nose = ds.lmk_orig[0, 1]
    assert 150 < nose[0] < 350 and 150 < nose[1] < 400
    np.testing.assert_allclose(ds.to_original(0, ds.lmk_crop[0, :, :2]), ds.lmk_orig[0], atol=1e-3)
    assert ds.image(0).shape == (512, 512, 3) and 0.2 < ds.matte(0).mean() < 0.9
    meta = json.loads((tmp / "out" / "meta.json").read_text())
    assert meta["missing_frames"] == [4, 5]
    # Cached: a second call loads without recomputing (a detector that would fail is never used).
    class Boom:
        name = "boom"

        def detect(self, image):
            raise AssertionError("recomputed instead of using the cache")

    again = preprocess(v, tmp / "out", detector=Boom(), progress=False)
    assert len(again) == 12


def test_several_faces_follow_the_largest(real_clip):
    import cv2

    tmp, frames = real_clip
    pair = []
    for f in frames[:6]:
        canvas = np.full((512, 900, 3), 200, np.uint8)
        canvas[:, :512] = f
        canvas[156:356, 650:850] = cv2.resize(f, (200, 200))  # a second, smaller person
        pair.append(canvas)
    v = _write_video(tmp / "two.mp4", pair)
    ds = preprocess(v, tmp / "two", progress=False)
    assert ds.n_faces.max() >= 1
    assert (ds.lmk_orig[:, 1, 0] < 512).all(), "followed the wrong (smaller) face"


def test_parallel_parsing_matches_serial_and_shares_the_cache(tmp_path):
    """Crops are parsed in worker processes (spawned) when the clip is long enough; the label maps
    must be the serial ones, and the worker count is not part of the cache key."""
    from conftest import REAL_DATA

    from dynavatar.perceive import PreprocessConfig

    path = REAL_DATA / "wojtek_512.mp4"
    if not path.is_file():
        pytest.skip("real shared data not available")
    runs = {}
    for workers in (1, 2):
        cfg = PreprocessConfig(resolution=192, max_frames=36, workers=workers)
        ds = preprocess(path, tmp_path / f"w{workers}", config=cfg, progress=False)
        runs[workers] = np.stack([ds.parsing(k) for k in range(len(ds))])
    assert runs[1].shape == (36, 192, 192) and len(np.unique(runs[1])) > 5
    np.testing.assert_array_equal(runs[1], runs[2])

    class Boom:
        name = "boom"

        def detect(self, image):
            raise AssertionError("recomputed instead of using the cache")

    cfg = PreprocessConfig(resolution=192, max_frames=36, workers=3)
    assert len(preprocess(path, tmp_path / "w1", config=cfg, detector=Boom(), progress=False)) == 36


def test_keep_person_clears_foreground_not_connected_to_the_face():
    """A bottle on a shelf that the segmenter took for the person goes, with its soft edge, and so
    does a faint blob that never reaches 0.5; the person (the region holding the landmarks) and its
    own soft edge stay untouched."""
    from dynavatar.perceive.matting import keep_person

    alpha = np.zeros((40, 40), np.float32)
    alpha[5:40, 8:24] = 1.0  # head and body, down to the bottom edge
    alpha[5:40, 24:26] = 0.3  # the person's soft edge (hair)
    alpha[10:20, 33:37] = 1.0  # the bottle, apart from the person
    alpha[10:20, 32] = 0.4  # its soft edge
    alpha[30:36, 0:3] = 0.3  # a faint blob at the far left
    points = np.array([[12.5, 10.5], [18.5, 14.5], [15.0, 20.0]])  # landmarks on the face (pixel edges)
    out = keep_person(alpha, points, margin=3)
    assert out[10:20, 32:37].max() == 0.0 and out[30:36, 0:3].max() == 0.0  # bottle, its edge, the faint blob
    np.testing.assert_array_equal(out[:, 5:29], alpha[:, 5:29])  # the person exactly as it was
    assert out.sum() == alpha[:, 5:29].sum()
    assert keep_person(alpha, points[:0]) is alpha  # no landmarks: nothing to decide from
    assert keep_person(alpha, np.array([[2.0, 2.0]])) is alpha  # landmarks off the matte: left as it is
    one = np.zeros_like(alpha)
    one[5:40, 8:24] = 1.0
    assert keep_person(one, points) is one  # nothing away from the person
    bridged = alpha.copy()
    bridged[15:17, 24:33] = 1.0  # a 2-px shelf edge joins the bottle to the person
    out = keep_person(bridged, points, margin=3)
    assert out[10:20, 33:37].max() == 0.0 and out[15:17, 30:33].max() == 0.0  # the bridge no longer holds it
    np.testing.assert_array_equal(out[:, 5:24], alpha[:, 5:24])


def test_black_bars_in_the_video_are_no_picture(real_clip):
    """A clip padded with black bars (48 rows below, 24 columns left): the bars are found, the matte is
    0 on them, and the frame ends where the bottom bar starts (the torso rule's frame edge)."""
    from dynavatar.reconstruct.data import _frame_bottom

    tmp, frames = real_clip
    padded = []
    for f in frames[:6]:
        canvas = np.zeros((512 + 48, 512 + 24, 3), np.uint8)
        canvas[:512, 24:] = f
        padded.append(canvas)
    v = _write_video(tmp / "bars.mp4", padded)
    ds = preprocess(v, tmp / "bars", progress=False)
    top, bottom, left, right = ds.meta["letterbox"]
    assert (top, right) == (0, 0) and 46 <= bottom <= 48 and 22 <= left <= 24  # the codec blurs an edge by a pixel
    for k in range(len(ds)):
        x0, y0, side = ds.crop[k]
        row = int(np.ceil((512 - y0) * 512 / side)) + 1  # the first crop row on the bar (+1: resampling)
        if row < 512:
            assert ds.matte(k)[row:].max() < 0.02, k
    rows = _frame_bottom(ds, 512).numpy()
    expected = np.floor((512 + 48 - bottom - ds.crop[:, 1]) * 512 / ds.crop[:, 2]).clip(0, 512)
    np.testing.assert_array_equal(rows, expected)


def test_refine_matte_snaps_a_fat_outline_to_the_colour_edge():
    """A dark disc (hair) on a light wall, matted by a segmenter whose outline is 6 px too wide and soft:
    along the outline alpha follows the colours (the halo of wall goes), inside and far outside nothing
    changes; where person and wall have the same colour the segmenter's alpha stays; the padding past
    the frame keeps its alpha."""
    import cv2

    from dynavatar.perceive.matting import refine_matte

    h = w = 128
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - 64, xx - 64)
    truth = (dist < 30).astype(np.float32)
    image = np.where(truth[..., None] > 0, [30, 25, 20], [200, 205, 210]).astype(np.uint8)
    fat = cv2.GaussianBlur((dist < 36).astype(np.float32), (0, 0), 2.5)  # the segmenter's outline
    out = refine_matte(image, fat, radius=10)  # the window must span the soft band (1/32 of 512 px in use)
    ring = (dist > 26) & (dist < 40)
    assert np.abs(out - truth)[ring].mean() < 0.25 * np.abs(fat - truth)[ring].mean()
    assert np.array_equal(out[dist < 20], fat[dist < 20]) and np.array_equal(out[dist > 50], fat[dist > 50])
    same = np.full_like(image, 120)  # no contrast: nothing to estimate from
    assert np.array_equal(refine_matte(same, fat, radius=10), fat)
    inside = np.ones((h, w), bool)
    inside[:, 96:] = False  # the crop runs past the video frame on the right
    padded = refine_matte(image, fat, inside, radius=10)
    assert np.array_equal(padded[:, 86:], fat[:, 86:])  # the padding and a window beside it


def test_refine_matte_fills_a_hole_over_dark_hair_far_from_the_wall():
    """The segmenter leaves a patch of alpha 0.5 deep inside dark hair (no wall within the window):
    the wall further off still tells hair from wall, so the patch becomes person; a patch of wall
    colour enclosed by the hair at the same alpha becomes background."""
    from dynavatar.perceive.matting import refine_matte

    h = w = 160
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - 80, xx - 80)
    alpha = (dist < 70).astype(np.float32)
    image = np.where(alpha[..., None] > 0, [30, 25, 20], [200, 205, 210]).astype(np.uint8)
    hole = np.hypot(yy - 80, xx - 60) < 8  # 12+ px from the outline: beyond a 5 px window
    gap = np.hypot(yy - 80, xx - 100) < 8
    image[gap] = [200, 205, 210]  # wall seen through a gap in the hair
    alpha[hole | gap] = 0.5
    out = refine_matte(image, alpha, radius=5)
    assert out[hole].min() > 0.95
    assert out[gap].max() < 0.05
    assert np.array_equal(out[dist > 75], alpha[dist > 75])


def test_steady_matte_removes_one_frame_flicker_and_keeps_a_moving_edge_in_place():
    """A pixel the segmenter flips for one frame is put back; an outline that moves steadily (a head
    turning) stays exactly where each frame has it, with no lag; a lone frame keeps its matte."""
    from dynavatar.perceive.matting import steady_matte

    w = 40
    xx = np.arange(w, dtype=np.float32)[None].repeat(8, 0)
    edges = [np.clip(20 + 2 * t - xx, 0, 1) for t in range(3)]  # the edge moves 2 px a frame
    for t in range(1, 2):
        assert np.array_equal(steady_matte(edges[t - 1], edges[t], edges[t + 1]), edges[t])
    flick = edges[1].copy()
    flick[3, 10:14] = 0.2  # a ragged notch in one frame only
    flick[5, 26:30] = 0.9  # a blob of wall matted in for one frame
    out = steady_matte(edges[0], flick, edges[2])
    assert np.array_equal(out, edges[1])
    assert np.array_equal(steady_matte(flick, flick, flick), flick)


def test_refine_matte_leaves_a_wide_unsure_outline_whose_wall_is_known_only_from_afar():
    """Dark hair on a dark grey wall, a bright window further off, and an unsure band along the
    outline wider than the window (d14's bun). The background colour within reach is only the far
    one, and using it there snapped the band to a ragged edge that changed from frame to frame
    (held-out PSNR -1.3 dB on the H100): the band keeps the segmenter's alpha."""
    from dynavatar.perceive.matting import refine_matte

    h = w = 160
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - 80, xx - 80)
    image = np.where((dist < 55)[..., None], [30, 25, 20], [70, 70, 72]).astype(np.uint8)
    image[dist > 72] = [230, 232, 235]  # the window, 4x the window's radius off
    alpha = np.where(dist < 45, 1.0, np.where(dist < 62, 0.5, 0.0)).astype(np.float32)  # 17 px unsure
    out = refine_matte(image, alpha, radius=5)
    band = (dist > 50) & (dist < 57)  # band pixels with no confident wall within 5 px
    assert np.array_equal(out[band], alpha[band])
    # The low-contrast option takes a wall's colour from afar only where the wall is flat that far:
    # no hair is cut, and the band moves only towards the truth (hair inside 55 px, wall outside).
    low = refine_matte(image, alpha, radius=5, low_contrast=True)
    truth = (dist < 55).astype(np.float32)
    assert (low >= alpha - 1e-5)[dist < 55].all()
    assert (np.abs(low - truth) <= np.abs(alpha - truth) + 1e-6)[band].all()


def _dark_hair_on_a_dark_wall(rng, wall=(40, 46, 32), wall_noise=2.0):
    """Dark hair (a disc of radius 60) on a flat dark wall; the segmenter's outline is confident 8 px
    outside the hair (a rim of wall matted in as person) and then soft for 10 px more.
    -> image uint8 [H, W, 3], the segmenter's alpha, the true alpha, distance to the centre"""
    import cv2

    h = w = 256
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - 128, xx - 128)
    truth = (dist < 60).astype(np.float32)
    colour = np.where(truth[..., None] > 0, np.array([18, 17, 14.0]), np.array(wall, float))
    image = np.clip(colour + rng.normal(0, wall_noise, colour.shape), 0, 255).astype(np.uint8)
    seg = np.clip((78 - dist) / 10, 0, 1).astype(np.float32)  # 1 to 68 px, soft to 78 px
    seg = cv2.GaussianBlur(seg, (0, 0), 1.0)
    return image, seg, truth, dist


def test_refine_matte_low_contrast_takes_a_flat_dark_wall_off_dark_hair():
    """Hair and wall differ by about 0.13 (under ``min_contrast``) but vary by 0.01: by default the
    segmenter's rim of wall stays person; with ``low_contrast`` the rim follows the colours (d14's
    bun), and the hair itself keeps alpha 1."""
    from dynavatar.perceive.matting import refine_matte

    image, seg, truth, dist = _dark_hair_on_a_dark_wall(np.random.default_rng(0))
    assert np.array_equal(refine_matte(image, seg, radius=8), seg)  # too little contrast by default
    out = refine_matte(image, seg, radius=8, low_contrast=True)
    rim = (dist > 60) & (dist < 65)  # wall the segmenter was sure of
    band = (dist > 65) & (dist < 78)  # the rim's edge and the wall it was unsure of
    assert seg[rim].min() > 0.95 and out[rim].mean() < 0.3
    assert out[band].mean() < seg[band].mean()
    assert out[dist < 56].min() > 0.95  # the hair
    assert np.array_equal(out[dist > 90], seg[dist > 90])


def test_refine_matte_low_contrast_leaves_hair_on_a_busy_or_similar_wall():
    """No rim is cut where the wall is busy (a flag's stars: its spread is as large as its contrast
    to the hair) nor where the wall is the hair's colour."""
    from dynavatar.perceive.matting import refine_matte

    rng = np.random.default_rng(1)
    image, seg, truth, dist = _dark_hair_on_a_dark_wall(rng, wall=(40, 46, 32), wall_noise=30.0)
    out = refine_matte(image, seg, radius=8, low_contrast=True)
    inner = dist < 66
    assert np.abs(out - seg)[inner].mean() < 0.02
    same, seg2, _, dist2 = _dark_hair_on_a_dark_wall(rng, wall=(20, 18, 15), wall_noise=2.0)
    assert np.array_equal(refine_matte(same, seg2, radius=8, low_contrast=True), seg2)
