"""Applying an edit to the avatar: iterative dataset update over keyframes and novel views.

Instruct-NeRF2NeRF's loop, restricted to a region (DynamicAvatars) and driven by FLAME (AvatarStudio):

1. choose keyframes covering the clip's expressions and poses, plus novel head rotations;
2. render each view, and its region mask from the splat labels (dual tracking) or from a mask the
   user drew on one frame (``DrawnRegion``: exact route or the learned MaskMapper);
3. edit the renders inside the masks (any ``ImageEditor``): the edit starts from the current
   render and, for editors that take image guidance (InstructPix2Pix), is conditioned on the
   ORIGINAL view (the captured frame, or the unedited render of a novel view), as in
   Instruct-NeRF2NeRF, so identity does not drift over the re-edits;
4. optimise only the region's splats towards the edited views (L1 + D-SSIM + a patch
   discriminator's adversarial loss); every other splat is restored after each step, so nothing
   outside the region can change;
5. every ``reedit_every`` steps, re-render and re-edit (the "dataset update"), so the targets
   converge to a 3D-consistent edit instead of averaging inconsistent 2D edits.

The loop's knobs (discriminator weight, keyframes, re-edit period, steps) come from the plan
(``EditPlan.guiding``, chosen per kind by the refiner: DynamicAvatars' guiding parameters) unless
the ``EditConfig`` given sets them (``loop_config``).

Because the splats are bound to FLAME triangles, the edited region follows every expression and
pose of the clip and any new animation.

Palette (colour/material) plans edited with the PaletteEditor first get the same OKLab transform
applied to the region's splat colours directly (``splat_recolour.py``, ``EditConfig.splat_recolour``):
every splat of the region takes the new colour, including those no keyframe shows, so held-out
frames and novel poses agree; the loop then only fine-tunes (``steps=0`` skips it). Eye-colour plans
and colour plans recoloured through one colour map stop after that recolour (``_splat_recolour_is_final``).
"""

from __future__ import annotations

import dataclasses
import inspect
import time

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import SH_C0, GaussianAvatar
from ...gaussians.binding import bind
from ...geometry.cameras import Cameras
from ...geometry.labels import label_index
from ...geometry.photometric import photometric_loss
from ..editors.palette import PaletteEditor, is_palette_plan
from ..editors.palette_recolour import EYE_REGIONS
from ..plan import EditPlan
from .discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from .keyframes import View, farthest_point_keyframes, keyframe_views
from .region import (DrawnRegion, EditResult, pose_views, prepare_region, region_masks, region_optimizer, region_step,
                     render_views, view_masks)
from .blend_map import region_pixels
from .iris_overlay import boost_under_overlay
from .splat_recolour import recolour_splats, splat_region_weight, splat_visibility, statistics_views, takes_affine_map

__all__ = ["EditConfig", "loop_config", "original_views", "recolour_region", "edit_splats"]


@dataclasses.dataclass
class EditConfig:
    """Settings of the iterative-dataset-update edit loop."""

    keyframes: int = 8  # frames chosen by farthest-point sampling in FLAME parameter space
    novel_yaws: tuple[float, ...] = (-0.5, 0.5)  # extra head turns (radians) shown on every other keyframe
    steps: int = 300  # optimisation steps
    views_per_step: int = 2
    reedit_every: int = 100  # iterative dataset update period (0: edit once)
    region_threshold: float = 0.5  # label probability above which a splat belongs to the region
    lr_colour: float = 2e-2  # SH coefficients
    lr_opacity: float = 5e-2
    lr_geometry: float = 2e-3  # local positions/scales/rotations; used by accessory/appearance/remove edits
    w_l1: float = 0.8
    w_dssim: float = 0.2
    w_adv: float = 0.02  # patch discriminator's generator loss (0 disables the discriminator)
    adv_start: int = 50  # steps before the adversarial loss joins (the discriminator warms up first)
    disc_lr: float = 2e-4
    clone_for_accessory: bool = True  # double the region's splats for additive edits (room for new geometry)
    splat_recolour: bool = True  # palette plans: recolour the region's splats in OKLab before the loop
    w_keep_recolour: float = 1.0  # after that recolour, the loop only fine-tunes: squared distance of the
    # region's colours (SH, DC units) to the recoloured ones. Without it the loop drifted single splats
    # (seen only in a few views) to colours outside [0, 1]: dark and purple specks along the demo's lips
    seed: int = 0


