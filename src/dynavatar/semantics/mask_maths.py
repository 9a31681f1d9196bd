"""Pure tensor functions the mask mapper is built from: reading a latent grid, Fourier features of
(t, pose), the signed distance of a mask and warping it, resampling masks, and the scores and losses on
masks (IoU, soft Dice, total variation of a grid).

No parameters and no state: the network (``mapper_network``) and the trainer (``mapper_training``) call
them. Masks are float ``[B, H, W]`` in [0, 1]; image positions are normalised coordinates in [-1, 1]
edge to edge (``grid_sample``'s ``align_corners=False``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["multilinear_read", "fourier_features", "signed_distance", "pixel_grid", "warp_field", "resize_masks",
           "mask_iou", "soft_dice_loss", "grid_tv"]


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


def pixel_grid(h: int, w: int, device, dtype) -> Tensor:
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
    grid = pixel_grid(H, W, field.device, field.dtype) + flow.permute(0, 2, 3, 1)  # [B, H, W, 2]
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
