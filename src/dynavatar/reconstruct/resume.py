"""Checkpoints that resume a fit exactly, when to write them, and what Ctrl-C does.

A checkpoint is written at a step boundary: after step s's densification it records s + 1 as the
next step to run, together with everything the remaining steps depend on: the splats and the
per-frame motion offsets, both Adam optimizers' moments and step counts (saved after densification,
so their rows match the splats), the densification statistics, the torch CPU RNG, the trainer's
``gen`` Generator and the CUDA RNG, the step and the history. A resumed run is therefore the run it
continues: on the CPU its final splats equal, bit for bit, those of a run that was never stopped.

Tensors go into the safetensors file and the rest into the JSON (``io.checkpoint`` payloads), never
through pickle. The folder is replaced as a whole (written beside it, then swapped), so a process
killed at any instant leaves either the previous checkpoint or the new one, never a mix of the two.

Ctrl-C: ``DeferredInterrupt`` turns the first one into a request that the loop honours at the next
step boundary; a ``KeyboardInterrupt`` that arrives anyway (a second Ctrl-C, a run outside the main
thread) is saved from the last boundary when the step had not yet changed any state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError
from ..gaussians.avatar import GaussianAvatar
from ..gaussians.densify import DensifyState
from ..io.checkpoint import from_payload, load_state, save_state, to_payload
from .config import ReconstructConfig

__all__ = ["FREE_FIELDS", "Resumed", "Checkpointer", "DeferredInterrupt", "rng_state", "config_differences",
           "load_checkpoint"]

logger = logging.getLogger("dynavatar.reconstruct")

#: settings that may differ between a checkpoint and the run resuming it: how long it runs and how
#: often it logs or saves (extending a finished run is a resume)
FREE_FIELDS = ("steps", "checkpoint_every", "checkpoint_seconds", "log_every")
_SHOWN_DIFFERENCES = 5


# ------------------------------------------------------------------ RNG

def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """Every random stream the fit draws from, as uint8 tensors (copies: later draws leave them)."""
    state = {"cpu": torch.get_rng_state(), "gen": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    gen.set_state(state["gen"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ------------------------------------------------------------------ settings

def _flat(d: dict, prefix: str = "") -> dict:
    """{"lr": {"sh": 1}} -> {"lr.sh": 1}; values JSON-normalised (tuples -> lists) so a saved config
    compares equal to the same config in memory."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, cfg: ReconstructConfig) -> list[str]:
    """``"lr.sh: 0.02 -> 0.01"`` for every setting (outside ``FREE_FIELDS``) that differs between a
    checkpoint's config and ``cfg``; [] when the checkpoint may resume this run. A setting added
    after the checkpoint was written counts as equal when ``cfg`` keeps its default, which is how
    the code behaved before the setting existed."""
    now = _flat(json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))
    old = _flat(json.loads(json.dumps(saved or {}, default=str)))
    defaults = _flat(json.loads(json.dumps(dataclasses.asdict(ReconstructConfig()), default=str)))
    missing = object()
    diffs = []
    for key in sorted(set(now) | set(old)):
        if key in FREE_FIELDS:
            continue
        a, b = old.get(key, missing), now.get(key, missing)
        if a is missing and key in defaults and b == defaults[key]:
            continue  # a setting newer than the checkpoint, left as it was before it existed
        if a != b:
            diffs.append(f"{key}: {'(none)' if a is missing else a} -> {'(none)' if b is missing else b}")
    return diffs


# ------------------------------------------------------------------ the folder

