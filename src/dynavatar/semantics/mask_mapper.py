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
* **Warp of a signed distance field, plus a smooth residual.** The sharp detail of a mask is already in
  the source mask; what changes with (t, p) is mostly motion and stretching. The decoder therefore
  predicts, at a quarter of the working resolution, a displacement field and a residual logit field;
  the output logits are ``sharpness * warp(sdf(src), flow) + residual``.  Warping the (Euclidean)
  signed distance instead of the binary mask gives the flow a gradient everywhere, not only on
  the one-pixel edge, and a smooth residual moves the level set locally (opening mouth, occlusion).
  Both heads start at zero: an untrained mapper returns the source mask.
* **Encoder runs once per source.** Training uses one source mask, so its features are computed once
  per step and broadcast; only the FiLM-conditioned low-resolution decoder runs per sample, which is what
  makes CPU training take seconds, not minutes.

Conventions: time ``t`` in ``config.t_range`` (clip frame normalised to [0, 1]); ``pose [.., P]`` camera
yaw/pitch in radians relative to the frontal camera (any small vector of ``pose_dim`` works); masks are
float ``[B, H, W]`` in [0, 1] (bool/uint8 accepted); logits/probabilities come back at ``mask_size`` or at
``out_size``.
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
]

MASK_MAPPER_FORMAT = "dynavatar-mask-mapper/1"

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
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides) -> "MaskMapperConfig":
        """Named settings.  CPU training times measured on 1 busy core (the ellipse route of the tests):
        ``tiny`` ~12 s, ``fast`` (the defaults) ~60 s, ``quality`` several minutes (meant for a GPU;
        pass ``device="cuda"`` to train_mask_mapper).  The exact route's bank renders come on top:
        bank_size x its cost per mask."""
        presets = {
            "tiny": dict(grid_t=8, grid_p=5, channels=16, steps=400, bank_size=320, val_size=0, batch_size=24),
            "fast": {},
            "quality": dict(channels=32, steps=3000, bank_size=1536, batch_size=48),
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


class MaskMapper(nn.Module):
    """(target t, pose, source mask at (t0, pose0)) -> mask logits at (t, pose), [B, S, S].

    Parameters: the latent grid ``codes``, a conv encoder of the source, an MLP from the two grid codes
    (+ Fourier features) to FiLM parameters, a small decoder at S/8 -> S/4 with a flow head and a
    residual head, and one log-sharpness scalar.  The source used in training is kept as buffers so
    that ``predict(t, pose)`` works without it.
    """

    def __init__(self, config: MaskMapperConfig | None = None):
        super().__init__()
        cfg = config or MaskMapperConfig()
        self.config = cfg
        c, P, L = cfg.channels, cfg.pose_dim, cfg.latent_dim
        self.codes = nn.Parameter(torch.zeros(*cfg.grid_shape, L))  # [Gt, Gp, ..., L]
        self.encoder = _Encoder(c)
        cond_in = 2 * L + 2 * (1 + P) * 2 * cfg.fourier_freqs
        self.cond = nn.Sequential(nn.Linear(cond_in, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden),
                                  nn.SiLU(), nn.Linear(cfg.hidden, 2 * (2 * c) + 2 * c))
        self.dec8 = _conv(2 * c, 2 * c)
        self.dec4a = _conv(3 * c, c)
        self.dec4b = _conv(c, c)
        self.head = nn.Conv2d(c, 3, 3, padding=1)  # flow (2) + residual logits (1) at S/4
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(1.5)))  # logits per pixel of distance
        for m in (self.cond[-1], self.head):  # identity start: zero flow, zero residual, plain FiLM
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        S = cfg.mask_size
        self.register_buffer("source_mask", torch.zeros(S, S))  # [S, S] training source (working res)
        self.register_buffer("source_t0", torch.zeros(()))
        self.register_buffer("source_pose0", torch.zeros(P))
        self.register_buffer("has_source", torch.zeros((), dtype=torch.bool))

    # -- coordinates ---------------------------------------------------------------------------------

    def normalise(self, t: Tensor, pose: Tensor) -> Tensor:
        """t [B], pose [B, P] -> [B, 1 + P] in [0, 1] (clamped to the trained ranges)."""
        cfg = self.config
        lo = torch.tensor([cfg.t_range[0], *(r[0] for r in cfg.pose_range)], device=t.device, dtype=t.dtype)
        hi = torch.tensor([cfg.t_range[1], *(r[1] for r in cfg.pose_range)], device=t.device, dtype=t.dtype)
        x = torch.cat([t[:, None], pose], dim=1)
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def latent(self, t: Tensor, pose: Tensor) -> Tensor:
        """The bilinear (multi-linear) read-out of the latent grid: t [B], pose [B, P] -> [B, L]."""
        return multilinear_read(self.codes, self.normalise(t, pose))

    def _condition(self, t: Tensor, pose: Tensor, t0: Tensor, pose0: Tensor) -> Tensor:
        x, x0 = self.normalise(t, pose), self.normalise(t0, pose0)  # [B, D]
        nf = self.config.fourier_freqs
        z = torch.cat([multilinear_read(self.codes, x), multilinear_read(self.codes, x0),
                       fourier_features(x, nf), fourier_features(x0, nf)], dim=1)
        return self.cond(z)  # [B, 6C] FiLM parameters

    # -- source --------------------------------------------------------------------------------------

    def source_inputs(self, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, H, W] -> (sdf [B, 1, S, S] in working pixels, encoder input [B, 4, S, S]).

        Parameter-free, so the trainer computes it once for its fixed source."""
        S = self.config.mask_size
        m = resize_masks(src_mask, S).to(self.codes.dtype)[:, None]  # [B, 1, S, S]
        sdf = signed_distance(m)
        grid = _base_grid(S, S, m.device, m.dtype).permute(0, 3, 1, 2).expand(m.shape[0], -1, -1, -1)
        return sdf, torch.cat([m, (sdf * (2 / S)).clamp(-1, 1), grid], dim=1)

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

    # -- public --------------------------------------------------------------------------------------

    def _inputs(self, t, pose, src_mask, t0, pose0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Broadcast/validate forward()'s arguments; None source -> the stored one."""
        dev, dt = self.codes.device, self.codes.dtype
        t = torch.as_tensor(t, device=dev, dtype=dt).reshape(-1)
        pose = torch.as_tensor(pose, device=dev, dtype=dt).reshape(-1, self.config.pose_dim)
        B = max(t.shape[0], pose.shape[0])
        t, pose = t.expand(B), pose.expand(B, -1)
        if src_mask is None:
            if not bool(self.has_source):
                raise MaskMapperError("no source mask given and none stored: pass src_mask, t0 and pose0")
            src_mask = self.source_mask[None]
            t0 = self.source_t0 if t0 is None else t0
            pose0 = self.source_pose0 if pose0 is None else pose0
        elif t0 is None or pose0 is None:
            raise MaskMapperError("src_mask needs its t0 and pose0")
        src_mask = torch.as_tensor(src_mask, device=dev)
        if src_mask.ndim == 2:
            src_mask = src_mask[None]
        if src_mask.shape[0] not in (1, B):
            raise MaskMapperError(f"src_mask batch {src_mask.shape[0]} matches neither 1 nor {B}")
        t0 = torch.as_tensor(t0, device=dev, dtype=dt).reshape(-1).expand(B)
        pose0 = torch.as_tensor(pose0, device=dev, dtype=dt).reshape(-1, self.config.pose_dim).expand(B, -1)
        return t, pose, src_mask, t0, pose0

    def forward(self, t: Tensor, pose: Tensor, src_mask: Tensor | None = None, t0: Tensor | None = None,
                pose0: Tensor | None = None) -> Tensor:
        """t [B], pose [B, P], src_mask [B or 1, H, W], t0 [B], pose0 [B, P] -> logits [B, S, S].

        A source batch of 1 is encoded once and broadcast; ``src_mask=None`` uses the stored source."""
        t, pose, src_mask, t0, pose0 = self._inputs(t, pose, src_mask, t0, pose0)
        if (src_mask.shape == (1, *self.source_mask.shape)
                and src_mask.data_ptr() == self.source_mask.data_ptr()):  # the stored source: cached
            sdf, enc_in = self._stored_source_inputs()
        else:
            sdf, enc_in = self.source_inputs(src_mask)
        return self._forward_encoded(t, pose, t0, pose0, sdf, enc_in)

    def _stored_source_inputs(self) -> tuple[Tensor, Tensor]:
        """source_inputs of the stored source, cached until the buffer changes (set_source, load)."""
        key = (self.source_mask.data_ptr(), self.source_mask._version, self.source_mask.device)
        if getattr(self, "_source_cache_key", None) != key:
            with torch.no_grad():
                self._source_cache = self.source_inputs(self.source_mask[None])
            self._source_cache_key = key
        return self._source_cache

    def _forward_encoded(self, t: Tensor, pose: Tensor, t0: Tensor, pose0: Tensor, sdf: Tensor,
                         enc_in: Tensor) -> Tensor:
        """forward() after ``source_inputs``: sdf/enc_in with batch B or 1 -> logits [B, S, S]."""
        f4, f8 = self.encoder(enc_in)
        return self.decode(self._condition(t, pose, t0, pose0), sdf, f4, f8)

    @torch.no_grad()
    def predict(self, t: Tensor, pose: Tensor, src_mask: Tensor | None = None, t0: Tensor | None = None,
                pose0: Tensor | None = None, out_size: tuple[int, int] | None = None) -> Tensor:
        """Probabilities [B, H, W]: logits upsampled bilinearly to ``out_size`` (default: the source's
        size, or mask_size for the stored source), then sigmoid (upsampling logits, not probabilities,
        keeps the edge sharp)."""
        was_training = self.training
        self.eval()
        try:
            logits = self(t, pose, src_mask, t0, pose0)  # [B, S, S]
        finally:
            self.train(was_training)
        if out_size is None and src_mask is not None:
            out_size = tuple(torch.as_tensor(src_mask).shape[-2:])
        if out_size is not None and tuple(out_size) != tuple(logits.shape[-2:]):
            logits = F.interpolate(logits[:, None], size=tuple(out_size), mode="bilinear", align_corners=False)[:, 0]
        return torch.sigmoid(logits)

    def set_source(self, src_mask: Tensor, t0: float | Tensor, pose0: Tensor) -> None:
        """Store the source mask (at working resolution) with its (t0, pose0)."""
        S = self.config.mask_size
        m = torch.as_tensor(src_mask)
        m = m[None] if m.ndim == 2 else m[:1]
        with torch.no_grad():
            self.source_mask.copy_(resize_masks(m.to(self.source_mask.device), S)[0])
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
        if meta.get("format") != MASK_MAPPER_FORMAT:
            raise MaskMapperError(f"{path}: format {meta.get('format')!r}, expected {MASK_MAPPER_FORMAT!r}")
        try:
            cfg = MaskMapperConfig.from_dict(json.loads(meta["config"]))
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
    Stratification guarantees every latent cell sees data; the random rest breaks aliasing with it."""
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


def render_bank(sample_fn: SampleFn, t: Tensor, pose: Tensor, size: int | None, batch: int = 16,
                progress: bool = False, desc: str = "render mask bank") -> Tensor:
    """Call the exact route in chunks -> masks [N, size, size] (area-resampled; native size if None)."""
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, t.shape[0], batch), desc=desc, disable=not progress, leave=False, unit="batch"):
        m = _call_sample_fn(sample_fn, t[i:i + batch], pose[i:i + batch])
        out.append(m if size is None else resize_masks(m, size))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------
# training and evaluation
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MaskMapperHistory:
    steps: list[int] = dataclasses.field(default_factory=list)  # logged step numbers
    loss: list[float] = dataclasses.field(default_factory=list)  # mean total loss over each interval
    iou: list[float] = dataclasses.field(default_factory=list)  # mean batch IoU (working res) per interval
    val_iou: float | None = None  # mean IoU on val_size fresh renders (working res), after training
    bank_seconds: float = 0.0  # time spent in sample_fn for the bank (+ validation renders)
    train_seconds: float = 0.0  # optimisation time


def train_mask_mapper(sample_fn: SampleFn, config: MaskMapperConfig | None = None, *,
                      src_mask: Tensor | None = None, t0: float = 0.0, pose0: Tensor | Sequence[float] | None = None,
                      progress: bool = True, bank: tuple[Tensor, Tensor, Tensor] | None = None,
                      device: str | torch.device = "cpu") -> tuple[MaskMapper, MaskMapperHistory]:
    """Fit a MaskMapper to the exact route ``sample_fn`` for the mask drawn at (t0, pose0).

    ``src_mask`` [H, W] is the user's mask at (t0, pose0); when omitted it is rendered by sample_fn
    there.  The exact route is slow, so it is called only for a bank of ``bank_size`` (t, pose) points
    (stratified-jittered + uniform, see ``bank_points``), rendered once; each step draws a batch from the
    bank.  ``bank=(t [N], pose [N, P], masks [N, H, W])`` reuses renders made elsewhere.
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
    if bank is None:
        bt, bp = bank_points(cfg, cfg.bank_size, gen, cfg.bank_jitter_fraction)
        targets = render_bank(sample_fn, bt, bp, cfg.mask_size, cfg.render_batch, progress)
    else:
        bt, bp = bank[0].float().reshape(-1), bank[1].float().reshape(-1, cfg.pose_dim)
        targets = resize_masks(torch.as_tensor(bank[2]), cfg.mask_size)
    val = None
    if cfg.val_size > 0:
        vt, vp = bank_points(cfg, cfg.val_size, gen, 0.0)
        val = (vt, vp, render_bank(sample_fn, vt, vp, cfg.mask_size, cfg.render_batch, progress, "render val masks"))
    history = MaskMapperHistory(bank_seconds=time.perf_counter() - clock)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        mapper = MaskMapper(cfg).to(device)
    mapper.set_source(src_mask, float(t0), pose0)
    bt, bp, targets = bt.to(device), bp.to(device), targets.to(device)
    with torch.no_grad():
        src_sdf, src_in = mapper.source_inputs(mapper.source_mask[None])  # [1, 1, S, S], [1, 4, S, S]
    t0_b, p0_b = t0_t.to(device), pose0[None].to(device)

    grid_params = [mapper.codes]
    other = [p for n, p in mapper.named_parameters() if n != "codes"]
    opt = torch.optim.Adam([{"params": grid_params, "lr": cfg.lr * cfg.grid_lr_scale},
                            {"params": other, "lr": cfg.lr}])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(cfg.steps, 1))))
    D = 1 + cfg.pose_dim

    clock = time.perf_counter()
    mapper.train()
    acc_loss, acc_iou, acc_n = 0.0, 0.0, 0
    bar = tqdm(range(cfg.steps), desc="mask mapper", disable=not progress, unit="step")
    for step in bar:
        idx = torch.randint(0, bt.shape[0], (min(cfg.batch_size, bt.shape[0]),), generator=gen).to(device)
        tgt = targets[idx]  # [B, S, S]
        B = idx.shape[0]
        logits = mapper._forward_encoded(bt[idx], bp[idx], t0_b.expand(B), p0_b.expand(B, -1), src_sdf, src_in)
        bce = F.binary_cross_entropy_with_logits(logits, tgt)
        dice = soft_dice_loss(torch.sigmoid(logits), tgt)
        loss = bce + cfg.dice_weight * dice + cfg.smooth_weight * grid_tv(mapper.codes, D)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc_loss += float(loss.detach())
        acc_iou += float(mask_iou(torch.sigmoid(logits.detach()), tgt).mean())
        acc_n += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            history.steps.append(step + 1)
            history.loss.append(acc_loss / acc_n)
            history.iou.append(acc_iou / acc_n)
            bar.set_postfix(loss=f"{acc_loss / acc_n:.4f}", iou=f"{acc_iou / acc_n:.3f}")
            acc_loss, acc_iou, acc_n = 0.0, 0.0, 0
    history.train_seconds = time.perf_counter() - clock
    mapper.eval()
    if val is not None:
        vt, vp, vm = (v.to(device) for v in val)
        probs = torch.cat([mapper.predict(vt[i:i + 64], vp[i:i + 64]) for i in range(0, vt.shape[0], 64)])
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
