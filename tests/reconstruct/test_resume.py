"""A resumed fit is the run it continues: after a kill -9, a crash, Ctrl-C (raised in the loop, or a
real SIGINT) the continuation ends with the same splats, optimizer moments, RNG streams and
densification statistics, bit for bit, as a run that was never stopped; a checkpoint of other
settings is refused, not silently discarded; checkpoints also come by time."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dynavatar.errors import ConfigError, RunInterrupted
from dynavatar.flame import FlameModel
from dynavatar.reconstruct import ReconstructConfig, fit_avatar
from dynavatar.reconstruct.config import PRESETS
from dynavatar.reconstruct.resume import load_checkpoint
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head

STEPS, EVERY = 30, 10
TESTS = Path(__file__).resolve().parents[1]


def _head():
    return FlameModel(ellipsoid_head(n_lat=12, n_lon=16))  # 352 triangles: a few hundred splats


def _cfg(**kw) -> ReconstructConfig:
    """30 steps with densification (clone/split/prune every 4 steps, an opacity reset at 12) inside
    them, so the statistics, the splat count and the optimizer rows all change before and after any stop."""
    cfg = ReconstructConfig.preset("tiny", steps=STEPS, resolution=32, log_every=5, checkpoint_every=EVERY,
                                   checkpoint_seconds=0.0)
    cfg.densify = dataclasses.replace(cfg.densify, refine_start=4, refine_stop=24, refine_every=4, reset_every=12)
    return dataclasses.replace(cfg, **kw)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny fits on a shared 2-core machine: a thread pool costs more than it gives (and a busy machine
    makes it spin). Every run here, the reference included, uses one thread, so float reductions are
    the same in all of them; conftest restores the count after each test."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clip():
    torch.set_num_threads(1)  # module fixtures run before ``_one_thread``
    model = _head()
    renderer = TorchRenderer()
    return model, renderer, synthetic_clip(model, renderer, n_frames=8, resolution=32)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory):
    """The uninterrupted run: its result and its final checkpoint's tensors (optimizer moments...)."""
    model, renderer, data = clip
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    res = fit_avatar(data, model, renderer, _cfg(), out_dir=out, progress=False)
    assert res.history[-1]["splats"] > 2 * res.history[0]["splats"]  # densification ran, and changed things
    return res, load_file(str(out / "checkpoint" / "avatar.safetensors"))


class StopAt(TorchRenderer):
    """The real renderer, which does ``action`` on its ``call``-th training render (one per step; the
    renders of features, such as the first colours' votes, do not count)."""

    def __init__(self, call: int, action):
        super().__init__()
        self.call, self.action, self.calls = call, action, 0

    def render(self, *args, **kwargs):
        if kwargs.get("features") is not None:
            return super().render(*args, **kwargs)
        self.calls += 1
        if self.calls == self.call:
            self.action()
        return super().render(*args, **kwargs)


def _saved_step(out: Path) -> int:
    return json.loads((out / "checkpoint" / "avatar.json").read_text())["step"]


def _assert_same_run(res, out: Path, reference) -> None:
    """Final splats, motion and every tensor of the final checkpoint (both optimizers' moments and
    steps, densification statistics, RNG streams) equal the uninterrupted run's."""
    ref, ref_tensors = reference
    for f in dataclasses.fields(res.avatar):
        a, b = getattr(res.avatar, f.name), getattr(ref.avatar, f.name)
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f.name
    assert torch.equal(res.params.expr, ref.params.expr) and torch.equal(res.params.rotation, ref.params.rotation)
    tensors = load_file(str(out / "checkpoint" / "avatar.safetensors"))
    assert tensors.keys() == ref_tensors.keys()
    assert any(k.endswith("exp_avg_sq") for k in tensors)
    assert "extra.densify.grad2d" in tensors and "extra.rng.gen" in tensors
    for k in tensors:
        assert torch.equal(tensors[k], ref_tensors[k]), k


def _crash():
    raise RuntimeError("simulated crash")


