"""Training on a random background each step (``ReconstructConfig.random_background``): on a fixed
white, splats at the outline can learn white and pass for "nothing" from the front; seen from the
side they show as white patches. Each step the render and its target share one new colour, drawn
from the fit's seeded generator (the same on every machine and on resume); evaluation keeps white."""

from __future__ import annotations

import dataclasses

import torch

from dynavatar.flame import FlameModel
from dynavatar.reconstruct import ReconstructConfig, fit_avatar
from dynavatar.reconstruct.data import TrainData
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head


class _Spy(TorchRenderer):
    def __init__(self):
        super().__init__()
        self.backgrounds = []

    def render(self, gaussians, cameras, background=None, **kw):
        if torch.is_grad_enabled() and kw.get("features") is None:  # the training steps (evaluation runs
            # without grad; the first colours and the labels render features)
            self.backgrounds.append(background.detach().clone())
        return super().render(gaussians, cameras, background=background, **kw)


def _fit(random_background: bool, monkeypatch):
    model = FlameModel(ellipsoid_head())
    data = synthetic_clip(model, TorchRenderer(), n_frames=6, resolution=32)
    targets = []
    real_targets = TrainData.targets

    def recorded(self, idx, background):
        if torch.is_grad_enabled():  # the training steps, as in ``_Spy``
            targets.append(background.detach().clone())
        return real_targets(self, idx, background)

    monkeypatch.setattr(TrainData, "targets", recorded)
    spy = _Spy()
    cfg = ReconstructConfig.preset("tiny")
    cfg = dataclasses.replace(cfg, steps=6, resolution=32, track_steps=0, random_background=random_background,
                              densify=dataclasses.replace(cfg.densify, refine_start=100))
    fit = fit_avatar(data, model, spy, cfg, progress=False)
    return spy.backgrounds, targets, fit


def test_each_step_renders_and_targets_one_new_background(monkeypatch):
    rendered, targeted, fit = _fit(True, monkeypatch)
    assert len(rendered) == 6
    assert all(torch.equal(r, t) for r, t in zip(rendered, targeted, strict=True))  # the render and its target agree
    stacked = torch.stack(rendered)  # [6, 3]
    assert bool(((stacked >= 0) & (stacked <= 1)).all()) and len({tuple(b.tolist()) for b in rendered}) == 6
    again, _, _ = _fit(True, monkeypatch)  # seeded: the same colours on a second run
    assert all(torch.equal(a, b) for a, b in zip(rendered, again))


def test_fixed_background_when_switched_off(monkeypatch):
    rendered, _, _ = _fit(False, monkeypatch)
    assert len(rendered) == 6 and all(torch.equal(b, torch.ones(3)) for b in rendered)
