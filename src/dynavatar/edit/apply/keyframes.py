"""Which frames and views an edit is made on (the "dynamic editing strategy").

Editing every frame with a diffusion model is slow and inconsistent; editing one frame leaves
expressions and poses it never saw unconstrained. So a few keyframes are chosen to cover the
clip's expression and pose space (farthest-point sampling in standardised FLAME parameter space),
and each is also shown from a few novel head rotations, so the edited splats are pinned down in 3D.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ...flame import FlameParams
from ...flame.pose import rotate_head  # noqa: F401 - re-exported: novel views are head turns

__all__ = ["parameter_features", "farthest_point_keyframes", "View", "keyframe_views", "rotate_head"]


def parameter_features(params: FlameParams) -> Tensor:
    """What makes two frames look different, per frame: expression, jaw, eyes, head rotation and
    neck, each dimension standardised over the clip so no unit dominates.  -> [B, D]"""
    x = torch.cat([params.expr, params.jaw, params.eyes, params.rotation, params.neck], 1).float()
    std = x.std(0, unbiased=False)
    return (x - x.mean(0)) / torch.where(std > 1e-8, std, torch.ones_like(std))


def farthest_point_keyframes(params: FlameParams, k: int, candidates: Tensor | list[int] | None = None) -> list[int]:
    """Greedy farthest-point sampling: start from the frame nearest the clip's mean (the most
    typical one), then repeatedly add the candidate farthest from those chosen. Returns frame
    indices, in the order chosen."""
    feats = parameter_features(params)
    cand = torch.arange(params.batch_size) if candidates is None else torch.as_tensor(candidates).long().cpu()
    if len(cand) == 0:
        raise ValueError("no candidate frames to choose keyframes from")
    f = feats[cand]
    chosen = [int(f.norm(dim=1).argmin())]
    dist = (f - f[chosen[0]]).norm(dim=1)
    while len(chosen) < min(k, len(cand)):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (f - f[nxt]).norm(dim=1))
    return [int(cand[i]) for i in chosen]


@dataclasses.dataclass(frozen=True)
class View:
    frame: int  # training frame whose expression/pose is used
    yaw: float = 0.0  # extra head rotation about the vertical axis, radians (novel view when != 0)
    pitch: float = 0.0  # extra head rotation about the horizontal axis, radians


def keyframe_views(keyframes: list[int], novel_yaws: tuple[float, ...] = (), novel_every: int = 2) -> list[View]:
    """Each keyframe as seen, plus novel head rotations on every ``novel_every``-th keyframe."""
    views = [View(f) for f in keyframes]
    for j, f in enumerate(keyframes):
        if j % max(novel_every, 1) == 0:
            views += [View(f, yaw=y) for y in novel_yaws]
    return views
