"""The region an edit may change, shared by both edit loops (the IDU loop and SDS).

Which splats belong to the plan's regions (``region_selection``, minus preserved labels), their
masks in rendered views, renders of keyframes and novel head turns, a private copy of the splats
(accessories get a second, jittered copy of the region for room to grow), and the optimiser step
that puts every splat outside the region back exactly after each update (``region_step``), so
nothing the plan did not ask for can change.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ...errors import DynavatarError
from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import GaussianAvatar
from ...gaussians.binding import bind
from ...geometry.cameras import Cameras
from ...geometry.labels import label_index
from ..plan import EditPlan
from .keyframes import View, rotate_head

__all__ = ["EditResult", "region_selection", "region_masks", "pose_views", "render_views", "prepare_region",
           "region_optimizer", "restore_outside", "region_step"]


@dataclasses.dataclass
class EditResult:
    gaussians: GaussianAvatar
    views: list[View]
    selected: Tensor  # bool [N'] splats that were optimised
    history: list[dict]
    seconds: float
    recoloured: int = 0  # splats the splat-space palette step changed (0: step not used)


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
                   seed: int) -> tuple[GaussianAvatar, Tensor, torch.Generator]:
    """A private copy of the splats, the bool [N'] mask of those the edit may change, and the
    seeded generator the rest of the edit draws from (torch's global seed is set too)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    g = gaussians.detach()
    g = dataclasses.replace(g, **{k: v.clone() for k, v in g.parameters_dict().items()})
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
