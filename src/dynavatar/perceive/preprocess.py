"""Video -> cached dataset of head crops, mattes and dense landmarks (see ``dataset.py``).

Two streaming passes keep memory flat for long or large videos: the first finds and follows the
face (landmarks only), the crops are then planned for the whole clip (one side length, smoothed
centres), and the second pass cuts, mattes, parses (face labels) and writes the crops. Results are
cached: calling again with the same video and settings loads the folder instead of recomputing
(a cached folder from before parsing existed is only parsed, not recomputed).

The output folder follows ``io.output_dir``'s policy: it is checked before any work (a user's
non-empty folder, or one holding the input video, is refused), built beside its target and swapped
in when complete, and a replaced folder is deleted only when dynavatar wrote it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import NoFaceError
from ..io.output_dir import MARKER, check_output_dir, mark_output_dir, staged_dir
from .crop import crop_image, interpolate_missing, plan_crops, to_crop
from .dataset import DATASET_FORMAT, FrameDataset
from ..geometry.labels import LABEL_NAMES
from .landmarks import LandmarkDetector, MediapipeFaceMesh, follow_face
from .letterbox import LetterboxMeter
from .matting import Matter, MediapipeSelfieMatte, keep_person, refine_matte, steady_matte
from .parsing import FaceParser, LandmarkParser, ensure_parsing, parse_frame, write_labels
from .video import iter_frames, probe_video

__all__ = ["PreprocessConfig", "preprocess"]

logger = logging.getLogger("dynavatar.perceive")

OUTPUT_KIND = "dataset"  # the marker's kind for preprocessed folders

MIN_FACE_PX = 40  # below this mediapipe's landmarks are too noisy to track


@dataclasses.dataclass
class PreprocessConfig:
    resolution: int = 512  # side of the square head crop, pixels
    max_frames: int | None = None  # keep at most this many frames (after subsampling)
    stride: int = 1  # keep every n-th frame
    fps: float | None = None  # or: subsample to about this rate (overrides stride)
    crop_scale: float = 1.9  # crop side = this x the clip's 90th-percentile face size
    smooth_seconds: float = 0.15  # Gaussian smoothing of the crop centre over time
    jpeg_quality: int = 95
    parse: bool = True  # face-parse every crop into parsing/%06d.png (label indices, see labels.py)
    keep_person: bool = True  # clear matte regions not connected to the face (background objects the
    # segmenter took for the person; ``matting.keep_person``). A cache made without it is made again
    letterbox: bool = True  # black bars baked into the video are no picture (``letterbox.py``): no
    # matte there, and the frame ends where they start. A cache made without it is made again
    refine_matte: bool = True  # re-estimate alpha where the segmenter was unsure from the person's and the
    # background's colours (``matting.refine_matte``): a band of wall matted in around the hair, holes in it
    low_contrast_matte: bool = False  # ... also where hair and wall differ by little but by far more than
    # either varies (``refine_matte(low_contrast=True)``: dark hair on a flat dark wall). Off: on the clip it
    # was made for, the fit's held-out PSNR fell by 1.6 dB with it (docs/benchmarks.md)
    steady_matte: bool = True  # per-pixel median of each matte with its neighbours' (``matting.steady_matte``):
    # the segmenter's frame-to-frame flicker along an unsure outline is gone, a moving edge does not lag
    workers: int = 0  # processes that parse crops (0: one per CPU core, at most 8; 1: in this process).
    # The offline parser is pure NumPy, the slowest part of preprocessing: it is what the workers share.


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    if path.is_dir():
        return {"path": str(path.resolve()), "mtime": st.st_mtime, "entries": len(list(path.iterdir()))}
    h = hashlib.sha256()
    with open(path, "rb") as f:  # first and last MiB + size: cheap, catches replaced files
        h.update(f.read(1 << 20))
        f.seek(max(st.st_size - (1 << 20), 0))
        h.update(f.read(1 << 20))
    return {"path": str(path.resolve()), "size": st.st_size, "sha256_ends": h.hexdigest()}


#: Bumped when the same settings give other mattes (2: ``refine_matte`` fills the holes over dark hair;
#: 3: ... but the background colour from further off is used only inside the person, not along the
#: outline; 4: ``steady_matte``), so a cache made by an older version is made again.
MATTE_VERSION = 4


#: Settings added after caches were written, with the value that gives what those caches hold (a
#: setting whose default changed the output, like ``keep_person``, is not here: those caches are made again)
_BEFORE_IT_EXISTED = {"low_contrast_matte": False}


def _same_settings(old: dict | None, new: dict) -> bool:
    """Cached settings match, ignoring ``parse`` (parsing is added to a cache, not recomputed) and
    ``workers`` (how, not what); a cache written before a setting in ``_BEFORE_IT_EXISTED`` existed
    has that setting's old value."""
    if old is None:
        return False
    free = ("parse", "workers")
    old = {**_BEFORE_IT_EXISTED, **old}
    return {k: v for k, v in old.items() if k not in free} == {k: v for k, v in new.items() if k not in free}


