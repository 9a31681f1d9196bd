"""Learned mask mapping: the region mask at any (time, camera pose) from one mask drawn at (t0, pose0).

The "exact route" to a region mask at (t, p) selects the splats under the user's mask at (t0, p0) and
renders them at (t, p); it needs the avatar, a rasteriser and a render per mask. The DynamicAvatars paper
adds a small mapping network that learns this map from masks the exact route rendered at sampled (t, p),
reading a latent grid over the t-p plane with bilinear interpolation so that the predicted mask moves
continuously. The mask mapper is that network, self-contained: it knows nothing of avatars, only of a
callable ``sample_fn(t, pose) -> masks`` (``semantics.mapping`` builds that callable for an avatar).

This module is its public face; the pieces, each with one job:

* ``mapper_config``   — ``MaskMapperConfig`` (with presets) and ``MaskMapperError``;
* ``mask_maths``      — pure functions: latent-grid read-out, Fourier features, signed distance, warping,
  resizing, IoU / soft Dice / total variation;
* ``mask_windows``    — the window that follows the region: moments, boxes, crop and paste-back;
* ``mapper_network``  — ``MaskMapper`` (the nn.Module, its encoder and decoder, save/load);
* ``mapper_bank``     — the exact-route renders it learns from;
* ``mapper_training`` — ``train_mask_mapper`` and ``evaluate_mask_mapper``.

How it works, in short: the network reads a latent code at (t, pose) and at (t0, pose0), encodes the source
mask once, and decodes the mask at (t, pose) as a warp of the source's signed distance field plus a smooth
residual, all inside a window around the region that a small box head moves and scales with it (so a lip
a few pixels tall in the frame fills the network's working raster).

Frames.  The exact route of a clip shows frame round(t (N - 1)): it is piecewise constant in t.  With
``t_frames = N`` (``fit_mask_mapper`` sets it from the clip; the default 0 keeps t continuous) the codes are
read at that frame's time, so the mapper need not average the frames on either side of a grid node.  A
talking clip's lips change shape every frame, and the mapper is asked for the clip's frames at *unseen
poses*, so its per-frame parameters must not be able to learn the pose:

- the decoder reads a code of the frame's own (``frame_codes [N, frame_latent]``, with a small total
  variation ``frame_smooth_weight`` between neighbours for frames the bank misses) beside the grid's: inside
  the window the shape at t is mostly the frame's, and ``grid_t`` nodes cannot follow a mouth that opens
  and closes every few frames;
- the box head's smooth prediction (a time code at ``box_grid_t`` nodes: head motion is slow) gets a
  per-frame *offset* (``box_offsets [N, 4]``: a centre shift in units of the predicted spread, so it
  foreshortens with the pose, and a log-spread; L2 ``box_offset_weight``).  A richer per-frame term (a
  per-frame code read by the head, a per-frame pose shift or pose-dependent basis) fits each frame's two or
  three bank masks exactly and misses the unseen poses: a lip is a few pixels thick, so its centre must be
  right to a fraction of a pixel while it moves by several spreads over the pitch range;
- the bank holds at least ``bank_per_frame`` masks of every frame (``bank_size`` is raised: ``bank_total``),
  spread evenly over the frames, poses stratified.

Conventions: time ``t`` in ``config.t_range`` (clip frame normalised to [0, 1]); ``pose [.., P]`` camera
yaw/pitch in radians relative to the frontal camera (any small vector of ``pose_dim`` works); masks are
float ``[B, H, W]`` in [0, 1] (bool/uint8 accepted).  Image positions are normalised frame coordinates,
x (columns) and y (rows) in [-1, 1] edge to edge (``grid_sample``'s ``align_corners=False``); a crop box is
``(cx, cy, hx, hy)``: centre and half-size in those units.  Logits come back in the crop at ``mask_size``
(``MaskMapper.forward``), probabilities pasted into a frame of any size (``MaskMapper.predict``).
"""

from __future__ import annotations

from .mapper_bank import bank_points, bank_side, render_bank
from .mapper_config import MaskMapperConfig, MaskMapperError, SampleFn
from .mapper_network import MASK_MAPPER_FORMAT, MaskMapper
from .mapper_training import MaskMapperHistory, evaluate_mask_mapper, train_mask_mapper
from .mask_maths import (fourier_features, grid_tv, mask_iou, multilinear_read, resize_masks, signed_distance,
                         soft_dice_loss, warp_field)
from .mask_windows import FULL_FRAME_BOX, boxes_from_moments, crop_masks, mask_moments, paste_logits, source_crop_box

__all__ = [
    "MaskMapperConfig", "MaskMapper", "MaskMapperError", "MaskMapperHistory", "MASK_MAPPER_FORMAT", "SampleFn",
    "train_mask_mapper", "evaluate_mask_mapper", "render_bank", "bank_points", "bank_side",
    "multilinear_read", "fourier_features", "signed_distance", "warp_field", "resize_masks", "mask_iou",
    "soft_dice_loss", "grid_tv", "FULL_FRAME_BOX", "mask_moments", "source_crop_box", "boxes_from_moments",
    "crop_masks", "paste_logits",
]
