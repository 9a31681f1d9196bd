"""A saved avatar's folder: which tensors and metadata go where, on top of the checkpoint format.

``io.checkpoint`` stores the splats (``avatar.*``), the clip's per-frame FLAME parameters
(``params.*``) and free extra tensors; this module owns the avatar's layout of the extras and the
metadata, so that a folder written by any version loads in any later one:

- ``extra.cameras.viewmats`` [N, 4, 4], ``extra.cameras.Ks`` [N, 3, 3]: the clip's cameras;
- ``extra.torso.vertices`` [T, 3], ``extra.torso.faces`` [F, 3]: the torso sheet, when the head has one,
  and ``extra.torso.motion_ref`` [6], ``extra.torso.motion_map`` [6, 3]: its head-motion -> shift map;
- ``avatar.json``: the avatar's own metadata plus ``resolution``, ``background``, ``head_source``,
  ``n_shape`` and ``n_expr`` (the head model to load it with).

``load_avatar`` checks all of it before anything is built (``avatar.json``'s keys and types, every
tensor's presence, shape and dtype, finite values, indices in range, one camera per frame): a damaged
folder is refused with one line naming the file and what is wrong, never a traceback from deep
inside torch (``KeyError: 'n_shape'``, ``INDICES element is out of DATA bounds``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch

from ..errors import AvatarFileError, DynavatarError, FlameFileError
from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar, num_sh_bases
from ..geometry.cameras import Cameras
from ..geometry.labels import LABEL_NAMES, LEGACY_LABEL_NAMES, NUM_LABELS, upgrade_label_columns
from .checkpoint import CHECKPOINT_FORMAT, load_state, save_state
from .output_dir import check_output_dir, mark_output_dir

__all__ = ["SavedAvatar", "save_avatar", "load_avatar"]

_TORSO_MOTION_KEYS = ("torso.motion_ref", "torso.motion_map")
_DAMAGED = "(the folder is damaged or not written by dynavatar save)"
_FLOAT = ("F16", "BF16", "F32", "F64")
_INT = ("I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64")


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
    """Write an avatar into ``folder`` (``avatar.safetensors`` + ``avatar.json``); -> the folder.
    A non-empty folder that is neither marked as dynavatar's nor an avatar folder of an older version
    is refused before anything is written (``io.output_dir``)."""
    folder = Path(folder)
    check_output_dir(folder, "avatar", overwrite=_is_older_avatar_folder(folder))
    extra = {"cameras.viewmats": cameras.viewmats, "cameras.Ks": cameras.Ks}
    if model.torso_vertices is not None:
        extra.update({"torso.vertices": model.torso_vertices, "torso.faces": model.torso_faces})
        if model.torso_motion is not None:
            extra.update(dict(zip(_TORSO_MOTION_KEYS, model.torso_motion)))
    meta = {**meta, "resolution": int(cameras.width), "background": list(background),
            "head_source": getattr(model, "source", None), "n_shape": model.n_shape, "n_expr": model.n_expr,
            "label_names": list(LABEL_NAMES)}  # columns of avatar.labels: a later label set maps them by name
    folder = save_state(folder, gaussians, params, meta, extra)
    mark_output_dir(folder, "avatar")  # the folder is dynavatar's: a later save may replace it
    return folder


def _is_older_avatar_folder(folder: Path) -> bool:
    """An avatar saved before folders were marked: its avatar.json names our checkpoint format."""
    try:
        return json.loads((folder / "avatar.json").read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_avatar(folder: str | os.PathLike, head=None, device: str | torch.device = "cpu") -> SavedAvatar:
    """Read an avatar folder onto ``device``. ``head``: the FlameModel (or a path to its file) it was
    fitted to; by default the head model that resolves, cut to the saved component counts. Anything
    damaged or inconsistent raises a one-line AvatarFileError (the checks run on the CPU, before the
    tensors move)."""
    folder = Path(folder)
    meta = _read_meta(folder)
    _check_layout(folder, meta)
    try:
        gaussians, params, meta, extra = load_state(folder, device="cpu")
    except AvatarFileError:
        raise
    except DynavatarError as exc:  # unreadable files: checkpoint.py's message, as the avatar's error type
        raise AvatarFileError(f"{str(exc).splitlines()[0]} {_DAMAGED}") from exc
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise AvatarFileError(f"{folder / 'avatar.safetensors'}: {_line(exc)} {_DAMAGED}") from exc
    _check_finite(folder, gaussians, params, extra)
    try:  # an avatar saved with an older label list: its columns mapped by name onto today's
        gaussians.labels = upgrade_label_columns(gaussians.labels, meta.get("label_names"))
    except (ValueError, TypeError) as exc:  # label_names written by hand or damaged
        raise AvatarFileError(f"{folder / 'avatar.json'}: label_names: {_line(exc)} {_DAMAGED}") from None
    model = _head_model(folder, head, meta, extra)
    _check_fit(folder, gaussians, params, model)
    res = int(meta["resolution"])
    cameras = Cameras(extra["cameras.viewmats"], extra["cameras.Ks"], res, res)
    return SavedAvatar(gaussians.to(device), model.to(device), params.to(device), cameras.to(device), meta,
                       tuple(float(c) for c in meta.get("background", (1, 1, 1))))


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------- avatar.json
def _read_meta(folder: Path) -> dict:
    """``avatar.json``, parsed and checked: required keys present with the right types."""
    path = folder / "avatar.json"
    if not folder.is_dir():
        raise AvatarFileError(f"{folder}: no such folder; give the folder `Avatar.save` or `dynavatar fit` wrote")
    if not path.is_file():
        raise AvatarFileError(f"{folder} holds no saved avatar (no avatar.json); give the folder `Avatar.save` "
                              "or `dynavatar fit` wrote")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AvatarFileError(f"{path}: not readable JSON ({_line(exc)}) {_DAMAGED}") from exc
    if not isinstance(meta, dict):
        raise AvatarFileError(f"{path}: holds a JSON {type(meta).__name__}, not an object {_DAMAGED}")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise AvatarFileError(f"{path}: unsupported avatar format {meta.get('format')!r} (expected "
                              f"{CHECKPOINT_FORMAT}) {_DAMAGED}")
    if "n_shape" not in meta and "step" in meta:
        raise AvatarFileError(f"{folder} is a training checkpoint, not a saved avatar; "
                              "use Avatar.from_dataset to resume")
    for key, lo, hi in (("sh_degree", 0, 4), ("n_shape", 1, None), ("n_expr", 1, None), ("resolution", 1, None)):
        _int_field(path, meta, key, lo, hi)
    _optional_fields(path, meta)
    return meta


def _int_field(path: Path, meta: dict, key: str, lo: int, hi: int | None) -> None:
    if key not in meta:
        raise AvatarFileError(f"{path}: {key!r} is missing {_DAMAGED}")
    v = meta[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        span = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
        raise AvatarFileError(f"{path}: {key!r} must be {span}, not {v!r} {_DAMAGED}")


def _optional_fields(path: Path, meta: dict) -> None:
    """Fields a folder may lack (older versions), checked when present."""
    bg = meta.get("background", [1.0, 1.0, 1.0])
    if not (isinstance(bg, list) and len(bg) == 3 and all(_number(c) for c in bg)):
        raise AvatarFileError(f"{path}: 'background' must be a list of 3 numbers, not {bg!r} {_DAMAGED}")
    fi = meta.get("frame_index", [])
    if not (isinstance(fi, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in fi)):
        raise AvatarFileError(f"{path}: 'frame_index' must be a list of integers {_DAMAGED}")
    for key, kind in (("history", list), ("dataset", dict), ("labels", dict), ("edits", list), ("source", str)):
        if key in meta and not isinstance(meta[key], kind):
            raise AvatarFileError(f"{path}: {key!r} must be a JSON {'array' if kind is list else kind.__name__}, "
                                  f"not {type(meta[key]).__name__} {_DAMAGED}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------- avatar.safetensors
def _check_layout(folder: Path, meta: dict) -> None:
    """Every tensor the avatar needs, with its shape and dtype, read from the file's header only."""
    from safetensors import safe_open

    path = folder / "avatar.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            have = {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - a missing or corrupt file: safetensors/OS errors alike
        raise AvatarFileError(f"{path}: not a readable tensor file ({_line(exc)}) {_DAMAGED}") from exc
    n = _dim(path, have, "avatar.means_local", 0)
    bases = num_sh_bases(int(meta["sh_degree"]))
    f = _dim(path, have, "params.shape", 0)
    for key in ("extra.cameras.viewmats", "extra.cameras.Ks"):
        if _dim(path, have, key, 0) != f:
            raise AvatarFileError(f"{path}: {_dim(path, have, key, 0)} cameras ({key!r}) for {f} frames of "
                                  f"parameters; there is one camera per frame {_DAMAGED}")
    want = {"avatar.means_local": ([n, 3], _FLOAT), "avatar.quats_local": ([n, 4], _FLOAT),
            "avatar.log_scales_local": ([n, 3], _FLOAT), "avatar.opacity_logits": ([n], _FLOAT),
            "avatar.sh": ([n, bases, 3], _FLOAT), "avatar.binding": ([n], _INT),
            "params.shape": ([f, meta["n_shape"]], _FLOAT), "params.expr": ([f, meta["n_expr"]], _FLOAT),
            "extra.cameras.viewmats": ([f, 4, 4], _FLOAT), "extra.cameras.Ks": ([f, 3, 3], _FLOAT),
            **{f"params.{k}": ([f, w], _FLOAT) for k, w in FlameParams._WIDTHS.items() if k != "torso"}}
    optional = {"params.torso": ([f, 3], _FLOAT)}
    if "extra.torso.vertices" in have or "extra.torso.faces" in have:
        want.update({"extra.torso.vertices": ([_dim(path, have, "extra.torso.vertices", 0), 3], _FLOAT),
                     "extra.torso.faces": ([_dim(path, have, "extra.torso.faces", 0), 3], _INT)})
        if any("extra." + k in have for k in _TORSO_MOTION_KEYS):
            want.update({"extra.torso.motion_ref": ([6], _FLOAT), "extra.torso.motion_map": ([6, 3], _FLOAT)})
    for key, spec in {**want, **{k: v for k, v in optional.items() if k in have}}.items():
        _check_tensor(path, have, key, *spec)
    labels = _dim(path, have, "avatar.labels", 1, ndim=2)
    _check_tensor(path, have, "avatar.labels", [n, labels], _FLOAT)
    names = meta.get("label_names")
    known = (0, NUM_LABELS, len(LEGACY_LABEL_NAMES)) if not isinstance(names, list) else (0, len(names))
    if labels not in known:
        raise AvatarFileError(f"{path}: 'avatar.labels' has {labels} label columns; dynavatar's label set has "
                              f"{NUM_LABELS} (or 0 before labelling) {_DAMAGED}")


