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
