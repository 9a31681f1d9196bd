"""An avatar folder: the layout ``Avatar.save`` wrote before it moved to ``io.avatar_files`` still loads,
and the new writer produces the very same files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dynavatar.api import Avatar
from dynavatar.errors import DynavatarError
from dynavatar.flame import FlameModel
from dynavatar.flame.torso import torso_sheet
from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.geometry.cameras import Cameras
from dynavatar.geometry.labels import NUM_LABELS
from dynavatar.io.checkpoint import save_state


@pytest.fixture(scope="module")
def head():
    return FlameModel.load()


def _avatar(head: FlameModel, torso: bool) -> Avatar:
    model = head
    params = head.zero_params(3).replace(rotation=torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.1, -0.2, 0.0]]))
    if torso:
        neck = torch.nonzero(head.vertex_region == head.region_names.index("neck")).squeeze(-1)
        sv, sf = torso_sheet(head(head.zero_params(), landmark_set=None).vertices, neck)
        g = torch.Generator().manual_seed(0)
        model = head.with_torso(sv, sf, motion=(torch.randn(6, generator=g), 0.01 * torch.randn(6, 3, generator=g)))
        params = params.replace(torso=torch.tensor([[0.0, 0.01, 0.0], [0.0, 0.0, 0.0], [-0.01, 0.0, 0.0]]))
    gaussians = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.6, init_opacity=0.9,
                                            generator=torch.Generator().manual_seed(1))
    logits = torch.randn(gaussians.num_splats, NUM_LABELS, generator=torch.Generator().manual_seed(2))
    gaussians.labels = torch.softmax(logits, 1)
    cams = Cameras.orbit(3, radius=0.6, azimuth_range_deg=(-20, 20), width=32, height=32, fov_y_deg=25.0)
    return Avatar(gaussians, model, params, cams, {"preset": "test", "history": [{"step": 0, "loss": 1.0}]},
                  None, (0.0, 0.5, 1.0))


def _legacy_save(folder, avatar: Avatar):
    """``Avatar.save`` as it was before the key layout moved to ``io.avatar_files`` (commit 7ab6246)."""
    extra = {"cameras.viewmats": avatar.cameras.viewmats, "cameras.Ks": avatar.cameras.Ks}
    if avatar.model.torso_vertices is not None:
        extra.update({"torso.vertices": avatar.model.torso_vertices, "torso.faces": avatar.model.torso_faces})
        if avatar.model.torso_motion is not None:
            extra.update(dict(zip(("torso.motion_ref", "torso.motion_map"), avatar.model.torso_motion)))
    meta = {**avatar.meta, "resolution": avatar.resolution, "background": list(avatar.background),
            "head_source": getattr(avatar.model, "source", None), "n_shape": avatar.model.n_shape,
            "n_expr": avatar.model.n_expr}
    return save_state(folder, avatar.gaussians, avatar.params, meta, extra)


@pytest.mark.parametrize("torso", [False, True])
def test_a_folder_in_the_old_layout_loads(head, tmp_path, torso):
    a = _avatar(head, torso)
    _legacy_save(tmp_path / "old", a)
    back = Avatar.load(tmp_path / "old", head=head, device="cpu")
    for name in ("means_local", "quats_local", "log_scales_local", "opacity_logits", "sh", "binding", "labels"):
        assert torch.equal(getattr(back.gaussians, name), getattr(a.gaussians, name)), name
    for name, t in a.params.fields():
        assert torch.equal(getattr(back.params, name), t), name
    assert torch.equal(back.cameras.viewmats, a.cameras.viewmats) and torch.equal(back.cameras.Ks, a.cameras.Ks)
    assert back.resolution == 32 and back.background == (0.0, 0.5, 1.0) and back.data is None
    assert back.meta["preset"] == "test" and back.meta["history"] == a.meta["history"]
    assert (back.model.torso_vertices is not None) == torso
    if torso:
        assert torch.equal(back.model.torso_faces, a.model.torso_faces)
        assert all(torch.equal(x, y) for x, y in zip(back.model.torso_motion, a.model.torso_motion))
    np.testing.assert_array_equal(back.render(frame=1), a.render(frame=1))


@pytest.mark.parametrize("torso", [False, True])
def test_the_new_writer_writes_the_old_files(head, tmp_path, torso):
    a = _avatar(head, torso)
    _legacy_save(tmp_path / "old", a)
    a.save(tmp_path / "new")
    old = load_file(str(tmp_path / "old" / "avatar.safetensors"))
    new = load_file(str(tmp_path / "new" / "avatar.safetensors"))
    assert sorted(new) == sorted(old)
    assert {"extra.cameras.viewmats", "extra.cameras.Ks", "params.shape", "avatar.means_local"} <= set(new)
    torso_keys = {"extra.torso.vertices", "extra.torso.faces", "extra.torso.motion_ref", "extra.torso.motion_map"}
    assert (torso_keys <= set(new)) == torso
    assert all(torch.equal(new[k], old[k]) for k in old)
    old_meta = json.loads((tmp_path / "old" / "avatar.json").read_text())
    assert json.loads((tmp_path / "new" / "avatar.json").read_text()) == old_meta
    assert {"format", "sh_degree", "resolution", "background", "head_source", "n_shape", "n_expr"} <= set(old_meta)


def test_a_training_checkpoint_is_not_an_avatar(head, tmp_path):
    a = _avatar(head, False)
    save_state(tmp_path / "ckpt", a.gaussians, None, {"step": 3})
    with pytest.raises(DynavatarError, match="training checkpoint"):
        Avatar.load(tmp_path / "ckpt", head=head)