def _dim(path: Path, have: dict, key: str, axis: int, ndim: int | None = None) -> int:
    if key not in have:
        raise AvatarFileError(f"{path}: tensor {key!r} is missing {_DAMAGED}")
    shape = have[key][0]
    if len(shape) <= axis or (ndim is not None and len(shape) != ndim):
        raise AvatarFileError(f"{path}: tensor {key!r} has shape {shape} {_DAMAGED}")
    return int(shape[axis])


def _check_tensor(path: Path, have: dict, key: str, shape: list[int], dtypes: tuple[str, ...]) -> None:
    if key not in have:
        raise AvatarFileError(f"{path}: tensor {key!r} is missing {_DAMAGED}")
    got, dtype = have[key]
    if got != shape:
        raise AvatarFileError(f"{path}: tensor {key!r} has shape {got}, expected {shape} {_DAMAGED}")
    if dtype not in dtypes:
        kind = "floating-point" if dtypes is _FLOAT else "integer"
        raise AvatarFileError(f"{path}: tensor {key!r} has dtype {dtype}, expected {kind} {_DAMAGED}")


def _check_finite(folder: Path, gaussians: GaussianAvatar, params: FlameParams, extra: dict) -> None:
    """No NaN or inf in the splats, the parameters, the cameras or the torso sheet."""
    named = [(f"avatar.{k}", getattr(gaussians, k)) for k in (*GaussianAvatar.PARAM_NAMES, "labels")]
    named += [(f"params.{k}", t) for k, t in params.fields()]
    named += [(f"extra.{k}", t) for k, t in extra.items() if t.is_floating_point()]
    for key, t in named:
        if not bool(torch.isfinite(t).all()):
            raise AvatarFileError(f"{folder / 'avatar.safetensors'}: tensor {key!r} holds NaN or inf values "
                                  f"{_DAMAGED}")


