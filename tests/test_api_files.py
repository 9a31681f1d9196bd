"""An avatar folder: the layout ``Avatar.save`` wrote before it moved to ``io.avatar_files`` still loads,
and the new writer produces the very same files; a loaded avatar finds the frames it was fitted to
again (from the dataset its fit recorded, or one passed as ``data=``) and evaluates as it did in memory."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dynavatar.api import Avatar
from dynavatar.errors import AvatarFileError, DynavatarError
from dynavatar.flame import FlameModel
from dynavatar.flame.torso import torso_sheet
from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.geometry.cameras import Cameras
from dynavatar.geometry.labels import LABEL_NAMES, NUM_LABELS
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
    new_meta = json.loads((tmp_path / "new" / "avatar.json").read_text())
    # The one addition: the label columns by name, so avatars saved before iris/sclera/teeth
    # existed (no "label_names") are mapped by name when loaded.
    assert new_meta.pop("label_names") == list(LABEL_NAMES) and "label_names" not in old_meta
    assert new_meta == old_meta
    assert {"format", "sh_degree", "resolution", "background", "head_source", "n_shape", "n_expr"} <= set(old_meta)


def test_a_training_checkpoint_is_not_an_avatar(head, tmp_path):
    a = _avatar(head, False)
    save_state(tmp_path / "ckpt", a.gaussians, None, {"step": 3})
    with pytest.raises(DynavatarError, match="training checkpoint"):
        Avatar.load(tmp_path / "ckpt", head=head)


# ---------------------------------------------------------------------------- frames found again after load
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The tiny fit of ``test_api_pipeline`` (4 flat frames at 32 px, 2 steps), saved; with the
    in-memory avatar's held-out figures, taken before anything was saved or loaded."""
    from flame_fixtures import vhap_export

    from dynavatar.reconstruct import ReconstructConfig
    from dynavatar.track.importers import import_vhap

    root = tmp_path_factory.mktemp("fit")
    import_vhap(vhap_export(root / "export", focal=120.0), root / "data", resolution=32)  # writes data/tracking too
    cfg = ReconstructConfig.preset("tiny", steps=2, resolution=32, log_every=1, torso=False)
    avatar = Avatar.from_dataset(root / "data", out_dir=root / "run", preset="tiny", device="cpu", config=cfg,
                                 progress=False)
    figures = avatar.evaluate()
    avatar.save(root / "run" / "avatar")
    return root, avatar, figures


@pytest.mark.slow  # shares a ~40 s tiny fit (the `fitted` fixture); CI runs -m slow
def test_the_fit_records_its_dataset_and_settings(fitted):
    from dynavatar.config import PipelineConfig
    from dynavatar.reconstruct import ReconstructConfig

    root, avatar, _ = fitted
    record = json.loads((root / "run" / "avatar" / "avatar.json").read_text())["dataset"]
    assert record == {"path": str((root / "data").resolve()), "n_frames": 4, "crop_resolution": 32, "resolution": 32,
                      "eval_fraction": 0.1, "train_idx": [0, 1, 2], "eval_idx": [3], "foreground_colours": True,
                      "despill": True}
    assert avatar.meta["frame_index"] == [0, 1, 2, 3]
    written = json.loads((root / "run" / "config.json").read_text())
    cfg = ReconstructConfig.preset("tiny", steps=2, resolution=32, log_every=1, torso=False)
    expected = json.loads(json.dumps(dataclasses.asdict(PipelineConfig.resolve(cfg, "tiny")), default=str))
    assert written == expected and written["reconstruct"]["steps"] == 2 and written["name"] == "tiny"


