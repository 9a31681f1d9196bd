"""Adaptive density control that keeps every splat bound to its triangle.

3DGS grows splats where the screen-space gradient of their centre is large (clone the small
ones, split the large ones) and prunes transparent ones. For a bound avatar the same rules run in
triangle-local units (``GaussianAvatar``'s convention), and two invariants are added:

* ``binding`` and ``labels`` travel with their splats (children inherit the parent's triangle and
  label), so semantics and animation survive densification;
* pruning never empties a triangle: where every splat of a triangle would go, its most opaque
  one stays, so no part of the mesh loses its appearance for good.

Optimizer consistency: the avatar's learnable tensors are the ``params`` of a plain
``torch.optim.Adam`` (one tensor per group). Every operation rebuilds the tensor and its Adam
moments (``exp_avg``, ``exp_avg_sq``) with the same row selection: kept rows keep their moments,
new rows start at zero. Operations return a new avatar and mutate the optimizer in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..geometry.rotations import quaternion_to_matrix
from .avatar import GaussianAvatar

__all__ = [
    "BindingStrategy",
    "DensifyState",
    "accumulate_screen_grads",
    "duplicate",
    "split",
    "prune",
    "protect_last_splats",
    "reset_opacity",
    "densify_step",
]


@dataclass
class BindingStrategy:
    """When and how to densify (thresholds as in 3DGS; sizes in triangle-local units)."""

    grad_threshold: float = 0.0002  # mean |d loss / d mean2d| in NDC units (gsplat's scaling)
    scale_threshold: float = 0.6  # max local scale (units of k) above which a splat splits
    prune_opacity: float = 0.005  # prune splats less opaque than this
    prune_scale: Optional[float] = None  # also prune splats larger than this local scale
    reset_every: int = 3000  # steps between opacity resets (0 = never)
    reset_opacity: float = 0.01  # opacity after a reset (min with the current value)
    refine_start: int = 500  # first step that densifies
    refine_stop: int = 15_000  # no densification from this step on
    refine_every: int = 100  # steps between densifications
    split_factor: float = 1.6  # children's scale = parent's / split_factor


@dataclass
class DensifyState:
    """Screen-space gradient statistics since the last densification."""

    grad2d: Tensor  # [N] sum of per-view gradient norms
    count: Tensor  # [N] number of views in which the splat was visible

    @classmethod
    def zeros(cls, n: int, device=None) -> "DensifyState":
        return cls(torch.zeros(n, device=device), torch.zeros(n, device=device))


# ------------------------------------------------------------------ optimizer surgery

def _rebuild(
    avatar: GaussianAvatar,
    optimizer: Optional[torch.optim.Optimizer],
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
    other_fn: Callable[[Tensor], Tensor],
) -> GaussianAvatar:
    """Apply the same row operation to every learnable tensor, its Adam moments and the
    bookkeeping tensors (binding, labels)."""
    groups = {}
    if optimizer is not None:
        for gi, group in enumerate(optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                groups[id(p)] = (group, pi)
    new = {}
    for name, old in avatar.parameters_dict().items():
        data = param_fn(name, old.detach())
        p = torch.nn.Parameter(data, requires_grad=old.requires_grad) if isinstance(
            old, torch.nn.Parameter) else data.requires_grad_(old.requires_grad)
        if id(old) in groups:
            group, pi = groups[id(old)]
            st = optimizer.state.pop(old, None)
            group["params"][pi] = p
            if st:
                for key, val in st.items():
                    if isinstance(val, Tensor) and val.shape == old.shape:
                        st[key] = state_fn(name, val)
                optimizer.state[p] = st
        new[name] = p
    new["binding"] = other_fn(avatar.binding)
    new["labels"] = other_fn(avatar.labels)
    return avatar.replace(**new)


def duplicate(avatar: GaussianAvatar, optimizer, mask: Tensor) -> GaussianAvatar:
    """Clone the masked splats (identical copies; new Adam moments are zero).  mask: [N] bool."""
    sel = torch.nonzero(mask).squeeze(-1)
    return _rebuild(
        avatar, optimizer,
        param_fn=lambda _, p: torch.cat([p, p[sel]]),
        state_fn=lambda _, s: torch.cat([s, torch.zeros_like(s[sel])]),
        other_fn=lambda t: torch.cat([t, t[sel]]),
    )


def split(
    avatar: GaussianAvatar, optimizer, mask: Tensor, split_factor: float = 1.6,
    generator: Optional[torch.Generator] = None,
) -> GaussianAvatar:
    """Replace each masked splat by two children sampled from it, in local units (3DGS rule).

    Children: ``mu_l + R_l diag(s_l) z`` with ``z ~ N(0, I)``, scale ``s_l / split_factor``;
    rotation, opacity and colour inherited. The parents are removed; children are appended
    with zero Adam moments.
    """
    sel = torch.nonzero(mask).squeeze(-1)
    keep = torch.nonzero(~mask).squeeze(-1)
    m = sel.numel()
    R = quaternion_to_matrix(avatar.quats_local[sel].detach())  # [m, 3, 3]
    s = avatar.log_scales_local[sel].detach().exp()  # [m, 3]
    z = torch.randn(2, m, 3, generator=generator, dtype=s.dtype).to(s.device)
    offsets = (R[None] @ (s[None] * z)[..., None])[..., 0]  # [2, m, 3]
    children_means = (avatar.means_local[sel].detach()[None] + offsets).reshape(2 * m, 3)

    def param_fn(name, p):
        if name == "means_local":
            child = children_means
        elif name == "log_scales_local":
            child = (p[sel] - math.log(split_factor)).repeat(2, 1)
        else:
            child = p[sel].repeat(2, *([1] * (p.dim() - 1)))
        return torch.cat([p[keep], child])

    return _rebuild(
        avatar, optimizer, param_fn,
        state_fn=lambda _, st: torch.cat([st[keep], torch.zeros_like(st[sel]).repeat(2, *([1] * (st.dim() - 1)))]),
        other_fn=lambda t: torch.cat([t[keep], t[sel].repeat(2, *([1] * (t.dim() - 1)))]),
    )


def protect_last_splats(avatar: GaussianAvatar, mask: Tensor) -> Tensor:
    """Unmask, in each triangle the mask would empty, its most opaque splat.  mask: [N] bool."""
    b = avatar.binding
    n_tri = int(b.max()) + 1 if b.numel() else 0
    survivors = torch.zeros(n_tri, dtype=torch.long, device=b.device).index_add_(
        0, b, (~mask).long())
    logit = avatar.opacity_logits.detach()
    best = torch.full((n_tri,), -math.inf, dtype=logit.dtype, device=b.device).scatter_reduce(
        0, b, logit, reduce="amax")
    is_best = logit == best[b]
    # one index per triangle among the ties: the smallest
    idx = torch.arange(b.numel(), device=b.device)
    big = torch.full((n_tri,), b.numel(), dtype=torch.long, device=b.device)
    first_best = big.scatter_reduce(0, b[is_best], idx[is_best], reduce="amin")
    orphan = torch.nonzero(survivors == 0).squeeze(-1)
    orphan = orphan[first_best[orphan] < b.numel()]
    mask = mask.clone()
    mask[first_best[orphan]] = False
    return mask


def prune(avatar: GaussianAvatar, optimizer, mask: Tensor) -> GaussianAvatar:
    """Remove the masked splats, except each triangle's last (most opaque) one."""
    mask = protect_last_splats(avatar, mask)
    keep = torch.nonzero(~mask).squeeze(-1)
    return _rebuild(avatar, optimizer, lambda _, p: p[keep], lambda _, s: s[keep], lambda t: t[keep])


