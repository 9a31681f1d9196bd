"""The mask mapper's settings and its error type.

``MaskMapperConfig`` is one flat dataclass with a comment per field, grouped by what reads it: the
network's shape, the training loop, the region window, a clip's frames. Its dict form is stored in every
saved mapper's header (``MaskMapper.save``), so ``from_dict`` also reads the configs of older files: fields
that no longer exist are translated into today's equivalent or refused with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch import Tensor

from ..errors import DynavatarError

__all__ = ["MaskMapperConfig", "MaskMapperError", "SampleFn"]

#: ``sample_fn(t [B], pose [B, P]) -> masks [B, H, W]`` — the exact route (renders the selected splats).
SampleFn = Callable[[Tensor, Tensor], Tensor]


class MaskMapperError(DynavatarError, ValueError):
    """A mask-mapper file is missing, corrupt or incompatible, or the exact route returned bad masks."""


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
    # --- the region's window (see ``mask_windows``) ---
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
    box_steps: int = 1000  # steps fitting the box head alone before the decoder's training (cheap: an MLP)
    box_grid_t: int = 64  # nodes of the box head's own latent code over time (0 = Fourier features only)
    box_latent: int = 8  # its code length
    box_fourier: int = 2  # sin/cos octaves of the normalised (t, pose) the box head reads
    # --- a clip's frames (t_frames > 1; see "Frames" in the ``mask_mapper`` module docstring) ---
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
        return self.box_grid_t

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
        """The config of ``to_dict`` (or of a saved mapper's header, older files included)."""
        d = _without_removed_fields(d)
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
        """Named settings.  ``tiny``: small grids and few steps, for tests and a quick look on a CPU.
        ``fast``: the defaults with 2000 steps and 6 bank masks per frame of a clip.  ``quality``: a wider
        network, more steps, a larger bank and 14 masks per frame, meant for a GPU (pass ``device="cuda"``
        to train_mask_mapper).  The exact route's bank renders come on top of the training: ``bank_total``
        masks (bank_size, at least bank_per_frame per frame of a clip) x the route's cost per mask, which
        for a real avatar is often more than the training itself."""
        presets = {
            "tiny": dict(grid_t=8, grid_p=5, channels=16, steps=400, bank_size=320, val_size=0, batch_size=24,
                         box_grid_t=32),
            # 6 masks per frame of a clip: more views of each frame than the default 3 (sized for a CPU)
            "fast": dict(bank_per_frame=6, steps=2000),
            # more views of each frame is what improves the mapper most; a larger working size or a longer
            # frame code does not
            "quality": dict(channels=32, steps=6000, bank_size=1536, batch_size=48, box_grid_t=128, box_steps=2000,
                            bank_per_frame=14),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


def _without_removed_fields(d: dict) -> dict:
    """A stored config with the fields this version no longer has translated or refused.

    ``crop``: every mapper now works in a window that follows the region; a file of the full-frame
    mapper (``crop`` false) cannot be rebuilt.  ``box_per_frame``: a box-head time code with one node per
    frame of a clip is the same network as ``box_grid_t = t_frames`` (nodes at the frames' times)."""
    d = dict(d)
    if not d.pop("crop", True):
        raise ValueError("crop=False (the full-frame mapper) is no longer supported: re-train the mapper")
    if d.pop("box_per_frame", False) and d.get("t_frames", 0) > 1:
        d["box_grid_t"] = d["t_frames"]
    return d
