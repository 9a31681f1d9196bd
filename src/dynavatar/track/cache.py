"""Track a dataset once: the result is kept beside its frames and reused by every later fit.

Tracking a clip is minutes of work that a second fit (another preset, a resumed run, a benchmark)
would repeat for the same answer, so it is saved into the dataset's ``tracking/`` folder (the
place ``dynavatar track`` writes by default) and loaded from there when it exists. The cache is
not keyed on the tracker's settings: delete the folder to track again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..flame import FlameModel
from ..perceive.dataset import FrameDataset
from .result import TrackingResult
from .tracker import TrackerConfig, track

__all__ = ["TRACKING_FOLDER", "cached_tracking", "tracked_head"]

#: the folder of a dataset that holds its tracking
TRACKING_FOLDER = "tracking"


def cached_tracking(dataset: FrameDataset, config: TrackerConfig, head=None, device: str | torch.device | None = None,
                    progress: bool = True, folder: str | os.PathLike | None = None) -> TrackingResult:
    """The tracking saved in ``folder`` (default: the dataset's ``tracking/``), or, when there is none,
    ``dataset`` tracked with ``config`` and ``head`` (a FlameModel, a file, or None: the one that
    resolves) and saved there. ``device``: where to track when ``config.device`` is "auto" (the
    caller's device, so tracking and fitting share one)."""
    folder = Path(folder) if folder is not None else Path(dataset.root) / TRACKING_FOLDER
    if (folder / "tracking.json").is_file():
        return TrackingResult.load(folder)
    if device is not None and config.device == "auto":
        config = dataclasses.replace(config, device=str(device))
    tracking = track(dataset, head=head if isinstance(head, (FlameModel, type(None))) else str(head), config=config,
                     progress=progress)
    tracking.save(folder)
    return tracking


def tracked_head(tracking: TrackingResult, head=None) -> FlameModel:
    """The head model a tracking was made with: ``head`` itself when it is a FlameModel, otherwise
    loaded (from the file ``head``, or the one that resolves) with the tracking's component counts."""
    if isinstance(head, FlameModel):
        return head
    return FlameModel.load(head, n_shape=tracking.head["n_shape"], n_expr=tracking.head["n_expr"])
