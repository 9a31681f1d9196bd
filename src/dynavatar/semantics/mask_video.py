"""A mask drawn on one frame, carried through the whole clip (with the head turned), and its video.

The two mask routes answer one (time, pose) each: the exact one renders the splats under the mask
(``labelling.render_selection``), the learned one asks a MaskMapper (``mapping.fit_mask_mapper``).
A user wants the clip: this module runs a route over a list of frames and writes the turned clip
with the masks tinted over it. The exact route takes its renders as callables, so it runs on
whatever the caller renders with; given a video to write, it asks for the render and the coverage
in one pass (coverage as a feature channel blended beside RGB), so each frame is rendered once, not twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DynavatarError
from ..flame import FlameParams
from ..flame.pose import rotate_head
from ..geometry.cameras import Cameras
from ..io.video import write_video

__all__ = ["TINT_RGB", "tint", "clip_frames", "turned_clip", "exact_route_masks", "learned_route_masks",
           "write_mask_video"]

#: the colour a mask is tinted with, at half strength where the mask is 1
TINT_RGB = (255.0, 40.0, 40.0)
#: frames the learned route decodes per call (bounds the memory of full-size masks)
LEARNED_CHUNK = 64

Pose = tuple[FlameParams, Cameras]  # one frame's parameters [1] and camera [1]


def tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] with ``mask`` ([H, W] in [0, 1]) tinted red over it at half strength."""
    red = np.array(TINT_RGB, dtype=np.float32)
    a = 0.5 * np.asarray(mask, dtype=np.float32)[..., None]
    return np.clip(image.astype(np.float32) * (1 - a) + red * a, 0, 255).round().astype(np.uint8)


def clip_frames(frames, n: int) -> list[int]:
    """``frames`` (indices into an ``n``-frame clip; None: all of them) as a checked list of ints."""
    frames = list(range(n)) if frames is None else [int(i) for i in frames]
    if not frames or min(frames) < 0 or max(frames) >= n:
        raise DynavatarError(f"frames must be a non-empty list of indices below {n}")
    return frames


def turned_clip(params: FlameParams, cameras: Cameras, frames: list[int], yaw: float, pitch: float,
                device: torch.device | str) -> list[Pose]:
    """Each of ``frames`` with the head turned by (``yaw``, ``pitch``) radians in front of its camera."""
    return [(rotate_head(params[i].to(device), yaw, pitch), cameras[i]) for i in frames]


def exact_route_masks(poses: list[Pose], coverage: Callable[[FlameParams, Cameras], np.ndarray],
                      rgb_and_coverage: Callable[[FlameParams, Cameras], tuple[np.ndarray, np.ndarray]] | None = None,
                      video: str | os.PathLike | None = None, fps: float = 25.0, progress: bool = True) -> np.ndarray:
    """The exact route at every pose: ``coverage(params, camera)`` -> [H, W] each, or, with a ``video``
    to write, ``rgb_and_coverage`` -> (uint8 [H, W, 3], [H, W]) once per frame for both.
    -> masks float32 [F, H, W] in [0, 1]"""
    bar = tqdm(poses, desc="exact mask route", disable=not progress)
    if video is None:
        return np.stack([coverage(p, c) for p, c in bar]).astype(np.float32)
    out = []

    def tinted():
        for p, c in bar:
            rgb, cov = rgb_and_coverage(p, c)
            out.append(cov)
            yield tint(rgb, cov)
    write_video(video, tinted(), fps=fps)
    return np.stack(out).astype(np.float32)


def learned_route_masks(mapper, frames: list[int], n_frames: int, yaw: float, pitch: float,
                        out_size: tuple[int, int]) -> np.ndarray:
    """A MaskMapper's masks at ``frames`` of an ``n_frames`` clip (time t = frame / (n - 1)) with the
    head turned by (yaw, pitch), decoded ``LEARNED_CHUNK`` at a time.  -> float32 [F, H, W] in [0, 1]"""
    t = torch.tensor(frames, dtype=torch.float32) / max(n_frames - 1, 1)
    pose = torch.tensor([[yaw, pitch]], dtype=torch.float32).expand(len(frames), 2)
    dev = next(mapper.parameters()).device
    with torch.no_grad():
        out = torch.cat([mapper.predict(t[i:i + LEARNED_CHUNK].to(dev), pose[i:i + LEARNED_CHUNK].to(dev),
                                        out_size=out_size).cpu()
                         for i in range(0, len(frames), LEARNED_CHUNK)])
    return out.numpy().astype(np.float32)


def write_mask_video(path: str | os.PathLike, render: Callable[[FlameParams, Cameras], np.ndarray],
                     poses: list[Pose], masks: np.ndarray, fps: float = 25.0) -> Path:
    """Write ``render(params, camera)`` (uint8 [H, W, 3]) at each pose with its mask ([F, H, W] in
    [0, 1]) tinted over it; -> the video's path."""
    if len(masks) != len(poses):
        raise DynavatarError(f"{len(masks)} masks for {len(poses)} frames")
    return write_video(path, (tint(render(p, c), m) for (p, c), m in zip(poses, masks)), fps=fps)
