"""dynavatar: animatable, text-editable 3D Gaussian head avatars from ordinary videos.

Importing the package is cheap: it imports no gsplat, diffusers, transformers, mediapipe or
facer, compiles nothing and downloads nothing. Public names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first attribute access)
_LAZY = {
    "Avatar": "dynavatar.api",
    "PipelineConfig": "dynavatar.config",
    "FlameModel": "dynavatar.flame",
    "FlameParams": "dynavatar.flame",
    "FlameOutput": "dynavatar.flame",
    "DynavatarError": "dynavatar.errors",
    "FlameFileError": "dynavatar.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dynavatar' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
