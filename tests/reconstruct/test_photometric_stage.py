"""The pipeline's photometric tracking stage and the landmark error it is judged by."""

import dataclasses

import numpy as np
import pytest
import torch

from dynavatar.geometry.cameras import Cameras, project_points
from dynavatar.geometry.landmark_sets import MP_OUTER_EYE_CORNERS
from dynavatar.geometry.photometric import psnr
from dynavatar.gaussians.binding import bind
from dynavatar.reconstruct.data import TrainData
from dynavatar.reconstruct.landmark_anchor import LANDMARK_SET, frame_nme, landmark_budget, landmark_nme
from dynavatar.reconstruct.refine_tracking import track_untrained_frames
from dynavatar.reconstruct.synthetic import crop_camera, scripted_performance
from dynavatar.flame import FlameModel

from reconstruct.test_refine_tracking import _scene


def test_landmark_nme_is_the_pixel_offset_over_the_interocular_distance():
    """Detected points = the head's own projected points shifted by (3, 4) px: every point is 5 px off,
    so the error is 5 px over each frame's outer-eye-corner distance; an undetected frame is skipped
    whatever its points say."""
    model = FlameModel.load()
    n, res = 3, 64
    params = scripted_performance(model, 24)[torch.tensor([2, 9, 17])]
    cam = crop_camera(res)
    cams = Cameras(cam.viewmats.expand(n, 4, 4).clone(), cam.Ks.expand(n, 3, 3).clone(), res, res)
    with torch.no_grad():
        uv, _ = project_points(model(params, landmark_set=LANDMARK_SET).landmarks, cams.viewmats, cams.Ks)
    detected = uv + torch.tensor([3.0, 4.0])
    detected[2] = 1e4  # no face there
    data = TrainData(torch.zeros(n, res, res, 3, dtype=torch.uint8), torch.zeros(n, res, res, dtype=torch.uint8),
                     cams, params, np.arange(n), torch.arange(n), torch.arange(0),
                     landmarks=detected, landmarks_valid=torch.tensor([True, True, False]))
    a, b = MP_OUTER_EYE_CORNERS
    iod = (detected[:2, a] - detected[:2, b]).norm(dim=-1)
    assert abs(landmark_nme(model, params, data) - float((5.0 / iod).mean())) < 1e-5
    assert abs(landmark_nme(model, params, data, frames=[1]) - float(5.0 / iod[1])) < 1e-5
    assert landmark_nme(model, params, data, frames=[2]) is None  # only an undetected frame


def test_stage_fits_only_the_untrained_frames_to_their_pixels():
    """Frame 0 trained, frame 1 held out, both with perturbed motion: the stage moves frame 1 onto its
    pixels (PSNR up by several dB) and leaves frame 0 exactly as it was; 0 steps changes nothing."""
    model, renderer, avatar, data, truth, cams, n = _scene()
    data = dataclasses.replace(data, train_idx=torch.tensor([0]), eval_idx=torch.tensor([1]))
    off = truth.replace(rotation=truth.rotation + torch.tensor([0.04, -0.05, 0.02]),
                        translation=truth.translation + torch.tensor([0.004, -0.003, 0.0]))
    tracked = track_untrained_frames(avatar, model, off, data, renderer, steps=60)

    def frame_psnr(p, i):
        with torch.no_grad():
            v = model(p[i], landmark_set=None).vertices
            img = renderer.render(bind(avatar, v, model.faces), cams[i], background=torch.ones(3)).rgb.clamp(0, 1)
        return psnr(img, data.targets(torch.tensor([i]), torch.ones(3))[0]).item()

    assert frame_psnr(tracked, 1) > frame_psnr(off, 1) + 4
    for k in ("rotation", "translation", "expr"):
        assert torch.equal(getattr(tracked, k)[0], getattr(off, k)[0])
    untouched = track_untrained_frames(avatar, model, off, data, renderer, steps=0)
    assert torch.equal(untouched.rotation, off.rotation)


def test_landmark_budget_is_zero_inside_the_budget_and_quadratic_beyond():
    """Points 5 px off at a known inter-ocular distance: a budget above that error costs nothing, one
    below costs ((nme - budget) / scale)^2, an infinite budget (no detection) costs nothing."""
    model = FlameModel.load()
    res = 64
    params = scripted_performance(model, 24)[torch.tensor([2, 9])]
    cam = crop_camera(res)
    cams = Cameras(cam.viewmats.expand(2, 4, 4).clone(), cam.Ks.expand(2, 3, 3).clone(), res, res)
    with torch.no_grad():
        verts = model(params, landmark_set=None).vertices
        uv, _ = project_points(model(params, landmark_set=LANDMARK_SET).landmarks, cams.viewmats, cams.Ks)
    detected = uv + torch.tensor([3.0, 4.0])
    a, b = MP_OUTER_EYE_CORNERS
    nme = 5.0 / (detected[:, a] - detected[:, b]).norm(dim=-1)  # [2]
    assert torch.allclose(frame_nme(model, verts, cams, detected), nme, atol=1e-5)
    assert landmark_budget(model, verts, cams, detected, nme + 1e-3).item() == 0.0
    inf = torch.full((2,), float("inf"))
    assert landmark_budget(model, verts, cams, detected, inf).item() == 0.0
    cost = landmark_budget(model, verts, cams, detected, nme - 0.002, scale=0.01).item()
    assert abs(cost - 0.2 ** 2) < 1e-3


@pytest.mark.slow  # 26 s; the landmark budget is off by default
def test_budget_keeps_the_stage_on_the_landmark_fits_error():
    """Detected points that agree with a wrong motion (the landmark fit's error is 0) while the pixels
    show the truth: without a budget the stage follows the pixels and the landmark error rises; with
    it, the error stays near the landmark fit's while the pixels still gain where the budget allows."""
    model, renderer, avatar, data, truth, cams, n = _scene()
    off = truth.replace(rotation=truth.rotation + torch.tensor([0.0, -0.06, 0.0]))
    with torch.no_grad():
        uv, _ = project_points(model(off, landmark_set=LANDMARK_SET).landmarks, cams.viewmats, cams.Ks)
    data = dataclasses.replace(data, train_idx=torch.tensor([0]), eval_idx=torch.tensor([1]), landmarks=uv,
                               landmarks_valid=torch.ones(n, dtype=torch.bool))
    free = track_untrained_frames(avatar, model, off, data, renderer, steps=60)
    held = track_untrained_frames(avatar, model, off, data, renderer, steps=60, w_landmark_budget=10.0)
    start = landmark_nme(model, off, data, frames=[1])
    assert start < 1e-4
    assert landmark_nme(model, free, data, frames=[1]) > 0.02  # followed the pixels off the points
    assert landmark_nme(model, held, data, frames=[1]) < 0.005
