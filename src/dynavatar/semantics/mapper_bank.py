"""The mask mapper's training data: a bank of masks rendered by the exact route.

The exact route (``sample_fn(t, pose) -> masks``, e.g. the selected splats rendered) is far slower than a
training step, so it is called once, for a bank of (t, pose) points that covers the domain: stratified
so that every latent grid cell sees data, with a uniform rest that breaks aliasing with the grid, and in
a clip spread evenly over the frames.  The masks are kept as uint8 (a quarter of float32's memory) at the
resolution that the source's window needs (``bank_side``), not the route's own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .mapper_config import MaskMapperConfig, MaskMapperError, SampleFn
from .mask_maths import resize_masks
from .mask_windows import source_crop_box

__all__ = ["bank_points", "call_sample_fn", "fit_size", "render_bank", "mask_bytes", "bank_side"]


def bank_points(cfg: MaskMapperConfig, n: int, generator: torch.Generator, jitter_fraction: float
                ) -> tuple[Tensor, Tensor]:
    """-> (t [n], pose [n, P]) covering the (t, pose) box: ``jitter_fraction`` of them stratified (one
    uniform point in each cell of a grid whose shape follows grid_t : grid_p), the rest uniform.
    Stratification guarantees every latent cell sees data; the random rest breaks aliasing with it.
    With ``t_frames`` > 1 the times are frame times instead, spread evenly over the frames (each frame
    gets n // t_frames or one more), since the decoder and the box head have parameters per frame."""
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


def call_sample_fn(sample_fn: SampleFn, t: Tensor, pose: Tensor) -> Tensor:
    """The exact route at t [B], pose [B, P] -> float masks [B, H, W]; MaskMapperError on a bad shape or NaN."""
    out = sample_fn(t, pose)
    out = torch.as_tensor(out)
    if out.ndim != 3 or out.shape[0] != t.shape[0]:
        raise MaskMapperError(f"sample_fn must return masks [B, H, W] with B={t.shape[0]}, got {tuple(out.shape)}")
    out = out.float()
    if not torch.isfinite(out).all():
        raise MaskMapperError("sample_fn returned NaN/inf")
    return out


def fit_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
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
    ``as_bytes``: uint8 (value x 255) chunk by chunk, a quarter of the memory (a long clip's bank at
    the route's resolution would otherwise not fit, with the final concatenation, on a modest machine)."""
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, t.shape[0], batch), desc=desc, disable=not progress, leave=False, unit="batch"):
        m = call_sample_fn(sample_fn, t[i:i + batch], pose[i:i + batch])
        m = resize_masks(m, size if size is not None else fit_size(*m.shape[-2:], max_side))
        out.append(mask_bytes(m) if as_bytes else m)
    return torch.cat(out)


def mask_bytes(masks: Tensor) -> Tensor:
    """float masks in [0, 1] -> uint8 (x 255, rounded): how the training bank keeps them."""
    return (masks.clamp(0, 1) * 255).round().to(torch.uint8)


def bank_side(src_mask: Tensor, cfg: MaskMapperConfig) -> int:
    """Longest side to keep bank masks at: enough that the source window gets ``bank_oversample``
    bank pixels per working pixel across its shorter side (never more than the route's own size)."""
    H, W = src_mask.shape[-2:]
    box = source_crop_box(src_mask, cfg.crop_pad, cfg.crop_pad_px, cfg.crop_max_aspect)
    frac = float(min(box[2].clamp(max=1), box[3].clamp(max=1)))  # window half-size / frame half-size
    return min(max(H, W), math.ceil(cfg.bank_oversample * cfg.mask_size / frac))
