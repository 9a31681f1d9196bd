"""Keep mediapipe's native log lines (glog / absl / TensorFlow Lite) off the terminal.

mediapipe's C++ side writes straight to file descriptor 2 while its graph starts: "Created
TensorFlow Lite XNNPACK delegate for CPU", "All log messages before absl::InitializeLog() ...",
``W0000 ... inference_feedback_manager.cc``. They say nothing a user can act on and land between the
progress bars of every preprocess run. They come from the graph's own threads: a solution's
constructor starts the graph and returns while its calculators still load their models, so
``settle_graph`` waits for those inside the quiet block (otherwise they log later, in the middle of
whatever runs next, or during the first ``process`` call).

The environment variables glog and TensorFlow read (``GLOG_minloglevel``, ``TF_CPP_MIN_LOG_LEVEL``)
are set before mediapipe is first imported, but absl's pre-initialisation logging ignores them, so
``quiet_native_logs`` also points fd 2 at ``/dev/null`` while mediapipe creates or runs a graph, and
puts it back afterwards (also when the block raises: Python exceptions pass through untouched).

``set_verbose(True)`` (the CLI's ``--verbose``) turns all of this off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

__all__ = ["quiet_native_logs", "settle_graph", "set_verbose", "is_verbose"]

#: environment variables read by glog / TensorFlow when mediapipe's native library loads
_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}

_state = {"verbose": False, "depth": 0, "saved_fd": None, "env_set": set(), "absl_verbosity": None}
_lock = threading.Lock()


def set_verbose(flag: bool) -> None:
    """``True``: let the native libraries log as they like (undoing what quieting set, where the user
    did not set it); ``False`` (the default): quiet them."""
    _state["verbose"] = bool(flag)
    if flag:
        for key in list(_state["env_set"]):
            if os.environ.get(key) == _ENV[key]:
                del os.environ[key]
        _state["env_set"].clear()
        if _state["absl_verbosity"] is not None:
            _absl().set_verbosity(_state["absl_verbosity"])
            _state["absl_verbosity"] = None


def is_verbose() -> bool:
    return bool(_state["verbose"])


def _absl():
    from absl import logging as absl_logging  # absl-py: a dependency of mediapipe

    return absl_logging


def _quiet_settings() -> None:
    """The environment (for a native library not loaded yet) and absl's Python logger at ERROR."""
    for key, value in _ENV.items():
        if key not in os.environ:  # the user's own setting wins
            os.environ[key] = value
            _state["env_set"].add(key)
    try:
        absl_logging = _absl()
    except ImportError:  # no mediapipe, no absl: nothing to quiet there
        return
    if _state["absl_verbosity"] is None:
        _state["absl_verbosity"] = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)


def _redirect_stderr() -> None:
    """fd 2 -> /dev/null; the original is kept in ``_state["saved_fd"]``. Python's own buffered
    stderr is flushed first, so nothing written before the block is lost."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):  # no stderr, or a closed one
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect (a daemon): nothing reaches a terminal anyway
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
    finally:
        os.close(devnull)
    _state["saved_fd"] = saved


def _restore_stderr() -> None:
    saved = _state["saved_fd"]
    if saved is None:
        return
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    os.dup2(saved, 2)
    os.close(saved)
    _state["saved_fd"] = None


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence native (C/C++) log output for the duration of the block: wrap mediapipe's import,
    its model creation and its ``process`` calls. Nested and concurrent blocks share one
    redirection (the first in redirects, the last out restores). Python output written inside the
    block is dropped too, so keep the block to the native call."""
    if _state["verbose"]:
        yield
        return
    with _lock:
        _quiet_settings()
        if _state["depth"] == 0:
            _redirect_stderr()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _restore_stderr()


def settle_graph(solution) -> None:
    """Wait until a mediapipe solution's graph has opened its calculators (each loads its TF-Lite
    model, and logs, on the graph's threads after the constructor has returned). Call it inside
    ``quiet_native_logs``. ``_graph.wait_until_idle`` is mediapipe's own (0.10.x); without it the
    lines may simply come later."""
    wait = getattr(getattr(solution, "_graph", None), "wait_until_idle", None)
    if callable(wait):
        wait()
