"""The bad-input battery: what a new user types or points at, on the command line.

Every case asserts the exit code, that the user sees exactly one line (no traceback), that the line
says what is wrong, and that nothing in the sandbox changed: no file of the user's was modified or
deleted, and a failed command left nothing behind. The sandbox holds a small video, a saved avatar
(and damaged copies of it), a head file, a malicious pickle and a folder of the user's own work.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dynavatar.cli import main

LONG = "x" * 300


def _save_avatar(folder: Path) -> None:
    from dynavatar.api import Avatar
    from dynavatar.flame import FlameModel
    from dynavatar.gaussians.avatar import GaussianAvatar
    from dynavatar.geometry.cameras import Cameras
    from dynavatar.geometry.labels import NUM_LABELS

    head = FlameModel.load()
    g = GaussianAvatar.init_on_mesh(head.faces.shape[0], 1, init_scale=0.6, init_opacity=0.9,
                                    generator=torch.Generator().manual_seed(1))
    g.labels = torch.softmax(torch.randn(g.num_splats, NUM_LABELS, generator=torch.Generator().manual_seed(2)), 1)
    cams = Cameras.orbit(4, radius=0.6, azimuth_range_deg=(-20, 20), width=32, height=32, fov_y_deg=25.0)
    Avatar(g, head, head.zero_params(4), cams, {"preset": "test"}, None).save(folder)


def _damage(src: Path, dst: Path, how: str) -> None:
    shutil.copytree(src, dst)
    meta_path = dst / "avatar.json"
    meta = json.loads(meta_path.read_text())
    if how == "not-json":
        meta_path.write_text("{this is not json")
    elif how == "format":
        meta_path.write_text(json.dumps({**meta, "format": "someone-else/9"}))
    elif how == "no-n-shape":
        meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "n_shape"}))
    elif how == "n-shape-text":
        meta_path.write_text(json.dumps({**meta, "n_shape": "many"}))
    elif how == "resolution-negative":
        meta_path.write_text(json.dumps({**meta, "resolution": -32}))
    elif how == "truncated-tensors":
        t = dst / "avatar.safetensors"
        t.write_bytes(t.read_bytes()[: t.stat().st_size // 2])
    elif how == "no-tensors":
        (dst / "avatar.safetensors").unlink()
    elif how in ("binding-out-of-range", "nan-means", "no-cameras"):
        from safetensors.torch import load_file, save_file

        t = load_file(str(dst / "avatar.safetensors"))
        if how == "binding-out-of-range":
            t["avatar.binding"] = t["avatar.binding"] + 10**6
        elif how == "nan-means":
            t["avatar.means_local"][:5] = float("nan")
        else:
            t = {k: v for k, v in t.items() if not k.startswith("extra.cameras")}
        save_file(t, str(dst / "avatar.safetensors"))
    else:
        raise ValueError(how)


DAMAGES = ("not-json", "format", "no-n-shape", "n-shape-text", "resolution-negative", "truncated-tensors",
           "no-tensors", "binding-out-of-range", "nan-means", "no-cameras")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    from dynavatar.flame import write_flame_npz
    from dynavatar.io.video import write_video
    from flame_fixtures import ellipsoid_head

    w = tmp_path_factory.mktemp("sandbox")
    rng = np.random.default_rng(0)
    write_video(w / "clip.mp4", [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)], fps=10)
    (w / "user").mkdir()
    (w / "user" / "thesis.txt").write_text("four years of work\n")
    (w / "user" / "figures").mkdir()
    (w / "user" / "figures" / "plot.txt").write_text("1 2 3\n")
    (w / "note.txt").write_text("a file, not a folder\n")
    (w / "noise.mp4").write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    (w / "empty.mp4").write_bytes(b"")
    (w / "nofaces").mkdir()
    (w / "corrupt_ds").mkdir()
    (w / "corrupt_ds" / "meta.json").write_text("{")  # a dataset whose meta.json was cut off
    write_flame_npz(ellipsoid_head(), w / "head.npz")
    (w / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (w / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned > " + str(w / "pwned").encode() + b"'\ntR.")
    (w / "list.pkl").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    (w / "mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (w / "settings.json").write_text("{not json")
    _save_avatar(w / "avatar")
    for how in DAMAGES:
        _damage(w / "avatar", w / f"bad-{how}", how)
    ro = w / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return w


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


# (id, argv with {w} for the sandbox, exit code, words the one line must contain)
CASES = [
    # --- paths: inputs
    ("preprocess-missing-video", "preprocess {w}/missing.mp4 -o {w}/out", 2, ["not found"]),
    ("preprocess-noise-video", "preprocess {w}/noise.mp4 -o {w}/out", 2, ["noise.mp4"]),
    ("preprocess-empty-video", "preprocess {w}/empty.mp4 -o {w}/out", 2, ["empty.mp4"]),
    ("preprocess-text-as-video", "preprocess {w}/note.txt -o {w}/out", 2, ["note.txt"]),
    ("preprocess-empty-folder", "preprocess {w}/nofaces -o {w}/out", 2, ["nofaces"]),
    ("track-not-a-dataset", "track {w}/user", 2, ["not a preprocessed dataset"]),
    ("track-corrupt-dataset", "track {w}/corrupt_ds", 2, ["meta.json", "preprocess the video again"]),
    ("track-missing", "track {w}/missing", 2, ["missing"]),
    ("fit-missing-video", "fit {w}/missing.mp4 -o {w}/out", 2, ["does not exist"]),
    ("flame-convert-missing", "flame convert {w}/missing.pkl {w}/out.npz", 2, ["missing.pkl"]),
    ("flame-convert-evil-pickle", "flame convert {w}/evil.pkl {w}/out.npz", 2, ["system"]),
    ("flame-convert-not-flame", "flame convert {w}/list.pkl {w}/out.npz", 2, ["list.pkl"]),
    ("flame-convert-garbage-npz", "flame convert {w}/garbage.npz {w}/out.npz", 2, ["garbage.npz"]),
    ("flame-show-missing", "flame show {w}/missing.npz", 2, ["missing.npz"]),
    ("flame-show-garbage", "flame show {w}/garbage.npz", 2, ["garbage.npz"]),
    ("render-missing-avatar", "render {w}/missing -o {w}/out.mp4", 2, ["missing"]),
    ("render-not-an-avatar", "render {w}/user -o {w}/out.mp4", 2, ["user"]),
    ("mask-neither", "mask {w}/avatar -o {w}/out", 2, ["exactly one"]),
    ("mask-both", "mask {w}/avatar -o {w}/out --mask {w}/mask.png --label lips", 2, ["exactly one"]),
    ("mask-missing-png", "mask {w}/avatar -o {w}/out --mask {w}/missing.png", 2, ["not found"]),
    ("mask-broken-png", "mask {w}/avatar -o {w}/out --mask {w}/mask.png", 2, ["cannot read"]),
    ("edit-missing-avatar", "edit {w}/missing red-hair -o {w}/out", 2, ["missing"]),
    ("config-file-missing", "edit {w}/avatar red-hair -o {w}/out --config {w}/missing.json", 2, ["missing.json"]),
    ("config-file-broken", "edit {w}/avatar red-hair -o {w}/out --config {w}/settings.json", 2, ["not valid JSON"]),
    # --- paths: outputs that must not be written
    ("preprocess-into-user-folder", "preprocess {w}/clip.mp4 -o {w}/user", 2, ["not empty"]),
    ("preprocess-into-input-folder", "preprocess {w}/clip.mp4 -o {w}", 2, ["{w}"]),
    ("preprocess-out-is-file", "preprocess {w}/clip.mp4 -o {w}/note.txt", 2, ["note.txt"]),
    ("preprocess-out-readonly", "preprocess {w}/clip.mp4 -o {w}/readonly/out", 2, ["readonly"]),
    ("preprocess-out-long-name", "preprocess {w}/clip.mp4 -o {w}/" + LONG, 2, ["long"]),
    ("fit-into-user-folder", "fit {w}/clip.mp4 -o {w}/user --preset tiny", 2, ["not empty"]),
    ("fit-out-is-file", "fit {w}/clip.mp4 -o {w}/note.txt --preset tiny", 2, ["note.txt"]),
    ("fit-into-input-folder", "fit {w}/clip.mp4 -o {w} --preset tiny", 2, ["{w}"]),
    ("flame-convert-onto-folder", "flame convert {w}/head.npz {w}/user", 2, ["user"]),
    ("flame-convert-onto-itself", "flame convert {w}/head.npz {w}/head.npz", 2, ["head.npz"]),
    ("render-out-is-folder", "render {w}/avatar -o {w}/user", 2, ["user"]),
    ("render-out-readonly", "render {w}/avatar -o {w}/readonly/a.mp4", 2, ["readonly"]),
    ("render-out-long-name", "render {w}/avatar -o {w}/" + LONG + ".mp4", 2, ["long"]),
    ("render-drive-missing", "render {w}/avatar -o {w}/out.mp4 --drive {w}/missing", 2, ["missing"]),
    ("render-drive-not-a-dataset", "render {w}/avatar -o {w}/out.mp4 --drive {w}/user", 2, ["user"]),
    ("render-drive-steps-negative", "render {w}/avatar -o {w}/out.mp4 --drive {w}/user --steps -3", 2, ["--steps"]),
    ("export-out-is-folder", "export {w}/avatar -o {w}/user", 2, ["user"]),
    ("export-out-readonly", "export {w}/avatar -o {w}/readonly/a.ply", 2, ["readonly"]),
    ("mask-into-user-folder", "mask {w}/avatar -o {w}/user --label lips", 2, ["not empty"]),
    ("edit-into-user-folder", "edit {w}/avatar red-hair -o {w}/user", 2, ["not empty"]),
    ("edit-onto-its-input", "edit {w}/avatar red-hair -o {w}/avatar", 2, ["avatar"]),
    ("demo-into-user-folder", "demo -o {w}/user --frames 2 --resolution 32", 2, ["not empty"]),
    ("demo-out-is-file", "demo -o {w}/note.txt --frames 2 --resolution 32", 2, ["note.txt"]),
    ("bench-edit-into-user-folder", "bench edit {w}/avatar -o {w}/user", 2, ["not empty"]),
    # --- numbers
    ("preprocess-resolution-0", "preprocess {w}/clip.mp4 -o {w}/out --resolution 0", 2, ["--resolution"]),
    ("preprocess-resolution-negative", "preprocess {w}/clip.mp4 -o {w}/out --resolution -64", 2, ["--resolution"]),
    ("preprocess-max-frames-0", "preprocess {w}/clip.mp4 -o {w}/out --max-frames 0", 2, ["--max-frames"]),
    ("preprocess-stride-0", "preprocess {w}/clip.mp4 -o {w}/out --stride 0", 2, ["--stride"]),
    ("preprocess-fps-0", "preprocess {w}/clip.mp4 -o {w}/out --fps 0", 2, ["--fps"]),
    ("preprocess-fps-text", "preprocess {w}/clip.mp4 -o {w}/out --fps fast", 2, ["--fps"]),
    ("fit-steps-negative", "fit {w}/clip.mp4 -o {w}/out --steps -5", 2, ["--steps"]),
    ("fit-steps-0", "fit {w}/clip.mp4 -o {w}/out --steps 0", 2, ["--steps"]),
    ("fit-batch-size-0", "fit {w}/clip.mp4 -o {w}/out --batch-size 0", 2, ["--batch-size"]),
    ("fit-max-frames-0", "fit {w}/clip.mp4 -o {w}/out --max-frames 0", 2, ["--max-frames"]),
    ("fit-set-negative-steps", "fit {w}/clip.mp4 -o {w}/out --set reconstruct.steps=-5", 2, ["reconstruct.steps"]),
    ("fit-set-zero-resolution", "fit {w}/clip.mp4 -o {w}/out --set preprocess.resolution=0", 2, ["resolution"]),
    ("fit-set-unknown", "fit {w}/clip.mp4 -o {w}/out --set stepz=1", 2, ["unknown setting", "reconstruct.steps"]),
    ("fit-set-ambiguous", "fit {w}/clip.mp4 -o {w}/out --set steps=1", 2, ["ambiguous"]),
    ("fit-set-wrong-type", "fit {w}/clip.mp4 -o {w}/out --set reconstruct.steps=many", 2, ["an integer"]),
    ("fit-device-banana", "fit {w}/clip.mp4 -o {w}/out --device banana", 2, ["--device"]),
    ("fit-preset-unknown", "fit {w}/clip.mp4 -o {w}/out --preset huge", 2, ["--preset"]),
    ("render-device-banana", "render {w}/avatar -o {w}/out.mp4 --device banana", 2, ["--device"]),
    ("render-device-cuda-9", "render {w}/avatar -o {w}/out.mp4 --device cuda:9", 2, ["--device"]),
    ("export-frame-too-big", "export {w}/avatar -o {w}/out.ply --frame 99999", 2, ["0..3"]),
    ("export-frame-negative", "export {w}/avatar -o {w}/out.ply --frame -1", 2, ["--frame"]),
    ("mask-frame-too-big", "mask {w}/avatar -o {w}/out --label lips --frame 999", 2, ["0..3"]),
    ("mask-yaw-absurd", "mask {w}/avatar -o {w}/out --label lips --yaw 1000", 2, ["--yaw"]),
    ("mask-stride-0", "mask {w}/avatar -o {w}/out --label lips --stride 0", 2, ["--stride"]),
    ("demo-frames-0", "demo -o {w}/out --frames 0", 2, ["--frames"]),
    ("demo-frames-negative", "demo -o {w}/out --frames -3", 2, ["--frames"]),
    ("demo-resolution-0", "demo -o {w}/out --resolution 0", 2, ["--resolution"]),
    ("track-set-wrong-type", "track {w}/user --set lr=fast", 2, ["lr", "a number"]),
    ("track-preset-unknown", "track {w}/user --preset nope", 2, ["--preset"]),
    ("bench-render-splats-text", "bench render --splats many", 2, ["--splats"]),
    ("bench-render-splats-0", "bench render --splats 0,10", 2, ["--splats"]),
    ("bench-torch-render-resolution-0", "bench torch-render --resolution 0", 2, ["--resolution"]),
    ("bench-mask-eval-0", "bench mask {w}/avatar --eval 0", 2, ["--eval"]),
    ("bench-mask-set-unknown", "bench mask {w}/avatar --set nonsense=1", 2, ["unknown setting"]),
    ("edit-set-unknown", "edit {w}/avatar red-hair -o {w}/out --set nonsense=1", 2, ["unknown setting", "steps"]),
    ("edit-set-wrong-type", "edit {w}/avatar red-hair -o {w}/out --set steps=lots", 2, ["an integer"]),
    # --- prompts
    ("edit-empty-prompt", "edit {w}/avatar '' -o {w}/out --plan-only", 2, ["prompt"]),
    ("edit-endless-prompt", "edit {w}/avatar " + "red-hair-" * 1200 + " -o {w}/out --plan-only", 2, ["prompt"]),
    ("edit-too-many-clauses", "edit {w}/avatar 'red hair, blue eyes, pink lips, green brows, grey beard, "
     "black hair, gold eyes, red lips, blue brows, white beard' -o {w}/out --plan-only", 2, ["clauses"]),
    ("edit-not-english", "edit {w}/avatar 'rote Haare bitte' -o {w}/out --plan-only", 2, ["English"]),
]
# --- damaged avatars, through each command that opens one
CASES += [(f"render-avatar-{how}", f"render {{w}}/bad-{how} -o {{w}}/out.mp4", 2, [f"bad-{how}"]) for how in DAMAGES]
CASES += [(f"export-avatar-{how}", f"export {{w}}/bad-{how} -o {{w}}/out.ply", 2, [f"bad-{how}"])
          for how in ("no-n-shape", "nan-means", "binding-out-of-range")]


def _argv(template: str, w: Path) -> list[str]:
    import shlex

    # root may write into a chmod-ed folder; nobody writes under /sys
    readonly = "/sys/dynavatar-test" if os.geteuid() == 0 else str(w / "readonly")
    return [a.replace("{w}/readonly", readonly).replace("{w}", str(w)) for a in shlex.split(template)]


@pytest.mark.parametrize("case, template, code, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(sandbox, case, template, code, words):
    before = _snapshot(sandbox)
    r = CliRunner().invoke(main, _argv(template, sandbox))
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith(("INFO ", "WARNING "))]
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and len(lines) == 1, r.output
    assert lines[0].startswith("error: "), r.output
    for word in words:
        if word == "readonly" and os.geteuid() == 0:
            word = "/sys"
        assert word.replace("{w}", str(sandbox)) in lines[0], (word, lines[0])
    assert _snapshot(sandbox) == before, "the command changed the sandbox"
    assert not (sandbox / "pwned").exists()


def test_the_battery_is_the_size_the_issue_asks_for():
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)


# --- interruption: Ctrl-C in the middle of writing leaves nothing half-written
def test_ctrl_c_while_rendering_leaves_no_video(sandbox, monkeypatch):
    from dynavatar.render.torch_renderer import TorchRenderer

    calls = {"n": 0}
    real = TorchRenderer.render

    def render_then_interrupt(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(TorchRenderer, "render", render_then_interrupt)
    before = _snapshot(sandbox)
    r = CliRunner().invoke(main, ["render", str(sandbox / "avatar"), "-o", str(sandbox / "out.mp4"), "--device", "cpu"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 130 and len(lines) == 1 and "interrupted" in lines[0], r.output
    assert calls["n"] == 3 and _snapshot(sandbox) == before  # no out.mp4, no temp file


def test_ctrl_c_while_editing_leaves_no_edited_avatar(sandbox, monkeypatch):
    from dynavatar.api import Avatar

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Avatar, "edit", interrupted)
    before = _snapshot(sandbox)
    r = CliRunner().invoke(main, ["edit", str(sandbox / "avatar"), "red hair", "-o", str(sandbox / "red")])
    assert r.exit_code == 130 and "Traceback" not in r.output, r.output
    assert _snapshot(sandbox) == before
