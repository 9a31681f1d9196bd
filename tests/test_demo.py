"""``dynavatar demo --fit`` leaves an avatar folder that ``Avatar.load`` opens (the fit branch, on a
tiny setting: the full tiny preset takes minutes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dynavatar.api import Avatar
from dynavatar.demo import _fit_demo
from dynavatar.flame import FlameModel
from dynavatar.reconstruct import ReconstructConfig
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head


def test_demo_fit_saves_a_loadable_avatar(tmp_path):
    torch.set_num_threads(1)  # a tiny fit on a shared machine; conftest restores the count
    model = FlameModel(ellipsoid_head(n_lat=12, n_lon=16))
    cfg = ReconstructConfig.preset("tiny", steps=3, resolution=32)
    avatar, metrics, saved = _fit_demo(model, TorchRenderer(), 6, tmp_path, cfg, progress=False)
    assert saved == tmp_path / "avatar" and metrics["frames"] == 1
    back = Avatar.load(saved, head=model, device="cpu")
    for f in dataclasses.fields(back.gaussians):
        a = getattr(back.gaussians, f.name)
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, getattr(avatar.gaussians, f.name)), f.name
    img = back.render(frame=2)
    assert img.shape == (32, 32, 3) and np.abs(img.astype(int) - avatar.render(frame=2).astype(int)).max() <= 1
    assert (tmp_path / "fit_side_by_side.mp4").stat().st_size > 0
