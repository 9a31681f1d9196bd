"""``method="sds"``: edit the region's splats by view-and-time-aware score distillation (VT-SDS).

AvatarStudio's route, on our FLAME-bound splats, on by default:

1. **Keyframes** from the dynamic editing strategy (``keyframes.farthest_point_keyframes``: frames
   spread over the clip's expressions and poses), each seen as tracked and under head turns of
   +-``yaw_range`` (``keyframe_views``), so the keyframes cover several views AND several times.
2. **Personalisation**: a LoRA (``lora.py``) is fine-tuned on renders of those keyframe views, each
   with its own view token (front / side / back, from the camera as the head sees it:
   ``sds_maths.head_view_angles``, with thresholds the head turns reach) and time token (the
   keyframe's normalised clip time, ``sds_maths.time_tag``), so the model learns "this person, from
   this side, at this moment".
3. **Distillation**: renders of random training frames (time) under random head turns (view) are
   scored by the personalised model with the edit prompt carrying the SAME tokens (subject, view
   word, the time token blended between the two keyframes around the frame's time); the gradient
   flows only into the region's splats, every other splat is restored after each step.

``SDSEditConfig.preset("quick")`` is a short look (few steps, a light personalisation);
``personalise_steps=0`` gives plain view-aware SDS. The region is the plan's labels or a mask the
user drew on one frame (``region.DrawnRegion``).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import InvalidParametersError
from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import GaussianAvatar
from ...geometry.cameras import Cameras
from ..plan import EditPlan
from .keyframes import View, farthest_point_keyframes, keyframe_views
from .region import (DrawnRegion, EditResult, pose_views, prepare_region, region_optimizer, region_step,
                     render_views, view_masks)
from .sds_guidance import SDSGuidance
from .sds_maths import head_view_angles, time_tag

__all__ = ["SDSEditConfig", "edit_splats_sds", "view_time_tokens"]


@dataclasses.dataclass
class SDSEditConfig:
    """Settings of the SDS edit loop (the diffusion model's own settings are ``SDSConfig``)."""

    steps: int = 400  # optimisation steps
    views_per_step: int = 2  # renders scored per step
    yaw_range: float = 0.8  # random head turns in [-yaw_range, yaw_range] radians (46 deg: reaches "side view")
    keyframes: int = 6  # frames used for LoRA personalisation and as time anchors
    keyframe_yaws: tuple[float, ...] = (-0.8, 0.8)  # head turns each keyframe is also personalised under
    personalise_steps: int = 150  # LoRA steps on keyframe renders before distillation (0: plain view-aware SDS)
    subject: str = "a photo of sks person"  # the personalisation prompt (the subject's token)
    region_threshold: float = 0.5  # label probability above which a splat belongs to the region
    lr_colour: float = 1e-2  # SH coefficients
    lr_opacity: float = 2e-2
    lr_geometry: float = 1e-3  # local positions/scales/rotations; used by accessory/appearance/remove edits
    clone_for_accessory: bool = True  # double the region's splats for additive edits (room for new geometry)
    seed: int = 0

    @classmethod
    def preset(cls, name: str, **overrides) -> "SDSEditConfig":
        """``quick``: a look in minutes (100 steps, 3 keyframes, 30 LoRA steps); ``default``: the
        defaults; ``quality``: more keyframes, personalisation and steps (a GPU's work)."""
        presets = {"quick": dict(steps=100, keyframes=3, personalise_steps=30), "default": {},
                   "quality": dict(steps=800, keyframes=8, personalise_steps=400)}
        if name not in presets:
            raise InvalidParametersError(f"unknown SDSEditConfig preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


def view_time_tokens(params: FlameParams, cameras: Cameras, views: list[View], n_frames: int
                     ) -> tuple[list[float], list[float], list[float]]:
    """Per view: the camera's yaw and pitch as the head sees it (degrees) and the normalised clip
    time of its frame.  -> (yaw [V], pitch [V], t [V])"""
    p = pose_views(params, views)
    cams = cameras[torch.tensor([v.frame for v in views])]
    yaw, pitch = head_view_angles(p.rotation, p.translation, cams.viewmats.to(p.rotation.device))
    return yaw.tolist(), pitch.tolist(), [v.frame / max(n_frames - 1, 1) for v in views]


def _personalise(guidance, g, model, params, cameras, keyframes: list[int], cfg: SDSEditConfig, renderer,
                 background, n_frames: int) -> dict:
    """Register the keyframes' time tokens; LoRA-tune on renders of their views, each with its own
    view and time tokens (step 2 of the module doc). -> what it did, for the record."""
    times = sorted({f / max(n_frames - 1, 1) for f in keyframes})
    guidance.set_keyframes(times, [time_tag(t) for t in times])
    views = keyframe_views(keyframes, tuple(cfg.keyframe_yaws), novel_every=1)
    with torch.no_grad():
        imgs, _, _ = render_views(g, model, params, cameras, views, renderer, background)
    yaw, pitch, t = view_time_tokens(params, cameras, views, n_frames)
    res = guidance.personalise(imgs, cfg.subject, steps=cfg.personalise_steps, yaw=yaw, pitch=pitch, t=t)
    up = sum(float(p.detach().norm()) for p in guidance.lora_parameters()[1::2])  # "up" starts at 0
    return {"keyframe_views": [dataclasses.asdict(v) for v in views], "lora_losses": res.losses, "lora_up_norm": up,
            "lora_parameters": res.trainable_parameters,
            "lora_prompts": sorted({a if w < 0.5 else b for a, b, w in guidance.condition_texts(cfg.subject, yaw, pitch, t)})}


def edit_splats_sds(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, cameras: Cameras,
                    train_idx: Tensor, plan: EditPlan, guidance, renderer, background: Tensor,
                    config: SDSEditConfig | None = None, progress: bool = True,
                    drawn: DrawnRegion | None = None) -> EditResult:
    """Score-distil the plan's prompt into the region's splats (VT-SDS, see the module doc).
    ``guidance``: an SDSGuidance (``SDSGuidance.from_pretrained()`` when None: Stable Diffusion
    from the cache, fetched on first use unless offline)."""
    cfg = config or SDSEditConfig()
    t0 = time.perf_counter()
    if guidance is None:
        guidance = SDSGuidance.from_pretrained()
    dev = gaussians.means_local.device
    model = model.to(dev)
    g, sel, gen = prepare_region(gaussians, plan, cfg.region_threshold, cfg.clone_for_accessory, cfg.seed, drawn)
    n_frames = params.batch_size
    keyframes = farthest_point_keyframes(params, cfg.keyframes, train_idx.cpu())
    prompt = plan.positive_prompt or plan.instruction
    info: dict = {"config": dataclasses.asdict(cfg), "keyframes": keyframes,
                  "route": drawn.route if drawn is not None else "labels"}
    if cfg.personalise_steps > 0:
        info.update(_personalise(guidance, g, model, params, cameras, keyframes, cfg, renderer, background,
                                 n_frames))
        prompt = f"{cfg.subject}, {prompt}"
    frozen = {k: v.detach().clone() for k, v in g.parameters_dict().items()}
    opt = region_optimizer(g, plan, cfg.lr_colour, cfg.lr_opacity, cfg.lr_geometry)
    history, views_seen, prompts_seen = [], [], set()
    info["lora_in_use"] = guidance.has_lora
    bar = tqdm(range(cfg.steps), desc=f"sds '{plan.prompt}'", disable=not progress, unit="step")
    try:
        for step in bar:
            frames = train_idx[torch.randint(len(train_idx), (cfg.views_per_step,), generator=gen).to(train_idx.device)]
            yaws = (torch.rand(cfg.views_per_step, generator=gen) * 2 - 1) * cfg.yaw_range
            vs = [View(int(f), yaw=float(y)) for f, y in zip(frames.tolist(), yaws)]
            pred, wg, cams = render_views(g, model, params, cameras, vs, renderer, background)
            with torch.no_grad():
                m = view_masks(wg, cams, g.labels, plan, renderer, vs, sel, drawn)
            yaw, pitch, t = view_time_tokens(params, cameras, vs, n_frames)
            prompts_seen.update(a if w < 0.5 else b for a, b, w in guidance.condition_texts(prompt, yaw, pitch, t))
            loss = guidance.loss(pred, yaw, pitch, t, step, cfg.steps, m, prompt=prompt, negative=plan.negative_prompt)
            region_step(loss, opt, g, frozen, sel, step, cfg.steps, history, bar, "SDS")
            views_seen += vs
    finally:
        if cfg.personalise_steps > 0:
            guidance.remove_lora()
            guidance.clear_keyframes()
    info["prompts"] = sorted(prompts_seen)
    return EditResult(g.detach(), views_seen[:32], sel, history, time.perf_counter() - t0, info=info)
