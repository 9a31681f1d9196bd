"""Image metrics and the photometric loss: PSNR, SSIM (Gaussian window, as Wang et al. 2004), L1.

One loss for every stage that fits splats or motion to pixels (training, tracking refinement,
editing), so the three cannot drift apart. Images are float ``[B, H, W, 3]`` in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "l1", "photometric_loss"]


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image.  -> [B]"""
    mse = (pred - target).square().flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_1d(size: int, sigma: float, like: Tensor) -> Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (valid-region mean, K1=0.01, K2=0.03).  -> [B]

    The local moments are filtered by grouped convolutions (this runs on every training step): the
    ones that depend on ``pred`` (x, x², xy) in one call, the target's (y, y²) in another that
    needs no backward. The window is separable, but cuDNN's backward for 1-D grouped kernels is far
    slower than for the 11x11 kernel, so the 2-D window is used."""
    x, y = pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    c = x.shape[1]
    g = _gaussian_1d(window, sigma, x)
    w = (g[:, None] * g[None, :]).expand(3 * c, 1, window, window)
    mu_x, exx, exy = F.conv2d(torch.cat([x, x * x, x * y], 1), w, groups=3 * c).split(c, 1)
    mu_y, eyy = F.conv2d(torch.cat([y, y * y], 1), w[: 2 * c], groups=2 * c).split(c, 1)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def photometric_loss(pred: Tensor, target: Tensor, w_l1: float, w_dssim: float) -> Tensor:
    """The 3DGS image loss, ``w_l1 * L1 + w_dssim * (1 - SSIM)`` over the batch (a scalar)."""
    return w_l1 * l1(pred, target) + w_dssim * (1 - ssim(pred, target).mean())