def test_resume_after_a_crash_is_the_uninterrupted_run(clip, reference, tmp_path):
    model, _, data = clip
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies in step 14, nothing saved on the way out
        fit_avatar(data, model, StopAt(15, _crash), _cfg(), out_dir=tmp_path, progress=False)
    assert _saved_step(tmp_path) == EVERY  # the last periodic checkpoint: steps 0..9 done
    res = fit_avatar(data, model, TorchRenderer(), _cfg(), out_dir=tmp_path, progress=False)
    assert [h["step"] for h in res.history][:3] == [0, 5, 10]  # continued from the checkpoint's history
    _assert_same_run(res, tmp_path, reference)


def test_keyboard_interrupt_saves_the_last_completed_step(clip, reference, tmp_path):
    model, _, data = clip

    def ctrl_c():
        raise KeyboardInterrupt

    # the 18th render is step 17's: steps 0..16 are complete, step 17 has only drawn its frames
    with pytest.raises(RunInterrupted, match=f"interrupted at step 17 of {STEPS}; the state was saved in .*checkpoint"):
        fit_avatar(data, model, StopAt(18, ctrl_c), _cfg(), out_dir=tmp_path, progress=False)
    assert _saved_step(tmp_path) == 17
    res = fit_avatar(data, model, TorchRenderer(), _cfg(), out_dir=tmp_path, progress=False)
    _assert_same_run(res, tmp_path, reference)


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test: a shell starts background jobs with SIGINT ignored, and
    the fit (rightly) leaves an ignored SIGINT alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_stops_at_the_end_of_the_step(clip, reference, tmp_path, default_sigint):
    """A real Ctrl-C (SIGINT) in the middle of step 21 lets that step finish, then saves 22 steps."""
    model, _, data = clip
    with pytest.raises(RunInterrupted, match="interrupted at step 22 of"):
        fit_avatar(data, model, StopAt(22, lambda: signal.raise_signal(signal.SIGINT)), _cfg(), out_dir=tmp_path,
                   progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    assert _saved_step(tmp_path) == 22
    res = fit_avatar(data, model, TorchRenderer(), _cfg(), out_dir=tmp_path, progress=False)
    _assert_same_run(res, tmp_path, reference)


def test_interrupt_without_an_output_folder_says_nothing_was_saved(clip):
    model, _, data = clip

    def ctrl_c():
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match="interrupted at step 1 of 4; nothing was saved"):
        fit_avatar(data, model, StopAt(2, ctrl_c), _cfg(steps=4), progress=False)


_CHILD = """
import sys, time
sys.path[:0] = [{tests!r}, {here!r}]
import torch
torch.set_num_threads({threads})  # the same float reductions as this process
import test_resume as t
from dynavatar.reconstruct import fit_avatar
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
model = t._head()
data = synthetic_clip(model, TorchRenderer(), n_frames=8, resolution=32)
fit_avatar(data, model, t.StopAt(13, lambda: time.sleep(120)), t._cfg(), out_dir={out!r}, progress=False)
"""


def test_resume_after_kill_9(clip, reference, tmp_path):
    """A separate process fits into ``out``; once its first checkpoint is on disk it is SIGKILLed
    (held inside step 12, so the kill always lands mid-run); this process resumes and must end with
    the uninterrupted run's state."""
    model, _, data = clip
    out = tmp_path / "run"
    script = _CHILD.format(tests=str(TESTS), here=str(Path(__file__).parent), threads=torch.get_num_threads(),
                           out=str(out))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint" / "avatar.json").is_file():
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "the child wrote no checkpoint in 120 s"
            time.sleep(0.02)
        time.sleep(0.2)  # it is now inside its held step (or on the way there)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert _saved_step(out) == EVERY
    res = fit_avatar(data, model, TorchRenderer(), _cfg(), out_dir=out, progress=False)
    _assert_same_run(res, out, reference)


