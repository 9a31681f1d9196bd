"""The region an edit may change, shared by both edit loops (the IDU loop and SDS).

Which splats belong to the plan's regions (``region_selection``, minus preserved labels) or to a
region the user drew on one frame (``DrawnRegion``: the splats under the mask, carried to every
view by the exact route or by a learned MaskMapper), their masks in rendered views, renders of keyframes and novel head turns, a private copy of the splats
(accessories get a second, jittered copy of the region for room to grow), and the optimiser step
that puts every splat outside the region back exactly after each update (``region_step``), so
nothing the plan did not ask for can change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ...errors import DynavatarError
from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import GaussianAvatar
from ...gaussians.binding import bind
from ...geometry.cameras import Cameras
from ...geometry.labels import label_index
from ...semantics.coverage import render_coverage
from ..plan import EditPlan
from .keyframes import View, rotate_head

__all__ = ["EditResult", "DrawnRegion", "view_masks", "region_selection", "region_masks", "pose_views", "render_views", "prepare_region",
           "region_optimizer", "restore_outside", "region_step"]


@dataclasses.dataclass
class EditResult:
    gaussians: GaussianAvatar
    views: list[View]
    selected: Tensor  # bool [N'] splats that were optimised
    history: list[dict]
    seconds: float
    recoloured: int = 0  # splats the splat-space palette step changed (0: step not used)
    info: dict = dataclasses.field(default_factory=dict)  # what else the loop decided (settings, tokens...)


@dataclasses.dataclass
class DrawnRegion:
    """An edit region drawn by the user on one frame, instead of the plan's labels (DynamicAvatars'
    mask mapping): the splats under the mask are the ones optimised, and each edited view's mask
    is either those splats rendered at the view (the exact route) or a trained ``MaskMapper``'s
    prediction at the view's time and head turn (the learned route)."""

    selected: Tensor  # bool [N] splats under the drawn mask (``Avatar.splats_under_mask``)
    n_frames: int  # frames of the clip: a view's time is frame / (n_frames - 1), as the mapper was trained
    mapper: Any = None  # a MaskMapper (learned route); None renders the selection (exact route)

    @property
    def route(self) -> str:
        return "exact" if self.mapper is None else "learned"

    def masks(self, world, cameras: Cameras, views: list[View], sel: Tensor, renderer) -> Tensor:
        """Region masks of ``views`` (their world gaussians and cameras), {0, 1}  -> [V, H, W].
        ``sel``: the current selection (bool [N'], cloned accessory splats included)."""
        if self.mapper is None:
            return (render_coverage(world, cameras, sel, renderer) > 0.5).float()
        dev = next(self.mapper.parameters()).device
        t = torch.tensor([v.frame for v in views], dtype=torch.float32) / max(self.n_frames - 1, 1)
        pose = torch.tensor([[v.yaw, v.pitch] for v in views], dtype=torch.float32)
        with torch.no_grad():
            p = self.mapper.predict(t.to(dev), pose.to(dev), out_size=(cameras.height, cameras.width))
        return (p > 0.5).float().to(world.means.device)


def view_masks(world, cameras: Cameras, labels: Tensor, plan: EditPlan, renderer, views: list[View],
               sel: Tensor, drawn: DrawnRegion | None) -> Tensor:
    """The edit region in each view: the drawn region's route, else the plan's labels.  -> [V, H, W]"""
    if drawn is not None:
        return drawn.masks(world, cameras, views, sel, renderer)
    return region_masks(world, cameras, labels, plan, renderer)


def region_selection(labels: Tensor, plan: EditPlan, threshold: float) -> Tensor:
    """Splats the plan may change: region probability > threshold, minus preserved labels."""
    if labels.shape[1] == 0:
        raise DynavatarError("the avatar has no semantic labels; call avatar.label_splats() before editing")
    p_region = labels[:, [label_index(n) for n in plan.regions]].sum(1)
    sel = p_region > threshold
    if plan.preserve:
        sel &= labels[:, [label_index(n) for n in plan.preserve]].sum(1) <= threshold
    return sel


def region_masks(g, cameras: Cameras, labels: Tensor, plan: EditPlan, renderer) -> Tensor:
    """Region probability rendered from the labels, thresholded (the editors grow and feather it
    themselves).  -> [B, H, W] float"""
    idx = [label_index(n) for n in plan.regions]
    feats = labels[:, idx].sum(1, keepdim=True)
    out = renderer.render(g, cameras, features=feats)
    return (out.features[..., 0] > 0.5).float()


