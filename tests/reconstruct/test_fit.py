"""Reconstruction on a synthetic clip with known ground truth: it learns, evaluates on held-out
frames, checkpoints, resumes, stops cleanly on NaN, and saves/loads without pickle."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynavatar.api import Avatar
from dynavatar.errors import ConfigError
from dynavatar.flame import FlameModel
from dynavatar.reconstruct import ReconstructConfig, TrainingDivergedError, evaluate, fit_avatar
from dynavatar.geometry.photometric import psnr, ssim
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head


@pytest.fixture(scope="module")
def setup():
    model = FlameModel(ellipsoid_head())
    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=12, resolution=48)
    return model, renderer, data


def _cfg(steps, **kw):
    cfg = ReconstructConfig.preset("tiny")
    cfg.steps, cfg.resolution, cfg.log_every = steps, 48, 5
    cfg.densify = dataclasses.replace(cfg.densify, refine_start=10, refine_stop=30, refine_every=10)
    return dataclasses.replace(cfg, **kw)


def test_separable_ssim_equals_the_2d_window_definition():
    """Brute force: the 11x11 Gaussian window of Wang et al. applied per pixel with unfold."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 20, 23, 3, generator=gen)
    b = (a + 0.2 * torch.rand(2, 20, 23, 3, generator=gen)).clamp(0, 1)
    xs = torch.arange(11.0) - 5
    g = torch.exp(-xs**2 / (2 * 1.5**2))
    w = (g[:, None] * g[None]).flatten() / g.sum() ** 2  # [121]

    def local_mean(img):  # [B,H,W,3] -> [B,3,H-10,W-10]
        u = F.unfold(img.permute(0, 3, 1, 2).reshape(-1, 1, 20, 23), 11)  # [B*3, 121, L]
        return (w[None, :, None] * u).sum(1).reshape(2, 3, 10, 13)

    mx, my = local_mean(a), local_mean(b)
    sxx, syy, sxy = local_mean(a * a) - mx**2, local_mean(b * b) - my**2, local_mean(a * b) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).flatten(1).mean(1)
    assert torch.allclose(ssim(a, b), ref, atol=1e-5)


def test_metrics_against_closed_forms():
    a = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(a, a), torch.ones(2))
    b = (a + 0.1).clamp(0, 1)
    mse = (a - b).square().flatten(1).mean(1)
    assert torch.allclose(psnr(a, b), -10 * torch.log10(mse))
    other = torch.rand(a.shape, generator=torch.Generator().manual_seed(1))  # not the global RNG: tests reseed it
    assert (ssim(a, other) < 0.2).all()


def test_fit_learns_and_held_out_frames_are_never_trained(setup):
    model, renderer, data = setup
    assert data.eval_idx.tolist() == [11] and 11 not in data.train_idx.tolist()
    res = fit_avatar(data, model, renderer, _cfg(40), progress=False)
    first, last = res.history[0], res.history[-1]
    assert last["psnr"] > first["psnr"] + 3, (first, last)
    metrics = evaluate(res.avatar, res.params, data, res.model, renderer)
    assert metrics["frames"] == 1 and metrics["psnr"] > 24, metrics
    # Held-out frames keep their tracked parameters.
    assert torch.equal(res.params.expr[11], data.params.expr[11])


def test_checkpoint_resume(setup, tmp_path):
    model, renderer, data = setup
    fit_avatar(data, model, renderer, _cfg(10, checkpoint_every=5), out_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint" / "avatar.safetensors").is_file()
    res = fit_avatar(data, model, renderer, _cfg(14, checkpoint_every=5), out_dir=tmp_path, progress=False)
    steps = [h["step"] for h in res.history]
    assert steps[0] == 0 and 10 in steps and steps[-1] == 13  # continued, did not restart
    # other settings (a different preset in the same folder) are refused, not silently started over;
    # resume=False (--restart) starts over (tests/reconstruct/test_resume.py has the details)
    with pytest.raises(ConfigError, match="other settings"):
        fit_avatar(data, model, renderer, _cfg(4, checkpoint_every=5, splats_per_face=2), out_dir=tmp_path,
                   progress=False)
    res = fit_avatar(data, model, renderer, _cfg(4, checkpoint_every=5, splats_per_face=2), out_dir=tmp_path,
                     progress=False, resume=False)
    assert [h["step"] for h in res.history][0] == 0 and len(res.history) <= 4


def test_nan_stops_with_clear_error_and_saves(setup, tmp_path):
    model, _, data = setup

    class NaNRenderer(TorchRenderer):
        def render(self, *a, **k):
            out = super().render(*a, **k)
            return dataclasses.replace(out, rgb=out.rgb * float("nan"))

    with pytest.raises(TrainingDivergedError, match="last good state was saved"):
        fit_avatar(data, model, NaNRenderer(), _cfg(5), out_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint" / "avatar.json").is_file()


def test_avatar_save_load_render(setup, tmp_path):
    model, renderer, data = setup
    res = fit_avatar(data, model, renderer, _cfg(3), progress=False)
    avatar = Avatar(res.avatar, res.model, res.params, data.cameras, {"preset": "test"}, data)
    img = avatar.render(frame=2)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    frames = list(avatar.eval_frames())
    assert len(frames) == 1 and frames[0][0] == 11
    avatar.save(tmp_path / "a")
    head = tmp_path / "head.npz"
    from dynavatar.flame import write_flame_npz

    write_flame_npz(ellipsoid_head(), head)
    back = Avatar.load(tmp_path / "a", head=FlameModel.load(head), device="cpu")
    assert np.abs(back.render(frame=2).astype(int) - img.astype(int)).max() <= 1
    avatar.render_video(tmp_path / "v.mp4", frames=[0, 1])
    assert (tmp_path / "v.mp4").stat().st_size > 0
