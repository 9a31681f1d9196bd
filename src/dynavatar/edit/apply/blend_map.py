"""A colourist's recolour handed to the splats as one affine colour map, so it commutes with blending.

Why: a splat's colour is not the colour of a piece of hair. Most of a fitted hair's splats have
colours below 0 (the renderer clamps them to black), and the strands a person sees are sums of many
overlapping splats. Mapping each splat's clamped colour by its lightness rank (``colourist_oklab``
per splat) sends most of them to one shade, and the rendered strands went flat, although the same
map applied to the *pixels* keeps them (figures in docs/benchmarks.md, "Hair recolours that keep
the strands").

So the map is fitted where the structure is, on the region's rendered pixels, and given to the splats
in the space the renderer blends in. A pixel is ``P = sum_i w_i c_i`` (``c_i`` the splat's colour
clamped at 0, as rendered); an affine map ``c' = A c + b`` gives ``P' = A P + b * alpha``, the same
map on every pixel the region fully covers, whatever the splats' colours were:

    f     = colourist_oklab on the pixels P_p (region probability >= min_prob, alpha >= min_alpha)
    A, b  = argmin sum_p ||A P_p + b - f(P_p)||^2 + ridge ||A - I||^2      # weighted least squares
    c_i'  = c_i + w_i (A c_i + b - c_i)          sh_i[k>0]' = (w_i A + (1 - w_i) I) sh_i[k]

An affine map keeps what a colourist's map does over one region's narrow range of colours (a
monotone lightness map, hue and chroma that follow lightness) and loses only its curvature at the
extremes. Positional qualifiers (dark roots, ombre, two-tone) and eye edits keep the per-splat
path: they are not one map of colour.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from ..colour_space import oklab_to_rgb, rgb_to_oklab
from ..editors.palette_recolour import ColourTarget, colourist_oklab, fit_region

__all__ = ["region_pixels", "fit_affine_colour_map", "colourist_affine_map", "apply_affine_colour_map"]


@torch.no_grad()
def region_pixels(world, cameras, region_prob: Tensor, renderer, min_prob: float = 0.9,
                  min_alpha: float = 0.98, max_side: int = 192) -> tuple[Tensor, Tensor]:
    """The rendered colours of the pixels the region alone covers, in the views of ``world`` (batched
    WorldGaussians) and ``cameras``: region probability ``region_prob`` [N] (per splat) blended to at
    least ``min_prob`` and alpha at least ``min_alpha`` (edge pixels mix the region with what is
    next to it: the map would be fitted to mixtures). Rendered with the longest side at most
    ``max_side`` pixels (a few seconds on a CPU for three views). -> (rgb [P, 3], weight [P])"""
    cameras = cameras.scaled(max_side / max(cameras.width, cameras.height))
    out = renderer.render(world, cameras, features=region_prob[:, None].to(world.means))
    prob, alpha = out.features[..., 0], out.alpha[..., 0]  # [V, H, W] each
    keep = (prob >= min_prob * alpha.clamp_min(1e-6)) & (alpha >= min_alpha)  # blended prob over covered pixels
    return out.rgb[keep].reshape(-1, 3).double(), torch.ones(int(keep.sum()), dtype=torch.float64, device=prob.device)


def fit_affine_colour_map(x: Tensor, y: Tensor, weight: Tensor, ridge: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Weighted least squares ``y ~ A x + b`` over rows of ``x``, ``y`` [P, 3], with a ridge pulling
    ``A`` towards the identity (a region whose colours lie on a line, a grey, leaves the other
    directions undetermined: they stay as they were). -> (A [3, 3], b [3])"""
    w = weight.to(x).clamp_min(0)
    w = w / w.sum().clamp_min(1e-12)
    X = torch.cat([x, torch.ones_like(x[:, :1])], 1)  # [P, 4]
    reg = torch.diag(torch.tensor([ridge, ridge, ridge, 0.0], dtype=x.dtype, device=x.device))
    prior = torch.cat([torch.eye(3, dtype=x.dtype, device=x.device), torch.zeros(1, 3, dtype=x.dtype,
                                                                                    device=x.device)], 0)  # [4, 3]
    lhs = X.T @ (w[:, None] * X) + reg
    rhs = X.T @ (w[:, None] * y) + reg @ prior
    theta = torch.linalg.solve(lhs, rhs)  # [4, 3]
    return theta[:3].T.contiguous(), theta[3].contiguous()


def colourist_affine_map(pixels: Tensor, weight: Tensor, target: ColourTarget, strength: float = 1.0,
                         material: str | None = None) -> tuple[Tensor, Tensor]:
    """The affine map [3, 3], [3] closest to the colourist's recolour of the region's ``pixels``
    [P, 3] (sRGB, ``weight`` [P]) onto ``target``."""
    rgb = pixels.clamp(0, 1)
    lab = rgb_to_oklab(rgb)
    new = colourist_oklab(lab, fit_region(lab, weight), target, strength, material)
    return fit_affine_colour_map(rgb, oklab_to_rgb(new).clamp(0, 1), weight)


def apply_affine_colour_map(gaussians: GaussianAvatar, A: Tensor, b: Tensor, weight: Tensor) -> GaussianAvatar:
    """A copy of ``gaussians`` with ``c' = c + w (A c + b - c)`` on each splat's colour as rendered
    (the DC colour clamped at 0) and ``(w A + (1 - w) I)`` on its view-dependent bands; ``weight`` [N]
    in [0, 1], splats with weight 0 bit-identical.

    No splat is clamped into the shade's lightness range afterwards: the splats' colours spread far
    wider than the pixels they blend into, and bringing the bright ones to the shade's light end
    (tried on aoc) lost most of the structure gained, for a little coverage."""
    sh = gaussians.sh.clone()
    idx = (weight > 0).nonzero()[:, 0]
    if len(idx) == 0:
        return gaussians.replace(sh=sh)
    w = weight[idx].to(sh.dtype)[:, None]  # [M, 1]
    A, b = A.to(sh), b.to(sh)
    c = sh_to_rgb(sh[idx, 0]).clamp_min(0.0)  # [M, 3]
    sh[idx, 0] = rgb_to_sh(c + w * (c @ A.T + b - c))
    if sh.shape[1] > 1:
        eye = torch.eye(3, dtype=sh.dtype, device=sh.device)
        jac = w[:, :, None] * A + (1 - w[:, :, None]) * eye  # [M, 3, 3]
        sh[idx, 1:] = torch.einsum("mij,mkj->mki", jac, sh[idx, 1:])
    return gaussians.replace(sh=sh)

