"""A saved avatar's folder: which tensors and metadata go where, on top of the checkpoint format.

``io.checkpoint`` stores the splats (``avatar.*``), the clip's per-frame FLAME parameters
(``params.*``) and free extra tensors; this module owns the avatar's layout of the extras and the
metadata, so that a folder written by any version loads in any later one:

- ``extra.cameras.viewmats`` [N, 4, 4], ``extra.cameras.Ks`` [N, 3, 3]: the clip's cameras;
- ``extra.torso.vertices`` [T, 3], ``extra.torso.faces`` [F, 3]: the torso sheet, when the head has one,
  and ``extra.torso.motion_ref`` [6], ``extra.torso.motion_map`` [6, 3]: its head-motion -> shift map;
- ``avatar.json``: the avatar's own metadata plus ``resolution``, ``background``, ``head_source``,
  ``n_shape`` and ``n_expr`` (the head model to load it with).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..errors import DynavatarError
from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar
from ..geometry.cameras import Cameras
from .checkpoint import load_state, save_state

__all__ = ["SavedAvatar", "save_avatar", "load_avatar"]

_TORSO_MOTION_KEYS = ("torso.motion_ref", "torso.motion_map")


@dataclasses.dataclass
class SavedAvatar:
    """What an avatar folder holds, ready to use on one device."""

    gaussians: GaussianAvatar
    model: FlameModel  # the head it was fitted to (with its torso sheet, if it had one)
    params: FlameParams  # [N] the clip's per-frame parameters
    cameras: Cameras  # [N] at the saved resolution
    meta: dict
    background: tuple[float, float, float]


def save_avatar(folder: str | os.PathLike, gaussians: GaussianAvatar, model: FlameModel, params: FlameParams,
                cameras: Cameras, meta: dict, background: tuple[float, float, float]) -> Path:
    """Write an avatar into ``folder`` (``avatar.safetensors`` + ``avatar.json``); -> the folder."""
    extra = {"cameras.viewmats": cameras.viewmats, "cameras.Ks": cameras.Ks}
    if model.torso_vertices is not None:
        extra.update({"torso.vertices": model.torso_vertices, "torso.faces": model.torso_faces})
        if model.torso_motion is not None:
            extra.update(dict(zip(_TORSO_MOTION_KEYS, model.torso_motion)))
    meta = {**meta, "resolution": int(cameras.width), "background": list(background),
            "head_source": getattr(model, "source", None), "n_shape": model.n_shape, "n_expr": model.n_expr}
    return save_state(folder, gaussians, params, meta, extra)


def load_avatar(folder: str | os.PathLike, head=None, device: str | torch.device = "cpu") -> SavedAvatar:
    """Read an avatar folder onto ``device``. ``head``: the FlameModel (or a path to its file) it was
    fitted to; by default the head model that resolves, cut to the saved component counts."""
    gaussians, params, meta, extra = load_state(folder, device=device)
    if params is None:
        raise DynavatarError(f"{folder} is a training checkpoint, not a saved avatar; "
                             "use Avatar.from_dataset to resume")
    model = head if isinstance(head, FlameModel) else FlameModel.load(head, n_shape=meta["n_shape"],
                                                                      n_expr=meta["n_expr"])
    if "torso.vertices" in extra:
        motion = tuple(extra[k] for k in _TORSO_MOTION_KEYS) if _TORSO_MOTION_KEYS[1] in extra else None
        model = model.with_torso(extra["torso.vertices"], extra["torso.faces"], motion=motion)
    if int(gaussians.binding.max()) >= model.faces.shape[0]:
        raise DynavatarError(f"{folder}: the splats are bound to {int(gaussians.binding.max()) + 1}+ triangles but "
                             f"the head model has {model.faces.shape[0]}; load it with the head it was fitted to")
    res = int(meta["resolution"])
    cameras = Cameras(extra["cameras.viewmats"], extra["cameras.Ks"], res, res)
    return SavedAvatar(gaussians, model.to(device), params.to(device), cameras, meta,
                       tuple(meta.get("background", (1, 1, 1))))
