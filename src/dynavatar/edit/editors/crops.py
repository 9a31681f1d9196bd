"""Crop geometry of the diffusion editors: a square around the region, resized to the model's size.

A head region is small in a keyframe (the eyes are a few dozen pixels of a 512 image), and SD-1.5
models edit well only near 512 px. So each image is cropped to a square around the *feathered*
mask (everything the composite may touch is inside), enlarged by a margin on each side for context
and never smaller than a fraction of the image's short side (an 8x upscale of a tiny crop gives
the model nothing to work with), then resized to the work resolution (rounded to a multiple of 8).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from .masks import support_box

__all__ = ["CropBox", "crop_box", "work_size", "crop_resize", "uncrop_resize"]


@dataclasses.dataclass(frozen=True)
class CropBox:
    """A pixel box, half-open: columns x0..x1-1, rows y0..y1-1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def crop_box(mask: torch.Tensor, margin: float = 0.25, min_fraction: float = 0.25) -> CropBox | None:
    """Square box around the pixels where ``mask`` [H, W] > 0, or None when there are none.

    side = max(ceil(max(bbox w, bbox h) * (1 + 2 margin)), ceil(min_fraction * min(H, W))),
    clipped to the image per axis; centred on the bbox (x0 = floor(cx - side / 2)) and shifted to
    lie inside the image. The box always contains the whole bbox.
    """
    H, W = mask.shape
    box = support_box(mask[None])
    if box is None:
        return None
    by0, by1, bx0, bx1 = box
    side = math.ceil(max(bx1 - bx0, by1 - by0) * (1.0 + 2.0 * margin))
    side = max(side, math.ceil(min_fraction * min(H, W)), 1)
    sx, sy = min(side, W), min(side, H)
    x0 = min(max(math.floor((bx0 + bx1) / 2 - sx / 2), 0), W - sx)
    y0 = min(max(math.floor((by0 + by1) / 2 - sy / 2), 0), H - sy)
    return CropBox(x0, y0, x0 + sx, y0 + sy)


def work_size(box: CropBox, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """(height, width) a crop is resized to: the long side -> ``resolution``, both multiples of ``multiple``."""
    scale = resolution / max(box.width, box.height)
    h = max(multiple, int(round(box.height * scale / multiple)) * multiple)
    w = max(multiple, int(round(box.width * scale / multiple)) * multiple)
    return h, w


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """[N, C, h, w] -> [N, C, *size]; antialiased when shrinking, so small crops stay clean."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    kw: dict[str, Any] = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kw["align_corners"] = False
    return F.interpolate(x, size=size, mode=mode, **kw)


def crop_resize(image: torch.Tensor, box: CropBox, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """image [H, W, C] -> the crop resized to ``size``, channels first [C, h, w], clamped to [0, 1]."""
    crop = image[box.y0:box.y1, box.x0:box.x1].permute(2, 0, 1)[None].float()  # [1, C, ch, cw]
    return _resize(crop, size, mode)[0].clamp(0.0, 1.0)


def uncrop_resize(crop: torch.Tensor, box: CropBox, mode: str = "bicubic") -> torch.Tensor:
    """An edited crop [C, h, w] -> the box's pixels [box.height, box.width, C], clamped to [0, 1]."""
    return _resize(crop[None].float(), (box.height, box.width), mode)[0].permute(1, 2, 0).clamp(0.0, 1.0)
