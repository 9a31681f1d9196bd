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

Colour plans given the region's rendered pixels (``pixels=``, as the edit loop does) go instead
through one affine colour map fitted on those pixels (``blend_map``): it commutes with blending, and
the per-splat map below flattened strands drawn by many overlapping splats. The per-splat path stays
for eye plans, positional qualifiers and callers without pixels.

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
import logging

import torch
from torch import Tensor

from ...gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from ...geometry.cameras import Cameras
from ...geometry.labels import NUM_LABELS, label_index
from ...semantics.labelling import splat_pixel_votes
from ..colour_space import oklab_to_rgb, rgb_to_oklab
from ..editors.palette_recolour import (EYE_REGIONS, colourist_oklab, fit_region, iris_membership, recolour_oklab,
                                        region_stats, smoothstep, target_from_plan, weighted_quantiles)
from ..plan import EditPlan
from .blend_map import apply_affine_colour_map, colourist_affine_map

__all__ = ["splat_region_weight", "splat_visibility", "statistics_views", "inside_share_gate", "splat_palette_stats", "recolour_splats",
           "splat_heights", "rest_pose", "rest_positions", "geometric_pupil", "takes_affine_map"]

logger = logging.getLogger("dynavatar.edit")


def splat_region_weight(labels: Tensor, plan: EditPlan, selected: Tensor) -> Tensor:
    """Soft recolour weight per splat: label probability for the plan's regions, clamped to [0, 1],
    and exactly 0 outside ``selected`` (bool [N], the loop's ``region_selection``).  -> [N]"""
    p = labels[:, [label_index(n) for n in plan.regions]].sum(1).clamp(0.0, 1.0)  # [N]
    return torch.where(selected, p, torch.zeros_like(p))


@torch.no_grad()
def splat_visibility(world, cameras, masks: Tensor, renderer, max_views: int = 3, max_side: int = 96,
                     with_outside: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Blending weight each splat has over the region-mask pixels of some rendered views.

    world: WorldGaussians of V views (batched, as ``render_views`` returns them); cameras: V cameras;
    masks: [V, H, W] region masks of those views.  -> [N], in pixels of full blending weight at
    the (possibly reduced) vote resolution.

    Only statistics weights come from this (their scale does not matter), so it is kept cheap: at
    most ``max_views`` views spread evenly over the V given, rendered with the image's longest side
    at most ``max_side`` pixels (the masks area-averaged to match). Measured on the demo head
    (25k splats, 192 px): the votes at 96 px correlate 0.97 with the full-size ones, and the edit
    loop's 16 views (8 keyframes + head turns) on a shared CPU took minutes where 3 take seconds.

    ``with_outside``: also each splat's blending weight over the pixels *outside* the masks (the
    same render: a second feature channel), for ``recolour_splats(outside=...)``.
    -> (inside [N], outside [N]) then.
    """
    pick = _spread(len(cameras), max_views)
    scale = min(1.0, max_side / max(cameras.width, cameras.height))
    vis = None
    for v in pick:
        cam, mask = _scaled(cameras[v], masks[v].float(), scale)
        votes = splat_pixel_votes(_view(world, v), cam, torch.stack([mask, 1 - mask], -1), renderer)  # [N, 2]
        vis = votes if vis is None else vis + votes
    return (vis[:, 0], vis[:, 1]) if with_outside else vis[:, 0]


def inside_share_gate(inside: Tensor, outside: Tensor, lo: float = 0.1, hi: float = 0.4) -> Tensor:
    """Per splat [N]: 1, or less for a splat the views show mostly *outside* the region masks.

    Why: a splat labelled hair that renders over the jacket or the background (a labelling error,
    or a stray fuzzy splat past the hair's edge) would carry the new colour off the region: the
    real-clip bench saw a pink patch on the shoulder after "pink hair". Its share of blending
    weight inside the masks, ``inside / (inside + outside)``, fades it out between ``hi`` and
    ``lo`` (a boundary splat half inside keeps its full weight, so edges stay crisp; one mostly
    outside feathers). Splats no view shows (hair at the back) keep 1: there is nothing to judge."""
    total = inside + outside
    seen = total > 1e-3 * total.max().clamp_min(1e-12)
    share = inside / total.clamp_min(1e-12)
    t = ((share - lo) / (hi - lo)).clamp(0, 1)
    return torch.where(seen, t * t * (3 - 2 * t), torch.ones_like(share))


def _spread(n: int, k: int) -> list[int]:
    """At most ``k`` indices spread evenly over ``range(n)`` (first and last included)."""
    return sorted({round(float(x)) for x in torch.linspace(0, n - 1, min(k, n))}) if n else []


def statistics_views(views: list, max_views: int = 3) -> list:
    """The few of ``views`` the splat recolour's statistics need (the ones ``splat_visibility``
    would use): pose, bind and render masks for these only, not for all of the loop's views."""
    return [views[i] for i in _spread(len(views), max_views)]