@torch.no_grad()
def recolour_region(g: GaussianAvatar, sel: Tensor, plan: EditPlan, editor: PaletteEditor, model: FlameModel,
                    params: FlameParams, cameras: Cameras, views: list[View], renderer) -> GaussianAvatar:
    """The splat-space palette edit of the region ``sel`` (bool [N]), with the region statistics
    weighted by how much each splat shows inside the region masks of ``views`` (so they match what
    the pixel editor would measure on those renders). Returns a copy with new ``sh``."""
    views = statistics_views(views)  # the few views the statistics use, not every keyframe and turn
    verts = model(pose_views(params, views), landmark_set=None).vertices
    wg = bind(g, verts, model.faces)
    cams = cameras[torch.tensor([v.frame for v in views])]
    # [N] each: seen inside / outside the region masks. At 192 px, not the statistics' 96: the off-region
    # gate judges thin strands at the temples, which at 96 px fall mostly outside the hair mask and kept
    # their old colour (docs/benchmarks.md, "Hair recolours that keep the strands")
    inside, outside = splat_visibility(wg, cams, region_masks(wg, cams, g.labels, plan, renderer), renderer,
                                       max_side=192, with_outside=True)
    weight = splat_region_weight(g.labels, plan, sel)  # [N], 0 outside the region
    pixels = None  # the region's rendered pixels, where the affine map is fitted (not for eyes or positional plans)
    if takes_affine_map(plan, getattr(editor, "iris_only", True)):
        prob = g.labels[:, [label_index(n) for n in plan.regions]].sum(1).clamp(0, 1)  # [N]
        pixels = region_pixels(wg, cams, prob, renderer)
    out = recolour_splats(g, plan, weight, inside, min_detail=getattr(editor, "min_detail", 0.05),
                          iris_only=getattr(editor, "iris_only", True), model=model, params=params,
                          outside=outside,  # splats labelled hair but seen only off the hair keep their colour
                          pixels=pixels)
    if _iris_only(plan, editor):  # the lids' splats over the iris: the new colour shows through them in full
        out = boost_under_overlay(g, out, wg, cams, renderer)
    return out


def loop_config(plan: EditPlan, config: EditConfig | None = None) -> EditConfig:
    """The loop's settings: ``EditConfig``'s defaults, then the plan's guiding parameters
    (``EditPlan.guiding``: discriminator weight, keyframes, re-edit period, steps, which the refiner
    chose for this kind of edit), then every field of ``config`` that differs from the default: an
    explicit setting of the user's always wins, a field left at its default lets the plan decide."""
    default = EditConfig()
    out = dataclasses.replace(default, **plan.guiding())
    if config is None:
        return out
    user = {f.name: getattr(config, f.name) for f in dataclasses.fields(EditConfig)
            if getattr(config, f.name) != getattr(default, f.name)}
    return dataclasses.replace(out, **user)


def original_views(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, cameras: Cameras,
                   views: list[View], renderer, background: Tensor, captured: Tensor | None = None) -> Tensor:
    """What the image editor is conditioned on (Instruct-NeRF2NeRF's image guidance): the captured
    frame for a view of a training frame as seen (``captured`` [N, H, W, 3] in [0, 1], composited on
    the background), else the UNEDITED avatar's render (novel head turns, or no frames at hand).
    Conditioning on the original rather than on the current render is what keeps identity over the
    re-edits.  -> [V, H, W, 3]"""
    with torch.no_grad():
        imgs, _, _ = render_views(gaussians, model, params, cameras, views, renderer, background)
    if captured is not None:
        for i, v in enumerate(views):
            if v.yaw == 0.0 and v.pitch == 0.0 and captured[v.frame].shape == imgs[i].shape:
                imgs[i] = captured[v.frame].to(imgs)
    return imgs


def _accepts_originals(editor) -> bool:
    """Editors that take image guidance (``originals=``); the palette editor edits the render alone."""
    try:
        return "originals" in inspect.signature(editor.edit).parameters
    except (TypeError, ValueError):
        return False


