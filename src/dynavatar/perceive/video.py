"""Reading videos (anything ffmpeg reads) and folders of images as RGB uint8 frames.

Rotation metadata is honoured (ffmpeg rotates on decode and reports the output size), frames can
be subsampled by stride or target fps, and very large videos are downscaled on decode so memory
stays bounded; ``VideoInfo.scale`` records the factor so results map back to the original frame.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import VideoError

__all__ = ["VideoInfo", "probe_video", "iter_frames", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_DECODE_SIDE = 2048  # larger videos are decoded downscaled (faces stay far above detector limits)
TRUNCATED_FRACTION = 0.9  # a stream ending before this share of the container's frame count is reported

logger = logging.getLogger("dynavatar.perceive")


@dataclasses.dataclass
class VideoInfo:
    path: Path
    fps: float  # frames per second of the source (0 for image folders)
    width: int  # original frame size (after rotation metadata is applied)
    height: int
    n_frames: int | None  # best estimate; None when unknown
    rotate: int  # rotation metadata (degrees), already applied by the decoder
    scale: float = 1.0  # decoded frames = original * scale (1.0 unless the video is huge)
    is_image_folder: bool = False


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Inspect a video file or image folder without decoding it all."""
    path = Path(path).expanduser()
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise VideoError(f"{path} is a folder without images ({', '.join(IMAGE_SUFFIXES)})")
        first = _read_image(files[0])
        return VideoInfo(path, 0.0, first.shape[1], first.shape[0], len(files), 0, 1.0, True)
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (OSError, RuntimeError, StopIteration, ValueError, IndexError, AttributeError) as exc:
        raise VideoError(f"cannot read {path} as a video ({type(exc).__name__}: {_ffmpeg_reason(exc)}). "
                         "Is it a video file? Re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`.") from exc
    w, h = meta["size"]
    if w <= 0 or h <= 0:
        raise VideoError(f"{path}: video has no picture (size {w}x{h})")
    fps = float(meta.get("fps") or 0.0)
    duration = float(meta.get("duration") or 0.0)
    n = int(round(duration * fps)) if fps > 0 and duration > 0 else None
    scale = min(1.0, MAX_DECODE_SIDE / max(w, h))
    return VideoInfo(path, fps, int(w), int(h), n, int(meta.get("rotate", 0)), scale)


def _ffmpeg_reason(exc: Exception) -> str:
    """ffmpeg's complaint in one line: imageio-ffmpeg passes on its whole stderr (banner, build
    configuration, progress lines) after its own summary; the first line of that stderr that reads
    as an error ("moov atom not found", "partial file") is the reason, else the summary."""
    text = str(exc)
    summary, _, stderr = text.partition("=== stderr ===")
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln.strip()) for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.lower().startswith(("ffmpeg version", "configuration:", "built with"))]
    for key in ("not found", "partial file", "invalid data", "corrupt", "invalid", "error", "could not"):
        hit = next((ln for ln in lines if key in ln.lower()), None)  # most telling first
        if hit:
            return hit[-200:]
    first = next((ln.strip() for ln in summary.splitlines() if ln.strip()), type(exc).__name__)
    return first[-200:]


def _read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        img = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for bad files
        raise VideoError(f"cannot read image {path} ({type(exc).__name__}: {exc})") from exc
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise VideoError(f"{path}: unsupported image shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) / max(float(np.iinfo(img.dtype).max), 1.0) * 255).round().astype(np.uint8) \
            if np.issubdtype(img.dtype, np.integer) else (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def iter_frames(path: str | os.PathLike, *, stride: int = 1, fps: float | None = None,
                max_frames: int | None = None, info: VideoInfo | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb uint8 [H, W, 3])``; ``frame_index`` counts the source's frames.

    ``stride`` keeps every n-th frame; ``fps`` (if given) keeps frames closest to that rate instead.
    Grayscale sources come out as 3 identical channels.
    """
    info = info or probe_video(path)
    if stride < 1:
        raise VideoError(f"stride must be >= 1, got {stride}")
    if fps is not None and fps > 0 and info.fps > 0:
        step = max(info.fps / fps, 1.0)
        keep = lambda i: math.floor(i / step) != math.floor((i - 1) / step) if i > 0 else True  # noqa: E731
    else:
        keep = lambda i: i % stride == 0  # noqa: E731
    kept = 0
    if info.is_image_folder:
        for i, f in enumerate(_image_files(info.path)):
            if max_frames is not None and kept >= max_frames:
                return
            if keep(i):
                kept += 1
                yield i, _read_image(f)
        return

    import imageio_ffmpeg

    w, h = info.width, info.height
    out_params = None
    if info.scale < 1.0:
        w, h = int(round(w * info.scale / 2) * 2), int(round(h * info.scale / 2) * 2)
        out_params = ["-vf", f"scale={w}:{h}"]
    reader = imageio_ffmpeg.read_frames(str(info.path), pix_fmt="rgb24", output_params=out_params)
    decoded, stopped = 0, False  # frames the stream gave; stopped: we stopped before its end
    try:
        next(reader)  # meta
        frame_bytes = w * h * 3
        for i, buf in enumerate(reader):
            decoded = i + 1
            if max_frames is not None and kept >= max_frames:
                stopped = True
                break
            if not keep(i):
                continue
            if len(buf) != frame_bytes:
                raise VideoError(f"{info.path}: frame {i} has {len(buf)} bytes, expected {frame_bytes}")
            kept += 1
            yield i, np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3).copy()
    except (OSError, RuntimeError) as exc:
        raise VideoError(f"{info.path}: decoding failed at frame {kept} ({_ffmpeg_reason(exc)}); re-encode it, "
                         "e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`") from exc
    finally:
        reader.close()
    if kept == 0:
        raise VideoError(f"{info.path}: no frames could be decoded (empty or corrupt video); "
                         "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")
    if not stopped:
        _warn_if_truncated(info, decoded)


def _warn_if_truncated(info: VideoInfo, decoded: int) -> None:
    """The container's duration promised ``info.n_frames``; a stream that ends well before (under
    ``TRUNCATED_FRACTION`` of it) is most likely a cut-off download or copy, not a short clip."""
    if info.n_frames and decoded < TRUNCATED_FRACTION * info.n_frames:
        logger.warning("%s ended after %d of %d frames (truncated file?); using the %d that decoded. "
                       "Copy or download the video again if it should be longer.",
                       info.path, decoded, info.n_frames, decoded)
