"""Landmark tracking: the landmark-only FLAME equals the full one; a synthetic clip with known
parameters is re-tracked to sub-pixel landmark error; results save/load without pickle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynavatar.flame import FlameModel, FlameParams
from dynavatar.perceive.dataset import FrameDataset
from dynavatar.track import LandmarkFlame, TrackerConfig, TrackingResult, track
from dynavatar.track.tracker import camera_viewmat, project
from flame_fixtures import ellipsoid_head


@pytest.fixture(scope="module")
def head():
    return FlameModel(ellipsoid_head())


def _random_params(n, model, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=1.0: torch.randn(*s, generator=g) * k * scale  # noqa: E731
    t = torch.linspace(0, 1, n)[:, None]
    return FlameParams(shape=r(1, model.n_shape, k=0.5).expand(n, -1).clone(), expr=r(n, model.n_expr, k=0.5),
                       rotation=torch.cat([0.2 * torch.sin(6 * t), 0.4 * torch.sin(4 * t), 0.05 * t], 1),
                       neck=torch.zeros(n, 3), jaw=torch.cat([0.15 * t, torch.zeros(n, 2)], 1),
                       eyes=torch.zeros(n, 6), translation=torch.cat([0.01 * t, -0.01 * t, -0.6 - 0.05 * t], 1))


def test_landmark_model_matches_full_model(head):
    lm = LandmarkFlame(head)
    p = _random_params(5, head, seed=3)
    p = p.replace(neck=torch.randn(5, 3) * 0.2, eyes=torch.randn(5, 6) * 0.2)
    assert torch.allclose(lm(p), head(p).landmarks, atol=1e-6)


def _synthetic_dataset(head, n=24, res=256, drop=()):
    p = _random_params(n, head)
    with torch.no_grad():
        lmk = project(head(p).landmarks, torch.tensor(2.0 * res), res).numpy()
    detected = np.ones(n, bool)
    detected[list(drop)] = False
    crop = np.tile([10.0, 20.0, 400.0], (n, 1))
    ds = FrameDataset(root=None, meta={"resolution": res, "fps": 25.0}, frame_index=np.arange(n), detected=detected,
                      n_faces=detected.astype(int), lmk_crop=np.concatenate([lmk, np.zeros_like(lmk[..., :1])], -1),
                      lmk_orig=None, crop=crop)
    return ds, p, lmk


def test_tracking_recovers_synthetic_clip(head):
    ds, truth, lmk = _synthetic_dataset(head, drop=(7, 8))
    cfg = TrackerConfig(n_shape=20, n_expr=20, rigid_steps=100, steps=250, device="cpu")
    res = track(ds, head=head, config=cfg, progress=False)
    s = res.summary()
    assert s["detected"] == 22
    assert s["lmk_error_mean"] < 0.01, s  # < 1 % of the inter-ocular distance
    # Frames without detections are filled in close to the truth by the smoothness term.
    gap_err = np.linalg.norm(res.landmarks_2d[7] - lmk[7], axis=-1).mean()
    assert gap_err < 3.0, gap_err
    # Head pose is recovered (the synthetic head's rotation is identifiable from 478 points).
    assert torch.allclose(res.params.rotation, truth.rotation, atol=0.05)
    assert abs(res.cameras.Ks[0, 0, 0].item() - 512.0) / 512.0 < 0.15


def test_result_save_load_and_original_coordinates(tmp_path, head):
    ds, _, _ = _synthetic_dataset(head, n=6)
    res = track(ds, head=head, config=TrackerConfig(n_shape=5, n_expr=5, rigid_steps=5, steps=5, device="cpu"),
                progress=False)
    res.save(tmp_path / "t")
    back = TrackingResult.load(tmp_path / "t")
    assert torch.equal(back.params.expr, res.params.expr) and torch.equal(back.cameras.Ks, res.cameras.Ks)
    pts = back.project_landmarks(2)
    np.testing.assert_allclose(pts, res.landmarks_2d[2] * (400.0 / 256) + np.array([10.0, 20.0]), rtol=1e-6)
    assert pts.shape == (478, 2)
    (tmp_path / "t" / "tracking.safetensors").write_bytes(b"garbage")
    from dynavatar.errors import DynavatarError

    with pytest.raises(DynavatarError, match="no readable tracking"):
        TrackingResult.load(tmp_path / "t")


def test_camera_convention():
    """FLAME's face (+z) looks at the camera: a point in front of the head is closer to it."""
    v = camera_viewmat()
    near, far = v @ torch.tensor([0, 0, -0.5, 1.0]), v @ torch.tensor([0, 0, -0.7, 1.0])
    assert 0 < near[2] < far[2]
    up = v @ torch.tensor([0, 0.1, -0.6, 1.0])
    assert up[1] < 0  # FLAME's up is the image's up (OpenCV y points down)
