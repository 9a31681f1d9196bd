"""mediapipe's native log lines (absl / TF-Lite) stay off stderr while the project's detectors run,
``set_verbose(True)`` lets them through, and the stderr redirection never outlives its block."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dynavatar.perceive.quiet import quiet_native_logs, set_verbose

NOISE = ("W0000", "XNNPACK", "inference_feedback")

_SCRIPT = """
import os, sys, time
import numpy as np
from dynavatar.perceive.landmarks import MediapipeFaceMesh
from dynavatar.perceive.matting import MediapipeSelfieMatte
from dynavatar.perceive.quiet import set_verbose

blank = np.zeros((64, 64, 3), np.uint8)
mesh, matter = MediapipeFaceMesh(tile_retry=False), MediapipeSelfieMatte()
time.sleep(0.3)  # outside any quiet block: the graphs' threads must have finished loading (and logging)
assert mesh.detect(blank) == []
assert matter.matte(blank).shape == (64, 64)
sys.stderr.write("QUIET-PART-DONE\\n")
sys.stderr.flush()
set_verbose(True)  # from here on the native lines may appear (not asserted: mediapipe decides)
MediapipeFaceMesh(tile_retry=False).detect(blank)
os.write(2, b"VERBOSE-PART-DONE\\n")
"""


def test_mediapipe_runs_without_native_log_lines():
    pytest.importorskip("mediapipe")
    res = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    quiet, _, verbose = res.stderr.partition("QUIET-PART-DONE\n")
    assert not [n for n in NOISE if n in quiet], quiet  # nothing before the marker
    assert "VERBOSE-PART-DONE" in verbose  # fd 2 was given back: later output reaches the terminal


def _fd2_target() -> str:
    return os.readlink("/proc/self/fd/2") if os.path.exists("/proc/self/fd/2") else str(os.fstat(2).st_ino)


def test_stderr_is_restored_after_the_block_and_exceptions_pass(capfd):
    before = _fd2_target()
    with pytest.raises(KeyError, match="boom"):
        with quiet_native_logs():
            with quiet_native_logs():  # nested blocks share one redirection
                os.write(2, b"native noise\n")
            os.write(2, b"more noise\n")
            raise KeyError("boom")
    assert _fd2_target() == before
    os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert "noise" not in err and "after the block" in err


def test_verbose_turns_the_quieting_off(capfd):
    try:
        set_verbose(True)
        with quiet_native_logs():
            os.write(2, b"native line\n")
    finally:
        set_verbose(False)
    assert "native line" in capfd.readouterr().err
