"""Photometric tracking refinement recovers known motion with the avatar frozen."""

import numpy as np
import torch

from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
from dynavatar.gaussians.binding import bind
from dynavatar.reconstruct.data import TrainData
from dynavatar.geometry.photometric import psnr
from dynavatar.reconstruct.refine_tracking import RefineTrackingConfig, refine_frame_params
from dynavatar.reconstruct.synthetic import crop_camera, face_albedo, scripted_performance
from dynavatar.geometry.cameras import Cameras
from dynavatar.render.torch_renderer import TorchRenderer


def _scene():
    """A textured avatar of the default head rendered at two known poses (the truth)."""
    torch.manual_seed(0)
    model = FlameModel.load()
    renderer = TorchRenderer()
    res, n = 48, 2
    truth = scripted_performance(model, 24)[torch.tensor([6, 18])]
    # a textured truth avatar (per-triangle colour noise), so that misalignment shows
    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.55, init_opacity=0.97)
    albedo = (face_albedo(model) + 0.25 * torch.rand(model.faces.shape[0], 3)).clamp(0, 1)
    avatar.sh[:, 0] = rgb_to_sh(albedo)
    cam = crop_camera(res)
    cams = Cameras(cam.viewmats.expand(n, 4, 4).clone(), cam.Ks.expand(n, 3, 3).clone(), res, res)
    with torch.no_grad():
        verts = model(truth, landmark_set=None).vertices
        out = renderer.render(bind(avatar, verts, model.faces), cams, background=torch.zeros(3))
    data = TrainData((out.rgb.clamp(0, 1) * 255).round().byte(), (out.alpha[..., 0].clamp(0, 1) * 255).round().byte(),
                     cams, truth, np.arange(n), torch.arange(0), torch.arange(n))
    return model, renderer, avatar, data, truth, cams, n


def test_refinement_recovers_perturbed_pose_and_expression():
    model, renderer, avatar, data, truth, cams, n = _scene()
    off = truth.replace(rotation=truth.rotation + torch.tensor([0.04, -0.05, 0.02]),
                        translation=truth.translation + torch.tensor([0.004, -0.003, 0.0]),
                        expr=truth.expr + 0.3 * torch.randn_like(truth.expr) * (torch.arange(truth.expr.shape[1]) < 10))
    cfg = RefineTrackingConfig(steps=60, lr_pose=3e-3, lr_translation=3e-4, lr_expr=3e-2)
    fixed = refine_frame_params(avatar, model, off, data, torch.arange(n), renderer, cfg, background=(1.0, 1.0, 1.0))

    def quality(p):
        with torch.no_grad():
            v = model(p, landmark_set=None).vertices
            img = renderer.render(bind(avatar, v, model.faces), cams, background=torch.ones(3)).rgb.clamp(0, 1)
        return psnr(img, data.targets(torch.arange(n), torch.ones(3))[0]).mean().item()

    before, after = quality(off), quality(fixed)
    assert after > before + 6, (before, after)
    # judged on the mesh, not the parameters: root and neck rotation both turn the head (only the
    # neck's base tells them apart); in-plane, since depth is nearly ambiguous with size at 48 px
    def mesh_err(p):
        with torch.no_grad():
            d = model(p, landmark_set=None).vertices - model(truth, landmark_set=None).vertices
        return d[..., :2].norm(dim=-1).mean().item()

    assert mesh_err(fixed) < 0.3 * mesh_err(off), (mesh_err(fixed), mesh_err(off))
    assert torch.equal(fixed.shape, off.shape)  # identity never moves


def test_a_frame_whose_refinement_diverges_keeps_its_tracked_motion():
    """A chunk whose loss turns NaN (here: the renderer returns NaN for frame 1) must not write NaN
    motion; that frame keeps its tracked values while the others are refined."""
    model, renderer, avatar, data, truth, cams, n = _scene()
    off = truth.replace(rotation=truth.rotation + torch.tensor([0.04, -0.05, 0.02]))

    class NaNForFrame1:
        def render(self, g, cam, background):
            out = renderer.render(g, cam, background=background)
            if torch.equal(cam.viewmats.reshape(-1, 4, 4)[0], bad_cam) and cam.viewmats.reshape(-1, 4, 4).shape[0] == 1:
                out.rgb = out.rgb * torch.nan
            return out

    cams.viewmats[1, 0, 3] += 1e-4  # frame 1's camera differs (by a 0.1 mm shift) so the renderer can tell
    bad_cam = cams.viewmats[1].clone()
    cfg = RefineTrackingConfig(steps=10, chunk=1, lr_pose=3e-3)
    fixed = refine_frame_params(avatar, model, off, data, torch.arange(n), NaNForFrame1(), cfg)
    for name, t in fixed.fields():
        assert torch.isfinite(t).all(), name
    assert torch.equal(fixed.rotation[1], off.rotation[1]) and torch.equal(fixed.expr[1], off.expr[1])
    assert not torch.equal(fixed.rotation[0], off.rotation[0])  # frame 0 was refined
