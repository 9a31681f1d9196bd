"""Learned mask mapping: the region mask at any (time, camera pose) from one mask drawn at (t0, pose0).

The "exact route" to a region mask at (t, p) selects the splats under the user's mask at (t0, p0) and
renders them at (t, p); it needs the avatar, a rasteriser and tens of milliseconds per mask. The
DynamicAvatars paper adds a small mapping network that learns this map from masks the exact route
rendered at sampled (t, p), reading a latent grid over the t-p plane with bilinear interpolation so that
the predicted mask moves continuously. This module is that network, self-contained: it knows nothing of
avatars, only of a callable ``sample_fn(t, pose) -> masks``.

Design (and why):

* **Latent grid over (t, pose).** A learnable tensor ``codes [Gt, Gp, (Gp, ...), L]`` read by
  multi-linear interpolation (bilinear for one pose dimension, trilinear for yaw + pitch).  Between two
  nodes the code is an exact lerp, so the prediction cannot jump; a total-variation penalty on the
  grid fills nodes that few training samples touch.  A few low-frequency Fourier features of (t, p) sit
  beside the code so that global trends (x shift ~ sin(yaw)) need not be learned node by node.
* **Region-centred crop (format /2).** A lip is a few pixels tall in the frame; at a 64-pixel working
  resolution a one-pixel error costs a third of its IoU.  So the network works in a window around the
  region instead of the whole frame.  At (t0, pose0) the window is the source mask's bounding box,
  padded (``crop_pad``, ``crop_pad_px``) and widened to at most ``crop_max_aspect``.  At (t, p) it
  moves with the region: a **box head** regresses the region's first and second moments (centroid,
  per-axis standard deviation) relative to the source's, and the window is the source window carried
  along by them (offset and half-size in units of the standard deviation are kept; the size follows
  only for windows smaller than the frame, ``crop_follow_scale``).  The head is supervised by the
  moments of the exact-route masks (smooth, sub-pixel, robust to the odd stray pixel, unlike a
  bounding box) and fitted first, on the whole bank at once (it is cheap).  It reads its own 1-D
  latent code over time (``box_grid_t`` nodes, read linearly: a video's head motion needs fine time
  detail) and low-frequency Fourier features of (t, pose) (the pose dependence is smooth): reading the
  3-D grid instead, it over-fitted the sparse bank (lips held-out IoU 0.85 vs 0.88, and 0.72 vs 0.81
  on the synthetic avatar's lips).  In a clip it adds a per-frame offset (see Frames).  Its own fit
  runs ``box_steps`` = 1000 steps (300: 0.935 vs 0.950 on the talking lips below).  The decoder then
  predicts the mask *inside that window* at ``mask_size``, told the window's relative moments, and
  trained in the predicted windows (so it learns to correct the head's small errors); ``paste_logits``
  puts the logits back into the frame.
  For lips the effective resolution grows by ~5-10x; hair's window stays near the full frame.
  ``crop=False`` keeps the window at the full frame (the format-/1 behaviour, for comparison).
* **Frames (format /3).**  The exact route of a clip shows frame round(t (N - 1)): piecewise constant
  in t.  With ``t_frames = N`` (``fit_mask_mapper`` sets it from the clip; with the default 0 the
  prediction is continuous in t) the codes are read at that frame's time, so the mapper need not
  average the frames on either side of a node (synthetic avatar's lips: IoU 0.81 -> 0.92).  A talking
  clip's lips change shape every frame, and the held-out points are the clip's frames at *unseen
  poses*, so the per-frame parameters must not be able to learn the pose:

  - the decoder reads a code of the frame's own (``frame_codes [N, frame_latent]``, a small TV
    ``frame_smooth_weight`` between neighbours for frames the bank misses) beside the grid's: inside
    the window the shape at t is mostly the frame's, and ``grid_t`` nodes cannot follow a mouth that
    opens and closes every 4-8 frames;
  - the box head's smooth prediction (time code at ``box_grid_t`` nodes: head motion is slow) gets a
    per-frame *offset* (``box_offsets [N, 4]``: a centre shift in units of the predicted spread, so
    it foreshortens with the pose, and a log-spread; L2 ``box_offset_weight``).  A per-frame *code*
    read by the head (``box_per_frame``, the format-/2 default), a per-frame pose shift or a per-frame
    pose-dependent basis let the head fit each frame's two or three bank masks exactly and miss the
    unseen poses (bank error 0.005 spreads, held-out 0.12): a lip is a few pixels thick, so its centre
    must be right to a fraction of a pixel while it moves by ~3.5 spreads over the pitch range;
  - the bank holds at least ``bank_per_frame`` = 3 masks of every frame (``bank_size`` is raised,
    ``bank_total``), spread evenly over the frames, poses stratified.

  Measured on the analytic talking-lips clip of the tests (``talk_route``: 240 frames at 25 fps whose
  opening, width and corners follow 1-6 Hz sinusoids under a phrase envelope, slow head motion and
  turn, lips 38 px wide and a few px thick at 192 px; "tiny" preset, 200 held-out (frame, unseen
  pose), mean IoU): **0.75 before** (per-frame box code, 320 masks; 0.86 with 720) **-> 0.95**; without
  the box offsets 0.85, with the old per-frame box code instead of them 0.87, without the decoder's
  frame codes 0.91, with 2 masks per frame 0.93.  At the real clip's length (400 frames) with "fast":
  0.81 -> 0.95 (min 0.32 -> 0.79).  An analytic "speech" clip (160 frames, opens every 5.3 frames, a
  60-90 px ring at 128 px): 0.78 -> 0.88.  Unchanged where frames do not matter: lips ring with
  continuous t 0.886 -> 0.894, ellipse pair 0.973 -> 0.973, synthetic avatar (24 frames, 13 masks per
  frame) lips 0.923 -> 0.921, hair 0.860 -> 0.866.  Tried and left out: the frame's tracked motion
  (jaw rotation + 10 expression coefficients, normalised) as decoder input beside or instead of its
  free code: 0.952 / 0.951 vs 0.948 (400 frames, "fast"), no gain worth a second input; read by the
  box head (with the head's rotation and translation): 0.87 vs 0.91, it over-fits like the code.
* **Warp of a signed distance field, plus a smooth residual.** The sharp detail of a mask is already in
  the source mask; what changes with (t, p) is mostly motion and stretching. The decoder therefore
  predicts, at a quarter of the working resolution, a displacement field and a residual logit field;
  the output logits are ``sharpness * warp(sdf(src), flow) + residual``.  Warping the (Euclidean)
  signed distance instead of the binary mask gives the flow a gradient everywhere, not only on
  the one-pixel edge, and a smooth residual moves the level set locally (opening mouth, occlusion).
  Both heads start at zero, and so does the box head: an untrained mapper returns the source mask
  (resampled into its window and back).
  With the crop, motion and scale are the box's job and the flow only has to explain shape change.
* **Encoder runs once per source.** Training uses one source mask, so its features are computed once
  per step and broadcast; only the FiLM-conditioned low-resolution decoder runs per sample, which is what
  makes CPU training take seconds, not minutes.

Conventions: time ``t`` in ``config.t_range`` (clip frame normalised to [0, 1]); ``pose [.., P]`` camera
yaw/pitch in radians relative to the frontal camera (any small vector of ``pose_dim`` works); masks are
float ``[B, H, W]`` in [0, 1] (bool/uint8 accepted).  Image positions are normalised frame coordinates,
x (columns) and y (rows) in [-1, 1] edge to edge (``grid_sample``'s ``align_corners=False``); a crop box is
``(cx, cy, hx, hy)``: centre and half-size in those units.  Logits come back in the crop at ``mask_size``
(``forward``), probabilities pasted into a frame of any size (``predict``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DynavatarError
from ..io.atomic import atomic_path

__all__ = [
    "MaskMapperConfig", "MaskMapper", "MaskMapperError", "MaskMapperHistory", "MASK_MAPPER_FORMAT",
    "train_mask_mapper", "evaluate_mask_mapper", "render_bank", "bank_points",
    "multilinear_read", "fourier_features", "signed_distance", "warp_field", "mask_iou", "soft_dice_loss",
    "mask_moments", "source_crop_box", "boxes_from_moments", "crop_masks", "paste_logits",
]

MASK_MAPPER_FORMAT = "dynavatar-mask-mapper/3"
#: Layouts this version can no longer read, with what changed (for the error message).
_OLD_FORMATS = {"dynavatar-mask-mapper/1": "the full-frame mapper from before region-centred crops"}
#: Older layouts this version still reads: the config fields they predate, with the values that rebuild
#: them exactly (format /3 added the decoder's per-frame codes and the box head's per-frame offsets).
_COMPATIBLE_FORMATS = {"dynavatar-mask-mapper/2": {"frame_latent": 0, "box_frame_offset": False}}

#: ``sample_fn(t [B], pose [B, P]) -> masks [B, H, W]`` — the exact route (renders the selected splats).
SampleFn = Callable[[Tensor, Tensor], Tensor]


class MaskMapperError(DynavatarError, ValueError):
    """A mask-mapper file is missing, corrupt or incompatible, or the exact route returned bad masks."""


# ----------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MaskMapperConfig:
    # --- network ---
    mask_size: int = 64  # working resolution (square); inputs/targets are resampled to it
    pose_dim: int = 2  # length of the camera pose vector (yaw, pitch in radians)
    grid_t: int = 16  # latent grid nodes along time
    grid_p: int = 8  # latent grid nodes along each pose dimension
    latent_dim: int = 16  # code length per grid node
    channels: int = 24  # base conv width (features at S/4; the S/8 level uses 2x)
    hidden: int = 128  # width of the MLP that turns (codes, Fourier features) into FiLM parameters
    fourier_freqs: int = 2  # sin/cos octaves of the normalised (t, pose) fed beside the grid code (0 = none)
    max_flow: float = 0.5  # largest displacement, in units of the image half-width (tanh-bounded)
    t_range: tuple[float, float] = (0.0, 1.0)  # time domain covered by the grid (queries are clamped)
    t_frames: int = 0  # > 1: t indexes a clip of this many frames, frame = round(t' (t_frames - 1)) with t'
    #                    t normalised to t_range (the exact route's rule); the codes are read at that frame's
    #                    time, so the prediction is piecewise constant in t like the route (0: continuous t)
    pose_range: tuple[tuple[float, float], ...] = ((-0.6, 0.6), (-0.4, 0.4))  # per pose dim, radians
    # --- training ---
    steps: int = 1000  # optimiser steps
    lr: float = 3e-3  # Adam learning rate (cosine-decayed to 5 %)
    grid_lr_scale: float = 3.0  # the latent grid learns this much faster (each node sees few samples)
    batch_size: int = 32  # bank samples per step
    bank_size: int = 768  # exact-route masks rendered once and reused
    bank_jitter_fraction: float = 0.75  # share of the bank on a jittered (stratified) grid; rest uniform
    val_size: int = 32  # extra held-out renders for the IoU reported in the history (0 = none)
    render_batch: int = 16  # (t, pose) per sample_fn call while rendering the bank
    dice_weight: float = 1.0  # loss = BCE + dice_weight * soft-Dice + smooth_weight * TV(grid)
    smooth_weight: float = 1e-2
    log_every: int = 25  # history/progress-bar interval (steps)
    seed: int = 0
    # --- region crop (see the module docstring) ---
    crop: bool = True  # work in a window that follows the region (False: the whole frame)
    crop_pad: float = 0.25  # the source's window: its bounding box grown by this fraction of the half-size
    crop_pad_px: float = 2.0  # ... plus this many source-frame pixels on every side
    crop_max_aspect: float = 3.0  # the window's long side is at most this many times its short side (pixels)
    crop_follow_scale: tuple[float, float] = (0.25, 0.75)  # the window's size follows the region's spread
    #   fully along an axis where the source window's half-size is <= the first fraction of the frame's,
    #   not at all where >= the second (a large region gains no resolution from it, and a union of parts
    #   moving differently — hair + mouth — is easier to learn in a window of fixed size); it always moves
    bank_oversample: float = 2.0  # bank masks kept at the resolution that gives the source window this many
    #                               pixels per working pixel (capped by the exact route's own resolution)
    box_weight: float = 0.1  # weight of the box head's loss: Huber (1 px) of the window's error in working pixels
    box_bank: int = 1024  # bank points the box head sees per step (it is cheap: an MLP on few inputs)
    box_steps: int = 1000  # steps fitting the box head alone before the decoder's training (cheap: ~1-4 s on CPU)
    box_grid_t: int = 64  # nodes of the box head's own latent code over time (0 = Fourier features only) ...
    box_per_frame: bool = False  # ... or, with t_frames > 1, one node per frame (format /2's default; with
    #                              few bank masks per frame it learns the poses it saw, see "Frames")
    box_latent: int = 8  # its code length
    box_fourier: int = 2  # sin/cos octaves of the normalised (t, pose) the box head reads
    # --- a clip's frames (t_frames > 1; see "Frames" in the module docstring) ---
    frame_latent: int = 16  # length of the decoder's own code per frame (0 = none): the mouth's shape
    #                         changes every frame of a talking clip, faster than grid_t nodes can follow
    frame_smooth_weight: float = 1e-3  # TV weight between neighbouring frames' codes (fills frames with few
    #                                    bank masks from their neighbours without blurring speech)
    bank_per_frame: int = 3  # the bank holds at least this many masks per frame (bank_size is raised)
    box_frame_offset: bool = True  # the box head adds a free per-frame offset to its smooth prediction
    box_offset_weight: float = 1e-2  # L2 on those offsets (in units of the region's spread)

    def __post_init__(self) -> None:
        self.t_range = (float(self.t_range[0]), float(self.t_range[1]))
        self.pose_range = tuple((float(lo), float(hi)) for lo, hi in self.pose_range)
        if len(self.pose_range) != self.pose_dim:
            raise ValueError(f"pose_range has {len(self.pose_range)} entries for pose_dim={self.pose_dim}")
        if self.mask_size % 8 or self.mask_size < 16:
            raise ValueError(f"mask_size must be a multiple of 8 and >= 16, got {self.mask_size}")
        if self.grid_t < 2 or self.grid_p < 2:
            raise ValueError("grid_t and grid_p need at least 2 nodes each")
        for lo, hi in (self.t_range, *self.pose_range):
            if not hi > lo:
                raise ValueError(f"empty range ({lo}, {hi})")
        self.crop_follow_scale = (float(self.crop_follow_scale[0]), float(self.crop_follow_scale[1]))
        if not 0.0 <= self.crop_follow_scale[0] <= self.crop_follow_scale[1]:
            raise ValueError(f"crop_follow_scale must be 0 <= lo <= hi, got {self.crop_follow_scale}")
        if min(self.t_frames, self.box_grid_t, self.box_steps, self.frame_latent, self.bank_per_frame) < 0:
            raise ValueError("t_frames, box_grid_t, box_steps, frame_latent and bank_per_frame must be >= 0")
        if self.crop_max_aspect < 1.0 or self.bank_oversample <= 0.0 or self.crop_pad < 0.0 or self.crop_pad_px < 0.0:
            raise ValueError("crop_max_aspect >= 1, bank_oversample > 0 and crop_pad, crop_pad_px >= 0 are required")

    @property
    def box_time_nodes(self) -> int:
        """Nodes of the box head's time code (0: none)."""
        return self.t_frames if self.box_per_frame and self.t_frames > 1 else self.box_grid_t

    @property
    def box_offset_frames(self) -> int:
        """Frames with a box offset of their own (0: none)."""
        return self.t_frames if self.t_frames > 1 and self.box_frame_offset else 0

    @property
    def frame_code_frames(self) -> int:
        """Frames with a decoder code of their own (0: none, the continuous-time mapper)."""
        return self.t_frames if self.t_frames > 1 and self.frame_latent > 0 else 0

    @property
    def bank_total(self) -> int:
        """Masks in the bank: bank_size, raised to bank_per_frame per frame of a clip."""
        return max(self.bank_size, self.bank_per_frame * self.t_frames) if self.t_frames > 1 else self.bank_size

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return (self.grid_t, *([self.grid_p] * self.pose_dim))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MaskMapperConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown MaskMapperConfig fields {sorted(unknown)}")
        d = dict(d)
        if "t_range" in d:
            d["t_range"] = tuple(d["t_range"])
        if "pose_range" in d:
            d["pose_range"] = tuple(tuple(r) for r in d["pose_range"])
        if "crop_follow_scale" in d:
            d["crop_follow_scale"] = tuple(d["crop_follow_scale"])
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides) -> "MaskMapperConfig":
        """Named settings.  CPU training times measured on 1 busy core (the routes of the tests):
        ``tiny`` ~12 s, ``fast`` (the defaults, with 2000 steps) ~90 s, ``quality`` several minutes (meant for a GPU;
        pass ``device="cuda"`` to train_mask_mapper: ~100 s on an H200 for a 400-frame clip, bank included).
        The exact route's bank renders come on top: ``bank_total`` (bank_size, at least bank_per_frame
        per frame of a clip: 1200 for 400 frames) x its cost per mask.  A real avatar's lips on 2 CPU
        cores (``dynavatar bench mask``, 400 frames, 48k splats, 0.19 s a bank mask): ``fast`` 2400
        masks in 462 s + 90 s of training; ``quality`` 5600 masks in 1092 s + 394 s."""
        presets = {
            "tiny": dict(grid_t=8, grid_p=5, channels=16, steps=400, bank_size=320, val_size=0, batch_size=24,
                         box_grid_t=32),
            # 6 masks per frame of a clip (the default 3 is for CPU): real wojtek lips on an H200, fast 0.845 ->
            # 0.883 (18 -> 32 s with 2000 steps); 10 per frame and 3000 steps do not help fast (0.876, 51 s)
            "fast": dict(bank_per_frame=6, steps=2000),
            # quality, wojtek lips on an H200 (mean IoU vs the exact route, 48 held-out (t, pose)): 6 per frame and
            # 3000 steps 0.879 (52 s); 10 and 4000 0.897 twice (66 s); 14 and 6000 0.900 (100 s). More views of
            # each frame is what helps: a larger working size (96 px: 0.878) or frame code (32: 0.879) does not
            "quality": dict(channels=32, steps=6000, bank_size=1536, batch_size=48, box_grid_t=128, box_steps=2000,
                            bank_per_frame=14),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


# ----------------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------------


def multilinear_read(grid: Tensor, coords: Tensor) -> Tensor:
    """Multi-linear interpolation of a regular grid of codes, nodes at 0, 1/(G-1), ..., 1 per axis.

    grid: [G1, ..., GD, L]; coords: [B, D] in [0, 1] (clamped) -> [B, L].

    Written by hand (2^D gathers) rather than with ``grid_sample`` so that any number of pose
    dimensions works and the node/edge behaviour is obvious: at a node the read-out *is* the code,
    along an edge it is the lerp of the two end codes.
    """
    D = coords.shape[-1]
    sizes = grid.shape[:D]
    L = grid.shape[-1]
    flat = grid.reshape(-1, L)  # [prod(G), L]
    size_t = torch.tensor(sizes, device=coords.device, dtype=coords.dtype)  # [D]
    x = coords.clamp(0.0, 1.0) * (size_t - 1)  # [B, D] in node units
    i0 = x.floor().clamp(max=size_t - 2).long()  # [B, D] lower node (last cell includes x = G-1)
    frac = x - i0.to(x.dtype)  # [B, D] in [0, 1]
    strides = [1] * D
    for d in range(D - 2, -1, -1):
        strides[d] = strides[d + 1] * sizes[d + 1]
    out = coords.new_zeros(coords.shape[0], L)
    for corner in range(1 << D):
        bits = [(corner >> d) & 1 for d in range(D)]
        idx = torch.zeros_like(i0[:, 0])  # [B]
        w = torch.ones_like(frac[:, 0])  # [B]
        for d, b in enumerate(bits):
            idx = idx + (i0[:, d] + b) * strides[d]
            w = w * (frac[:, d] if b else 1.0 - frac[:, d])
        out = out + w[:, None] * flat[idx]
    return out


def fourier_features(x: Tensor, n_freqs: int) -> Tensor:
    """x: [B, D] in [0, 1] -> [B, D * 2 * n_freqs]: sin/cos(pi * 2^k * x), k < n_freqs.

    Low octaves only: they carry smooth global trends; local detail is the grid's job."""
    if n_freqs <= 0:
        return x.new_zeros(x.shape[0], 0)
    freqs = math.pi * (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype))  # [F]
    ang = x[..., None] * freqs  # [B, D, F]
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(1)