# ---------------------------------------------------------------------------- the head model
def _head_model(folder: Path, head, meta: dict, extra: dict) -> FlameModel:
    """The head ``head`` names (or the one that resolves) with the saved torso sheet, if any."""
    try:
        model = head if isinstance(head, FlameModel) else FlameModel.load(head, n_shape=meta["n_shape"],
                                                                          n_expr=meta["n_expr"])
    except FlameFileError as exc:  # e.g. more components saved than the resolving head has
        raise AvatarFileError(f"{folder}: {_line(exc)}; load it with the head it was fitted to (head=...)") from exc
    if "torso.vertices" in extra:
        verts, faces = extra["torso.vertices"], extra["torso.faces"]
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts.shape[0]):
            raise AvatarFileError(f"{folder / 'avatar.safetensors'}: 'extra.torso.faces' index vertices outside "
                                  f"the sheet's {verts.shape[0]} {_DAMAGED}")
        motion = tuple(extra[k] for k in _TORSO_MOTION_KEYS) if _TORSO_MOTION_KEYS[1] in extra else None
        model = model.with_torso(verts, faces, motion=motion)
    return model


def _check_fit(folder: Path, gaussians: GaussianAvatar, params: FlameParams, model: FlameModel) -> None:
    """The splats bind to triangles the head has; the parameters have the head's component counts."""
    n_faces = int(model.faces.shape[0])
    b = gaussians.binding
    if b.numel() and int(b.min()) < 0:
        raise AvatarFileError(f"{folder / 'avatar.safetensors'}: 'avatar.binding' holds negative triangle "
                              f"indices {_DAMAGED}")
    if b.numel() and int(b.max()) >= n_faces:
        raise AvatarFileError(f"{folder}: the splats are bound to {int(b.max()) + 1}+ triangles but the head model "
                              f"has {n_faces}; load it with the head it was fitted to")
    if (params.shape.shape[1], params.expr.shape[1]) != (model.n_shape, model.n_expr):
        raise AvatarFileError(f"{folder}: the avatar's parameters have {params.shape.shape[1]} shape / "
                              f"{params.expr.shape[1]} expression components but the head model has "
                              f"{model.n_shape} / {model.n_expr}; load it with the head it was fitted to")
