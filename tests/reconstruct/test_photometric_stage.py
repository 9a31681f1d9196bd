"""The pipeline's photometric tracking stage and the landmark error it is judged by."""

import dataclasses

import numpy as np
import torch

from dynavatar.geometry.cameras import Cameras, project_points
from dynavatar.geometry.landmark_sets import MP_OUTER_EYE_CORNERS
from dynavatar.geometry.photometric import psnr
from dynavatar.gaussians.binding import bind
from dynavatar.reconstruct.data import TrainData
from dynavatar.reconstruct.landmark_anchor import LANDMARK_SET, landmark_nme
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
