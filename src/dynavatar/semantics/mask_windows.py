"""Region windows: where in the frame the mask mapper looks, and moving masks in and out of there.

A lip is a few pixels tall in the frame; at the mapper's working resolution a one-pixel error would
cost a large share of its IoU.  So the mapper works in a window around the region instead of the whole
frame.  At the source's (t0, pose0) the window is the source mask's bounding box, padded and widened to
a bounded aspect ratio (``source_crop_box``).  At any other (t, pose) it moves with the region: the
region is summarised by its first and second moments (centroid and per-axis standard deviation,
``mask_moments``: smooth, sub-pixel and robust to a stray pixel, unlike a bounding box), and the window
keeps its offset and half-size relative to them (``boxes_from_moments`` / ``relative_box``).  Masks are
resampled into windows (``crop_masks``) and the predicted logits back into the frame (``paste_logits``).

Conventions: normalised frame coordinates, x (columns) and y (rows) in [-1, 1] edge to edge
(``align_corners=False``); a window (box) is ``(cx, cy, hx, hy)``: centre and half-size in those units;
moments are ``(cx, cy, sx, sy)`` in the same units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FULL_FRAME_BOX", "pixel_centres", "mask_moments", "source_crop_box", "boxes_from_moments", "relative_box",
           "moments_delta", "moments_from_delta", "crop_masks", "paste_logits"]

#: The window of the whole frame, (cx, cy, hx, hy).
FULL_FRAME_BOX = (0.0, 0.0, 1.0, 1.0)


def pixel_centres(n: int, device=None, dtype=torch.float32) -> Tensor:
    """Normalised coordinates of n pixel centres across [-1, 1] (align_corners=False)."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n * 2 - 1


def mask_moments(masks: Tensor, min_mass: float = 1.0) -> tuple[Tensor, Tensor]:
    """First and second moments of (soft) masks in normalised frame coordinates.

    masks [B, H, W] -> (moments [B, 4] = (cx, cy, sx, sy), valid [B] bool).  ``s`` is the standard
    deviation along each axis, including the spread of a pixel itself (a one-pixel mask has s = half a
    pixel / sqrt(3)), so it is never zero.  A mask of less than ``min_mass`` pixels is not valid; its
    moments are those of the whole frame (centre 0, s = 1/sqrt(3))."""
    B, H, W = masks.shape
    w = masks.float().clamp(0, 1)
    xs, ys = pixel_centres(W, w.device), pixel_centres(H, w.device)
    wx, wy = w.sum(1), w.sum(2)  # [B, W], [B, H]
    mass = wx.sum(1)
    m = mass.clamp(min=1e-6)
    cx = (wx * xs).sum(1) / m
    cy = (wy * ys).sum(1) / m
    sx = ((wx * (xs - cx[:, None]) ** 2).sum(1) / m + 1.0 / (3 * W * W)).sqrt()
    sy = ((wy * (ys - cy[:, None]) ** 2).sum(1) / m + 1.0 / (3 * H * H)).sqrt()
    mom = torch.stack([cx, cy, sx, sy], 1)
    valid = mass >= min_mass
    full = torch.tensor([0.0, 0.0, 3 ** -0.5, 3 ** -0.5], device=w.device)
    return torch.where(valid[:, None], mom, full), valid


def source_crop_box(mask: Tensor, pad: float = 0.25, pad_px: float = 2.0, max_aspect: float = 3.0) -> Tensor:
    """The window around a source mask [H, W]: the bounding box of its pixels > 0.5, each half-size grown
    by ``pad`` of itself plus ``pad_px`` pixels, the short side widened so that long/short (in pixels)
    <= ``max_aspect``, then clipped to the frame plus ``pad_px``.  -> (cx, cy, hx, hy) [4]; the whole
    frame for an empty mask."""
    H, W = mask.shape[-2:]
    on = mask > 0.5
    if not bool(on.any()):
        return torch.tensor(FULL_FRAME_BOX, device=mask.device)
    cols = on.any(0).nonzero()[:, 0].float()
    rows = on.any(1).nonzero()[:, 0].float()
    px = torch.tensor([2.0 / W, 2.0 / H], device=mask.device)
    lo = torch.stack([cols.min(), rows.min()]) * px - 1
    hi = (torch.stack([cols.max(), rows.max()]) + 1) * px - 1
    c, h = (lo + hi) / 2, (hi - lo) / 2 * (1 + pad) + pad_px * px
    h_px = h / px
    h = torch.maximum(h_px, h_px.max() / max_aspect) * px
    lim = 1 + pad_px * px
    lo, hi = torch.maximum(c - h, -lim), torch.minimum(c + h, lim)
    return torch.cat([(lo + hi) / 2, (hi - lo) / 2])


def boxes_from_moments(moments: Tensor, rel: Tensor) -> Tensor:
    """Carry a window along with its region: moments [B, 4] (cx, cy, sx, sy) and the window relative to
    the source's moments ``rel`` [B or 1, 4] = (offset x, offset y, half x, half y) in units of s
    -> boxes [B, 4]."""
    c, s = moments[:, :2], moments[:, 2:]
    return torch.cat([c + rel[:, :2] * s, rel[:, 2:] * s], dim=1)


