"""A prompt with several clauses keeps those that ran (edit/dispatch.py ``apply_clauses``): "red hair
and add a hat" offline without InstructPix2Pix returns the red hair and lists the hat as skipped."""

from __future__ import annotations

import pytest
import torch

from dynavatar.api import Avatar
from dynavatar.edit import EditConfig, RuleRefiner
from dynavatar.errors import DynavatarError
from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from dynavatar.semantics.avatar_labels import labels_from_head_regions


@pytest.fixture
def avatar(tmp_path, monkeypatch):
    """An unfitted avatar on a tiny synthetic clip, labelled from the head's regions; no weights anywhere."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = FlameModel.load()
    data = synthetic_clip(model, TorchRenderer(), n_frames=4, resolution=16)
    g = GaussianAvatar.init_on_mesh(model.faces.shape[0], init_opacity=0.5, generator=torch.Generator().manual_seed(0))
    labels, _ = labels_from_head_regions(g.binding, model)
    return Avatar(g.replace(labels=labels), model, data.params, data.cameras, {"preset": "test"}, None)


def test_hair_is_kept_when_the_hat_cannot_run(avatar, caplog):
    cfg = EditConfig(steps=0, keyframes=2)  # the palette's splat recolour alone: fast
    out = avatar.edit("red hair and add a hat", refiner=RuleRefiner(), config=cfg, progress=False)
    assert [e["plan"]["kind"] for e in out.meta["edits"]] == ["colour"]
    (skip,) = out.meta["skipped"]
    assert skip["kind"] == "accessory" and "InstructPix2Pix" in skip["error"] and "\n" not in skip["error"]
    assert not torch.equal(out.gaussians.sh, avatar.gaussians.sh)  # the hair edit is there
    assert any("skipped" in r.getMessage() for r in caplog.records)


def test_nothing_ran_raises_the_first_error(avatar):
    with pytest.raises(DynavatarError, match="InstructPix2Pix"):
        avatar.edit("add a hat and add a scarf", refiner=RuleRefiner(), config=EditConfig(steps=0), progress=False)
