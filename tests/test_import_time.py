"""``from dynavatar import Avatar`` is quick: the facade imports no torch, scipy, OpenCV, mediapipe,
gsplat, diffusers or transformers; each loads on the first method that needs it."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "scipy", "cv2", "mediapipe", "gsplat", "diffusers", "transformers")


def _median_seconds(code: str, runs: int = 3) -> float:
    """Wall time of a fresh interpreter running ``code`` (start-up included), median of ``runs``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_the_facade_imports_nothing_heavy():
    code = f"import sys; from dynavatar import Avatar; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_importing_the_facade_is_quick():
    baseline = _median_seconds("import json")
    facade = _median_seconds("from dynavatar import Avatar")
    print(f"python -c 'import json': {baseline:.3f} s; python -c 'from dynavatar import Avatar': {facade:.3f} s "
          "(median of 3)")
    if baseline >= 0.1:
        pytest.skip(f"this machine is too loaded to time imports (a bare interpreter takes {baseline:.2f} s)")
    assert facade < 1.0
