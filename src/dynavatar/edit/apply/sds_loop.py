"""``method="sds"``: edit the region's splats by view-and-time-aware score distillation.

AvatarStudio's route, on our FLAME-bound splats: renders of random training frames (time) under
random head turns (view) are scored by a text-to-image diffusion model (``SDSGuidance``), whose
gradient flows only into the region's splats; every other splat is restored after each step. With
``personalise_steps > 0`` the diffusion model is first LoRA-tuned on renders of the keyframes, so
the score pulls towards "this person, edited" rather than towards a generic face. Slower and less
literal than the iterative dataset update, but needs no image editor and no 2D edits at all.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import GaussianAvatar
from ...geometry.cameras import Cameras
from ..plan import EditPlan
from .keyframes import View, farthest_point_keyframes
from .region import EditResult, prepare_region, region_masks, region_optimizer, region_step, render_views
from .sds_guidance import SDSGuidance

__all__ = ["SDSEditConfig", "edit_splats_sds"]


@dataclasses.dataclass
class SDSEditConfig:
    """Settings of the SDS edit loop (the diffusion model's own settings are ``SDSConfig``)."""

    steps: int = 400  # optimisation steps
    views_per_step: int = 2  # renders scored per step
    yaw_range: float = 0.6  # random head turns in [-yaw_range, yaw_range] radians (the "view" of SDS)
    keyframes: int = 6  # frames used for LoRA personalisation and as time anchors
    personalise_steps: int = 0  # LoRA steps on keyframe renders before distillation (0: off)
    subject: str = "a photo of sks person"  # the personalisation prompt (the subject's token)
    region_threshold: float = 0.5  # label probability above which a splat belongs to the region
    lr_colour: float = 1e-2  # SH coefficients
    lr_opacity: float = 2e-2
    lr_geometry: float = 1e-3  # local positions/scales/rotations; used by accessory/appearance/remove edits
    clone_for_accessory: bool = True  # double the region's splats for additive edits (room for new geometry)
    seed: int = 0


def edit_splats_sds(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, cameras: Cameras,
                    train_idx: Tensor, plan: EditPlan, guidance, renderer, background: Tensor,
                    config: SDSEditConfig | None = None, progress: bool = True) -> EditResult:
    """Score-distil the plan's prompt into the region's splats. ``guidance``: an SDSGuidance
    (``SDSGuidance.from_pretrained()`` when None: Stable Diffusion from the local cache)."""
    cfg = config or SDSEditConfig()
    t0 = time.perf_counter()
    if guidance is None:
        guidance = SDSGuidance.from_pretrained()
    dev = gaussians.means_local.device
    model = model.to(dev)
    g, sel, gen = prepare_region(gaussians, plan, cfg.region_threshold, cfg.clone_for_accessory, cfg.seed)
    n_frames = params.batch_size
    time_of = lambda f: f / max(n_frames - 1, 1)  # noqa: E731 - normalised clip time of a frame
    keyframes = farthest_point_keyframes(params, cfg.keyframes, train_idx.cpu())
    prompt = plan.positive_prompt or plan.instruction
    if cfg.personalise_steps > 0:
        with torch.no_grad():
            imgs, _, _ = render_views(g, model, params, cameras, [View(f) for f in keyframes], renderer, background)
        guidance.personalise(imgs, cfg.subject, steps=cfg.personalise_steps, times=[time_of(f) for f in keyframes])
        prompt = f"{cfg.subject}, {prompt}"
    frozen = {k: v.detach().clone() for k, v in g.parameters_dict().items()}
    opt = region_optimizer(g, plan, cfg.lr_colour, cfg.lr_opacity, cfg.lr_geometry)
    history = []
    views_seen: list[View] = []
    bar = tqdm(range(cfg.steps), desc=f"sds '{plan.prompt}'", disable=not progress, unit="step")
    for step in bar:
        frames = train_idx[torch.randint(len(train_idx), (cfg.views_per_step,), generator=gen).to(train_idx.device)]
        yaws = (torch.rand(cfg.views_per_step, generator=gen) * 2 - 1) * cfg.yaw_range
        vs = [View(int(f), yaw=float(y)) for f, y in zip(frames.tolist(), yaws)]
        pred, wg, cams = render_views(g, model, params, cameras, vs, renderer, background)
        with torch.no_grad():
            m = region_masks(wg, cams, g.labels, plan, renderer)
        loss = guidance.loss(pred, [math.degrees(v.yaw) for v in vs], [0.0] * len(vs),
                             [time_of(v.frame) for v in vs], step, cfg.steps, m, prompt=prompt,
                             negative=plan.negative_prompt)
        region_step(loss, opt, g, frozen, sel, step, cfg.steps, history, bar, "SDS")
        views_seen += vs
    if cfg.personalise_steps > 0:
        guidance.remove_lora()
    return EditResult(g.detach(), views_seen[:32], sel, history, time.perf_counter() - t0)
