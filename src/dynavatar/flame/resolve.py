"""Which head model to use when the caller names none.

Order: ``$DYNAVATAR_FLAME``, then a FLAME file in the project's ``assets/flame/`` folder
(``flame2023_Open.pkl``, ``flame2023.pkl``, ``generic_model.pkl``, or a converted ``.npz``),
then the embedded default head that ships with dynavatar. The choice is logged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..errors import FlameFileError

__all__ = ["ResolvedHead", "resolve_head_path", "assets_dir", "default_head_path", "FLAME_FILE_NAMES"]

logger = logging.getLogger("dynavatar.flame")

FLAME_FILE_NAMES = ("flame2023_Open.pkl", "flame2023.pkl", "generic_model.pkl")
DEFAULT_HEAD_NAME = "default_head.npz"


@dataclasses.dataclass(frozen=True)
class ResolvedHead:
    path: Path
    source: str  # "argument", "DYNAVATAR_FLAME", "assets", "default"


def assets_dir() -> Path | None:
    """The project's ``assets/flame`` folder when running from a checkout (editable install)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "assets" / "flame"
        if candidate.is_dir() and (parent / "setup.py").is_file():
            return candidate
    return None


def default_head_path() -> Path:
    """The embedded default head: the checkout's copy, else the one installed with the package."""
    assets = assets_dir()
    if assets is not None and (assets / DEFAULT_HEAD_NAME).is_file():
        return assets / DEFAULT_HEAD_NAME
    packaged = Path(__file__).resolve().parent.parent / "_data" / DEFAULT_HEAD_NAME
    if packaged.is_file():
        return packaged
    raise FlameFileError(
        "the embedded default head is missing from this installation; reinstall dynavatar, or "
        "regenerate it with `python assets/flame/build_default_head.py` in a checkout"
    )


def resolve_head_path(path: str | os.PathLike | None = None) -> ResolvedHead:
    """Resolve a head model file. Never falls back silently from an explicit choice."""
    if path is not None:
        return ResolvedHead(Path(path).expanduser(), "argument")
    env = os.environ.get("DYNAVATAR_FLAME")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FlameFileError(f"DYNAVATAR_FLAME={env} does not name a file; fix or unset it")
        return ResolvedHead(p, "DYNAVATAR_FLAME")
    assets = assets_dir()
    if assets is not None:
        for name in FLAME_FILE_NAMES:
            if (assets / name).is_file():
                return ResolvedHead(assets / name, "assets")
        converted = sorted(p for p in assets.glob("*.npz") if p.name != DEFAULT_HEAD_NAME)
        if converted:
            return ResolvedHead(converted[0], "assets")
    return ResolvedHead(default_head_path(), "default")
