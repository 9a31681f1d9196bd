"""A saved avatar's training frames, found again: the fit records which frames it used, and a loaded
avatar reads them back from the dataset folder (where the fit found it, or where it moved to).

What the fit records (``dataset_record``, in the avatar's ``meta["dataset"]``; the frame list itself
is ``meta["frame_index"]``)::

    path             the dataset folder, absolute
    n_frames         frames in the dataset (= the clip)
    crop_resolution  the dataset's crop side (pixels)
    resolution       the side the fit resized the crops to (= the avatar's cameras)
    eval_fraction    the held-out fraction, and the split it gave: train_idx, eval_idx (clip indices)

``reattach_frames`` checks a dataset against that record (frame count, crop side, source frames),
so the frames it returns are the very frames, targets, cameras and split the fit evaluated on. The
tracked motion comes from the dataset's cached tracking (``tracking/``) when that is the one the
fit used (same cameras); otherwise TrainData.params is None: evaluation does not need it (it poses
the frames with the avatar's saved, refined parameters, and ``refine_tracking`` starts from those),
only the ``"tracked"`` training motion does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import AvatarFileError, VideoError
from ..geometry.cameras import Cameras
from ..perceive.dataset import FrameDataset
from ..track.cache import TRACKING_FOLDER
from ..track.result import TrackingResult
from .data import TrainData, _crop_cameras, load_train_data

__all__ = ["dataset_record", "recorded_dataset", "check_dataset", "reattach_frames"]

logger = logging.getLogger("dynavatar")

#: how to point a loaded avatar at its frames, for the error messages
_HOW = "pass data=DATASET_DIR to Avatar.load (the folder `dynavatar preprocess` wrote for the clip)"


def dataset_record(dataset: FrameDataset, data: TrainData, eval_fraction: float, foreground: bool = True,
                   despill: bool = True) -> dict:
    """What ``reattach_frames`` needs to find the fit's frames again (JSON-ready); ``foreground``:
    whether the fit's targets took the room's colour out of the matte's soft edge (``_read_frames``),
    ``despill``: and a chroma-key backdrop's light off the person."""
    return {"path": str(Path(dataset.root).resolve()), "n_frames": len(dataset),
            "crop_resolution": dataset.resolution, "resolution": data.resolution,
            "eval_fraction": float(eval_fraction), "train_idx": [int(i) for i in data.train_idx.tolist()],
            "eval_idx": [int(i) for i in data.eval_idx.tolist()], "foreground_colours": bool(foreground),
            "despill": bool(foreground and despill)}


def recorded_dataset(meta: dict) -> dict | None:
    """The fit's record of its dataset (``dataset_record``), or for an avatar saved before the record
    existed, one rebuilt from its "source", "frame_index" and "resolution" (the split then is the
    default last 10 %); None when the avatar names no dataset (not fitted by ``from_dataset``)."""
    rec = meta.get("dataset")
    if isinstance(rec, dict):
        return rec
    if isinstance(meta.get("source"), str) and isinstance(meta.get("frame_index"), list):
        return {"path": meta["source"], "n_frames": len(meta["frame_index"]), "resolution": meta.get("resolution"),
                "eval_fraction": 0.1}
    return None


def _int(rec: dict, key: str, optional: bool = False) -> int | None:
    v = rec.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise AvatarFileError(f"avatar.json: dataset.{key} must be a non-negative integer, not {v!r} "
                              "(the folder is damaged or not written by dynavatar save)")
    return v


def check_dataset(record: dict, frame_index: list | None, folder: str | os.PathLike | None = None) -> FrameDataset:
    """The dataset at ``folder`` (default: the recorded path), refused with a one-line AvatarFileError
    when it is absent or differs from the record (frame count, crop side, source frames). Reads only
    its metadata and landmarks, not the frames."""
    path = Path(folder if folder is not None else str(record.get("path", "")))
    given = "data=" if folder is not None else "the recorded dataset "
    if not (path / "meta.json").is_file():
        if folder is None:
            raise AvatarFileError(f"this avatar's frames are not at hand: its dataset {path} is gone; {_HOW}")
        raise AvatarFileError(f"data={path} is not a preprocessed dataset (no meta.json); {_HOW}")
    try:
        ds = FrameDataset.load(path)
    except (VideoError, OSError, ValueError, KeyError) as exc:
        raise AvatarFileError(f"{given}{path} cannot be read ({_one_line(exc)}); {_HOW}") from exc
    n, crop = _int(record, "n_frames"), _int(record, "crop_resolution", optional=True)
    diffs = []
    if len(ds) != n:
        diffs.append(f"{len(ds)} frames, the avatar was fitted to {n}")
    elif frame_index is not None and [int(i) for i in ds.frame_index] != [int(i) for i in frame_index]:
        diffs.append("its frames come from other video frames (frame_index differs)")
    if crop is not None and ds.resolution != crop:
        diffs.append(f"{ds.resolution}-px crops, the avatar's dataset had {crop}-px")
    if diffs:
        raise AvatarFileError(f"{given}{path} is not the dataset this avatar was fitted to ({'; '.join(diffs)}); "
                              f"{_HOW}")
    return ds


