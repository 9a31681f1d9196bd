"""Writing videos (H.264 mp4 through imageio-ffmpeg's bundled ffmpeg, works offline), atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_path

__all__ = ["write_video"]


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25.0, crf: int = 18) -> Path:
    """Write RGB uint8 frames [H, W, 3] to ``path``; the file appears only when complete."""
    import imageio_ffmpeg

    path = Path(path)
    writer = None
    with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
        try:
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = imageio_ffmpeg.write_frames(tmp, (w, h), fps=fps, macro_block_size=2, quality=None,
                                                         output_params=["-crf", str(crf)])
                    writer.send(None)
                writer.send(frame)
            if writer is None:
                raise ValueError("write_video got no frames")
        finally:
            if writer is not None:
                writer.close()
    return path
