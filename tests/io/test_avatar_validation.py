"""A damaged avatar folder is refused with one line that names the file and what is wrong, never
a traceback from deep inside torch or safetensors (``io.avatar_files.load_avatar``)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dynavatar.errors import AvatarFileError
from dynavatar.flame import FlameModel
from dynavatar.flame.torso import torso_sheet
from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.geometry.cameras import Cameras
from dynavatar.io.avatar_files import load_avatar, save_avatar


@pytest.fixture(scope="module")
def head():
    return FlameModel.load(n_shape=10, n_expr=10)


@pytest.fixture(scope="module")
def saved(head, tmp_path_factory):
    """A small avatar (one splat per triangle, 2 frames, a torso sheet) saved once; each test damages a copy."""
    neck = torch.nonzero(head.vertex_region == head.region_names.index("neck")).squeeze(-1)
    sv, sf = torso_sheet(head(head.zero_params(), landmark_set=None).vertices, neck)
    model = head.with_torso(sv, sf, motion=(torch.zeros(6), torch.zeros(6, 3)))
    g = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.6, init_opacity=0.9,
                                    generator=torch.Generator().manual_seed(1))
    cams = Cameras.orbit(2, radius=0.6, azimuth_range_deg=(-10, 10), width=16, height=16, fov_y_deg=25.0)
    folder = tmp_path_factory.mktemp("saved") / "avatar"
    save_avatar(folder, g, model, head.zero_params(2), cams, {"preset": "test", "frame_index": [0, 1]}, (1.0, 1.0, 1.0))
    return folder, model


def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "avatar"
    shutil.copytree(saved[0], dst)
    return dst


def _edit_json(folder, change):
    path = folder / "avatar.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _edit_tensors(folder, change):
    path = folder / "avatar.safetensors"
    t = load_file(str(path))
    change(t)
    save_file(t, str(path))


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _drop(key):
    return lambda d: d.pop(key)


def _poison(key, index, value):
    def change(t):
        t[key] = t[key].clone()
        t[key].view(-1)[index] = value
    return change


JSON = [
    ("missing n_shape", _drop("n_shape"), "'n_shape' is missing"),
    ("missing resolution", _drop("resolution"), "'resolution' is missing"),
    ("missing sh_degree", _drop("sh_degree"), "'sh_degree' is missing"),
    ("n_expr a string", _set("n_expr", "ten"), "'n_expr' must be an integer >= 1, not 'ten'"),
    ("negative resolution", _set("resolution", -3), "'resolution' must be an integer >= 1"),
    ("sh_degree a bool", _set("sh_degree", True), "'sh_degree' must be an integer from 0 to 4"),
    ("background a word", _set("background", "white"), "'background' must be a list of 3 numbers"),
    ("frame_index of strings", _set("frame_index", ["a"]), "'frame_index' must be a list of integers"),
    ("history an object", _set("history", {"step": 1}), "'history' must be a JSON array"),
    ("wrong format", _set("format", "other/9"), "unsupported avatar format 'other/9'"),
]

TENSORS = [
    ("missing sh", _drop("avatar.sh"), "tensor 'avatar.sh' is missing"),
    ("missing Ks", _drop("extra.cameras.Ks"), "tensor 'extra.cameras.Ks' is missing"),
    ("missing params", _drop("params.shape"), "tensor 'params.shape' is missing"),
    ("means of width 2", lambda t: t.__setitem__("avatar.means_local", t["avatar.means_local"][:, :2].contiguous()),
     "'avatar.means_local' has shape"),
    ("float binding", lambda t: t.__setitem__("avatar.binding", t["avatar.binding"].float()),
     "'avatar.binding' has dtype F32, expected integer"),
    ("a camera too many",
     lambda t: t.__setitem__("extra.cameras.viewmats", torch.cat([t["extra.cameras.viewmats"]] * 2)),
     "4 cameras ('extra.cameras.viewmats') for 2 frames of parameters"),
    ("expression width", lambda t: t.__setitem__("params.expr", torch.zeros(2, 7)),
     "'params.expr' has shape [2, 7], expected [2, 10]"),
    ("five label columns", lambda t: t.__setitem__("avatar.labels", torch.zeros(t["avatar.binding"].shape[0], 5)),
     "has 5 label columns"),
    ("NaN opacity", _poison("avatar.opacity_logits", 7, float("nan")), "'avatar.opacity_logits' holds NaN or inf"),
    ("inf in a camera", _poison("extra.cameras.Ks", 0, float("inf")), "'extra.cameras.Ks' holds NaN or inf"),
    ("negative binding", _poison("avatar.binding", 3, -1), "'avatar.binding' holds negative triangle indices"),
    ("binding past the mesh", _poison("avatar.binding", 3, 10 ** 6), "bound to 1000001+ triangles"),
    ("torso face past its sheet", _poison("extra.torso.faces", 0, 10 ** 6), "'extra.torso.faces' index vertices"),
    ("half a torso", _drop("extra.torso.faces"), "tensor 'extra.torso.faces' is missing"),
]


def _refused(folder, head, expected):
    with pytest.raises(AvatarFileError) as err:
        load_avatar(folder, head=head)
    msg = str(err.value)
    assert "\n" not in msg and expected in msg, msg
    assert str(folder) in msg
    return msg


def test_the_intact_folder_loads(saved):
    folder, model = saved
    back = load_avatar(folder, head=FlameModel.load(n_shape=10, n_expr=10))
    assert torch.equal(back.gaussians.binding, load_file(str(folder / "avatar.safetensors"))["avatar.binding"])
    assert back.model.faces.shape == model.faces.shape and back.params.batch_size == 2 and back.cameras.width == 16


@pytest.mark.parametrize("name, change, expected", JSON, ids=[c[0] for c in JSON])
def test_a_damaged_avatar_json_is_refused(saved, head, tmp_path, name, change, expected):
    folder = _copy(saved, tmp_path)
    _edit_json(folder, change)
    msg = _refused(folder, head, expected)
    assert "avatar.json" in msg


@pytest.mark.parametrize("name, change, expected", TENSORS, ids=[c[0] for c in TENSORS])
def test_damaged_tensors_are_refused(saved, head, tmp_path, name, change, expected):
    folder = _copy(saved, tmp_path)
    _edit_tensors(folder, change)
    _refused(folder, head, expected)


def test_unreadable_files_are_refused(saved, head, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "avatar.json").write_text("{not json")
    _refused(folder, head, "avatar.json: not readable JSON")
    (folder / "avatar.json").write_text("[1, 2]")
    _refused(folder, head, "holds a JSON list, not an object")
    folder = _copy(saved, tmp_path / "b")
    data = (folder / "avatar.safetensors").read_bytes()
    (folder / "avatar.safetensors").write_bytes(data[: len(data) // 2])
    _refused(folder, head, "not a readable tensor file")
    _refused(tmp_path / "nowhere", head, "no such folder")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", head, "no avatar.json")


def test_a_head_with_other_component_counts_is_named(saved, tmp_path):
    """The saved counts exceed the head that resolves, or the head given has other counts."""
    folder = _copy(saved, tmp_path)
    _refused(folder, FlameModel.load(n_shape=5, n_expr=10), "have 10 shape / 10 expression components")
    _edit_json(folder, _set("n_shape", 1000))  # more identity components than the default head has
    _edit_tensors(folder, lambda t: t.__setitem__("params.shape", torch.zeros(2, 1000)))
    _refused(folder, None, "n_shape=1000 but the model has")