def _fitted_tracking(ds: FrameDataset, cameras: Cameras) -> TrackingResult | None:
    """The dataset's cached tracking if it is the one the fit used (its cameras, at the avatar's
    resolution, are the avatar's), else None with a warning saying what that costs."""
    folder = Path(ds.root) / TRACKING_FOLDER
    why = "is missing"
    if (folder / "tracking.json").is_file():
        try:
            tracking = TrackingResult.load(folder)
        except Exception as exc:  # noqa: BLE001 - any unreadable tracking means the same here
            tracking, why = None, f"cannot be read ({type(exc).__name__})"
        if tracking is not None:
            scaled = _crop_cameras(tracking.cameras, cameras.width)
            if len(tracking) == len(cameras) and _same_cameras(scaled, cameras):
                return tracking
            why = "is not the one this avatar was fitted with"
    logger.warning("the tracking in %s %s: the frames are attached without the tracked motion "
                   "(evaluation does not need it; motion='tracked' does)", folder, why)
    return None


def _same_cameras(a: Cameras, b: Cameras) -> bool:
    b = b.to("cpu")
    return (a.viewmats.shape == b.viewmats.shape and torch.allclose(a.viewmats.float(), b.viewmats, atol=1e-6)
            and torch.allclose(a.Ks.float(), b.Ks, rtol=1e-6, atol=1e-4))


def reattach_frames(record: dict, frame_index: list | None, cameras: Cameras, device: torch.device | str,
                    folder: str | os.PathLike | None = None) -> TrainData:
    """The fit's TrainData read back from the dataset (``folder``, default the recorded path):
    same frames, targets, cameras [N] (the saved ones) and train/eval split; AvatarFileError when the
    dataset is gone or differs (``check_dataset``)."""
    ds = check_dataset(record, frame_index, folder)
    res = _int(record, "resolution", optional=True) or cameras.width
    if res != cameras.width or len(cameras) != len(ds):
        raise AvatarFileError(f"avatar.json: the dataset record ({record.get('n_frames')} frames at {res} px) "
                              f"disagrees with the saved cameras ({len(cameras)} at {cameras.width} px); "
                              "the folder is damaged or not written by dynavatar save")
    split, fraction = _split(record, len(ds)), record.get("eval_fraction", 0.1)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction < 1:
        raise AvatarFileError(f"avatar.json: dataset.eval_fraction must be a number in [0, 1), not {fraction!r} "
                              "(the folder is damaged or not written by dynavatar save)")
    try:
        return load_train_data(ds, _fitted_tracking(ds, cameras), res, float(fraction), device,
                               cameras=cameras.to("cpu"), split=split,
                               foreground=record.get("foreground_colours") is True,  # older fits: without
                               despill=record.get("despill") is True)
    except (OSError, ValueError) as exc:  # a frame file missing or unreadable
        raise AvatarFileError(f"the dataset {ds.root} cannot be read ({_one_line(exc)}); "
                              "preprocess the clip again or " + _HOW) from exc


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _split(record: dict, n: int) -> tuple[list[int], list[int]] | None:
    """The recorded (train_idx, eval_idx), checked to split the clip's ``n`` frames; None when the
    record predates them (the split is then recomputed from eval_fraction, as the fit did)."""
    train, held = record.get("train_idx"), record.get("eval_idx")
    if train is None and held is None:
        return None
    ok = isinstance(train, list) and isinstance(held, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in train + held)
    if not ok or sorted(train + held) != list(range(n)):
        raise AvatarFileError(f"avatar.json: dataset.train_idx and eval_idx do not split the clip's {n} frames "
                              "(the folder is damaged or not written by dynavatar save)")
    return train, held