def _old(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.old"


def _recover(folder: Path) -> None:
    """Finish a swap that a kill interrupted (the previous checkpoint is moved back) and remove
    half-written folders beside it."""
    try:
        if not (folder / "avatar.json").is_file() and (_old(folder) / "avatar.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(_old(folder), folder)
    except OSError:  # another process of a parallel run recovered it first
        pass
    for stale in folder.parent.glob(f".{folder.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _write_folder(folder: Path, write) -> None:
    """Write a complete folder beside ``folder``, then swap it in: two renames, so a kill leaves the
    old folder (as itself or as ``.old``, which ``_recover`` moves back) or the new one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.new-"))
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 would hide the checkpoint from the user's group
        shutil.rmtree(_old(folder), ignore_errors=True)
        if folder.exists():
            os.replace(folder, _old(folder))
        os.replace(tmp, folder)
        shutil.rmtree(_old(folder), ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there when something failed


# ------------------------------------------------------------------ saving

class Checkpointer:
    """Writes the checkpoints of one fit into ``folder`` (nothing when it is None or ``enabled`` is
    off: the other processes of a data-parallel run) and decides when one is due: every
    ``checkpoint_every`` steps or ``checkpoint_seconds`` after the last one, whichever comes first.
    ``saved_step``: the next step recorded by the newest checkpoint on disk (a resumed run's start)."""

    def __init__(self, folder: Path | None, cfg: ReconstructConfig, enabled: bool = True,
                 saved_step: int | None = None):
        self.folder = folder
        self.enabled = enabled and folder is not None
        self.cfg = cfg
        self.last_time = time.monotonic()
        self.saved_step = saved_step

    def due(self, next_step: int) -> bool:
        """Whether to save now that ``next_step - 1`` is complete (the end of the run always saves)."""
        if not self.enabled or next_step >= self.cfg.steps:
            return False
        every, seconds = self.cfg.checkpoint_every, self.cfg.checkpoint_seconds
        return bool(every and next_step % every == 0) or bool(
            seconds and time.monotonic() - self.last_time >= seconds)

    def save(self, next_step: int, avatar: GaussianAvatar, deltas: dict[str, Tensor] | None,
             opt: torch.optim.Optimizer, opt_params: torch.optim.Optimizer | None, densify: DensifyState,
             history: list[dict], rng: dict[str, Tensor]) -> Path | None:
        """Write the state in which steps ``0 .. next_step - 1`` are complete."""
        if not self.enabled:
            return None
        extra = {f"delta.{k}": v for k, v in (deltas or {}).items()}
        extra.update({f"densify.{f.name}": getattr(densify, f.name) for f in dataclasses.fields(densify)})
        extra.update({f"rng.{k}": v for k, v in rng.items()})
        optim = {"avatar": opt.state_dict(), "motion": opt_params.state_dict() if opt_params is not None else None}
        optim_json, optim_tensors = to_payload(optim, "optim")
        extra.update(optim_tensors)
        meta = {"step": next_step, "history": history[-200:], "config": dataclasses.asdict(self.cfg),
                "optimizers": optim_json}
        _write_folder(self.folder, lambda tmp: save_state(tmp, avatar, None, meta, extra))
        self.last_time, self.saved_step = time.monotonic(), next_step
        return self.folder


# ------------------------------------------------------------------ loading

@dataclasses.dataclass
class Resumed:
    """A checkpoint read back: the splats and motion offsets to build the optimizers on, and the rest,
    which ``restore`` puts into them."""

    folder: Path
    avatar: GaussianAvatar
    deltas: dict[str, Tensor]  # "expr" -> [N, E], ... (empty when the run refines no motion)
    step: int  # the next step to run
    history: list[dict]
    meta: dict
    extra: dict[str, Tensor]

    def restore(self, opt: torch.optim.Optimizer, opt_params: torch.optim.Optimizer | None,
                gen: torch.Generator, device: torch.device) -> DensifyState:
        """Load both optimizers' state and the RNG streams; -> the densification statistics.

        A checkpoint of an older version holds only the splats and offsets: it resumes with fresh
        optimizer moments, statistics and random streams (with a warning: not the run it continues)."""
        n = self.avatar.num_splats
        optim = self.meta.get("optimizers")
        if optim is None or "rng.gen" not in self.extra:
            logger.warning("%s holds no optimizer or RNG state (an older version wrote it); resuming with fresh "
                           "optimizer moments, so the run will differ from an uninterrupted one", self.folder)
            return DensifyState.zeros(n, device=device)
        optim = from_payload(optim, {k: v.cpu() for k, v in self.extra.items() if k.startswith("optim.")})
        _load_optimizer(opt, optim["avatar"])
        if opt_params is not None and optim.get("motion") is not None:
            _load_optimizer(opt_params, optim["motion"])
        _set_rng_state({k[4:]: v for k, v in self.extra.items() if k.startswith("rng.")}, gen, device)
        fields = [f.name for f in dataclasses.fields(DensifyState)]
        if all(f"densify.{f}" in self.extra for f in fields):
            return DensifyState(**{f: self.extra[f"densify.{f}"].to(device) for f in fields})
        return DensifyState.zeros(n, device=device)


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict) -> None:
    """The saved per-parameter state (moments, step) and learning rates into ``opt``; the other
    hyper-parameters stay ``opt``'s own (the settings are the same; ``fused`` follows the device).
    ``load_state_dict`` moves the moments onto the parameters' device (and the step for fused Adam)."""
    sd = opt.state_dict()
    if len(saved["param_groups"]) != len(sd["param_groups"]):
        raise ConfigError(f"the checkpoint's optimizer has {len(saved['param_groups'])} parameter groups, this run "
                          f"{len(sd['param_groups'])}; run with --restart (resume=False) to start over")
    for group, old in zip(sd["param_groups"], saved["param_groups"]):
        group["lr"] = old["lr"]
    sd["state"] = saved["state"]
    opt.load_state_dict(sd)


def load_checkpoint(folder: Path | None, cfg: ReconstructConfig, device: torch.device,
                    resume: bool = True) -> Resumed | None:
    """The checkpoint in ``folder`` to continue, or None to start over (none there, or ``resume`` off:
    the next save overwrites it). One written with other settings is never resumed silently: it
    raises ``ConfigError`` naming the settings that differ."""
    if folder is None:
        return None
    _recover(folder)
    if not resume or not (folder / "avatar.json").is_file():
        return None
    try:
        saved = json.loads((folder / "avatar.json").read_text()).get("config")
    except (OSError, ValueError):
        saved = None
    diffs = config_differences(saved, cfg) if saved is not None else ["settings: not recorded"]
    if diffs:
        more = f", and {len(diffs) - _SHOWN_DIFFERENCES} more" if len(diffs) > _SHOWN_DIFFERENCES else ""
        raise ConfigError(f"{folder} was written with other settings ({', '.join(diffs[:_SHOWN_DIFFERENCES])}{more}); "
                          "run with --restart (resume=False) to start over, or use another -o")
    avatar, _, meta, extra = load_state(folder, device=device)
    deltas = {k[6:]: v for k, v in extra.items() if k.startswith("delta.")}
    logger.info("resuming from %s at step %d", folder, int(meta["step"]))
    return Resumed(folder, avatar, deltas, int(meta["step"]), list(meta.get("history", [])), meta, extra)


# ------------------------------------------------------------------ Ctrl-C

class DeferredInterrupt:
    """Within ``with``: the first SIGINT (Ctrl-C) sets ``requested`` instead of raising, so the loop
    stops at the next step boundary, where its state is whole and saves exactly; a second one raises
    ``KeyboardInterrupt`` at once (a user who insists). Only active in the main thread and only over
    Python's default handler (a handler someone else installed is left alone); ``enabled=False`` (data-
    parallel runs, whose processes must stop at the same step) leaves SIGINT as it is."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt requested: stopping after this step (Ctrl-C again to stop at once)")

    def __enter__(self) -> "DeferredInterrupt":
        if (self.enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
