"""Outputs that are checked before they are written, and verified after: videos (frames up front,
ffmpeg's failure, the encoded file's frame count), the .ply export (no NaN splats), and the reader's
warning for a truncated video."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dynavatar.errors import InvalidParametersError, OutputPathError, VideoError
from dynavatar.io.ply import PlySplats, read_ply, write_ply
from dynavatar.io.video import _count_frames, write_video
from dynavatar.perceive.video import iter_frames, probe_video


def _noise(n, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------- video
def test_write_video_round_trip_holds_every_frame(tmp_path):
    path = write_video(tmp_path / "v.mp4", _noise(7), fps=24000 / 1001)
    assert _count_frames(str(path)) == 7 and _names(tmp_path) == ["v.mp4"]
    info = probe_video(path)
    assert (info.width, info.height, info.n_frames) == (32, 32, 7)
    assert len(list(iter_frames(path))) == 7


@pytest.mark.parametrize("bad, match", [
    (np.zeros((32, 0, 3), np.uint8), "is 0x32 pixels"),
    (np.zeros((0, 0, 3), np.uint8), "is 0x0 pixels"),
    (np.zeros((32, 32), np.uint8), r"shape \(32, 32\); frames must be RGB"),
    (np.zeros((32, 32, 4), np.uint8), "frames must be RGB"),
    (np.full((32, 32, 3), 0.5, np.float32), "float32 with values 0.5..0.5; frames must be uint8"),
    (np.full((32, 32, 3), 300, np.int32), "frames must be uint8 0..255"),
])
def test_bad_first_frame_is_refused_before_anything_is_written(tmp_path, bad, match):
    with pytest.raises(InvalidParametersError, match=match):
        write_video(tmp_path / "out" / "v.mp4", [bad])
    assert not (tmp_path / "out" / "v.mp4").exists()
    assert not (tmp_path / "out").exists() or _names(tmp_path / "out") == []


def test_bad_later_frame_removes_the_half_written_video(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"the previous good video")
    frames = _noise(3) + [np.zeros((16, 32, 3), np.uint8)]
    with pytest.raises(InvalidParametersError, match="frame 3 is 32x16 but the first was 32x32"):
        write_video(tmp_path / "v.mp4", frames)
    assert (tmp_path / "v.mp4").read_bytes() == b"the previous good video"  # untouched, no temp left
    assert _names(tmp_path) == ["v.mp4"]


def test_no_frames_and_bad_settings(tmp_path):
    with pytest.raises(InvalidParametersError, match="no frames to write"):
        write_video(tmp_path / "v.mp4", [])
    for fps in (0, -5, float("nan"), float("inf")):
        with pytest.raises(InvalidParametersError, match="fps must be a positive number"):
            write_video(tmp_path / "v.mp4", _noise(2), fps=fps)
    for crf in (-1, 52, 18.5):
        with pytest.raises(InvalidParametersError, match="crf"):
            write_video(tmp_path / "v.mp4", _noise(2), crf=crf)
    assert _names(tmp_path) == []


def test_ffmpeg_failure_is_an_error_not_an_empty_file(tmp_path):
    """An extension ffmpeg has no muxer for: ffmpeg exits at once. imageio-ffmpeg reports it (a
    broken pipe) or not at all (returns from close); either way no file and no 'wrote ...'."""
    with pytest.raises(OutputPathError, match=r"cannot write .*v\.notavideo: ffmpeg failed"):
        write_video(tmp_path / "v.notavideo", _noise(3))
    assert _names(tmp_path) == []


# ---------------------------------------------------------------------------------------------- reader
def test_truncated_video_warns_with_the_frame_counts(tmp_path, caplog):
    good = write_video(tmp_path / "good.mp4", _noise(30))
    raw = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(raw[: int(len(raw) * 0.6)])  # the index is at the front (+faststart): still readable
    with caplog.at_level(logging.WARNING, logger="dynavatar.perceive"):
        got = list(iter_frames(cut))
    assert 0 < len(got) < 27
    assert f"{cut} ended after {len(got)} of 30 frames (truncated file?)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dynavatar.perceive"):
        assert len(list(iter_frames(good))) == 30
        assert len(list(iter_frames(cut, max_frames=3))) == 3  # stopped early on purpose: no warning
    assert "truncated" not in caplog.text


def test_video_without_any_decodable_frame_is_a_video_error(tmp_path):
    raw = write_video(tmp_path / "good.mp4", _noise(30)).read_bytes()
    head = raw.index(b"mdat") + 8  # the index survives, every frame is gone
    (tmp_path / "cut.mp4").write_bytes(raw[:head])
    with pytest.raises(VideoError, match="no frames could be decoded|cannot read|decoding failed") as info:
        list(iter_frames(tmp_path / "cut.mp4"))
    msg = str(info.value)  # one line with ffmpeg's reason and the fix, not ffmpeg's whole stderr
    assert "\n" not in msg and len(msg) < 400 and "ffmpeg version" not in msg and "ffmpeg -i IN" in msg


# ---------------------------------------------------------------------------------------------- ply
def _splats(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return PlySplats(means=torch.randn(n, 3, generator=g), quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.randn(n, 3, generator=g) - 3, opacity_logits=torch.randn(n, generator=g),
                     sh=torch.randn(n, 4, 3, generator=g))


@pytest.mark.parametrize("field, what", [("means", "means"), ("log_scales", "scales"), ("opacity_logits", "opacities"),
                                         ("sh", "colours"), ("quats", "rotations")])
def test_ply_with_non_finite_values_is_refused_and_not_written(tmp_path, field, what):
    s = _splats()
    t = getattr(s, field).clone()
    t[1] = float("nan")
    t[4] = float("inf")
    setattr(s, field, t)
    with pytest.raises(InvalidParametersError, match=f"2 of 6 splats have non-finite {what} .*re-fit"):
        write_ply(s, tmp_path / "a.ply")
    assert _names(tmp_path) == []


def test_ply_zero_rotation_is_refused(tmp_path):
    s = _splats()
    s.quats[2] = 0
    with pytest.raises(InvalidParametersError, match="1 of 6 splats have non-finite rotations"):
        write_ply(s, tmp_path / "a.ply")


def test_ply_absurd_scales_warn_but_write(tmp_path, caplog):
    s = _splats()
    with caplog.at_level(logging.WARNING, logger="dynavatar.io"):
        write_ply(s, tmp_path / "ok.ply")
    assert "extent" not in caplog.text
    s.log_scales[3, 0] = 20.0  # e^20 m across a scene a few metres wide
    with caplog.at_level(logging.WARNING, logger="dynavatar.io"):
        write_ply(s, tmp_path / "a.ply")
    assert "1 of 6 splats are over 100x the scene's extent" in caplog.text
    assert torch.equal(read_ply(tmp_path / "a.ply").log_scales, s.log_scales)