def reset_opacity(avatar: GaussianAvatar, optimizer, value: float = 0.01) -> GaussianAvatar:
    """Clamp opacities to at most ``value`` and zero their Adam moments (3DGS's reset)."""
    cap = math.log(value / (1 - value))
    return _rebuild(
        avatar, optimizer,
        param_fn=lambda n, p: p.clamp_max(cap) if n == "opacity_logits" else p,
        state_fn=lambda n, s: torch.zeros_like(s) if n == "opacity_logits" else s,
        other_fn=lambda t: t,
    )


# ------------------------------------------------------------------ the step

@torch.no_grad()
def accumulate_screen_grads(
    state: DensifyState,
    means2d_grad: Tensor,  # [C, N, 2] (any shape reshaping to it)
    radii: Tensor,  # [C, N]
    width: int,
    height: int,
) -> DensifyState:
    """Add this step's per-view gradient norms of the 2D means, scaled to NDC like gsplat."""
    N = state.grad2d.shape[0]
    g = means2d_grad.reshape(-1, N, 2).clone()
    g[..., 0] *= width / 2.0
    g[..., 1] *= height / 2.0
    vis = radii.reshape(-1, N) > 0  # [C, N]
    norms = g.norm(dim=-1) * vis
    state.grad2d += norms.sum(0).to(state.grad2d)
    state.count += vis.sum(0).to(state.count)
    return state