@pytest.mark.slow  # shares a ~40 s tiny fit (the `fitted` fixture); CI runs -m slow
def test_a_loaded_avatar_evaluates_like_the_fitted_one_in_a_new_process(fitted):
    root, _, figures = fitted
    code = ("import json, sys, torch; torch.set_num_threads(int(sys.argv[2])); from dynavatar import Avatar; "
            "a = Avatar.load(sys.argv[1], device='cpu'); lazy = a.data is None; "
            "print(json.dumps({**a.evaluate(), 'lazy': lazy, 'eval': [f for f, *_ in a.eval_frames()]}))")
    out = subprocess.run([sys.executable, "-c", code, str(root / "run" / "avatar"), str(torch.get_num_threads())],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    back = json.loads(out)
    assert back.pop("lazy") is True and back.pop("eval") == [3]  # frames read on first use, the held-out one
    assert back["frames"] == figures["frames"] == 1 and back["lpips"] is figures["lpips"] is None
    for k in ("psnr", "ssim"):
        assert back[k] == pytest.approx(figures[k], abs=1e-6), k


@pytest.mark.slow  # shares a ~40 s tiny fit (the `fitted` fixture); CI runs -m slow
def test_a_moved_dataset_is_found_through_data(fitted, tmp_path):
    root, avatar, figures = fitted
    moved = tmp_path / "elsewhere"
    shutil.move(str(root / "data"), moved)
    try:
        gone = Avatar.load(root / "run" / "avatar", device="cpu")  # loads without its frames
        with pytest.raises(AvatarFileError) as err:
            gone.evaluate()
        msg = str(err.value)
        assert "\n" not in msg and str((root / "data").resolve()) in msg and "data=" in msg
        back = Avatar.load(root / "run" / "avatar", device="cpu", data=moved)
        res = back.evaluate()
        assert res["psnr"] == pytest.approx(figures["psnr"], abs=1e-6)
        assert res["ssim"] == pytest.approx(figures["ssim"], abs=1e-6)
        assert torch.equal(back.data.images, avatar.data.images) and torch.equal(back.data.mattes, avatar.data.mattes)
        assert torch.equal(back.data.cameras.Ks, avatar.data.cameras.Ks)
        assert torch.equal(back.data.eval_idx, avatar.data.eval_idx) and torch.equal(back.data.params.expr,
                                                                                    avatar.data.params.expr)
        assert back.meta["dataset"]["path"] == str(moved.resolve())  # a later save records the new place
    finally:
        shutil.move(str(moved), root / "data")


@pytest.mark.slow  # shares a ~40 s tiny fit (the `fitted` fixture); CI runs -m slow
def test_a_dataset_with_other_frames_is_refused(fitted, tmp_path):
    root, _, _ = fitted
    short = tmp_path / "short"
    shutil.copytree(root / "data", short)
    with np.load(short / "landmarks.npz") as z:
        arrays = {k: z[k][:3] for k in z.files}
    np.savez(short / "landmarks.npz", **arrays)
    with pytest.raises(AvatarFileError) as err:
        Avatar.load(root / "run" / "avatar", device="cpu", data=short)
    msg = str(err.value)
    assert "\n" not in msg and "3 frames, the avatar was fitted to 4" in msg and "data=" in msg
    arrays["frame_index"] = np.array([0, 1, 2])
    arrays = {k: np.concatenate([v, v[-1:]]) for k, v in arrays.items()}  # 4 frames again, the last one twice
    np.savez(short / "landmarks.npz", **arrays)
    with pytest.raises(AvatarFileError, match="frame_index differs"):
        Avatar.load(root / "run" / "avatar", device="cpu", data=short)


@pytest.mark.slow  # shares a ~40 s tiny fit (the `fitted` fixture); CI runs -m slow
def test_frames_whose_tracking_is_gone_still_evaluate(fitted, tmp_path):
    """Evaluation poses the frames with the avatar's saved parameters and cameras; only the tracked
    motion needs the dataset's tracking."""
    root, _, figures = fitted
    bare = tmp_path / "bare"
    shutil.copytree(root / "data", bare, ignore=shutil.ignore_patterns("tracking"))
    back = Avatar.load(root / "run" / "avatar", device="cpu", data=bare)
    assert back.evaluate()["psnr"] == pytest.approx(figures["psnr"], abs=1e-6) and back.data.params is None
    assert torch.equal(back.training_motion("refined").expr, back.params.expr)
    with pytest.raises(DynavatarError, match="use motion='refined'"):
        back.training_motion("tracked")


def test_an_avatar_without_a_dataset_says_so(head):
    a = _avatar(head, False)
    with pytest.raises(DynavatarError, match="records no dataset"):
        a.evaluate()
    with pytest.raises(DynavatarError, match="records no dataset"):
        a.attach("anywhere")


def test_save_refuses_a_users_folder_and_resaves_its_own(head, tmp_path):
    from dynavatar.errors import OutputPathError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("four years")
    avatar = _avatar(head, torso=False)
    with pytest.raises(OutputPathError, match="not written by dynavatar"):
        avatar.save(tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.txt"]
    avatar.save(tmp_path / "a")
    avatar.save(tmp_path / "a")  # its own folder: replaced
    legacy = tmp_path / "legacy"
    _legacy_save(legacy, avatar)  # an older version's folder has no marker but is an avatar folder
    avatar.save(legacy)
    assert (legacy / ".dynavatar").is_file()
