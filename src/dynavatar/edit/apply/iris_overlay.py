"""An eye colour that shows through what is drawn over the iris: the recolour scaled up there.

Why: a fitted eye is not an iris disc on its own. On d14's avatar (a dark brown iris) 44 % of the
blending weight of the rendered iris came from splats an eye edit leaves alone, most of them
labelled skin: the lids' translucent splats laid over the eyeball, which draw mostly on the lids
(recolouring them would tint the lids). The recoloured iris showed through them part-way, and
"green eyes" rendered olive: hue 103 degrees at chroma 0.04 where the shade is 129-141 degrees.

A pixel is ``P = sum_j w_j c_j``. When the recoloured splats hold a share ``s`` of what it draws,
changing each of them by ``d`` moves the pixel by ``s d``, not ``d``. So each recoloured splat's
change is scaled by ``1 / s_i``, with ``s_i`` the share averaged over the pixels it draws (weighted by
its own blending weight), at most ``max_gain``, and the colour clamped to what can be displayed.
Splats drawn in no view keep the change as it was. The over-layer splats stay bit-identical.
Judged at 256 px (an iris 5-8 px across): on d14 the same coverage as at 384 px, in a quarter of the time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from ...render.pixel_votes import splat_pixel_votes

__all__ = ["moved_share", "boost_under_overlay"]


@torch.no_grad()
def moved_share(world, cameras, moved: Tensor, renderer, max_side: int = 256) -> tuple[Tensor, Tensor]:
    """Per splat: the blending-weighted mean, over the pixels it draws, of the share of each pixel's
    drawn weight that ``moved`` [N] (0..1) splats hold, in the views of ``world`` (batched
    WorldGaussians, ``cameras`` one per view) at most ``max_side`` px. -> (share [N], drawn [N] px)"""
    from .splat_recolour import _view

    scale = min(1.0, max_side / max(cameras.width, cameras.height))
    votes = torch.zeros(len(moved), 2, dtype=world.means.dtype, device=world.means.device)
    for v in range(len(cameras)):
        g, cam = _view(world, v), cameras[v].scaled(scale)
        out = renderer.render(g, cam, features=moved[:, None].to(world.means))
        share = out.features[0, ..., 0] / out.alpha[0, ..., 0].clamp_min(1e-6)  # [H, W]
        votes += splat_pixel_votes(g, cam, torch.stack([share, torch.ones_like(share)], -1), renderer)
    return votes[:, 0] / votes[:, 1].clamp_min(1e-12), votes[:, 1]


@torch.no_grad()
def boost_under_overlay(before: GaussianAvatar, after: GaussianAvatar, world, cameras, renderer,
                        max_gain: float = 2.0, min_drawn: float = 0.05, max_side: int = 256) -> GaussianAvatar:
    """``after`` (``before`` recoloured, geometry unchanged) with each recoloured splat's colour change
    scaled by 1 / (the share of its pixels the recoloured splats hold), at most ``max_gain``.
    ``world``/``cameras``: the views it is judged in (``before`` bound to them). -> GaussianAvatar"""
    moved = (after.sh[:, 0] != before.sh[:, 0]).any(1)  # [N]; the others stay bit-identical (many fitted
    # colours lie outside [0, 1], and clamping them would change what they draw)
    if not bool(moved.any()):
        return after
    c0 = sh_to_rgb(before.sh[:, 0]).clamp(0.0, 1.0)  # [N, 3] as rendered
    change = sh_to_rgb(after.sh[:, 0]) - c0  # [N, 3]
    share, drawn = moved_share(world, cameras, moved.float(), renderer, max_side)
    gain = torch.where(moved & (drawn > min_drawn), 1.0 / share.clamp_min(1.0 / max_gain), torch.ones_like(share))
    sh = after.sh.clone()
    boosted = (c0 + gain[:, None] * change).clamp(0.0, 1.0)
    sh[moved, 0] = rgb_to_sh(boosted[moved]).to(sh.dtype)
    return after.replace(sh=sh)
