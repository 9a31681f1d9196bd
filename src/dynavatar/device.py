"""Device selection shared by every stage: ``"auto"`` means CUDA when it is available.

A device name is checked here, once, against what the machine has: ``--device cuda`` on a machine
without CUDA would otherwise fail much later and far away (safetensors' ``pin_memory``, a kernel
launch), with a message about something else. torch is imported when a device is resolved, not
when this module is, so the command line can validate ``--device`` and ``import dynavatar`` stays light.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "DEVICE_FORMS"]

#: the forms ``resolve_device`` accepts, as the error messages list them
DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"

_NAME = re.compile(r"(auto|cpu|mps|cuda)(?::(\d+))?")


def resolve_device(name: "str | torch.device" = "auto") -> "torch.device":
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` (N below the
    number of CUDA devices) or ``"mps"`` (Apple GPU) -> torch.device; anything else, or a device this
    machine does not have, raises ConfigError with a one-line message that says what to use instead."""
    import torch

    text = str(name).strip().lower()
    m = _NAME.fullmatch(text)
    if m is None or (m.group(2) is not None and m.group(1) in ("auto", "cpu")):
        raise ConfigError(f"--device {name}: not a device; use {DEVICE_FORMS}")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return _cuda(text, None if index is None else int(index))
    if kind == "mps":
        if not _mps_available():
            raise ConfigError(f"--device {text}: no MPS (Apple GPU) device on this machine; use --device cpu (or auto)")
    return torch.device(text)


def _cuda(text: str, index: int | None) -> "torch.device":
    """``cuda`` / ``cuda:N``, refused unless this machine has that CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device {text}: no CUDA device on this machine; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ConfigError(f"--device {text}: this machine has {count} CUDA device{'s' * (count != 1)} ({have}); "
                          f"use one of those, cpu or auto")
    return torch.device(text)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
