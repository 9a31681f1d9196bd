"""The ``dynavatar`` command line: a thin layer over the library (no algorithms here).

``app`` holds the command group and its error boundary, ``options`` the validated value types,
``settings`` the ``--set``/``--config`` machinery; the command modules register themselves on
import: data (flame, preprocess, track, fit), avatar (demo, render, mask, export, edit), view, bench,
weights (download).
"""

from __future__ import annotations

from . import avatar_commands, bench_commands, data_commands, view_commands, weights_commands  # noqa: F401 - register
from .app import main

__all__ = ["main"]