def edit_splats(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, cameras: Cameras,
                train_idx: Tensor, plan: EditPlan, editor, renderer, background: Tensor,
                config: EditConfig | None = None, progress: bool = True, drawn: DrawnRegion | None = None,
                captured: Tensor | None = None) -> EditResult:
    """Re-optimise the plan's region (or the ``drawn`` one) so renders match the edited keyframes.
    Settings: ``loop_config(plan, config)``. Each (re-)edit starts from the current render and, for
    editors that take it, is conditioned on the original view (``original_views``; ``captured``:
    the clip's frames). Returns new splats; ``gaussians`` is not modified."""
    cfg = loop_config(plan, config)
    t0 = time.perf_counter()
    dev = gaussians.means_local.device
    model = model.to(dev)
    g, sel, gen = prepare_region(gaussians, plan, cfg.region_threshold, cfg.clone_for_accessory, cfg.seed, drawn)
    keyframes = farthest_point_keyframes(params, cfg.keyframes, train_idx.cpu())
    views = keyframe_views(keyframes, cfg.novel_yaws)
    info = {"config": dataclasses.asdict(cfg), "route": drawn.route if drawn is not None else "labels"}
    recoloured = 0
    if cfg.splat_recolour and drawn is None and is_palette_plan(plan) and isinstance(editor, PaletteEditor):
        before = g.sh.clone()
        g = recolour_region(g, sel, plan, editor, model, params, cameras, views, renderer)
        recoloured = int((g.sh != before).flatten(1).any(1).sum())
    final = bool(recoloured) and _splat_recolour_is_final(plan, editor)
    if final and _iris_only(plan, editor):
        info["loop"] = ("skipped: the iris was recoloured splat by splat, with the pupil and the sclera kept from "
                        "the eye's 3D shape; the loop's pixel targets cannot tell them apart in an iris a few "
                        "pixels across, and pulled the pupils to the iris colour")
    elif final:
        info["loop"] = ("skipped: the region was recoloured through one colour map fitted on its rendered pixels; "
                        "the loop's per-keyframe targets drew dark streaks through the strands")
    else:
        info["loop"] = f"{cfg.steps} steps" if cfg.steps > 0 else "none (steps=0)"
    if cfg.steps <= 0 or final:  # the splat-space step alone (or nothing)
        return EditResult(g.detach(), views, sel, [], time.perf_counter() - t0, recoloured, info)
    guided = _accepts_originals(editor)
    originals = (original_views(gaussians, model, params, cameras, views, renderer, background, captured)
                 if guided else None)
    info["image_guidance"] = "original views" if guided else "none (the editor edits the current render)"

    def make_targets() -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            imgs, wg, cams = render_views(g, model, params, cameras, views, renderer, background)
            masks = view_masks(wg, cams, g.labels, plan, renderer, views, sel, drawn)
            kw = {"originals": originals} if guided else {}
            edited = editor.edit(imgs, masks, plan, seed=cfg.seed, **kw)
        return edited.to(dev).clamp(0, 1), masks

    targets, masks = make_targets()
    frozen = {k: v.detach().clone() for k, v in g.parameters_dict().items()}
    keep = frozen["sh"][sel] if recoloured and cfg.w_keep_recolour > 0 else None  # the recolour's colours
    opt = region_optimizer(g, plan, cfg.lr_colour, cfg.lr_opacity, cfg.lr_geometry)
    disc = PatchDiscriminator().to(dev) if cfg.w_adv > 0 else None
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.99)) if disc is not None else None
    history = []
    bar = tqdm(range(cfg.steps), desc=f"edit '{plan.prompt}'", disable=not progress, unit="step")
    for step in bar:
        if cfg.reedit_every and step > 0 and step % cfg.reedit_every == 0:
            targets, masks = make_targets()  # iterative dataset update
        pick = torch.randperm(len(views), generator=gen)[: cfg.views_per_step]
        vs = [views[int(i)] for i in pick]
        pred, _, _ = render_views(g, model, params, cameras, vs, renderer, background)
        tgt, m = targets[pick.to(dev)], masks[pick.to(dev)]
        loss = photometric_loss(pred, tgt, cfg.w_l1, cfg.w_dssim)
        if disc is not None and step >= cfg.adv_start // 2:
            opt_d.zero_grad(set_to_none=True)
            discriminator_loss(disc, tgt, pred, m).backward()
            opt_d.step()
            if step >= cfg.adv_start:
                loss = loss + cfg.w_adv * generator_loss(disc, pred, m)
        if keep is not None:
            loss = loss + cfg.w_keep_recolour * (g.sh[sel] - keep).square().mean()
        region_step(loss, opt, g, frozen, sel, step, cfg.steps, history, bar, "edit")
        if keep is not None:
            _clamp_displayable_(g, sel, keep[:, 0])
    return EditResult(g.detach(), views, sel, history, time.perf_counter() - t0, recoloured, info)


def _splat_recolour_is_final(plan: EditPlan, editor) -> bool:
    """Whether the splat recolour is the whole edit.

    An eye-colour plan recoloured iris-only: the splat path finds the pupil from where each iris
    splat sits in the eye (``geometric_pupil``); the loop's targets come from the pixel editor,
    which sees the iris as a few pixels of a keyframe (5-12 px across in a 512-px crop) and, on a
    300-step edit of a real clip's avatar, turned the pupils the iris colour.

    A colour plan recoloured through one affine map fitted on the region's pixels
    (``takes_affine_map``): the loop fits the splats to the pixel editor's per-keyframe rank maps,
    which disagree with the shared map from keyframe to keyframe; on d14's avatar (H100) 300 loop
    steps raised coverage by 0.03 and dropped the lightness structure by 0.08-0.19 (red, auburn,
    blonde, pink hair), drawing dark streaks through the strands (docs/benchmarks.md)."""
    return _iris_only(plan, editor) or takes_affine_map(plan, getattr(editor, "iris_only", True))


def _iris_only(plan: EditPlan, editor) -> bool:
    """An eye-colour plan the editor recolours iris-only (its ``iris_only``, on unless it says otherwise)."""
    return getattr(editor, "iris_only", True) and bool(plan.regions) and set(plan.regions) <= EYE_REGIONS


@torch.no_grad()
def _clamp_displayable_(g: GaussianAvatar, sel: Tensor, start: Tensor) -> None:
    """Keep the region's base colour (SH DC) inside the displayable [0, 1], or no further out than the
    recolour put it (``start`` [M, 3]: the same transform with steps=0 leaves it there): a splat the
    loop pushes beyond only hides an error in the views it fits, and shows as a speck in others."""
    limit = 0.5 / SH_C0
    lo, hi = start.clamp(max=-limit), start.clamp(min=limit)
    g.sh[sel, 0] = torch.maximum(torch.minimum(g.sh[sel, 0], hi), lo)
