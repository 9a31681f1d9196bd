"""Palette edits applied to the splats themselves, not to keyframe renders.

Why: the palette edit (``editors/palette_recolour.py``) is a per-colour transform in OKLab given the region's
statistics; nothing in it needs pixels. Applied to the keyframes' renders and distilled back into
the splats by the edit loop, it only reaches the splats the keyframes show: hair on the top or the
back of the head keeps its old colour and appears, brown, in frames that look down or turn away.
Applied to the splats' own colours it reaches every splat of the region, seen or not, with *one*
set of region statistics (the pixel editor takes them per keyframe), so every frame and novel pose
shows the same edit. The keyframe loop then only fine-tunes.

Per splat ``i`` with region weight ``w_i`` (its label probability for the plan's regions, 0 for
splats outside ``region_selection``, so those stay bit-identical and boundary splats blend):

    c_i   = 0.5 + C0 * sh_i[0]                               # DC colour (sRGB)
    c_i'  = c_i + w_i (f(c_i) - c_i)                          # f = recolour_oklab with shared stats
    sh_i[k>0]' = J_i sh_i[k]                                  # J_i = d c_i' / d c_i (view-dependent part)

The statistics f needs (region mean and std in OKLab) are the splats' colours weighted by
``w_i * v_i``, with ``v_i = sum_p m(p) w_ip`` the splat's blending weight over the region-mask
pixels of the rendered keyframes (``splat_pixel_votes``). Since a pixel's colour is
``sum_i w_ip c_i``, this is the pixel editor's mask-weighted mean with the colour mixing moved
inside the OKLab conversion: for opaque single-colour regions the two are equal, in general they
differ only by edge pixels that mix splats. Splats no keyframe shows add nothing to the
statistics but are recoloured all the same.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ...gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from ...geometry.labels import label_index
from ...semantics.labelling import splat_pixel_votes
from ..colour_space import oklab_to_rgb, rgb_to_oklab
from ..editors.palette_recolour import EYE_REGIONS, darker_part, recolour_oklab, region_stats
from ..plan import EditPlan

__all__ = ["splat_region_weight", "splat_visibility", "splat_palette_stats", "recolour_splats"]


def splat_region_weight(labels: Tensor, plan: EditPlan, selected: Tensor) -> Tensor:
    """Soft recolour weight per splat: label probability for the plan's regions, clamped to [0, 1],
    and exactly 0 outside ``selected`` (bool [N], the loop's ``region_selection``).  -> [N]"""
    p = labels[:, [label_index(n) for n in plan.regions]].sum(1).clamp(0.0, 1.0)  # [N]
    return torch.where(selected, p, torch.zeros_like(p))


@torch.no_grad()
def splat_visibility(world, cameras, masks: Tensor, renderer) -> Tensor:
    """Blending weight each splat has over the region-mask pixels of some rendered views.

    world: WorldGaussians of V views (batched, as ``render_views`` returns them); cameras: V cameras;
    masks: [V, H, W] region masks of those views.  -> [N], in pixels of full blending weight.
    """
    vis = None
    for v in range(len(cameras)):
        g = _view(world, v)
        votes = splat_pixel_votes(g, cameras[v], masks[v, ..., None].float(), renderer)[:, 0]  # [N]
        vis = votes if vis is None else vis + votes
    return vis


def _view(world, v: int):
    """View ``v`` of batched WorldGaussians as a batch of one (per-splat fields [N, ...] are shared)."""
    b, n = world.num_frames, world.num_splats
    out = {}
    for f in dataclasses.fields(world):
        x = getattr(world, f.name)
        if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[:2] == (b, n):
            x = x[v:v + 1]  # [1, N, ...]
        out[f.name] = x
    return dataclasses.replace(world, **out)


def splat_palette_stats(lab: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Region mean and std in OKLab of splat colours ``lab`` [N, 3] under ``weight`` [N].

    -> (mean [1, 3], std [1, 3]), the shapes ``recolour_oklab`` takes for a batch of one.
    """
    return region_stats(lab[None, :, None], weight[None, :, None])


def _target(plan: EditPlan, like: Tensor) -> Tensor | None:
    if plan.colour is None:
        return None
    return rgb_to_oklab(torch.tensor(plan.colour, dtype=like.dtype, device=like.device))


@torch.no_grad()
def recolour_splats(gaussians: GaussianAvatar, plan: EditPlan, weight: Tensor, visibility: Tensor | None = None,
                    min_detail: float = 0.05, iris_only: bool = True, fd_eps: float = 1e-3) -> GaussianAvatar:
    """A copy of ``gaussians`` with the plan's palette edit applied to the splats of ``weight`` [N].

    visibility: [N] (``splat_visibility``) weights the region statistics; None or all-zero over the
    region falls back to opacity. Splats with weight 0 keep their tensors bit-identical. See the
    module docstring for the maths; ``min_detail`` and ``iris_only`` are the PaletteEditor's.
    """
    idx = (weight > 0).nonzero()[:, 0]  # [M]
    sh = gaussians.sh.clone()
    if plan.strength == 0.0 or len(idx) == 0:
        return gaussians.replace(sh=sh)
    w = weight[idx].to(sh.dtype)  # [M]
    rgb = sh_to_rgb(sh[idx, 0]).clamp(0.0, 1.0)  # [M, 3], the displayable DC colour
    lab = rgb_to_oklab(rgb)  # [M, 3]
    if iris_only and set(plan.regions) <= EYE_REGIONS:
        w = darker_part(lab[None, :, None], w[None, :, None])[0, :, 0]  # the iris, not the sclera
    opacity = gaussians.opacities[idx].to(w)  # [M]
    stat_w = w * (opacity if visibility is None else visibility[idx].to(w).clamp_min(0.0))
    if float(stat_w.sum()) <= 1e-8:  # no view shows the region: opacity is the best guess left
        stat_w = w * opacity
    stats = splat_palette_stats(lab, stat_w)
    target = _target(plan, rgb)

    def mapped(c: Tensor) -> Tensor:  # sRGB [..., M, 3] -> blended edited sRGB [..., M, 3]
        flat = c.reshape(-1, 3)
        reps = flat.shape[0] // len(idx)
        s = (stats[0].repeat(reps, 1), stats[1].repeat(reps, 1))
        new = recolour_oklab(rgb_to_oklab(flat).view(reps, -1, 1, 3), None, target, plan.strength, plan.material,
                             min_detail=min_detail, stats=s)
        new = oklab_to_rgb(new.view(-1, 3)).clamp(0.0, 1.0).view_as(c)
        return c + w[:, None] * (new - c)

    sh[idx, 0] = rgb_to_sh(mapped(rgb))
    if sh.shape[1] > 1:  # view-dependent bands: the map's local Jacobian (central differences)
        eye = torch.eye(3, dtype=rgb.dtype, device=rgb.device) * fd_eps  # [3, 3]
        probe = torch.cat([rgb[None] + eye[:, None], rgb[None] - eye[:, None]], 0)  # [6, M, 3]
        out = mapped(probe)
        jac = ((out[:3] - out[3:]) / (2 * fd_eps)).permute(1, 2, 0)  # [M, 3 out, 3 in]
        sh[idx, 1:] = torch.einsum("mij,mkj->mki", jac, sh[idx, 1:])
    return gaussians.replace(sh=sh)
