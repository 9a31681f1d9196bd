"""Shared test fixtures: markers, output folder, paths to the real shared data.

The whole suite runs with ``HF_HUB_OFFLINE=1``, set here before anything imports huggingface_hub
(which reads it once, at import): the real backends fetch weights on first use, and no test may
reach the network by accident. A test that downloads (from a local server) opts in by setting the
variable and ``huggingface_hub.constants.HF_HUB_OFFLINE`` through ``monkeypatch``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
if "huggingface_hub.constants" in sys.modules:  # imported already (by a plugin): it read the old value
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True

import pytest  # noqa: E402 - after the offline switch, on purpose
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Real head videos/photos shared beside the checkout (never committed); tests skip without them.
REAL_DATA = Path(os.environ.get("DYNAVATAR_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


#: torch's thread count when the session started (set by the machine or OMP_NUM_THREADS).
TORCH_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Some tests pin torch to one thread (tiny models run faster so on a loaded machine); every
    test after them gets the session's count back, so no test's speed depends on the order."""
    yield
    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; run `pytest -m gpu` on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """Folder for pictures a person may want to look at after a test run."""
    out = ROOT / "test-output"
    out.mkdir(exist_ok=True)
    return out


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real shared data not found at {REAL_DATA}")
    return REAL_DATA


def fit_labelled_avatar(n_frames: int, resolution: int, steps: int, refine_steps: int | None = None):
    """An avatar fitted for ``steps`` to an ``n_frames`` synthetic clip at ``resolution`` px, then
    labelled (``refine_steps`` of label refinement; None: ``label_splats``' default)."""
    import dataclasses

    from dynavatar.api import Avatar
    from dynavatar.flame import FlameModel
    from dynavatar.reconstruct import ReconstructConfig, fit_avatar
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer

    model = FlameModel.load()
    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=n_frames, resolution=resolution)
    cfg = dataclasses.replace(ReconstructConfig.preset("tiny"), steps=steps, resolution=resolution, log_every=10)
    fit = fit_avatar(data, model, renderer, cfg, progress=False)
    avatar = Avatar(fit.avatar, fit.model, fit.params, data.cameras, {"preset": "test"}, data)
    kwargs = {} if refine_steps is None else {"refine_steps": refine_steps}
    return avatar.label_splats(progress=False, **kwargs)


@pytest.fixture(scope="session")
def tiny_labelled_avatar():
    """An avatar fitted for 10 steps to an 8-frame 32 px synthetic clip, then labelled: the edit
    tests that need a fitted, labelled avatar share this one (built once; edits return new avatars,
    so no test changes it)."""
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a shared machine (restored per test)
    return fit_labelled_avatar(n_frames=8, resolution=32, steps=10, refine_steps=10)