def signed_distance(mask: Tensor, chunk: int = 4096) -> Tensor:
    """Euclidean signed distance of a binary mask to its edge, in pixels, positive inside.

    mask: [B, 1, H, W] (thresholded at 0.5) -> [B, 1, H, W].  The edge is the set of midpoints between
    4-neighbours that disagree, so edge pixels get +-0.5 and the zero level set lies where a thresholded
    bilinear upsampling of the mask would put it.  Brute force (pixels x edge points, chunked): exact, no
    truncation, and cheap at working resolution (64^2 pixels, a few hundred edge points).  A mask with
    no edge (empty/full) gets -/+ (H + W) everywhere.
    """
    B, _, H, W = mask.shape
    m = mask[:, 0] > 0.5  # [B, H, W]
    yy, xx = torch.meshgrid(torch.arange(H, device=mask.device, dtype=torch.float32),
                            torch.arange(W, device=mask.device, dtype=torch.float32), indexing="ij")
    pix = torch.stack([yy, xx], -1).reshape(-1, 2)  # [HW, 2]
    out = torch.empty(B, H * W, device=mask.device)
    for b in range(B):
        vert = m[b, 1:] != m[b, :-1]  # [H-1, W] edges between rows
        horz = m[b, :, 1:] != m[b, :, :-1]  # [H, W-1] edges between columns
        edge = torch.cat([torch.stack([yy[:-1][vert] + 0.5, xx[:-1][vert]], -1),
                          torch.stack([yy[:, :-1][horz], xx[:, :-1][horz] + 0.5], -1)])  # [E, 2]
        if edge.shape[0] == 0:
            out[b] = float(H + W)
        else:
            out[b] = torch.cat([torch.cdist(pix[i:i + chunk], edge).amin(1) for i in range(0, H * W, chunk)])
    sign = m.reshape(B, -1).float() * 2 - 1
    return (out * sign).reshape(B, 1, H, W).to(mask.dtype)


