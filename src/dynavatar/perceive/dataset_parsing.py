"""Face parsing of a preprocessed frame folder: one label map (lossless PNG) per frame.

``parse_frame`` parses one crop with its landmarks and matte; ``parse_dataset`` adds ``parsing/`` to a
folder cached before parsing existed (or re-parses it), atomically: the maps are written into a
staging folder (``io.output_dir.staged_dir``) that replaces ``parsing/`` when complete, and an old
``parsing/`` is deleted only when it is recognisably the project's own.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..geometry.labels import LABEL_NAMES
from ..geometry.landmark_sets import N_MESH_POINTS
from ..io.atomic import atomic_path
from ..io.output_dir import mark_output_dir, read_marker, staged_dir
from .dataset import FrameDataset
from .face_parser import FaceParser, parse_to_labels
from .landmark_parser import LandmarkParser

__all__ = ["parse_frame", "write_labels", "parse_dataset", "ensure_parsing", "refresh_parsing"]

logger = logging.getLogger("dynavatar")

OUTPUT_KIND = "parsing"  # the marker's kind of a dataset's parsing/ folder
_LABEL_FILE = re.compile(r"\d{6}\.png")


def parse_frame(parser: FaceParser, image: np.ndarray, landmarks: np.ndarray | None,
                matte: np.ndarray | None) -> np.ndarray:
    """One crop -> uint8 labels [H, W]. Landmarks are passed on only when they are mediapipe's
    478 points (a 68-point detector's are not enough; the parser then finds its own)."""
    lm = None
    if landmarks is not None and landmarks.shape[0] == N_MESH_POINTS:
        lm = np.asarray(landmarks, dtype=np.float64)
    if hasattr(parser, "parse_labels"):  # labels only, without a fresh [K, H, W] buffer a frame
        return parser.parse_labels(image, lm, matte)
    mt = None if matte is None else np.asarray(matte, dtype=np.float32)[None]
    return parse_to_labels(parser.parse(image[None], None if lm is None else lm[None], mattes=mt))[0]


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """uint8 label map [H, W] -> lossless 8-bit PNG."""
    import imageio.v3 as iio

    iio.imwrite(path, np.ascontiguousarray(labels, dtype=np.uint8))


def parse_dataset(dataset, parser: FaceParser | None = None, progress: bool = True, overwrite: bool = False):
    """Add ``parsing/%06d.png`` to a preprocessed folder that lacks it (cached datasets from
    before parsing existed), using its crops, mattes and crop landmarks; records the parser and
    label names in meta.json. Returns the reloaded :class:`~dynavatar.perceive.FrameDataset`.

    A folder that already has a complete parsing is left alone unless ``overwrite``. The maps
    are written into a staging folder beside ``parsing/`` and swapped in at the end, so an
    interrupted run leaves no half-parsed folder behind.
    """
    ds = dataset if isinstance(dataset, FrameDataset) else FrameDataset.load(dataset)
    if ds.has_parsing and not overwrite:
        return ds
    parser = parser or LandmarkParser.for_matte(bool(ds.meta.get("settings", {}).get("refine_matte", False)))
    final = ds.root / "parsing"
    _claim_legacy_parsing(final)
    with staged_dir(final, OUTPUT_KIND) as tmp:
        for i in tqdm(range(len(ds)), desc="parsing", disable=not progress, unit="frame"):
            labels = parse_frame(parser, ds.image(i), ds.lmk_crop[i], ds.matte(i))
            write_labels(tmp / f"{i:06d}.png", labels)
    meta = dict(ds.meta, parser=getattr(parser, "name", type(parser).__name__), label_names=list(LABEL_NAMES))
    with atomic_path(ds.root / "meta.json") as path:
        Path(path).write_text(json.dumps(meta, indent=1))
    return FrameDataset.load(ds.root)


def ensure_parsing(dataset, parser: FaceParser, progress: bool = True):
    """The dataset (folder or :class:`FrameDataset`) labelled by ``parser`` (by its name): parsed
    when it has no labels, parsed again when another parser (or another version) labelled it.
    Returns the (reloaded) dataset."""
    ds = dataset if isinstance(dataset, FrameDataset) else FrameDataset.load(dataset)
    name = getattr(parser, "name", type(parser).__name__)
    stale = ds.has_parsing and ds.meta.get("parser") != name
    if ds.has_parsing and not stale:
        return ds
    if stale:
        logger.info("%s was parsed by %s; parsing it again with %s", ds.root, ds.meta.get("parser"), name)
    return parse_dataset(ds, parser, progress=progress, overwrite=stale)


def refresh_parsing(dataset, progress: bool = True):
    """The dataset (folder or :class:`FrameDataset`), parsed again when an older version of the
    offline parser labelled it: a fit of a preprocessed folder (``bench fit DATA``, on a GPU machine)
    would otherwise be labelled, and its labels judged, by the old rules, where ``preprocess`` of the
    video parses a cache again. Labels of another parser (facer) and folders without parsing are
    left alone. Returns the (reloaded) dataset."""
    ds = dataset if isinstance(dataset, FrameDataset) else FrameDataset.load(dataset)
    old = ds.meta.get("parser")
    if not ds.has_parsing or not isinstance(old, str) or not old.startswith("landmark-parser"):
        return ds
    refined = bool(ds.meta.get("settings", {}).get("refine_matte", False))
    return ensure_parsing(ds, LandmarkParser.for_matte(refined), progress=progress)


def _claim_legacy_parsing(folder: Path) -> None:
    """A ``parsing/`` folder written before folders were marked holds nothing but ``%06d.png`` label
    maps: mark it as ours so replacing it deletes it. Anything else in it (a user's file) leaves it
    unmarked, and the replaced folder is then kept aside, not deleted."""
    if not folder.is_dir() or read_marker(folder) is not None:
        return
    if all(_LABEL_FILE.fullmatch(p.name) and p.is_file() for p in folder.iterdir()):
        mark_output_dir(folder, OUTPUT_KIND)
