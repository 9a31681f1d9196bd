"""``resolve_device`` checks a device name against this machine once, with a one-line ConfigError,
instead of letting ``--device cuda`` on a CPU machine fail later as "avatar unreadable (pin_memory)"."""

from __future__ import annotations

import pytest
import torch

from dynavatar.device import resolve_device
from dynavatar.errors import ConfigError


def test_auto_and_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["banana", "", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "auto:1", "graphics", "cuda0"])
def test_anything_else_lists_the_valid_forms(name):
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    msg = str(err.value)
    assert "\n" not in msg and "not a device" in msg and "auto, cpu, cuda, cuda:N or mps" in msg


def test_cuda_is_checked_against_this_machine():
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(ConfigError) as err:
                resolve_device(name)
            assert str(err.value) == f"--device {name}: no CUDA device on this machine; use --device cpu (or auto)"
        return
    n = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device(f"cuda:{n - 1}") == torch.device(f"cuda:{n - 1}")
    with pytest.raises(ConfigError, match=f"this machine has {n} CUDA device"):
        resolve_device(f"cuda:{n}")


def test_mps_is_checked_against_this_machine():
    backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        assert resolve_device("mps") == torch.device("mps")
        return
    with pytest.raises(ConfigError, match="--device mps: no MPS"):
        resolve_device("mps")