def _base_grid(h: int, w: int, device, dtype) -> Tensor:
    """Pixel-centre sampling grid for ``grid_sample(align_corners=False)``: [1, H, W, 2] (x, y)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)[None]


def warp_field(field: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: out(x) = field(x + flow(x)).

    field: [B, C, H, W]; flow: [B, 2, H, W] (dx, dy) in normalised units (2 = full width) -> [B, C, H, W].
    Border padding: a signed distance keeps its sign beyond the image edge."""
    B, _, H, W = field.shape
    grid = _base_grid(H, W, field.device, field.dtype) + flow.permute(0, 2, 3, 1)  # [B, H, W, 2]
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize_masks(masks: Tensor, size: int | tuple[int, int]) -> Tensor:
    """[B, H, W] (any dtype) -> float [B, h, w]; area averaging when shrinking (keeps thin parts as
    partial coverage instead of dropping them), bilinear when enlarging."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = masks.to(torch.float32)[:, None]
    if tuple(x.shape[-2:]) == size:
        return x[:, 0]
    mode = "area" if x.shape[-2] >= size[0] and x.shape[-1] >= size[1] else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **kw)[:, 0]


def mask_iou(pred: Tensor, target: Tensor, threshold: float = 0.5) -> Tensor:
    """[B, H, W] x [B, H, W] -> [B] IoU of the thresholded masks (1 when both are empty)."""
    p = pred > threshold
    t = target > threshold
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def soft_dice_loss(probs: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """[B, H, W] x [B, H, W] -> scalar 1 - mean soft Dice.  Complements BCE for small regions (a mouth
    is a few percent of the image, and BCE alone would happily shrink it)."""
    inter = (probs * target).flatten(1).sum(1)
    denom = probs.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def grid_tv(codes: Tensor, n_axes: int) -> Tensor:
    """Mean squared difference of neighbouring codes along each of the first n_axes axes -> scalar."""
    total = codes.new_zeros(())
    for d in range(n_axes):
        total = total + codes.diff(dim=d).pow(2).mean()
    return total


# ----------------------------------------------------------------------------------------------------
# region windows: moments, boxes, crop and paste-back
# ----------------------------------------------------------------------------------------------------

#: The window of the whole frame, (cx, cy, hx, hy).
FULL_FRAME_BOX = (0.0, 0.0, 1.0, 1.0)


def _centres(n: int, device=None, dtype=torch.float32) -> Tensor:
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
    xs, ys = _centres(W, w.device), _centres(H, w.device)
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


def _relative_box(box: Tensor, moments: Tensor) -> Tensor:
    """Inverse of boxes_from_moments: box [B, 4], moments [B, 4] -> rel [B, 4]."""
    s = moments[:, 2:]
    return torch.cat([(box[:, :2] - moments[:, :2]) / s, box[:, 2:] / s], dim=1)


def _moments_delta(moments: Tensor, moments0: Tensor) -> Tensor:
    """Moments relative to the source's: ((c - c0) / s0, log(s / s0)) [B, 4] — what the box head regresses."""
    s0 = moments0[:, 2:]
    return torch.cat([(moments[:, :2] - moments0[:, :2]) / s0, (moments[:, 2:] / s0).log()], dim=1)


