"""Checkpoints: safetensors for tensors + JSON for the rest, written atomically, versioned.

One format for both the trainer's resumable state (``reconstruct.trainer``) and a saved avatar
(``io.avatar_files`` lays out its extra tensors and metadata on top): tensors never go through
pickle, and the JSON is written last, so a folder whose JSON exists always has a complete tensor file.

Richer state (an optimizer's ``state_dict``, RNG states) travels as a *payload*: ``to_payload`` splits
a nested structure into a JSON part (for ``meta``) and its tensors (for ``extra``), and ``from_payload``
puts it back together, with int keys and tuples intact, still without pickle. A saved avatar's
folder does not use payloads, so it reads exactly as before.
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

__all__ = ["save_state", "load_state", "to_payload", "from_payload", "CHECKPOINT_FORMAT"]

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


# ------------------------------------------------------------------ payloads: nested state without pickle

def to_payload(obj, prefix: str) -> tuple[object, dict[str, Tensor]]:
    """A nested structure of dicts, lists, tuples, JSON scalars and tensors -> (a JSON-able twin,
    {name: tensor}). Each tensor is replaced by ``{"$tensor": name}`` with ``name`` starting with
    ``prefix``; tuples become ``{"$tuple": [...]}`` and dicts with non-string keys (an optimizer's
    state is keyed by parameter index) ``{"$items": [[key, value], ...]}``, so ``from_payload``
    returns the same types. Floats survive JSON exactly (``repr`` round-trips)."""
    tensors: dict[str, Tensor] = {}

    def enc(x, path: str):
        if isinstance(x, Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {"$tensor": path}
        if isinstance(x, tuple):
            return {"$tuple": [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in x):
                return {k: enc(v, f"{path}.{k}") for k, v in x.items()}
            return {"$items": [[k, enc(v, f"{path}.{k}")] for k, v in x.items()]}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"{path}: a {type(x).__name__} cannot go into a checkpoint payload")

    return enc(obj, prefix), tensors


def from_payload(obj, tensors: dict[str, Tensor]):
    """Inverse of ``to_payload``: the JSON twin and its tensors -> the nested structure."""
    if isinstance(obj, list):
        return [from_payload(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "$tensor" in obj:
            name = obj["$tensor"]
            if name not in tensors:
                raise DynavatarError(f"checkpoint payload names a tensor {name!r} that the tensor file lacks")
            return tensors[name]
        if "$tuple" in obj:
            return tuple(from_payload(v, tensors) for v in obj["$tuple"])
        if "$items" in obj:
            return {k: from_payload(v, tensors) for k, v in obj["$items"]}
        return {k: from_payload(v, tensors) for k, v in obj.items()}
    return obj