def _scaled(camera: Cameras, mask: Tensor, scale: float) -> tuple[Cameras, Tensor]:
    """One camera and its mask [H, W] at ``scale`` of the size (intrinsics scaled, mask area-averaged)."""
    if scale >= 1.0:
        return camera, mask
    small = camera.scaled(scale)
    return small, torch.nn.functional.interpolate(mask[None, None], size=(small.height, small.width),
                                                  mode="area")[0, 0]  # [h, w]


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


def splat_heights(positions: Tensor, weight: Tensor, up: Tensor | None = None) -> Tensor:
    """Each splat's height in its region, 0 at the top and 1 at the bottom along the head's up axis
    (+y in FLAME's frame unless ``up`` [3] says otherwise), between the region's 2nd and 98th
    height percentiles (stray splats do not stretch it).  positions [N, 3], weight [N] -> [N]"""
    up = torch.tensor([0.0, 1.0, 0.0], dtype=positions.dtype, device=positions.device) if up is None else up
    y = positions @ up.to(positions)
    lo, hi = weighted_quantiles(y, weight.to(y).clamp_min(0) + 1e-12, torch.tensor([0.02, 0.98], dtype=torch.float64))
    return ((hi - y) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def geometric_pupil(positions: Tensor, iris: Tensor, inner: float = 0.35, outer: float = 0.6) -> Tensor:
    """How much each splat [M] is pupil, from where it sits in its iris disc rather than its colour.

    The two eyes are split by the head's x (left/right of the midline); each disc's centre and RMS
    radius in the x-y plane (the rest pose looks along z) are weighted by ``iris`` [M] (label times
    visibility). A uniform disc of radius R has RMS radius 0.71 R and a pupil of 0.25-0.45 R, so
    the pupil fades out between ``inner`` and ``outer`` RMS radii. Splats far from both discs get 0.
    positions [M, 3] (rest pose, head frame); iris [M] >= 0. -> [M] in [0, 1]"""
    out = torch.zeros(len(positions), dtype=positions.dtype, device=positions.device)
    w = iris.clamp_min(0).to(positions)
    for side in (positions[:, 0] < 0, positions[:, 0] >= 0):
        ws = w * side
        if float(ws.sum()) <= 1e-8:
            continue
        centre = (positions * ws[:, None]).sum(0) / ws.sum()  # [3]
        d = (positions[:, :2] - centre[:2]).norm(dim=-1)  # [M]
        rms = ((ws * d**2).sum() / ws.sum()).sqrt().clamp_min(1e-6)
        out = torch.where(side, 1 - smoothstep(inner, outer, d / rms), out)
    return out


def rest_pose(params):
    """``params``' first frame [1] with no pose or expression: the identity's head in its own frame (+y up)."""
    p = params[0:1]
    return dataclasses.replace(p, **{k: torch.zeros_like(getattr(p, k))
                                     for k in ("expr", "rotation", "neck", "jaw", "eyes", "translation")})


def rest_positions(gaussians: GaussianAvatar, model, params) -> Tensor:
    """World positions [N, 3] of the splats on the head of ``rest_pose(params)``."""
    from ...gaussians.binding import bind

    verts = model(rest_pose(params), landmark_set=None).vertices
    return bind(gaussians, verts, model.faces).means[0]


@torch.no_grad()
def recolour_splats(gaussians: GaussianAvatar, plan: EditPlan, weight: Tensor, visibility: Tensor | None = None,
                    min_detail: float = 0.05, iris_only: bool = True, fd_eps: float = 1e-3,
                    positions: Tensor | None = None, model=None, params=None,
                    outside: Tensor | None = None, pixels: tuple[Tensor, Tensor] | None = None) -> GaussianAvatar:
    """A copy of ``gaussians`` with the plan's palette edit applied to the splats of ``weight`` [N].

    The colourist's recolour (``palette_recolour.colourist_oklab``): the region's colour
    distribution, measured on the splats under ``visibility`` [N] (``splat_visibility``; None or
    all-zero over the region falls back to opacity), mapped onto the plan's shade. Eye plans move
    the iris only (``iris_membership``, with ``iris_only``); with the splats' positions (or ``model``
    and ``params``) the iris-labelled splats' pupil is found by place (``geometric_pupil``). Positional qualifiers (dark roots,
    ombre, two-tone) need the splats' ``positions`` [N, 3] in the head's frame, or ``model`` and
    ``params`` to compute them (``rest_positions``); without either they are skipped with a
    warning. Material-only plans keep the old statistics-based transform (``recolour_oklab``).
    Splats with weight 0 keep their tensors bit-identical. ``min_detail``: the material path's.
    ``outside`` [N] (``splat_visibility(with_outside=True)``): splats the views show mostly
    outside the region lose their weight (``inside_share_gate``); needs ``visibility``.
    ``pixels`` (rgb [P, 3], weight [P]: ``blend_map.region_pixels``): the region's rendered pixels; a
    colour plan without positional qualifiers, not of the eyes, then goes through one affine colour map
    fitted to the colourist's recolour of those pixels (``blend_map``: it commutes with blending, so
    the rendered strands keep their structure).
    """
    if outside is not None and visibility is not None:
        weight = weight * inside_share_gate(visibility.to(weight), outside.to(weight))
    idx = (weight > 0).nonzero()[:, 0]  # [M]
    sh = gaussians.sh.clone()
    if plan.strength == 0.0 or len(idx) == 0:
        return gaussians.replace(sh=sh)
    w = weight[idx].to(sh.dtype)  # [M]
    target = target_from_plan(plan, w)  # (w gives it the splats' dtype and device)
    if pixels is not None and takes_affine_map(plan, iris_only) and len(pixels[0]) >= 50:
        A, b = colourist_affine_map(pixels[0], pixels[1], target, plan.strength, plan.material)
        return apply_affine_colour_map(gaussians, A, b, weight)
    rgb = sh_to_rgb(sh[idx, 0]).clamp(0.0, 1.0)  # [M, 3], the displayable DC colour
    lab = rgb_to_oklab(rgb)  # [M, 3]
    eye = iris_only and set(plan.regions) <= EYE_REGIONS
    opacity = gaussians.opacities[idx].to(w)  # [M]
    seen = opacity if visibility is None else visibility[idx].to(w).clamp_min(0.0)
    if float((w * seen).sum()) <= 1e-8:  # no view shows the region: opacity is the best guess left
        seen = opacity
    if eye:
        if positions is None and model is not None and params is not None:
            positions = rest_positions(gaussians, model, params)
        pupil = None
        if positions is not None and gaussians.labels.shape[1] == NUM_LABELS:
            iris = gaussians.labels[idx, label_index("iris")].to(w)
            pupil = torch.where(iris > 0.5, geometric_pupil(positions[idx].to(w), iris * seen), float("nan"))
        w = w * iris_membership(lab, w * seen, pupil=pupil)  # the iris, not the pupil, sclera or glint
    stat_w = w * seen
    heights = None
    if target is not None and _positional(target):
        if positions is None and model is not None and params is not None:
            positions = rest_positions(gaussians, model, params)
        if positions is None:
            logger.warning("%r: %s needs the splats' positions; recoloured without it (pass positions= or "
                           "model= and params= to recolour_splats)", plan.prompt, _positional(target))
        else:
            heights = splat_heights(positions[idx].to(w), stat_w)
    fit = fit_region(lab, stat_w) if target is not None else None
    stats = splat_palette_stats(lab, stat_w) if target is None else None

    def mapped(c: Tensor) -> Tensor:  # sRGB [..., M, 3] -> blended edited sRGB [..., M, 3]
        flat = c.reshape(-1, 3)
        reps = flat.shape[0] // len(idx)
        if target is not None:
            hs = None if heights is None else heights.repeat(reps)
            new = colourist_oklab(rgb_to_oklab(flat), fit, target, plan.strength, plan.material, hs)
        else:
            s = (stats[0].repeat(reps, 1), stats[1].repeat(reps, 1))
            new = recolour_oklab(rgb_to_oklab(flat).view(reps, -1, 1, 3), None, None, plan.strength,
                                 plan.material, min_detail=min_detail, stats=s)
        new = oklab_to_rgb(new.view(-1, 3)).clamp(0.0, 1.0).view_as(c)
        return c + w[:, None] * (new - c)

    sh[idx, 0] = rgb_to_sh(mapped(rgb))
    if sh.shape[1] > 1:  # view-dependent bands: the map's local Jacobian (central differences)
        eye3 = torch.eye(3, dtype=rgb.dtype, device=rgb.device) * fd_eps  # [3, 3]
        probe = torch.cat([rgb[None] + eye3[:, None], rgb[None] - eye3[:, None]], 0)  # [6, M, 3]
        out = mapped(probe)
        jac = ((out[:3] - out[3:]) / (2 * fd_eps)).permute(1, 2, 0)  # [M, 3 out, 3 in]
        sh[idx, 1:] = torch.einsum("mij,mkj->mki", jac, sh[idx, 1:])
    return gaussians.replace(sh=sh)


def takes_affine_map(plan: EditPlan, iris_only: bool = True) -> bool:
    """Whether ``recolour_splats`` recolours this plan through one affine map fitted on the region's
    rendered pixels (so the caller should render them: ``blend_map.region_pixels``): a colour plan,
    not of the eyes (with ``iris_only``), without positional qualifiers."""
    if iris_only and set(plan.regions) <= EYE_REGIONS:
        return False
    target = target_from_plan(plan, torch.zeros(3))
    return target is not None and not _positional(target)


def _positional(target) -> str:
    """The target's qualifiers that need positions, as words ('' when none)."""
    words = [q for q in target.qualifiers if q in ("dark roots", "ombre")]
    if target.second is not None:
        words.append(f"a second colour at the {target.second_at}")
    return " and ".join(words)
