"""Edit masks: grow, feather and composite, shared by every image editor.

Every editor changes only pixels inside a *feathered* region mask and returns every other pixel
bit for bit, so an edit of "the hair" can never leak into the face it did not ask for. The alpha an
editor composites with is, for a region mask ``m`` ``[B, H, W]`` in ``[0, 1]``::

    alpha = max(m, gaussian_blur(dilate(m, r), sigma))        # r = mask_dilation * scale
                                                              # sigma = feather * scale
    scale = max(H, W) / 512                                   # plan numbers are pixels at 512

``dilate`` is a grey-level dilation by an (octagonal) disc of radius ``r``; the blur is a separable
Gaussian truncated at ``ceil(3 sigma)``, computed as a direct convolution so that pixels beyond
``r + ceil(3 sigma)`` of the mask get an alpha of exactly 0.0 (no FFT ringing). ``composite``
then copies the input wherever alpha is 0, which makes "outside is unchanged" exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["plan_scale", "dilate_mask", "gaussian_blur", "feather_mask", "composite", "support_box"]


def plan_scale(height: int, width: int) -> float:
    """Pixel sizes in an EditPlan are given for a 512x512 image; this is the factor for H x W."""
    return max(height, width) / 512.0


def dilate_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey-level dilation of ``mask`` [B, H, W] by an octagon of radius ``radius`` pixels.

    Alternating 3x3 square and cross max-filters approximate a disc far better than one big square
    (a square grows diagonals by sqrt(2)), and cost O(radius) small pools instead of a huge kernel.
    """
    if radius <= 0:
        return mask
    x = mask[:, None]  # [B, 1, H, W]
    for i in range(radius):
        if i % 2 == 0:
            x = F.max_pool2d(x, 3, stride=1, padding=1)
        else:  # cross: max of the horizontal and the vertical 3-neighbourhood
            x = torch.maximum(F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1)),
                              F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0)))
    return x[:, 0]


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)  # [2r+1]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` [B, H, W] with zero padding (the mask is 0 off-image).

    Direct convolution, so a zero region farther than ceil(3 sigma) from any non-zero pixel stays
    exactly zero.
    """
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    r = (k.numel() - 1) // 2
    y = F.conv2d(x[:, None], k.view(1, 1, 1, -1), padding=(0, r))
    y = F.conv2d(y, k.view(1, 1, -1, 1), padding=(r, 0))
    return y[:, 0]


def feather_mask(masks: torch.Tensor, dilation: int, feather: float) -> torch.Tensor:
    """Region masks [B, H, W] -> compositing alpha [B, H, W] in [0, 1] (see the module docstring).

    ``dilation`` and ``feather`` are in pixels at 512x512 and scale with the image. The original
    mask is kept at full strength (``max(m, ...)``): the blur only ever widens the edit.
    """
    masks = masks.clamp(0.0, 1.0)
    s = plan_scale(masks.shape[-2], masks.shape[-1])
    grown = dilate_mask(masks, int(round(dilation * s)))
    alpha = gaussian_blur(grown, feather * s)
    return torch.maximum(alpha.clamp(0.0, 1.0), masks)


def composite(images: torch.Tensor, edited: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha * edited + (1 - alpha) * images`` with images [B, H, W, 3], alpha [B, H, W].

    Where alpha is 0 the input is copied (not recomputed), so those pixels are bit-identical even
    if ``edited`` holds NaN or inf there.
    """
    a = alpha[..., None].to(images.dtype)
    mixed = a * edited.to(images.dtype) + (1.0 - a) * images
    return torch.where(a > 0, mixed, images)


def support_box(alpha: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), half-open, of the pixels where any image's ``alpha`` [B, H, W] is > 0."""
    any_ = alpha > 0
    rows, cols = any_.any(dim=(0, 2)), any_.any(dim=(0, 1))  # [H], [W]
    if not bool(rows.any()):
        return None
    ys, xs = rows.nonzero()[:, 0], cols.nonzero()[:, 0]
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
