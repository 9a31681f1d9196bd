"""Writing videos (H.264 mp4 through imageio-ffmpeg's bundled ffmpeg, works offline), atomically and
verified.

imageio-ffmpeg neither checks ffmpeg's exit status nor what landed on disk, so a failed encode used to
leave a 0-byte "video" behind a success message. Here the frames are checked up front (size, RGB,
uint8, one size throughout), a failed pipe becomes a project error, and the finished temp file must
hold as many frames as were sent before it replaces the target. mp4/mov files get their index at the
front (``+faststart``): they start playing while downloading, and a truncated copy still says how
many frames it should have had (the reader warns about it).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import InvalidParametersError, OutputPathError
from .atomic import atomic_path

__all__ = ["write_video"]

_FASTSTART = (".mp4", ".mov", ".m4v")


def _check_settings(fps: float, crf: int) -> None:
    if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise InvalidParametersError(f"video fps must be a positive number, got {fps!r}")
    if not (isinstance(crf, numbers.Integral) and 0 <= crf <= 51):
        raise InvalidParametersError(f"video crf (H.264 quality) must be an integer 0..51 (18 looks lossless), got {crf!r}")


def _as_rgb8(frame, k: int, size: tuple[int, int] | None) -> np.ndarray:
    """Frame k as contiguous uint8 [H, W, 3], or a one-line InvalidParametersError saying why not."""
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InvalidParametersError(f"video frame {k} has shape {a.shape}; frames must be RGB [H, W, 3]")
    h, w = a.shape[:2]
    if h <= 0 or w <= 0:
        raise InvalidParametersError(f"video frame {k} is {w}x{h} pixels; frames need a width and height of at least 1")
    if size is not None and (w, h) != size:
        raise InvalidParametersError(f"video frame {k} is {w}x{h} but the first was {size[0]}x{size[1]}; "
                                     "every frame of a video must have the same size")
    if a.dtype != np.uint8:
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 255:
            raise InvalidParametersError(f"video frame {k} is {a.dtype} with values {a.min()}..{a.max()}; frames must be "
                                         "uint8 0..255 (convert float images with (img * 255).round().astype(np.uint8))")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


def _checked(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    size = None
    for k, frame in enumerate(frames):
        a = _as_rgb8(frame, k, size)
        size = (a.shape[1], a.shape[0])
        yield a


def _count_frames(path: str) -> int | None:
    """Frames in the video stream of ``path`` (a stream copy, no decoding: milliseconds), or None
    when ffmpeg cannot read it at all."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path, "-map", "0:v:0", "-c", "copy",
           "-f", "null", "-"]
    r = subprocess.run(cmd, capture_output=True, timeout=600)
    counts = re.findall(rb"frame=\s*(\d+)", r.stderr)
    return int(counts[-1]) if r.returncode == 0 and counts else None


def _encode_failed(path: Path, sent: int, detail: str) -> OutputPathError:
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else None
    if free is not None and free < (1 << 20):
        return OutputPathError(f"cannot write {path}: no space left on the device (free some space or choose another -o)")
    return OutputPathError(f"cannot write {path}: ffmpeg failed after {sent} frame(s) ({detail}); "
                           "check the free space and the video settings, and see ffmpeg's message above")


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25.0, crf: int = 18) -> Path:
    """Write RGB uint8 frames [H, W, 3] to ``path``; the file appears only when complete and checked.

    Raises InvalidParametersError for bad frames or settings (before anything is written) and
    OutputPathError when ffmpeg fails or the result does not hold every frame.
    """
    import imageio_ffmpeg

    _check_settings(fps, crf)
    path = Path(path)
    frames = _checked(frames)
    first = next(frames, None)
    if first is None:
        raise InvalidParametersError(f"no frames to write to {path}; nothing was written")
    h, w = first.shape[:2]
    params = ["-crf", str(int(crf))] + (["-movflags", "+faststart"] if path.suffix.lower() in _FASTSTART else [])
    sent = 0
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(tmp, (w, h), fps=float(fps), macro_block_size=2, quality=None,
                                             output_params=params)
        try:
            writer.send(None)
            for frame in _chain(first, frames):
                writer.send(frame)
                sent += 1
            writer.close()  # waits for ffmpeg to finish; it never reports ffmpeg's exit status (checked below)
        except OSError as exc:  # imageio-ffmpeg's IOError: ffmpeg closed the pipe
            raise _encode_failed(path, sent, (str(exc).splitlines() or [type(exc).__name__])[0][:120]) from exc
        finally:
            writer.close()  # idempotent; on an error it stops ffmpeg
        _verify(Path(tmp), path, sent)
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _verify(tmp: Path, path: Path, sent: int) -> None:
    """The encoded temp file must exist, be non-empty and hold every frame that was sent."""
    size = tmp.stat().st_size if tmp.exists() else 0
    if size == 0:
        raise _encode_failed(path, sent, "it wrote 0 bytes")
    got = _count_frames(str(tmp))
    if got is None:
        raise _encode_failed(path, sent, "the written file is not a readable video")
    if got != sent:
        raise _encode_failed(path, sent, f"the written file holds {got} of {sent} frames")