def densify_step(
    strategy: BindingStrategy,
    state: DensifyState,
    avatar: GaussianAvatar,
    optimizer,
    render_out,
    step: int,
    width: int,
    height: int,
    generator: Optional[torch.Generator] = None,
    reduce_stats: Optional[Callable[[DensifyState], None]] = None,
) -> tuple[GaussianAvatar, DensifyState, dict]:
    """Call after ``loss.backward()`` (with ``render_out.means2d.retain_grad()`` before it).

    Accumulates screen-space gradients; every ``refine_every`` steps inside the refine window it
    clones, splits and prunes; every ``reset_every`` steps it resets opacities. ``reduce_stats``
    (data-parallel training) combines the statistics of all processes in place before a decision,
    so that every copy of the avatar densifies the same splats.
    Returns (avatar, state, info) where info counts what happened.
    """
    info = {"cloned": 0, "split": 0, "pruned": 0, "reset": False}
    if step < strategy.refine_stop and render_out.means2d.grad is not None:
        state = accumulate_screen_grads(state, render_out.means2d.grad, render_out.radii, width, height)
    refine = (strategy.refine_start <= step < strategy.refine_stop and step > 0
              and step % strategy.refine_every == 0)
    if refine:
        if reduce_stats is not None:
            reduce_stats(state)
        avg = state.grad2d / state.count.clamp_min(1)
        high = avg > strategy.grad_threshold
        big = avatar.log_scales_local.detach().exp().amax(-1) > strategy.scale_threshold
        clone_mask = high & ~big
        split_mask = high & big
        n0 = avatar.num_splats
        avatar = duplicate(avatar, optimizer, clone_mask)
        split_mask = torch.cat([split_mask, torch.zeros(avatar.num_splats - n0, dtype=torch.bool,
                                                        device=split_mask.device)])
        avatar = split(avatar, optimizer, split_mask, strategy.split_factor, generator)
        info["cloned"], info["split"] = int(clone_mask.sum()), int(split_mask.sum())
        drop = torch.sigmoid(avatar.opacity_logits.detach()) < strategy.prune_opacity
        if strategy.prune_scale is not None:
            drop |= avatar.log_scales_local.detach().exp().amax(-1) > strategy.prune_scale
        n1 = avatar.num_splats
        avatar = prune(avatar, optimizer, drop)
        info["pruned"] = n1 - avatar.num_splats
        state = DensifyState.zeros(avatar.num_splats, device=avatar.means_local.device)
    if strategy.reset_every > 0 and step > 0 and step % strategy.reset_every == 0 \
            and step < strategy.refine_stop:
        avatar = reset_opacity(avatar, optimizer, strategy.reset_opacity)
        info["reset"] = True
    return avatar, state, info
