"""The landmark anchor: the tracker's robust reprojection term on refined motion."""

import math

import numpy as np
import torch

from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
from dynavatar.geometry.cameras import project_points
from dynavatar.reconstruct.data import TrainData
import pytest

from dynavatar.geometry.landmark_sets import MOUTH_LANDMARKS, MP_FACE_OVAL
from dynavatar.reconstruct.landmark_anchor import LANDMARK_SET, landmark_anchor
from dynavatar.reconstruct.refine_tracking import RefineTrackingConfig, refine_frame_params
from dynavatar.reconstruct.synthetic import crop_camera, scripted_performance
from dynavatar.geometry.cameras import Cameras
from dynavatar.render.torch_renderer import TorchRenderer


def _frames(n=2, res=64):
    model = FlameModel.load()
    params = scripted_performance(model, 24)[torch.tensor([6, 18][:n])]
    cam = crop_camera(res)
    cams = Cameras(cam.viewmats.expand(n, 4, 4).clone(), cam.Ks.expand(n, 3, 3).clone(), res, res)
    with torch.no_grad():
        out = model(params, landmark_set=LANDMARK_SET)
        target, _ = project_points(out.landmarks, cams.viewmats, cams.Ks)
    return model, params, cams, out.vertices, target


def test_anchor_is_zero_on_its_own_landmarks_and_the_cauchy_term_elsewhere():
    model, params, cams, verts, target = _frames()
    valid = torch.ones(2, dtype=torch.bool)
    assert landmark_anchor(model, verts, cams, target, valid).item() < 1e-9
    # every point 1 px off: each term is log(1 + (1 / (sigma W))^2), and the weighted mean of a constant is it
    shifted = target + torch.tensor([1.0, 0.0])
    expected = math.log1p((1.0 / (0.004 * 64)) ** 2)
    assert abs(landmark_anchor(model, verts, cams, shifted, valid).item() - expected) < 1e-4
    # one point far off costs at most ~log of its distance (robust), weighted by its share
    far = target.clone()
    far[:, 0, 0] += 1000.0
    one = landmark_anchor(model, verts, cams, far, valid).item()
    w = torch.ones(target.shape[1])
    w[list(MP_FACE_OVAL)] = 0.5
    assert abs(one - math.log1p((1000.0 / (0.004 * 64)) ** 2) * w[0].item() / w.sum().item()) < 1e-4
    # a frame without a detection adds nothing, whatever its target says
    garbage = shifted.clone()
    garbage[1] = 1e6
    only0 = landmark_anchor(model, verts, cams, garbage, torch.tensor([True, False])).item()
    assert abs(only0 - expected) < 1e-4


def test_mouth_anchor_reads_only_the_lip_contours():
    """points="mouth" holds the 40 lip-contour points the parser paints the lips from, each equally."""
    model, params, cams, verts, target = _frames()
    valid = torch.ones(2, dtype=torch.bool)
    assert len(MOUTH_LANDMARKS) == 40
    forehead = target.clone()
    forehead[:, 10] += 50.0  # a face-oval point, not on the lips
    assert landmark_anchor(model, verts, cams, forehead, valid, points="mouth").item() < 1e-9
    assert landmark_anchor(model, verts, cams, forehead, valid).item() > 1e-3
    lip = target.clone()
    lip[:, 13, 1] += 2.0  # the upper lip's inner midpoint, 2 px down
    expected = math.log1p((2.0 / (0.004 * 64)) ** 2) / 40
    assert abs(landmark_anchor(model, verts, cams, lip, valid, points="mouth").item() - expected) < 1e-4
    with pytest.raises(ValueError, match="mouth"):
        landmark_anchor(model, verts, cams, target, valid, points="lips")


@pytest.mark.slow  # 20-40 s on 2 cores: CI runs it with `pytest -m slow`
def test_refinement_keeps_motion_on_the_landmarks_where_the_pixels_are_silent():
    """An avatar of one flat colour shows the silhouette but nothing inside it: the photometric
    fit cannot tell where the mouth is. Started from a wrong expression, the refinement alone
    leaves the mouth wrong; with the anchor the mesh goes back to where the landmarks put it."""
    torch.manual_seed(0)
    model, truth, cams, verts, target = _frames(n=2, res=64)
    renderer = TorchRenderer()
    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.55, init_opacity=0.97)
    avatar.sh[:, 0] = rgb_to_sh(torch.tensor([0.8, 0.6, 0.5]))
    from dynavatar.gaussians.binding import bind

    with torch.no_grad():
        out = renderer.render(bind(avatar, verts, model.faces), cams, background=torch.zeros(3))
    data = TrainData((out.rgb.clamp(0, 1) * 255).round().byte(), (out.alpha[..., 0].clamp(0, 1) * 255).round().byte(),
                     cams, truth, np.arange(2), torch.arange(0), torch.arange(2), None,
                     target, torch.ones(2, dtype=torch.bool))
    off = truth.replace(expr=truth.expr + 1.5 * torch.randn_like(truth.expr) * (torch.arange(truth.expr.shape[1]) < 10))

    def lip_err(p):  # mean image distance of the lip landmarks from the truth's, pixels
        with torch.no_grad():
            uv, _ = project_points(model(p, landmark_set=LANDMARK_SET).landmarks, cams.viewmats, cams.Ks)
        lips = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409]
        return (uv - target)[:, lips].norm(dim=-1).mean().item()

    kw = dict(steps=60, lr_expr=5e-2)
    free = refine_frame_params(avatar, model, off, data, torch.arange(2), renderer,
                               RefineTrackingConfig(w_landmarks=0.0, **kw), background=(1.0, 1.0, 1.0))
    anchored = refine_frame_params(avatar, model, off, data, torch.arange(2), renderer,
                                   RefineTrackingConfig(w_landmarks=0.05, **kw), background=(1.0, 1.0, 1.0))
    before = lip_err(off)
    assert before > 1.0, before
    assert lip_err(free) > 0.6 * before, (before, lip_err(free))
    assert lip_err(anchored) < 0.3 * before, (before, lip_err(free), lip_err(anchored))


def test_training_anchors_each_steps_frames_to_their_own_landmarks(monkeypatch):
    import dataclasses

    from dynavatar.reconstruct import trainer
    from dynavatar.reconstruct import ReconstructConfig
    from dynavatar.reconstruct.synthetic import synthetic_clip

    model = FlameModel.load()
    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=4, resolution=32)
    calls = []

    def spy(model_, verts, cams, target, valid, **kw):
        calls.append((target.clone(), verts.shape[0]))
        return landmark_anchor(model_, verts, cams, target, valid, **kw)

    monkeypatch.setattr(trainer, "landmark_anchor", spy)
    cfg = ReconstructConfig.preset("tiny", resolution=32, steps=3, torso=False, w_landmarks=0.01)
    trainer.fit_avatar(data, model, renderer, cfg, progress=False)
    assert len(calls) == 3
    for target, b in calls:  # each call's targets are some training frames' detected points
        assert b == target.shape[0]
        assert any(torch.equal(target[j], data.landmarks[i]) for j in range(b) for i in data.train_idx.tolist())
    calls.clear()
    trainer.fit_avatar(data, model, renderer, dataclasses.replace(cfg, w_landmarks=0.0), progress=False)
    assert not calls