def _same_view(a: np.ndarray, b: np.ndarray, tolerance: float = 0.05) -> bool:
    """Two crop windows (x0, y0, side) show nearly the same part of the frame: their mattes'
    pixels correspond, so ``steady_matte`` may compare them (not across a cut or a jump)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool((np.abs(a - b) <= tolerance * max(a[2], b[2])).all())


def _parse_to_file(parser: FaceParser, path: Path, crop: np.ndarray, pts: np.ndarray, alpha: np.ndarray) -> None:
    write_labels(path, parse_frame(parser, crop, pts, alpha))


class _ParsePool:
    """Parses crops (and writes their label PNGs) in worker processes while the main process crops
    and mattes the next frames; in this process when there is one core, a short clip, or a parser
    that cannot be sent to another process (a model on a GPU). At most ``2 x workers`` frames wait."""

    def __init__(self, parser: FaceParser | None, workers: int, n_frames: int):
        import pickle

        self.parser, self.pool, self.pending = parser, None, []
        n = min(os.cpu_count() or 1, 8) if workers <= 0 else workers
        if parser is None or n <= 1 or n_frames < 32:
            return
        try:
            pickle.dumps(parser)
        except Exception:  # noqa: BLE001 - any reason it cannot travel means: parse here
            return
        import concurrent.futures
        import multiprocessing

        # spawn, not fork: this process holds mediapipe's and torch's threads
        self.pool = concurrent.futures.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
        self.limit = 2 * n

    def submit(self, path: Path, crop: np.ndarray, pts: np.ndarray, alpha: np.ndarray) -> None:
        if self.pool is None:
            _parse_to_file(self.parser, path, crop, pts, alpha)
            return
        self.pending.append(self.pool.submit(_parse_to_file, self.parser, path, crop, pts, alpha))
        if len(self.pending) >= self.limit:
            self.pending.pop(0).result()  # re-raises a worker's error here

    def __enter__(self) -> "_ParsePool":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is None:
            return
        try:
            if exc[0] is None:
                for f in self.pending:
                    f.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def preprocess(video: str | os.PathLike, out_dir: str | os.PathLike, *, max_frames: int | None = None,
               config: PreprocessConfig | None = None, detector: LandmarkDetector | None = None,
               matter: Matter | None = None, overwrite: bool = False, progress: bool = True,
               parser: FaceParser | None = None) -> FrameDataset:
    """Preprocess ``video`` (a file ffmpeg reads, or a folder of images) into ``out_dir``.

    By default every frame is kept and dataset index i is the video's frame i. Frames without a
    face get interpolated landmarks and are listed in ``meta.json`` (``missing_frames``).
    Raises VideoError for unreadable input and NoFaceError when no usable face is found.
    ``parser`` labels each crop (default: the offline :class:`LandmarkParser`, given the crop's
    landmarks and matte) unless ``config.parse`` is False.
    """
    cfg = dataclasses.replace(config or PreprocessConfig(), **({"max_frames": max_frames} if max_frames else {}))
    video = Path(video).expanduser()
    out = _check_out_dir(Path(out_dir).expanduser(), video, overwrite)
    info = probe_video(video)
    settings = {**dataclasses.asdict(cfg), "matte_version": MATTE_VERSION}
    source = _fingerprint(video)
    meta_path = out / "meta.json"
    if meta_path.is_file() and not overwrite:
        try:
            old = json.loads(meta_path.read_text())
            if old.get("format") == DATASET_FORMAT and _same_settings(old.get("settings"), settings) \
                    and old.get("source") == source:
                logger.info("preprocess: using cached %s", out)
                ds = FrameDataset.load(out)
                if cfg.parse:  # parsed by another parser (version), or before parsing existed: parse it
                    ds = ensure_parsing(ds, parser or LandmarkParser.for_matte(cfg.refine_matte), progress)
                return ds
        except (json.JSONDecodeError, OSError):
            pass
    detector = detector or MediapipeFaceMesh()
    matter = matter or MediapipeSelfieMatte()
    if cfg.parse:
        parser = parser or LandmarkParser.for_matte(cfg.refine_matte)

    # Pass 1: follow the face through the clip.
    idx, points, n_faces, sizes = [], [], [], []
    prev = None
    total = min(info.n_frames or 0, cfg.max_frames or 10**9) or None
    frames = iter_frames(video, stride=cfg.stride, fps=cfg.fps, max_frames=cfg.max_frames, info=info)
    bars = LetterboxMeter()
    for i, frame in tqdm(frames, total=total, desc="landmarks", disable=not progress, unit="frame"):
        if cfg.letterbox:
            bars.add(frame)
        face, n = follow_face(detector, frame, prev)
        if face is not None and face.size < MIN_FACE_PX:
            face = None
        idx.append(i)
        n_faces.append(n)
        points.append(None if face is None else face.points)
        sizes.append(0.0 if face is None else face.size)
        prev = face if face is not None else prev
    valid = np.array([p is not None for p in points])
    if not valid.any():
        seen = max(sizes) if sizes else 0
        raise NoFaceError(
            f"no usable face in any of the {len(idx)} frames of {video}"
            + (f" (faces found were under {MIN_FACE_PX} px)" if seen else "")
            + ". Use a clip where the face is visible, frontal-ish and at least ~100 px tall.")
    n_points = next(p for p in points if p is not None).shape[0]
    lmk = np.stack([p if p is not None else np.zeros((n_points, 3)) for p in points])
    lmk = interpolate_missing(lmk, valid)  # decoded-frame pixels
    boxes = np.concatenate([lmk[..., :2].min(1), lmk[..., :2].max(1)], 1)
    windows = plan_crops(boxes, valid, info.fps, scale=cfg.crop_scale, smooth_seconds=cfg.smooth_seconds)
    if float(np.median(np.array(sizes)[valid])) < MIN_FACE_PX * 1.5:
        logger.warning("the face is small (median %.0f px); landmarks will be noisy", np.median(np.array(sizes)[valid]))

    track = _FaceTrack(idx, lmk, valid, n_faces, windows, bars.bars())
    meta = {
        "format": DATASET_FORMAT, "source": source, "settings": settings, "resolution": cfg.resolution,
        "fps": info.fps, "n_frames": len(idx), "original_size": [info.width, info.height], "decode_scale": info.scale,
        "rotation_metadata": info.rotate, "landmarks": getattr(detector, "name", type(detector).__name__),
        "n_landmarks": int(n_points), "matte": getattr(matter, "name", type(matter).__name__),
        "missing_frames": [int(f) for f, ok in zip(idx, valid) if not ok],
        "multiple_faces_frames": int(sum(n > 1 for n in n_faces)),
        "letterbox": [round(b / info.scale) for b in track.bars],  # (top, bottom, left, right) original pixels
    }
    if cfg.parse:
        meta.update(parser=getattr(parser, "name", type(parser).__name__), label_names=list(LABEL_NAMES))

    # Pass 2: cut, matte, write, into a staging folder beside ``out`` that replaces it when complete.
    with staged_dir(out, OUTPUT_KIND) as tmp:
        _write_crops(tmp, video, info, cfg, track, matter, parser if cfg.parse else None, progress)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if meta["missing_frames"]:
        logger.warning("no face in %d of %d frames (interpolated): %s", len(meta["missing_frames"]), len(idx),
                       meta["missing_frames"][:20])
    return FrameDataset.load(out)


@dataclasses.dataclass
class _FaceTrack:
    """Pass 1's result: the face followed through the clip and the crops planned from it."""

    idx: list  # [N] source frame index of each kept frame
    lmk: np.ndarray  # [N, L, 3] decoded-frame pixels (x, y, relative z), gaps interpolated
    valid: np.ndarray  # [N] bool: a face was detected (not interpolated)
    n_faces: list  # [N] faces seen in each frame
    windows: np.ndarray  # [N, 3] crop windows (x0, y0, side) in decoded-frame pixels
    bars: tuple[int, int, int, int] = (0, 0, 0, 0)  # black bars (top, bottom, left, right), decoded pixels


