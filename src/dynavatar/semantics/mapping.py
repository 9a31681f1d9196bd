"""Masks at any time and pose for an avatar: the exact route as a sampler, and the learned
MaskMapper trained from it.

Time t in [0, 1] indexes the clip (frame round(t (N-1))), pose p = (yaw, pitch) radians is an extra
head turn in front of that frame's camera (``rotate_head``), the same novel poses the editor uses.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..flame import FlameParams
from ..flame.pose import rotate_head
from ..gaussians.binding import bind
from .coverage import render_coverage
from .mapper_config import MaskMapperConfig
from .mapper_network import MaskMapper
from .mapper_training import evaluate_mask_mapper, train_mask_mapper

__all__ = ["exact_route_sampler", "fit_mask_mapper", "route_frames"]


def route_frames(t: Tensor, n: int) -> list[int]:
    """The clip frame the exact route shows at each time t [B] in [0, 1] of an n-frame clip:
    round(t (n - 1)). Anything set beside the route (reference masks, pictures) indexes with this."""
    return (torch.as_tensor(t).clamp(0, 1) * (n - 1)).round().long().tolist()


def exact_route_sampler(gaussians, model, params: FlameParams, cameras, selected: Tensor, renderer):
    """sample_fn(t [B], pose [B, 2]) -> masks [B, H, W]: the selected splats rendered at (t, pose)."""
    n = params.batch_size
    dev = gaussians.means_local.device

    @torch.no_grad()
    def sample(t: Tensor, pose: Tensor) -> Tensor:
        frames = route_frames(t, n)
        p = FlameParams.cat([rotate_head(params[f], float(yp[0]), float(yp[1])) for f, yp in zip(frames, pose.tolist())])
        verts = model(p.to(dev), landmark_set=None).vertices
        g = bind(gaussians, verts, model.faces)
        return render_coverage(g, cameras[torch.tensor(frames)].to(dev), selected, renderer)  # [B, H, W]
    return sample


def fit_mask_mapper(gaussians, model, params: FlameParams, cameras, selected: Tensor, renderer, frame0: int,
                    config: MaskMapperConfig | None = None, n_eval: int = 48, seed: int = 123,
                    progress: bool = True) -> tuple[MaskMapper, dict]:
    """Train a MaskMapper for the splats ``selected`` (the exact route's first half) seen at
    ``frame0``, and report its IoU against the exact route at ``n_eval`` random held-out (t, pose):
    {"iou_mean", "iou_min", "history", and per point "eval_t", "eval_pose", "eval_iou"} (lists, so
    that where it fails — which frames, which head turns — can be looked at).

    The mapper is told the clip's frame count (``t_frames``, unless the config sets one): the exact
    route shows frame round(t (N - 1)), and reading the codes at that frame's time instead of in between
    lets the mapper follow a small region that changes every frame ("Frames" in the mask_mapper module
    docstring)."""
    cfg = config or MaskMapperConfig.preset("fast")
    if cfg.t_frames == 0 and params.batch_size > 1:
        cfg = dataclasses.replace(cfg, t_frames=params.batch_size)
    sample = exact_route_sampler(gaussians, model.to(gaussians.means_local.device), params, cameras, selected, renderer)
    t0 = frame0 / max(params.batch_size - 1, 1)
    dev = gaussians.means_local.device
    mapper, history = train_mask_mapper(sample, cfg, t0=t0, pose0=[0.0, 0.0], progress=progress, device=dev)
    g = torch.Generator().manual_seed(seed)
    ts = torch.rand(n_eval, generator=g)
    lo = torch.tensor([r[0] for r in cfg.pose_range])
    hi = torch.tensor([r[1] for r in cfg.pose_range])
    poses = lo + (hi - lo) * torch.rand(n_eval, cfg.pose_dim, generator=g)
    ev = evaluate_mask_mapper(mapper, sample, ts, poses)
    return mapper, {"iou_mean": float(ev["iou_mean"]), "iou_min": float(ev["iou_min"]), "history": history,
                    "eval_t": ts.tolist(), "eval_pose": poses.tolist(), "eval_iou": ev["per_sample"].tolist()}