def _moments_from_delta(delta: Tensor, moments0: Tensor) -> Tensor:
    s0 = moments0[:, 2:]
    return torch.cat([moments0[:, :2] + delta[:, :2] * s0, s0 * delta[:, 2:].clamp(-4, 4).exp()], dim=1)


def _box_grid(boxes: Tensor, h: int, w: int) -> Tensor:
    """Sampling grid [B, h, w, 2] (x, y) of an h x w raster over each box (pixel centres)."""
    u = _centres(w, boxes.device, boxes.dtype)
    v = _centres(h, boxes.device, boxes.dtype)
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
    xs, ys = _centres(W, logits.device, logits.dtype), _centres(H, logits.device, logits.dtype)
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


# ----------------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class _Encoder(nn.Module):
    """Source mask (+ its SDF and pixel coordinates) at S -> features at S/4 [B, C] and S/8 [B, 2C]."""

    def __init__(self, c: int):
        super().__init__()
        self.c1 = _conv(4, c // 2, 2)  # S/2
        self.c2 = _conv(c // 2, c, 2)  # S/4
        self.c3 = _conv(c, 2 * c, 2)  # S/8
        self.c4 = _conv(2 * c, 2 * c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.silu(self.c1(x))
        f4 = F.silu(self.c2(h))  # [B, C, S/4, S/4]
        f8 = F.silu(self.c4(F.silu(self.c3(f4))))  # [B, 2C, S/8, S/8]
        return f4, f8


@dataclasses.dataclass
class _Source:
    """A source mask prepared for the decoder (batch b = 1 or B)."""
    crop: Tensor  # [b, S, S] the source inside its window
    sdf: Tensor  # [b, 1, S, S] signed distance of the crop, in crop pixels
    enc_in: Tensor  # [b, 4, S, S] encoder input
    box: Tensor  # [b, 4] the window (cx, cy, hx, hy), normalised frame coordinates
    moments: Tensor  # [b, 4] (cx, cy, sx, sy) of the source mask
    rel: Tensor  # [b, 4] the window relative to the moments (boxes_from_moments)
    frame: tuple[int, int]  # (H, W) of the source frame


class MaskMapper(nn.Module):
    """(target t, pose, source mask at (t0, pose0)) -> mask logits at (t, pose) inside a window that
    follows the region, [B, S, S], and that window [B, 4].

    Parameters: the latent grid ``codes``, a conv encoder of the source crop, an MLP from the two grid
    codes (+ Fourier features, + the window's relative moments) to FiLM parameters, a small decoder at
    S/8 -> S/4 with a flow head and a residual head, one log-sharpness scalar, and the box head (an
    MLP from its own 1-D time code ``box_codes`` and Fourier features of (t, pose) to the region's
    moments relative to the source's, whitened by the ``box_mean``/``box_scale`` buffers).  In a clip
    (``t_frames`` > 1) also a code per frame for the decoder (``frame_codes``) and a moment offset per
    frame for the box head (``box_offsets``); None otherwise.
    The source used in training is kept as buffers (its crop at working resolution, its window, its
    moments and its frame size) so that ``predict(t, pose)`` works without it.
    """

    def __init__(self, config: MaskMapperConfig | None = None):
        super().__init__()
        cfg = config or MaskMapperConfig()
        self.config = cfg
        c, P, L, Hd = cfg.channels, cfg.pose_dim, cfg.latent_dim, cfg.hidden
        self.codes = nn.Parameter(torch.zeros(*cfg.grid_shape, L))  # [Gt, Gp, ..., L]
        nf = cfg.frame_code_frames  # a clip: the decoder's own code per frame [N, Lf]
        self.frame_codes = nn.Parameter(torch.zeros(nf, cfg.frame_latent)) if nf else None
        self.encoder = _Encoder(c)
        z_dim = 2 * L + 2 * (1 + P) * 2 * cfg.fourier_freqs + (cfg.frame_latent if nf else 0)
        self.cond = nn.Sequential(nn.Linear(z_dim + 4, Hd), nn.SiLU(), nn.Linear(Hd, Hd),
                                  nn.SiLU(), nn.Linear(Hd, 2 * (2 * c) + 2 * c))
        # the box head's own 1-D code over time (the pose dependence is smooth: Fourier features)
        self.box_codes = nn.Parameter(torch.zeros(max(cfg.box_time_nodes, 2), cfg.box_latent))
        nb = cfg.box_offset_frames
        self.box_offsets = nn.Parameter(torch.zeros(nb, 4)) if nb else None  # [N, 4] per frame
        bz = cfg.box_latent * (cfg.box_time_nodes > 0) + (1 + P) * (1 + 2 * cfg.box_fourier)
        self.box_head = nn.Sequential(nn.Linear(bz, Hd), nn.SiLU(), nn.Linear(Hd, Hd), nn.SiLU(), nn.Linear(Hd, 4))
        self.dec8 = _conv(2 * c, 2 * c)
        self.dec4a = _conv(3 * c, c)
        self.dec4b = _conv(c, c)
        self.head = nn.Conv2d(c, 3, 3, padding=1)  # flow (2) + residual logits (1) at S/4
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(1.5)))  # logits per pixel of distance
        for m in (self.cond[-1], self.head, self.box_head[-1]):  # identity start: source mask in the source window
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        S = cfg.mask_size
        self.register_buffer("source_mask", torch.zeros(S, S))  # [S, S] training source inside its window
        self.register_buffer("source_box", torch.tensor(FULL_FRAME_BOX))  # [4] its window
        self.register_buffer("source_moments", torch.tensor([0.0, 0.0, 3 ** -0.5, 3 ** -0.5]))  # [4]
        self.register_buffer("source_frame", torch.tensor([S, S]))  # (H, W) of the source frame
        self.register_buffer("source_t0", torch.zeros(()))
        self.register_buffer("source_pose0", torch.zeros(P))
        self.register_buffer("has_source", torch.zeros((), dtype=torch.bool))
        # the box head's outputs are whitened: delta = box_mean + box_scale * head(z) (set from the bank)
        self.register_buffer("box_mean", torch.zeros(4))
        self.register_buffer("box_scale", torch.ones(4))

    # -- coordinates ---------------------------------------------------------------------------------

    def normalise(self, t: Tensor, pose: Tensor) -> Tensor:
        """t [B], pose [B, P] -> [B, 1 + P] in [0, 1] (clamped to the trained ranges; with
        ``t_frames`` > 1, time snapped to the nearest of t_frames evenly spaced frames)."""
        cfg = self.config
        lo = torch.tensor([cfg.t_range[0], *(r[0] for r in cfg.pose_range)], device=t.device, dtype=t.dtype)
        hi = torch.tensor([cfg.t_range[1], *(r[1] for r in cfg.pose_range)], device=t.device, dtype=t.dtype)
        x = torch.cat([t[:, None], pose], dim=1)
        x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        n = cfg.t_frames
        if n > 1:  # a clip of frames: time is read at the frame the exact route shows
            x = torch.cat([(x[:, :1] * (n - 1)).round() / (n - 1), x[:, 1:]], dim=1)
        return x

    def _frame_index(self, x: Tensor) -> Tensor:
        """Normalised coordinates [B, D] -> the clip frame the exact route shows [B] (t_frames > 1)."""
        n = self.config.t_frames
        return (x[:, 0] * (n - 1)).round().long().clamp(0, n - 1)

    def latent(self, t: Tensor, pose: Tensor) -> Tensor:
        """The bilinear (multi-linear) read-out of the latent grid: t [B], pose [B, P] -> [B, L]."""
        return multilinear_read(self.codes, self.normalise(t, pose))

    def _latent_inputs(self, t: Tensor, pose: Tensor, t0: Tensor, pose0: Tensor) -> Tensor:
        """What the FiLM MLP reads (beside the window's relative moments): both grid codes + Fourier
        features, and in a clip the target frame's own code -> [B, Z]."""
        x, x0 = self.normalise(t, pose), self.normalise(t0, pose0)  # [B, D]
        nf = self.config.fourier_freqs
        parts = [multilinear_read(self.codes, x), multilinear_read(self.codes, x0),
                 fourier_features(x, nf), fourier_features(x0, nf)]
        if self.frame_codes is not None:
            parts.append(self.frame_codes[self._frame_index(x)])
        return torch.cat(parts, dim=1)

    def box_delta(self, t: Tensor, pose: Tensor) -> Tensor:
        """Box head: t [B], pose [B, P] -> the region's moments relative to the source's [B, 4]
        ((c - c0) / s0, log(s / s0)); zero without crop."""
        if not self.config.crop:
            return t.new_zeros(t.shape[0], 4)
        x = self.normalise(t, pose)
        parts = [x, fourier_features(x, self.config.box_fourier)]
        if self.config.box_time_nodes > 0:
            parts.insert(0, multilinear_read(self.box_codes, x[:, :1]))
        delta = self.box_mean + self.box_scale * self.box_head(torch.cat(parts, dim=1))
        if self.box_offsets is not None:  # the frame's own offset: centre in units of the region's spread
            o = self.box_offsets[self._frame_index(x)]
            ds = delta[:, 2:] + o[:, 2:]
            delta = torch.cat([delta[:, :2] + o[:, :2] * ds.exp(), ds], dim=1)
        return delta

    def boxes_from_delta(self, delta: Tensor, src: _Source) -> Tensor:
        """Relative moments [B, 4] -> windows [B, 4] carried from the source's."""
        if not self.config.crop:
            return torch.tensor(FULL_FRAME_BOX, device=delta.device, dtype=delta.dtype).expand(delta.shape[0], -1)
        B = delta.shape[0]
        m0 = src.moments.expand(B, -1)
        mom = _moments_from_delta(delta, m0)
        lo, hi = self.config.crop_follow_scale  # large windows keep their size (see the config)
        g = ((hi - src.box[:, 2:]) / max(hi - lo, 1e-6)).clamp(0, 1).expand(B, -1)
        mom = torch.cat([mom[:, :2], m0[:, 2:] * (mom[:, 2:] / m0[:, 2:]) ** g], 1)
        return boxes_from_moments(mom, src.rel.expand(B, -1))

    # -- source --------------------------------------------------------------------------------------

    def source_inputs(self, src_mask: Tensor) -> _Source:
        """Full-frame source masks [B, H, W] -> their windows, crops at working resolution, signed
        distances (crop pixels) and encoder inputs.  Parameter-free (the trainer computes it once)."""
        cfg = self.config
        m = torch.as_tensor(src_mask).to(self.codes.device, torch.float32)
        m = m[None] if m.ndim == 2 else m
        mom, _ = mask_moments(m)
        if cfg.crop:
            box = torch.stack([source_crop_box(mi, cfg.crop_pad, cfg.crop_pad_px, cfg.crop_max_aspect) for mi in m])
        else:
            box = torch.tensor(FULL_FRAME_BOX, device=m.device).expand(m.shape[0], -1)
        crop, _ = crop_masks(m, box, cfg.mask_size, max_supersample=8)
        return self._prepare(crop, box, mom, tuple(m.shape[-2:]))

    def _prepare(self, crop: Tensor, box: Tensor, mom: Tensor, frame: tuple[int, int]) -> _Source:
        S = self.config.mask_size
        crop = crop.to(self.codes.dtype)
        sdf = signed_distance(crop[:, None])
        grid = _base_grid(S, S, crop.device, crop.dtype).permute(0, 3, 1, 2).expand(crop.shape[0], -1, -1, -1)
        enc_in = torch.cat([crop[:, None], (sdf * (2 / S)).clamp(-1, 1), grid], dim=1)
        return _Source(crop, sdf, enc_in, box, mom, _relative_box(box, mom), (int(frame[0]), int(frame[1])))

    def _stored_source_inputs(self) -> _Source:
        """The stored source prepared, cached until the buffers change (set_source, load)."""
        bufs = (self.source_mask, self.source_box, self.source_moments, self.source_frame)
        key = tuple((b.data_ptr(), b._version, b.device) for b in bufs)
        if getattr(self, "_source_cache_key", None) != key:
            with torch.no_grad():
                self._source_cache = self._prepare(self.source_mask[None], self.source_box[None],
                                                   self.source_moments[None], tuple(self.source_frame.tolist()))
            self._source_cache_key = key
        return self._source_cache

    def decode(self, film: Tensor, sdf: Tensor, f4: Tensor, f8: Tensor) -> Tensor:
        """FiLM params [B, 6C] + source encoding (batch B or 1, broadcast) -> logits [B, S, S]."""
        c = self.config.channels
        B = film.shape[0]
        g8, b8, g4, b4 = film.split([2 * c, 2 * c, c, c], dim=1)
        f8 = f8.expand(B, -1, -1, -1)
        f4 = f4.expand(B, -1, -1, -1)
        h = F.silu(f8 * (1 + g8[:, :, None, None]) + b8[:, :, None, None])  # [B, 2C, S/8, S/8]
        h = F.silu(self.dec8(h))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)  # [B, 2C, S/4, S/4]
        h = self.dec4a(torch.cat([h, f4], dim=1))
        h = F.silu(h * (1 + g4[:, :, None, None]) + b4[:, :, None, None])
        h = F.silu(self.dec4b(h))
        out = self.head(h)  # [B, 3, S/4, S/4]
        S = self.config.mask_size
        out = F.interpolate(out, size=(S, S), mode="bilinear", align_corners=False)  # [B, 3, S, S]
        flow = self.config.max_flow * torch.tanh(out[:, :2])  # [B, 2, S, S]
        warped = warp_field(sdf.expand(B, -1, -1, -1), flow)  # [B, 1, S, S] pixels
        return (self.log_sharpness.exp() * warped + out[:, 2:])[:, 0]

    def _decode_in_window(self, z: Tensor, delta: Tensor, src: _Source) -> Tensor:
        """Latent inputs [B, Z] + the window's relative moments [B, 4] -> crop logits [B, S, S]."""
        f4, f8 = self.encoder(src.enc_in)
        return self.decode(self.cond(torch.cat([z, delta], dim=1)), src.sdf, f4, f8)

    # -- public --------------------------------------------------------------------------------------

    def _inputs(self, t, pose, src_mask, t0, pose0) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """Broadcast/validate forward()'s arguments; a None source means the stored one."""
        dev, dt = self.codes.device, self.codes.dtype
        t = torch.as_tensor(t, device=dev, dtype=dt).reshape(-1)
        pose = torch.as_tensor(pose, device=dev, dtype=dt).reshape(-1, self.config.pose_dim)
        B = max(t.shape[0], pose.shape[0])
        t, pose = t.expand(B), pose.expand(B, -1)
        if src_mask is None:
            if not bool(self.has_source):
                raise MaskMapperError("no source mask given and none stored: pass src_mask, t0 and pose0")
            t0 = self.source_t0 if t0 is None else t0
            pose0 = self.source_pose0 if pose0 is None else pose0
        else:
            if t0 is None or pose0 is None:
                raise MaskMapperError("src_mask needs its t0 and pose0")
            src_mask = torch.as_tensor(src_mask, device=dev)
            if src_mask.ndim == 2:
                src_mask = src_mask[None]
            if src_mask.shape[0] not in (1, B):
                raise MaskMapperError(f"src_mask batch {src_mask.shape[0]} matches neither 1 nor {B}")
        t0 = torch.as_tensor(t0, device=dev, dtype=dt).reshape(-1).expand(B)
        pose0 = torch.as_tensor(pose0, device=dev, dtype=dt).reshape(-1, self.config.pose_dim).expand(B, -1)
        return t, pose, src_mask, t0, pose0

    def _source(self, src_mask: Tensor | None) -> _Source:
        return self._stored_source_inputs() if src_mask is None else self.source_inputs(src_mask)

    def forward(self, t: Tensor, pose: Tensor, src_mask: Tensor | None = None, t0: Tensor | None = None,
                pose0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """t [B], pose [B, P], src_mask [B or 1, H, W] (full frame), t0 [B], pose0 [B, P]
        -> (logits [B, S, S] inside the windows, windows [B, 4] (cx, cy, hx, hy)).

        A source batch of 1 is encoded once and broadcast; ``src_mask=None`` uses the stored source.
        ``paste_logits`` (or ``predict``) puts the logits back into a frame."""
        t, pose, src_mask, t0, pose0 = self._inputs(t, pose, src_mask, t0, pose0)
        src = self._source(src_mask)
        z = self._latent_inputs(t, pose, t0, pose0)
        delta = self.box_delta(t, pose)
        return self._decode_in_window(z, delta, src), self.boxes_from_delta(delta, src)

    @torch.no_grad()
    def crop_boxes(self, t: Tensor, pose: Tensor, src_mask: Tensor | None = None, t0: Tensor | None = None,
                   pose0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The box head alone: -> (windows [B, 4], predicted region moments [B, 4] = (cx, cy, sx, sy)),
        normalised frame coordinates."""
        t, pose, src_mask, t0, pose0 = self._inputs(t, pose, src_mask, t0, pose0)
        src = self._source(src_mask)
        delta = self.box_delta(t, pose)
        B = delta.shape[0]
        return self.boxes_from_delta(delta, src), _moments_from_delta(delta, src.moments.expand(B, -1))

    @torch.no_grad()
    def predict(self, t: Tensor, pose: Tensor, src_mask: Tensor | None = None, t0: Tensor | None = None,
                pose0: Tensor | None = None, out_size: tuple[int, int] | None = None) -> Tensor:
        """Probabilities [B, H, W] in the full frame: the window's logits pasted into a frame of
        ``out_size`` (default: the source's frame size — the given src_mask's, or the stored
        source's), then sigmoid (resampling logits, not probabilities, keeps the edge sharp)."""
        was_training = self.training
        self.eval()
        try:
            logits, boxes = self(t, pose, src_mask, t0, pose0)  # [B, S, S], [B, 4]
        finally:
            self.train(was_training)
        if out_size is None:
            out_size = (tuple(torch.as_tensor(src_mask).shape[-2:]) if src_mask is not None
                        else tuple(self.source_frame.tolist()))
        return torch.sigmoid(paste_logits(logits, boxes, tuple(out_size)))

    def set_source(self, src_mask: Tensor, t0: float | Tensor, pose0: Tensor) -> None:
        """Store the (full-frame) source mask's window, its crop at working resolution, its moments and
        frame size, with its (t0, pose0)."""
        m = torch.as_tensor(src_mask)
        m = m[None] if m.ndim == 2 else m[:1]
        with torch.no_grad():
            src = self.source_inputs(m.to(self.source_mask.device))
            self.source_mask.copy_(src.crop[0])
            self.source_box.copy_(src.box[0])
            self.source_moments.copy_(src.moments[0])
            self.source_frame.copy_(torch.tensor(src.frame))
            self.source_t0.copy_(torch.as_tensor(t0, dtype=self.source_t0.dtype).reshape(()))
            self.source_pose0.copy_(torch.as_tensor(pose0, dtype=self.source_pose0.dtype).reshape(-1))
            self.has_source.fill_(True)

    # -- I/O -----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """One ``.safetensors`` file; the JSON config and format tag live in its header metadata, so the
        weights and the config describing them cannot get separated or out of step.  Written atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": MASK_MAPPER_FORMAT, "config": json.dumps(self.config.to_dict())}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, tmp, metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "MaskMapper":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise MaskMapperError(f"mask-mapper file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for corrupt headers
            raise MaskMapperError(f"{path} is not a readable mask-mapper file ({type(exc).__name__}: {exc}); "
                                  "re-train it or re-save it with MaskMapper.save") from exc
        fmt = meta.get("format")
        if fmt in _OLD_FORMATS:
            raise MaskMapperError(f"{path}: format {fmt!r} is {_OLD_FORMATS[fmt]}; this version reads "
                                  f"{sorted([MASK_MAPPER_FORMAT, *_COMPATIBLE_FORMATS])} only — re-train it "
                                  "(train_mask_mapper, Avatar.mask_mapper)")
        if fmt != MASK_MAPPER_FORMAT and fmt not in _COMPATIBLE_FORMATS:
            raise MaskMapperError(f"{path}: format {fmt!r}, expected {MASK_MAPPER_FORMAT!r}")
        try:
            cfg = MaskMapperConfig.from_dict({**_COMPATIBLE_FORMATS.get(fmt, {}), **json.loads(meta["config"])})
        except Exception as exc:  # noqa: BLE001
            raise MaskMapperError(f"{path}: unreadable config in the header ({exc})") from exc
        mapper = cls(cfg).to(device)
        try:
            mapper.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise MaskMapperError(f"{path}: tensors do not match its config ({exc})") from exc
        for k, v in tensors.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise MaskMapperError(f"{path}: tensor {k!r} holds NaN/inf")
        return mapper.eval()


# ----------------------------------------------------------------------------------------------------
# training data: a bank of exact-route renders
# ----------------------------------------------------------------------------------------------------


def bank_points(cfg: MaskMapperConfig, n: int, generator: torch.Generator, jitter_fraction: float
                ) -> tuple[Tensor, Tensor]:
    """-> (t [n], pose [n, P]) covering the (t, pose) box: ``jitter_fraction`` of them stratified (one
    uniform point in each cell of a grid whose shape follows grid_t : grid_p), the rest uniform.
    Stratification guarantees every latent cell sees data; the random rest breaks aliasing with it.
    With ``t_frames`` > 1 the times are frame times instead, spread evenly over the frames (each frame
    gets n // t_frames or one more), since the box head has a code per frame."""
    D = 1 + cfg.pose_dim
    n_strat = int(round(n * jitter_fraction))
    u_parts = []
    if n_strat > 0:
        # cells per axis ~ proportional to the latent grid, product <= n_strat
        ratio = torch.tensor([cfg.grid_t - 1] + [cfg.grid_p - 1] * cfg.pose_dim, dtype=torch.float64)
        scale = (n_strat / ratio.prod()) ** (1.0 / D)
        cells = (ratio * scale).floor().clamp(min=1).long()
        while int(cells.prod()) > n_strat:
            cells[int(cells.argmax())] -= 1
        idx = torch.stack(torch.meshgrid(*[torch.arange(int(k)) for k in cells], indexing="ij"), -1).reshape(-1, D)
        jit = torch.rand(idx.shape, generator=generator, dtype=torch.float64)
        u_parts.append((idx + jit) / cells)
    u_parts.append(torch.rand(n - sum(p.shape[0] for p in u_parts), D, generator=generator, dtype=torch.float64))
    u = torch.cat(u_parts).float()  # [n, D] in [0, 1)
    lo = torch.tensor([cfg.t_range[0], *(r[0] for r in cfg.pose_range)])
    hi = torch.tensor([cfg.t_range[1], *(r[1] for r in cfg.pose_range)])
    if cfg.t_frames > 1 and n > 0:  # a clip: every frame gets its share of the bank (+-1)
        N = cfg.t_frames
        frames = torch.cat([torch.randperm(N, generator=generator) for _ in range(-(-n // N))])[:n]
        u[:, 0] = frames.float() / (N - 1)
    x = lo + u * (hi - lo)
    return x[:, 0].contiguous(), x[:, 1:].contiguous()


def _call_sample_fn(sample_fn: SampleFn, t: Tensor, pose: Tensor) -> Tensor:
    out = sample_fn(t, pose)
    out = torch.as_tensor(out)
    if out.ndim != 3 or out.shape[0] != t.shape[0]:
        raise MaskMapperError(f"sample_fn must return masks [B, H, W] with B={t.shape[0]}, got {tuple(out.shape)}")
    out = out.float()
    if not torch.isfinite(out).all():
        raise MaskMapperError("sample_fn returned NaN/inf")
    return out


def _fit_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) shrunk (aspect kept) so that the longer side is at most max_side; never enlarged."""
    if max_side is None or max(h, w) <= max_side:
        return h, w
    f = max_side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def render_bank(sample_fn: SampleFn, t: Tensor, pose: Tensor, size: int | None, batch: int = 16,
                progress: bool = False, desc: str = "render mask bank", max_side: int | None = None,
                as_bytes: bool = False) -> Tensor:
    """Call the exact route in chunks -> masks [N, size, size] (area-resampled), or with ``size=None``
    at the route's own size, shrunk (area, aspect kept) to at most ``max_side`` per side.
    ``as_bytes``: uint8 (value x 255) chunk by chunk, a quarter of the memory: 8000 lips masks of a
    512-px clip are 2 GB instead of 8 GB, which with the final concatenation exhausted a 24 GB machine."""
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, t.shape[0], batch), desc=desc, disable=not progress, leave=False, unit="batch"):
        m = _call_sample_fn(sample_fn, t[i:i + batch], pose[i:i + batch])
        m = resize_masks(m, size if size is not None else _fit_size(*m.shape[-2:], max_side))
        out.append(_mask_bytes(m) if as_bytes else m)
    return torch.cat(out)


def _mask_bytes(masks: Tensor) -> Tensor:
    """float masks in [0, 1] -> uint8 (x 255, rounded): how the training bank keeps them."""
    return (masks.clamp(0, 1) * 255).round().to(torch.uint8)


def bank_side(src_mask: Tensor, cfg: MaskMapperConfig) -> int:
    """Longest side to keep bank masks at: enough that the source window gets ``bank_oversample``
    bank pixels per working pixel across its shorter side (never more than the route's own size)."""
    H, W = src_mask.shape[-2:]
    if not cfg.crop:
        return min(max(H, W), math.ceil(cfg.bank_oversample * cfg.mask_size))
    box = source_crop_box(src_mask, cfg.crop_pad, cfg.crop_pad_px, cfg.crop_max_aspect)
    frac = float(min(box[2].clamp(max=1), box[3].clamp(max=1)))  # window half-size / frame half-size
    return min(max(H, W), math.ceil(cfg.bank_oversample * cfg.mask_size / frac))


# ----------------------------------------------------------------------------------------------------
# training and evaluation
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MaskMapperHistory:
    steps: list[int] = dataclasses.field(default_factory=list)  # logged step numbers
    loss: list[float] = dataclasses.field(default_factory=list)  # mean total loss over each interval
    iou: list[float] = dataclasses.field(default_factory=list)  # mean batch IoU (in the windows) per interval
    box_loss: list[float] = dataclasses.field(default_factory=list)  # mean box-head loss per interval
    val_iou: float | None = None  # mean full-frame IoU on val_size fresh renders (bank resolution), after training
    bank_seconds: float = 0.0  # time spent in sample_fn for the bank (+ validation renders)
    train_seconds: float = 0.0  # optimisation time (decoder phase)
    box_seconds: float = 0.0  # the box head's own fit before it
    bank_shape: tuple[int, int] = (0, 0)  # (H, W) the bank masks were kept at


def train_mask_mapper(sample_fn: SampleFn, config: MaskMapperConfig | None = None, *,
                      src_mask: Tensor | None = None, t0: float = 0.0, pose0: Tensor | Sequence[float] | None = None,
                      progress: bool = True, bank: tuple[Tensor, Tensor, Tensor] | None = None,
                      device: str | torch.device = "cpu") -> tuple[MaskMapper, MaskMapperHistory]:
    """Fit a MaskMapper to the exact route ``sample_fn`` for the mask drawn at (t0, pose0).

    ``src_mask`` [H, W] is the user's mask at (t0, pose0); when omitted it is rendered by sample_fn
    there.  The exact route is slow, so it is called only for a bank of ``bank_size`` (t, pose) points
    (stratified-jittered + uniform, see ``bank_points``), rendered once and kept at ``bank_side``
    (enough resolution for the source's window); each step draws a batch from the bank and crops it to
    the windows.  ``bank=(t [N], pose [N, P], masks [N, H, W])`` reuses renders made elsewhere (float in [0, 1], or
    uint8 x 255 as ``render_bank(as_bytes=True)`` returns them, kept without a float copy).
    """
    from tqdm.auto import tqdm

    cfg = config or MaskMapperConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    pose0 = torch.zeros(cfg.pose_dim) if pose0 is None else torch.as_tensor(pose0, dtype=torch.float32).reshape(-1)
    if pose0.shape[0] != cfg.pose_dim:
        raise MaskMapperError(f"pose0 has {pose0.shape[0]} entries, config.pose_dim is {cfg.pose_dim}")
    t0_t = torch.tensor([float(t0)])

    clock = time.perf_counter()
    if src_mask is None:
        src_mask = _call_sample_fn(sample_fn, t0_t, pose0[None])[0]
    src_mask = torch.as_tensor(src_mask).float()
    if src_mask.ndim == 3:
        src_mask = src_mask[0]
    side = bank_side(src_mask, cfg)
    if bank is None:
        bt, bp = bank_points(cfg, cfg.bank_total, gen, cfg.bank_jitter_fraction)
        # kept as bytes: a 5600-mask bank at 512 px is 1.5 GB instead of 5.9 GB
        targets = render_bank(sample_fn, bt, bp, None, cfg.render_batch, progress, max_side=side, as_bytes=True)
    else:
        bt, bp = bank[0].float().reshape(-1), bank[1].float().reshape(-1, cfg.pose_dim)
        masks = torch.as_tensor(bank[2])
        size = _fit_size(*masks.shape[-2:], side)
        if masks.dtype == torch.uint8 and tuple(masks.shape[-2:]) == size:  # render_bank(as_bytes=True)'s own
            targets = masks
        else:
            targets = _mask_bytes(resize_masks(masks.float() / (255 if masks.dtype == torch.uint8 else 1), size))
    val = None
    if cfg.val_size > 0:
        vt, vp = bank_points(cfg, cfg.val_size, gen, 0.0)
        val = (vt, vp, render_bank(sample_fn, vt, vp, None, cfg.render_batch, progress, "render val masks", side))
    history = MaskMapperHistory(bank_seconds=time.perf_counter() - clock, bank_shape=tuple(targets.shape[-2:]))

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        mapper = MaskMapper(cfg).to(device)
    mapper.set_source(src_mask.to(device), float(t0), pose0)
    src = mapper._stored_source_inputs()
    bank_mom, bank_valid = (torch.cat(x) for x in zip(*(mask_moments(targets[i:i + 256].float() / 255)
                                                          for i in range(0, targets.shape[0], 256))))
    delta_gt = _moments_delta(bank_mom, src.moments.to(bank_mom.device).expand(targets.shape[0], -1))
    bt, bp, targets = bt.to(device), bp.to(device), targets.to(device)
    delta_gt, bank_valid = delta_gt.to(device), bank_valid.to(device)
    S = cfg.mask_size
    if cfg.crop and bool(bank_valid.any()):
        with torch.no_grad():  # whiten the box head's targets
            mapper.box_mean.copy_(delta_gt[bank_valid].mean(0))
            mapper.box_scale.copy_(delta_gt[bank_valid].std(0, unbiased=False).clamp(min=0.05)
                                   if int(bank_valid.sum()) > 1 else torch.ones(4, device=device))
    valid_idx = bank_valid.nonzero()[:, 0]
    # window error in working pixels per unit of delta: position / (rel half-size * scale), log-scale * 1
    px_per = (S / 2) / torch.cat([src.rel[0, 2:].abs(), torch.ones(2, device=device)])  # [4]
    t0_b, p0_b = t0_t.to(device), pose0[None].to(device)
    D = 1 + cfg.pose_dim

    def box_loss_of(db: Tensor, bi: Tensor) -> Tensor:
        """Box head outputs db [n, 4] at bank entries bi [n]: Huber of the window error in working pixels."""
        if bi.shape[0] == 0:
            return db.new_zeros(())
        g = delta_gt[bi]
        err = (db - g) * px_per
        err = torch.cat([err[:, :2] * (-g[:, 2:]).exp(), err[:, 2:]], dim=1)  # relative to the target window
        return F.smooth_l1_loss(err, torch.zeros_like(err), beta=1.0)

    def bank_box_loss() -> Tensor:
        """The box head on (a large draw of) the whole bank."""
        bi = valid_idx[torch.randperm(valid_idx.shape[0], generator=gen)[:cfg.box_bank].to(device)]
        loss = box_loss_of(mapper.box_delta(bt[bi], bp[bi]), bi)
        if mapper.box_offsets is not None:
            loss = loss + cfg.box_offset_weight * mapper.box_offsets.pow(2).sum(1).mean()
        return loss

    use_box = cfg.crop and valid_idx.shape[0] > 0
    if use_box and cfg.box_steps > 0:  # fit the (cheap) box head first: the decoder's windows come from it
        clock = time.perf_counter()
        box_grid = [mapper.box_codes] + ([mapper.box_offsets] if mapper.box_offsets is not None else [])
        bopt = torch.optim.Adam([{"params": box_grid, "lr": cfg.lr * cfg.grid_lr_scale},
                                 {"params": list(mapper.box_head.parameters()), "lr": cfg.lr}])
        bsched = torch.optim.lr_scheduler.LambdaLR(
            bopt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.box_steps) / cfg.box_steps)))
        for _ in range(cfg.box_steps):
            loss = bank_box_loss() + cfg.smooth_weight * grid_tv(mapper.box_codes, 1)
            bopt.zero_grad(set_to_none=True)
            loss.backward()
            bopt.step()
            bsched.step()
        history.box_seconds = time.perf_counter() - clock

    grid_names = ("codes", "box_codes", "frame_codes", "box_offsets")
    grid_params = [p for n, p in mapper.named_parameters() if n in grid_names]
    other = [p for n, p in mapper.named_parameters() if n not in grid_names]
    opt = torch.optim.Adam([{"params": grid_params, "lr": cfg.lr * cfg.grid_lr_scale},
                            {"params": other, "lr": cfg.lr}])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(cfg.steps, 1))))

    clock = time.perf_counter()
    mapper.train()
    acc_loss, acc_iou, acc_box, acc_n = 0.0, 0.0, 0.0, 0
    bar = tqdm(range(cfg.steps), desc="mask mapper", disable=not progress, unit="step")
    for step in bar:
        idx = torch.randint(0, bt.shape[0], (min(cfg.batch_size, bt.shape[0]),), generator=gen).to(device)
        B = idx.shape[0]
        z = mapper._latent_inputs(bt[idx], bp[idx], t0_b.expand(B), p0_b.expand(B, -1))
        delta = mapper.box_delta(bt[idx], bp[idx])  # [B, 4]
        # the head keeps learning on the whole bank (on the batch alone: lips 0.877 vs 0.886, walk 0.777 vs 0.793)
        box_loss = bank_box_loss() if use_box else z.new_zeros(())
        # the decoder works in the predicted windows, as at inference: it learns to correct the box head
        used = delta.detach()
        boxes = mapper.boxes_from_delta(used, src)
        tgt, inside = crop_masks(targets[idx].float() / 255, boxes, S)  # [B, S, S]
        w = inside.float()
        logits = mapper._decode_in_window(z, used, src)
        bce = (F.binary_cross_entropy_with_logits(logits, tgt, reduction="none") * w).sum() / w.sum().clamp(min=1)
        dice = soft_dice_loss(torch.sigmoid(logits) * w, tgt * w)
        tv = grid_tv(mapper.codes, D) + grid_tv(mapper.box_codes, 1)
        loss = bce + cfg.dice_weight * dice + cfg.smooth_weight * tv + cfg.box_weight * box_loss
        if mapper.frame_codes is not None:
            loss = loss + cfg.frame_smooth_weight * grid_tv(mapper.frame_codes, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc_loss += float(loss.detach())
        acc_box += float(box_loss.detach())
        acc_iou += float(mask_iou(torch.sigmoid(logits.detach()) * w, tgt * w).mean())
        acc_n += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            history.steps.append(step + 1)
            history.loss.append(acc_loss / acc_n)
            history.iou.append(acc_iou / acc_n)
            history.box_loss.append(acc_box / acc_n)
            bar.set_postfix(loss=f"{acc_loss / acc_n:.4f}", iou=f"{acc_iou / acc_n:.3f}")
            acc_loss, acc_iou, acc_box, acc_n = 0.0, 0.0, 0.0, 0
    history.train_seconds = time.perf_counter() - clock
    mapper.eval()
    if val is not None:
        vt, vp, vm = (v.to(device) for v in val)
        probs = torch.cat([mapper.predict(vt[i:i + 64], vp[i:i + 64], out_size=tuple(vm.shape[-2:]))
                           for i in range(0, vt.shape[0], 64)])
        history.val_iou = float(mask_iou(probs, vm).mean())
    return mapper, history


@torch.no_grad()
def evaluate_mask_mapper(mapper: MaskMapper, sample_fn: SampleFn, ts: Tensor, poses: Tensor,
                         src_mask: Tensor | None = None, t0: float | None = None, pose0: Tensor | None = None,
                         batch: int = 32) -> dict:
    """IoU of the mapper against the exact route at (ts [N], poses [N, P]), at the exact route's own
    resolution (the mapper's logits are upsampled to it).  Use points that were not in the bank.

    -> {"iou_mean": float, "iou_min": float, "per_sample": Tensor [N]}."""
    ts = torch.as_tensor(ts, dtype=torch.float32).reshape(-1)
    poses = torch.as_tensor(poses, dtype=torch.float32).reshape(ts.shape[0], -1)
    ious = []
    for i in range(0, ts.shape[0], batch):
        target = _call_sample_fn(sample_fn, ts[i:i + batch], poses[i:i + batch]).cpu()  # [b, H, W]
        pred = mapper.predict(ts[i:i + batch], poses[i:i + batch], src_mask, t0, pose0,
                              out_size=tuple(target.shape[-2:])).cpu()
        ious.append(mask_iou(pred, target))
    per = torch.cat(ious)
    return {"iou_mean": float(per.mean()), "iou_min": float(per.min()), "per_sample": per}