def _write_crops(tmp: Path, video: Path, info, cfg: PreprocessConfig, track: _FaceTrack, matter: Matter,
                 parser: FaceParser | None, progress: bool) -> None:
    """Pass 2 into the empty staging folder ``tmp``: frames/, mattes/, parsing/ (when ``parser``)
    and landmarks.npz."""
    import imageio.v3 as iio

    (tmp / "frames").mkdir()
    (tmp / "mattes").mkdir()
    if parser is not None:
        (tmp / "parsing").mkdir()
    res, lmk, windows = cfg.resolution, track.lmk, track.windows
    picture = None  # uint8 [H, W]: where the decoded frames have picture (the same for every frame)
    frames = iter_frames(video, stride=cfg.stride, fps=cfg.fps, max_frames=cfg.max_frames, info=info)
    # A frame's matte is written (and parsed) once the next frame's is known (``steady_matte``).
    prev = cur = None  # (k, crop, pts, alpha) of the frames before the newest, before steadying

    def finish(pool: _ParsePool, before, frame, after) -> None:
        k, crop, pts, alpha = frame
        if cfg.steady_matte:
            near = [n[3] if n is not None and _same_view(windows[n[0]], windows[k]) else alpha for n in (before, after)]
            alpha = steady_matte(near[0], alpha, near[1])
        iio.imwrite(tmp / "mattes" / f"{k:06d}.png", (alpha * 255).round().astype(np.uint8))
        if parser is not None:
            pool.submit(tmp / "parsing" / f"{k:06d}.png", crop, pts, alpha)

    with _ParsePool(parser, cfg.workers, len(track.idx)) as pool:
        for k, (i, frame) in enumerate(tqdm(frames, total=len(track.idx), desc="crops+mattes", disable=not progress,
                                            unit="frame")):
            crop = crop_image(frame, windows[k], res)
            alpha = matter.matte(crop)
            # Outside the original frame, and on its black bars, there is no person.
            if picture is None or picture.shape != frame.shape[:2]:
                picture = _picture(frame.shape[:2], track.bars)
            inside = crop_image(picture, windows[k], res) > 127
            alpha = np.where(inside, alpha, 0.0)
            pts = np.concatenate([to_crop(lmk[k, :, :2], windows[k], res), lmk[k, :, 2:] * (res / windows[k, 2])], -1)
            if cfg.keep_person:
                alpha = keep_person(alpha, pts[:, :2])
            if cfg.refine_matte:
                alpha = refine_matte(crop, alpha, inside, low_contrast=cfg.low_contrast_matte)
            iio.imwrite(tmp / "frames" / f"{k:06d}.jpg", crop, quality=cfg.jpeg_quality)
            new = (k, crop, pts, alpha)
            if cur is not None:  # frame k-1, between k-2 (none for the first) and k
                finish(pool, prev, cur, new)
            prev, cur = cur, new
        if cur is not None:  # the last frame: none after it
            finish(pool, prev, cur, None)

    s = info.scale  # decoded = original * s
    lmk_crop = np.concatenate([np.stack([to_crop(lmk[k, :, :2], windows[k], res) for k in range(len(track.idx))]),
                               lmk[..., 2:] * (res / windows[:, 2])[:, None, None]], -1)
    np.savez_compressed(tmp / "landmarks.npz", frame_index=np.array(track.idx, dtype=np.int64), detected=track.valid,
                        n_faces=np.array(track.n_faces, dtype=np.int64), lmk_crop=lmk_crop.astype(np.float32),
                        lmk_orig=(lmk[..., :2] / s).astype(np.float32), crop=(windows / s).astype(np.float64))


def _picture(shape: tuple[int, int], bars: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 [H, W]: 255 where the video has picture, 0 on its black bars."""
    top, bottom, left, right = bars
    img = np.zeros(shape, np.uint8)
    img[top:shape[0] - bottom, left:shape[1] - right] = 255
    return img


def _is_legacy_dataset(out: Path) -> bool:
    """A dataset folder written before folders were marked: ours by its meta.json's format."""
    if not os.path.isdir(out) or os.path.exists(out / MARKER):  # os.path: no error for a name over the limit
        return False
    try:
        return json.loads((out / "meta.json").read_text()).get("format") == DATASET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_out_dir(out: Path, video: Path, overwrite: bool) -> Path:
    """Validate ``out`` before any work (see ``io.output_dir``); an unmarked dataset folder written by an
    older version counts as the project's own and gets its marker now, so it is reused or replaced."""
    legacy = _is_legacy_dataset(out)
    out = check_output_dir(out, OUTPUT_KIND, overwrite=overwrite or legacy, inputs=[video])
    if legacy:
        mark_output_dir(out, OUTPUT_KIND)
    return out