def test_other_settings_are_refused_and_restart_overwrites(clip, tmp_path):
    model, renderer, data = clip
    fit_avatar(data, model, renderer, _cfg(steps=2), out_dir=tmp_path, progress=False)
    # how long it runs and how often it logs or saves may change: that is a resume
    res = fit_avatar(data, model, renderer, _cfg(steps=3, checkpoint_every=1, checkpoint_seconds=5.0, log_every=1),
                     out_dir=tmp_path, progress=False)
    assert [h["step"] for h in res.history] == [0, 1, 2]
    other = _cfg(steps=3, lr=dataclasses.replace(_cfg().lr, sh=0.5), splats_per_face=2)
    with pytest.raises(ConfigError, match=r"checkpoint was written with other settings \(lr\.sh: 0\.02 -> 0\.5, "
                                          r"splats_per_face: 1 -> 2\); run with --restart \(resume=False\)"):
        fit_avatar(data, model, renderer, other, out_dir=tmp_path, progress=False)
    assert _saved_step(tmp_path) == 3  # untouched
    res = fit_avatar(data, model, renderer, other, out_dir=tmp_path, progress=False, resume=False)
    assert [h["step"] for h in res.history] == [0, 2]
    saved = json.loads((tmp_path / "checkpoint" / "avatar.json").read_text())["config"]
    assert saved["lr"]["sh"] == 0.5 and saved["splats_per_face"] == 2  # overwritten by the new run


def test_many_differences_are_summarised_in_one_line(clip, tmp_path):
    model, renderer, data = clip
    fit_avatar(data, model, renderer, _cfg(steps=1), out_dir=tmp_path, progress=False)
    lr = dataclasses.replace(_cfg().lr, sh=0.1, expr=0.1, pose=0.1, torso=0.1, translation=0.1, quats_local=0.1)
    with pytest.raises(ConfigError, match=r"lr\.torso: 0\.0001 -> 0\.1, and 1 more\); run with --restart") as err:
        fit_avatar(data, model, renderer, _cfg(steps=1, lr=lr), out_dir=tmp_path, progress=False)
    assert "\n" not in str(err.value)


def test_checkpoints_by_time_in_every_preset(clip, tmp_path):
    """Every preset checkpoints by time (tiny too); with a tiny interval each step boundary saves."""
    assert all(PRESETS[name]().checkpoint_seconds > 0 for name in PRESETS)
    model, _, data = clip
    seen = []

    class Watch(TorchRenderer):
        def render(self, *args, **kwargs):
            ck = tmp_path / "checkpoint" / "avatar.json"
            if kwargs.get("features") is None:  # a training step's render (not the first colours' votes)
                seen.append(json.loads(ck.read_text())["step"] if ck.is_file() else None)
            return super().render(*args, **kwargs)

    fit_avatar(data, model, Watch(), _cfg(steps=5, checkpoint_every=0, checkpoint_seconds=1e-9), out_dir=tmp_path,
               progress=False)
    assert seen == [None, 1, 2, 3, 4]
    seen.clear()  # off by time and by steps: only the end of the run saves
    fit_avatar(data, model, Watch(), _cfg(steps=5, checkpoint_every=0), out_dir=tmp_path, progress=False, resume=False)
    assert seen == [5] * 5


def test_a_swap_cut_short_by_a_kill_is_recovered(clip, tmp_path):
    """Killed between the two renames of a checkpoint swap: the previous checkpoint, moved aside,
    is moved back, and a half-written folder is removed."""
    model, renderer, data = clip
    fit_avatar(data, model, renderer, _cfg(steps=2), out_dir=tmp_path, progress=False)
    ck = tmp_path / "checkpoint"
    os.replace(ck, tmp_path / ".checkpoint.old")
    (tmp_path / ".checkpoint.new-x").mkdir()
    resumed = load_checkpoint(ck, _cfg(steps=2), torch.device("cpu"))
    assert resumed is not None and resumed.step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_setting_newer_than_the_checkpoint_resumes_at_its_default():
    """A checkpoint written before a setting existed lacks it: left at its default (the behaviour
    before it existed) the run resumes; changed, the difference is named."""
    from dynavatar.reconstruct.resume import config_differences

    cfg = ReconstructConfig.preset("tiny")
    saved = dataclasses.asdict(cfg)
    del saved["w_landmark_budget"]
    assert config_differences(saved, cfg) == []
    assert config_differences(saved, dataclasses.replace(cfg, w_landmark_budget=1.0)) == \
        ["w_landmark_budget: (none) -> 1.0"]
    assert config_differences(saved, dataclasses.replace(cfg, seed=7)) == ["seed: 0 -> 7"]