def pose_views(params: FlameParams, views: list[View]) -> FlameParams:
    """The FLAME parameters of each view: its frame's, with the view's extra head turn."""
    return FlameParams.cat([rotate_head(params[v.frame], v.yaw, v.pitch) for v in views])


def render_views(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, cameras: Cameras,
                 views: list[View], renderer, background: Tensor) -> tuple[Tensor, object, Cameras]:
    """Renders [V, H, W, 3] of the views, their world gaussians and cameras."""
    p = pose_views(params, views)
    verts = model(p, landmark_set=None).vertices
    g = bind(gaussians, verts, model.faces)
    cams = cameras[torch.tensor([v.frame for v in views])]
    return renderer.render(g, cams, background=background).rgb.clamp(0, 1), g, cams


def _clone_region(g: GaussianAvatar, sel: Tensor, gen: torch.Generator) -> tuple[GaussianAvatar, Tensor]:
    """Duplicate the selected splats, jittered slightly in their triangles, at half opacity each."""
    kids = {}
    for f in dataclasses.fields(g):
        v = getattr(g, f.name)
        if isinstance(v, Tensor):
            kids[f.name] = torch.cat([v, v[sel]], 0)
    n_new = int(sel.sum())
    jitter = 0.1 * torch.randn(n_new, 3, generator=gen).to(g.means_local)
    kids["means_local"][-n_new:] += jitter
    out = dataclasses.replace(g, **kids)
    return out, torch.cat([sel, torch.ones(n_new, dtype=torch.bool, device=sel.device)])


def prepare_region(gaussians: GaussianAvatar, plan: EditPlan, threshold: float, clone_for_accessory: bool,
                   seed: int, drawn: DrawnRegion | None = None) -> tuple[GaussianAvatar, Tensor, torch.Generator]:
    """A private copy of the splats, the bool [N'] mask of those the edit may change (the plan's
    labels, or the splats under a ``drawn`` mask: then labels are not needed), and the seeded
    generator the rest of the edit draws from (torch's global seed is set too)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    g = gaussians.detach()
    g = dataclasses.replace(g, **{k: v.clone() for k, v in g.parameters_dict().items()})
    if drawn is not None:
        sel = drawn.selected.to(g.means_local.device).bool()
        if sel.shape != (g.num_splats,) or not sel.any():
            raise DynavatarError("the drawn mask selects no splat of this avatar; draw it over the head on "
                                 "the frame's render (avatar.render(frame=k))")
    else:
        sel = region_selection(g.labels, plan, threshold)
    if not sel.any():
        raise DynavatarError(f"no splat is labelled {plan.regions} (above {threshold}); "
                             "nothing to edit. Check avatar.render_masks() on a frame.")
    if plan.kind == "accessory" and clone_for_accessory:
        g, sel = _clone_region(g, sel, gen)
    return g, sel, gen


def region_optimizer(g: GaussianAvatar, plan: EditPlan, lr_colour: float, lr_opacity: float,
                     lr_geometry: float) -> torch.optim.Optimizer:
    """Adam over colour and opacity, plus geometry for edits that change shape (accessories,
    removals, free-form appearance)."""
    g.requires_grad_(True)
    groups = [{"params": [g.sh], "lr": lr_colour}, {"params": [g.opacity_logits], "lr": lr_opacity}]
    if plan.kind in ("accessory", "appearance", "remove"):
        groups.append({"params": [g.means_local, g.log_scales_local, g.quats_local], "lr": lr_geometry})
    return torch.optim.Adam(groups, eps=1e-15)


@torch.no_grad()
def restore_outside(g: GaussianAvatar, frozen: dict[str, Tensor], sel: Tensor) -> None:
    """Put every splat outside the region back exactly (so nothing else can change)."""
    for k, v in g.parameters_dict().items():
        v[~sel] = frozen[k][~sel]


def region_step(loss: Tensor, opt: torch.optim.Optimizer, g: GaussianAvatar, frozen: dict[str, Tensor], sel: Tensor,
                step: int, steps: int, history: list[dict], bar, what: str) -> None:
    """One optimiser step on the region's splats (the IDU and SDS loops share it): stop on a
    non-finite loss, step, put everything outside the region back, log every 20 steps."""
    if not torch.isfinite(loss):
        raise DynavatarError(f"{what} loss became {loss.item()} at step {step}; lower the learning rates")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    restore_outside(g, frozen, sel)
    if step % 20 == 0 or step == steps - 1:
        history.append({"step": step, "loss": loss.item()})
        bar.set_postfix(loss=f"{loss.item():.4f}")