def relative_box(box: Tensor, moments: Tensor) -> Tensor:
    """Inverse of boxes_from_moments: box [B, 4], moments [B, 4] -> rel [B, 4]."""
    s = moments[:, 2:]
    return torch.cat([(box[:, :2] - moments[:, :2]) / s, box[:, 2:] / s], dim=1)


def moments_delta(moments: Tensor, moments0: Tensor) -> Tensor:
    """Moments relative to the source's: ((c - c0) / s0, log(s / s0)) [B, 4] — what the box head regresses."""
    s0 = moments0[:, 2:]
    return torch.cat([(moments[:, :2] - moments0[:, :2]) / s0, (moments[:, 2:] / s0).log()], dim=1)


def moments_from_delta(delta: Tensor, moments0: Tensor) -> Tensor:
    s0 = moments0[:, 2:]
    return torch.cat([moments0[:, :2] + delta[:, :2] * s0, s0 * delta[:, 2:].clamp(-4, 4).exp()], dim=1)


def _box_grid(boxes: Tensor, h: int, w: int) -> Tensor:
    """Sampling grid [B, h, w, 2] (x, y) of an h x w raster over each box (pixel centres)."""
    u = pixel_centres(w, boxes.device, boxes.dtype)
    v = pixel_centres(h, boxes.device, boxes.dtype)
    gx = boxes[:, 0, None] + boxes[:, 2, None] * u  # [B, w]
    gy = boxes[:, 1, None] + boxes[:, 3, None] * v  # [B, h]
    return torch.stack([gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)], dim=-1)


def crop_masks(masks: Tensor, boxes: Tensor, size: int, max_supersample: int = 4) -> tuple[Tensor, Tensor]:
    """Resample the part of masks [B, H, W] inside boxes [B or 1, 4] onto size x size rasters.

    -> (crops [B, size, size] float, inside [B, size, size] bool: the crop pixel's centre lies in the
    frame).  Outside the frame reads 0.  Where a crop pixel spans several mask pixels it is the mean
    of k x k bilinear samples (k = ceil(span), at most ``max_supersample``), so a shrinking crop
    keeps thin parts as partial coverage instead of aliasing them away."""
    B, H, W = masks.shape
    boxes = boxes.to(masks.device, torch.float32).expand(B, -1)
    span = float(torch.maximum(boxes[:, 2] * W, boxes[:, 3] * H).max()) / size  # mask pixels per crop pixel
    k = max(1, min(int(max_supersample), math.ceil(span - 1e-6)))
    grid = _box_grid(boxes, size * k, size * k)
    out = F.grid_sample(masks.float()[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if k > 1:
        out = F.avg_pool2d(out, k)
    centre = _box_grid(boxes, size, size)
    inside = (centre.abs() <= 1).all(-1)
    return out[:, 0], inside


def paste_logits(logits: Tensor, boxes: Tensor, out_size: tuple[int, int], falloff: float = 4.0,
                 margin: float = 8.0) -> Tensor:
    """Put crop logits [B, S, S] back into frames of out_size (H, W) -> logits [B, H, W].

    Bilinear in the logits (sharp edges after the sigmoid).  Beyond the crop: the border value minus
    ``falloff`` logits per crop pixel of distance, floored at (the crop border's largest logit -
    falloff * margin), which is also the value of every pixel farther than ``margin`` crop pixels from
    all the boxes — those are not resampled, so a small region costs little to paste into a large
    frame.  The result is continuous and background away from the crop."""
    B, S, _ = logits.shape
    H, W = int(out_size[0]), int(out_size[1])
    boxes = boxes.to(logits.dtype).expand(B, -1)
    xs, ys = pixel_centres(W, logits.device, logits.dtype), pixel_centres(H, logits.device, logits.dtype)
    u = (xs[None] - boxes[:, 0, None]) / boxes[:, 2, None]  # [B, W] crop coordinates
    v = (ys[None] - boxes[:, 1, None]) / boxes[:, 3, None]  # [B, H]
    reach = 1 + margin / (S / 2)
    cols = (u.abs() <= reach).any(0).nonzero()[:, 0]
    rows = (v.abs() <= reach).any(0).nonzero()[:, 0]
    ring = torch.cat([logits[:, 0], logits[:, -1], logits[:, :, 0], logits[:, :, -1]], dim=1)  # [B, 4S]
    floor = (ring.amax(1) - falloff * margin)[:, None, None]  # [B, 1, 1]
    out = floor.expand(B, H, W).clone()
    if cols.numel() == 0 or rows.numel() == 0:
        return out
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    u, v = u[:, x0:x1], v[:, y0:y1]
    h, w = y1 - y0, x1 - x0
    grid = torch.stack([u[:, None, :].expand(-1, h, -1), v[:, :, None].expand(-1, -1, w)], dim=-1)
    sub = F.grid_sample(logits[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
    beyond = (u.abs() - 1).clamp(min=0)[:, None, :] + (v.abs() - 1).clamp(min=0)[:, :, None]  # [B, h, w]
    out[:, y0:y1, x0:x1] = torch.maximum(sub - falloff * (S / 2) * beyond, floor)
    return out
