"""Image metrics and the photometric loss: PSNR, SSIM (Gaussian window, as Wang et al. 2004), L1.

One loss for every stage that fits splats or motion to pixels (training, tracking refinement,
editing), so the three cannot drift apart. Images are float ``[B, H, W, 3]`` in [0, 1].

``seen`` (bool ``[B, H, W, 1]``, optional everywhere): the pixels that observe something. A crop
that runs past the source video's frame (a tight portrait video, a head near the edge) is padded,
and nothing is known there: neither the loss nor a figure may reward or punish what the avatar
draws in it (say, the shoulders continuing below the frame's bottom edge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "l1", "photometric_loss", "only_seen"]


def psnr(pred: Tensor, target: Tensor, seen: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, over the ``seen`` pixels.  -> [B]"""
    se = (pred - target).square()
    if seen is None:
        mse = se.flatten(1).mean(1)
    else:
        w = seen.to(se.dtype).expand_as(se).flatten(1)
        mse = (se.flatten(1) * w).sum(1) / w.sum(1).clamp_min(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def only_seen(pred: Tensor, target: Tensor, seen: Tensor | None) -> Tensor:
    """``target`` with ``pred``'s (detached) values where nothing was seen: those pixels then add no
    error and no gradient to L1 or SSIM, and SSIM windows that straddle the picture's edge compare
    the seen part alone.  -> [B, H, W, 3]"""
    return target if seen is None else torch.where(seen, target, pred.detach())


def _gaussian_1d(size: int, sigma: float, like: Tensor) -> Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5, seen: Tensor | None = None) -> Tensor:
    """Structural similarity per image (valid-region mean, K1=0.01, K2=0.03): with ``seen``, the
    mean over the windows centred on seen pixels, with the unseen ones taken as equal.  -> [B]

    The local moments are filtered by grouped convolutions (this runs on every training step): the
    ones that depend on ``pred`` (x, x², xy) in one call, the target's (y, y²) in another that
    needs no backward. The window is separable, but cuDNN's backward for 1-D grouped kernels is far
    slower than for the 11x11 kernel, so the 2-D window is used."""
    x, y = pred.permute(0, 3, 1, 2), only_seen(pred, target, seen).permute(0, 3, 1, 2)
    c = x.shape[1]
    g = _gaussian_1d(window, sigma, x)
    w = (g[:, None] * g[None, :]).expand(3 * c, 1, window, window)
    mu_x, exx, exy = F.conv2d(torch.cat([x, x * x, x * y], 1), w, groups=3 * c).split(c, 1)
    mu_y, eyy = F.conv2d(torch.cat([y, y * y], 1), w[: 2 * c], groups=2 * c).split(c, 1)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    if seen is None:
        return s.flatten(1).mean(1)
    h, w, r = s.shape[2], s.shape[3], (window - 1) // 2  # the map's pixel (i, j) is the window centred at (i+r, j+r)
    m = seen[:, r:r + h, r:r + w, 0].to(s.dtype)[:, None].expand_as(s).flatten(1)
    return (s.flatten(1) * m).sum(1) / m.sum(1).clamp_min(1)


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def photometric_loss(pred: Tensor, target: Tensor, w_l1: float, w_dssim: float, seen: Tensor | None = None) -> Tensor:
    """The 3DGS image loss, ``w_l1 * L1 + w_dssim * (1 - SSIM)`` over the batch (a scalar); pixels
    not ``seen`` count as matched (``only_seen``)."""
    target = only_seen(pred, target, seen)
    return w_l1 * l1(pred, target) + w_dssim * (1 - ssim(pred, target).mean())
