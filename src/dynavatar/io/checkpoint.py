"""Checkpoints: safetensors for tensors + JSON for the rest, written atomically, versioned.

One format for both the trainer's resumable state (``reconstruct.trainer``) and a saved avatar
(``io.avatar_files`` lays out its extra tensors and metadata on top): tensors never go through
pickle, and the JSON is written last, so a folder whose JSON exists always has a complete tensor file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..errors import DynavatarError
from ..flame import FlameParams
from ..gaussians.avatar import GaussianAvatar
from .atomic import atomic_path

__all__ = ["save_state", "load_state", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "dynavatar-avatar/1"


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def save_state(folder: str | os.PathLike, avatar: GaussianAvatar, params: FlameParams | None, meta: dict,
               extra: dict[str, Tensor] | None = None) -> Path:
    """Write ``avatar.safetensors`` (+ refined per-frame params) and ``avatar.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"avatar.{f.name}": getattr(avatar, f.name).detach().cpu().contiguous()
               for f in dataclasses.fields(avatar) if isinstance(getattr(avatar, f.name), Tensor)}
    if params is not None:
        tensors.update({f"params.{k}": v.detach().cpu().contiguous() for k, v in params.fields()})
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    meta = {**meta, "format": CHECKPOINT_FORMAT, "sh_degree": avatar.sh_degree}
    # safetensors first, JSON last: a JSON that exists always describes a complete tensor file.
    _atomic(folder / "avatar.safetensors", lambda p: save_file(tensors, p))
    _atomic(folder / "avatar.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1, default=str)))
    return folder


def load_state(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (avatar, params or None, meta, extra)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / "avatar.json").read_text())
        t = load_file(str(folder / "avatar.safetensors"), device=str(device))
    except Exception as exc:  # noqa: BLE001 - safetensors/json/OS errors all mean the same here
        raise DynavatarError(f"{folder} holds no readable avatar ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise DynavatarError(f"{folder}: unsupported avatar format {meta.get('format')!r} (expected {CHECKPOINT_FORMAT})")
    fields = {f.name for f in dataclasses.fields(GaussianAvatar) if f.name != "sh_degree"}
    avatar = GaussianAvatar(**{k: t[f"avatar.{k}"] for k in fields}, sh_degree=int(meta["sh_degree"]))
    params = None
    if "params.shape" in t:
        params = FlameParams.from_dict(t, prefix="params.")
    extra = {k[6:]: v for k, v in t.items() if k.startswith("extra.")}
    return avatar, params, meta, extra
