"""The pieces the ``Avatar`` facade delegates to, each on its own: the renderer chooser, the motion
that poses a clip, the tracking cache, the mask videos and the training plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynavatar.errors import DynavatarError
from dynavatar.flame import FlameModel, FlameParams
from dynavatar.flame.pose import rotate_head
from dynavatar.geometry.cameras import Cameras
from flame_fixtures import ellipsoid_head


def test_renderer_for_picks_by_device_without_loading_gsplat():
    code = ("import sys, torch; from dynavatar.render import renderer_for, GsplatRenderer, TorchRenderer; "
            "assert isinstance(renderer_for('cpu'), TorchRenderer); "
            "assert isinstance(renderer_for(torch.device('cpu')), TorchRenderer); "
            "assert isinstance(renderer_for(torch.device('cuda', 0)), GsplatRenderer); "
            "assert isinstance(renderer_for('cuda'), GsplatRenderer); print('gsplat' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------------------------------------- motion
def _params(n: int, n_shape: int, n_expr: int, seed: int) -> FlameParams:
    g = torch.Generator().manual_seed(seed)
    p = FlameParams.zeros(n, n_shape, n_expr)
    return p.replace(**{k: 0.1 * torch.randn(t.shape, generator=g) for k, t in p.fields()})


def test_training_motion_takes_the_tracked_motion_and_keeps_the_identity():
    from dynavatar.reconstruct import training_motion

    model = FlameModel(ellipsoid_head())
    fitted, tracked = _params(4, model.n_shape, model.n_expr, 0), _params(4, model.n_shape, model.n_expr, 1)
    assert training_motion(fitted, tracked, model, "refined", "cpu") is fitted
    out = training_motion(fitted, tracked, model, "tracked", "cpu")
    assert torch.equal(out.shape, fitted.shape)
    for k in ("expr", "rotation", "neck", "jaw", "eyes", "translation"):
        assert torch.equal(getattr(out, k), getattr(tracked, k)), k
    with pytest.raises(DynavatarError, match="tracked"):
        training_motion(fitted, tracked, model, "landmarks", "cpu")
    assert training_motion(fitted, None, model, "refined", "cpu") is fitted  # a loaded avatar: no tracking
    with pytest.raises(DynavatarError, match="loaded without"):
        training_motion(fitted, None, model, "tracked", "cpu")


@pytest.mark.parametrize("n_driving", [3, 8])
def test_reenactment_pads_or_cuts_the_expression_and_keeps_identity_and_framing(n_driving):
    from dynavatar.reconstruct import reenactment_params

    own, driving = _params(5, 4, 6, 0), _params(1, 4, n_driving, 1)
    q = reenactment_params(driving, own, n_expr=6)
    k = min(6, n_driving)
    assert q.expr.shape == (1, 6) and torch.equal(q.expr[:, :k], driving.expr[:, :k]) and (q.expr[:, k:] == 0).all()
    assert torch.equal(q.shape, own.shape[:1]) and torch.equal(q.translation, own.translation[:1])
    assert torch.equal(q.rotation, driving.rotation) and torch.equal(q.jaw, driving.jaw)


# ---------------------------------------------------------------------------------------------- tracking cache
def test_the_tracking_is_computed_once_and_then_read_back(monkeypatch, tmp_path):
    import dynavatar.track.cache as cache
    from dynavatar.track import TrackerConfig, TrackingResult

    calls = []

    class Tracked:
        head = {"n_shape": 3, "n_expr": 2}

        def save(self, folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "tracking.json").write_text("{}")

    def fake_track(dataset, head, config, progress):
        calls.append((head, config))
        return Tracked()
    monkeypatch.setattr(cache, "track", fake_track)
    monkeypatch.setattr(TrackingResult, "load", classmethod(lambda cls, folder: ("loaded", Path(folder))))
    ds = type("Dataset", (), {"root": tmp_path / "data"})()
    first = cache.cached_tracking(ds, TrackerConfig.preset("tiny"), head="head.npz", device=torch.device("cpu"))
    assert isinstance(first, Tracked) and (tmp_path / "data" / "tracking" / "tracking.json").is_file()
    (head, cfg), = calls
    assert head == "head.npz" and cfg == TrackerConfig.preset("tiny", device="cpu")  # "auto" -> the fit's device
    assert cache.cached_tracking(ds, TrackerConfig.preset("tiny")) == ("loaded", tmp_path / "data" / "tracking")
    assert len(calls) == 1
    cache.cached_tracking(ds, TrackerConfig.preset("fast", device="cuda"), device="cpu", folder=tmp_path / "other")
    assert calls[-1][1].device == "cuda"  # a device set in the config wins


# ---------------------------------------------------------------------------------------------- mask videos
def test_tint_and_frame_lists():
    from dynavatar.semantics.mask_video import clip_frames, tint

    img = np.full((2, 2, 3), 100, np.uint8)
    out = tint(img, np.array([[0.0, 1.0], [0.5, 0.0]]))
    assert out[0, 0].tolist() == [100, 100, 100] and out[0, 1].tolist() == [178, 70, 70]
    assert out[1, 0].tolist() == [139, 85, 85]
    assert clip_frames(None, 3) == [0, 1, 2] and clip_frames(np.array([2, 0]), 3) == [2, 0]
    for bad in ([], [3], [-1]):
        with pytest.raises(DynavatarError, match="below 3"):
            clip_frames(bad, 3)


def test_learned_route_decodes_every_frame_in_chunks():
    from dynavatar.semantics.mask_video import LEARNED_CHUNK, learned_route_masks

    class Mapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.batches = []

        def predict(self, t, pose, out_size):
            self.batches.append(len(t))
            return (t[:, None, None] + pose[:, :1, None]).expand(len(t), *out_size)

    m = Mapper()
    frames = list(range(0, 2 * LEARNED_CHUNK + 10))
    masks = learned_route_masks(m, frames, n_frames=frames[-1] + 1, yaw=0.25, pitch=0.0, out_size=(3, 4))
    assert masks.shape == (len(frames), 3, 4) and masks.dtype == np.float32
    assert m.batches == [LEARNED_CHUNK, LEARNED_CHUNK, 10]
    assert np.allclose(masks[:, 0, 0], np.array(frames) / frames[-1] + 0.25)


def test_exact_route_with_and_without_a_video(tmp_path):
    import imageio.v3 as iio

    from dynavatar.semantics.mask_video import exact_route_masks, turned_clip, write_mask_video

    params = FlameParams.zeros(3, 2, 2)
    cams = Cameras.orbit(3, width=8, height=8)
    poses = turned_clip(params, cams, [2, 0], yaw=0.3, pitch=0.0, device="cpu")
    assert len(poses) == 2 and torch.equal(poses[0][0].rotation, rotate_head(params[2], 0.3, 0.0).rotation)
    coverage = lambda p, c: np.full((8, 8), float(p.rotation[0, 1]), np.float32)  # noqa: E731
    both = lambda p, c: (np.zeros((8, 8, 3), np.uint8), coverage(p, c))  # noqa: E731
    plain = exact_route_masks(poses, coverage, progress=False)
    filmed = exact_route_masks(poses, coverage, both, video=tmp_path / "m.mp4", progress=False)
    assert plain.shape == (2, 8, 8) and np.array_equal(plain, filmed)
    assert iio.imread(tmp_path / "m.mp4").shape == (2, 8, 8, 3)
    with pytest.raises(DynavatarError, match="3 masks for 2 frames"):
        write_mask_video(tmp_path / "bad.mp4", lambda p, c: np.zeros((8, 8, 3), np.uint8), poses, plain[[0, 1, 1]])
    assert not (tmp_path / "bad.mp4").exists()


# ---------------------------------------------------------------------------------------------- plots
def test_training_plot_and_history(tmp_path):
    from dynavatar.bench.plots import save_training_plot

    assert save_training_plot([], tmp_path / "none") is None and not (tmp_path / "none").exists()
    hist = [{"step": s, "loss": 1.0 / (s + 1), "psnr": 10.0 + s} for s in range(5)]
    png = save_training_plot(hist, tmp_path / "run")
    assert png == tmp_path / "run" / "training_curve.png" and png.stat().st_size > 0
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == hist
