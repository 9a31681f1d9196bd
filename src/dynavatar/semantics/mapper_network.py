"""The mask mapper network: (t, pose, a source mask drawn at (t0, pose0)) -> the region's mask at (t, pose).

How it works, and why:

* **Latent grid over (t, pose).** A learnable tensor ``codes [Gt, Gp, (Gp, ...), L]`` read by multi-linear
  interpolation (bilinear for one pose dimension, trilinear for yaw + pitch).  Between two nodes the code
  is an exact lerp, so the prediction cannot jump; a total-variation penalty on the grid (in training)
  fills nodes that few samples touch.  A few low-frequency Fourier features of (t, pose) sit beside the
  code so that global trends (x shift ~ sin(yaw)) need not be learned node by node.
* **A window that follows the region** (``mask_windows``).  A *box head* regresses the region's moments
  relative to the source's; the window is the source's window carried along by them.  The head reads its
  own 1-D latent code over time (a video's head motion needs fine time detail) and Fourier features of
  (t, pose) (the pose dependence is smooth): reading the 3-D grid instead it over-fits the sparse bank.
  Its outputs are whitened by the ``box_mean`` / ``box_scale`` buffers, set from the training bank.
* **Frames of a clip** (``t_frames`` > 1).  The codes are read at the time of the frame the exact route
  shows; the decoder also reads a code of the frame's own (``frame_codes``: a talking mouth changes shape
  every few frames, faster than grid nodes can follow) and the box head adds a per-frame *offset*
  (``box_offsets``: a centre shift in units of the predicted spread, so it foreshortens with the pose, and
  a log-spread).  Per-frame parameters are kept to these two so that they cannot learn the pose.
* **Warp of a signed distance field, plus a smooth residual.**  The sharp detail of a mask is already in
  the source; what changes with (t, pose) is mostly motion and stretching (and, with the window, mostly
  shape change).  The decoder predicts, at a quarter of the working resolution, a displacement field and
  a residual logit field; the output logits are ``sharpness * warp(sdf(src), flow) + residual``.  Warping
  the (Euclidean) signed distance instead of the binary mask gives the flow a gradient everywhere, not only
  on the one-pixel edge, and the residual moves the level set locally (an opening mouth, occlusion).
  The flow, residual and box heads start at zero: an untrained mapper returns the source mask (resampled
  into its window and back).
* **The encoder runs once per source.**  Training uses one source mask, so its features are computed once
  per step and broadcast; only the FiLM-conditioned low-resolution decoder runs per sample.

Saved as one ``.safetensors`` file with the config and format tag in its header; older formats that can
be rebuilt exactly still load, the others are refused with what changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.atomic import atomic_path
from .mapper_config import MaskMapperConfig, MaskMapperError
from .mask_maths import fourier_features, multilinear_read, pixel_grid, signed_distance, warp_field
from .mask_windows import (FULL_FRAME_BOX, boxes_from_moments, crop_masks, mask_moments, moments_from_delta,
                           paste_logits, relative_box, source_crop_box)

__all__ = ["MaskMapper", "MASK_MAPPER_FORMAT"]

#: The layout of saved mappers (tag in the file's header).
MASK_MAPPER_FORMAT = "dynavatar-mask-mapper/3"
#: Layouts this version can no longer read, with what changed (for the error message).
_OLD_FORMATS = {"dynavatar-mask-mapper/1": "the full-frame mapper from before region-centred crops"}
#: Older layouts this version still reads: the config fields they predate, with the values that rebuild
#: them exactly (format /3 added the decoder's per-frame codes and the box head's per-frame offsets).
_COMPATIBLE_FORMATS = {"dynavatar-mask-mapper/2": {"frame_latent": 0, "box_frame_offset": False}}


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
        ((c - c0) / s0, log(s / s0))."""
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
        B = delta.shape[0]
        m0 = src.moments.expand(B, -1)
        mom = moments_from_delta(delta, m0)
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
        box = torch.stack([source_crop_box(mi, cfg.crop_pad, cfg.crop_pad_px, cfg.crop_max_aspect) for mi in m])
        crop, _ = crop_masks(m, box, cfg.mask_size, max_supersample=8)
        return self._prepare(crop, box, mom, tuple(m.shape[-2:]))

    def _prepare(self, crop: Tensor, box: Tensor, mom: Tensor, frame: tuple[int, int]) -> _Source:
        S = self.config.mask_size
        crop = crop.to(self.codes.dtype)
        sdf = signed_distance(crop[:, None])
        grid = pixel_grid(S, S, crop.device, crop.dtype).permute(0, 3, 1, 2).expand(crop.shape[0], -1, -1, -1)
        enc_in = torch.cat([crop[:, None], (sdf * (2 / S)).clamp(-1, 1), grid], dim=1)
        return _Source(crop, sdf, enc_in, box, mom, relative_box(box, mom), (int(frame[0]), int(frame[1])))

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
        return self.boxes_from_delta(delta, src), moments_from_delta(delta, src.moments.expand(B, -1))

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
