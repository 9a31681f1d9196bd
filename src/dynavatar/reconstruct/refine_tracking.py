"""Photometric tracking refinement: fit per-frame FLAME motion to frames with the avatar frozen.

The tracker fits landmarks only; training frames then get their expression/pose/translation refined
jointly with the splats (photometrically), but frames the avatar never trained on keep the landmark
fit, and a 1-2 px misalignment of a textured face costs several dB. Published self-reenactment
numbers come from photometric trackers (a textured 3DMM fitted to every frame, test frames included).
This is the same analysis by synthesis with the fitted avatar as the appearance model: only the
motion parameters of the given frames move (identity and splats are frozen), starting from the
tracked values and pulled back to them by a small prior, so nothing of the frames' appearance can
leak into the avatar.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar
from ..gaussians.binding import bind
from .data import TrainData
from .landmark_anchor import anchor_applies, landmark_anchor, landmark_budget, landmark_nme_per_frame
from ..geometry.photometric import photometric_loss

__all__ = ["RefineTrackingConfig", "refine_frame_params", "track_untrained_frames", "MOTION_FIELDS", "motion_optimizer"]

#: The per-frame parameters that move (shape is the clip's identity and stays). The tracker fits
#: the head's rotation at FLAME's root; "neck" lets the photometric fit keep the base of the neck
#: (the collar line) where the image has it while the head turns, and "torso" shifts the torso
#: sheet on its own (``FlameParams.torso``): both start at zero.
MOTION_FIELDS = ("expr", "rotation", "neck", "jaw", "eyes", "translation", "torso")
#: Metres -> centimetres in the prior, so translation is weighed like expression units and radians.
_PRIOR_SCALE = {"expr": 1.0, "rotation": 1.0, "neck": 1.0, "jaw": 1.0, "eyes": 1.0, "translation": 100.0,
                "torso": 100.0}


def motion_optimizer(delta: dict[str, Tensor], lr_expr: float, lr_pose: float, lr_translation: float,
                     lr_torso: float, fused: bool = False) -> torch.optim.Adam:
    """Adam over per-frame motion offsets (``MOTION_FIELDS``) with one rate per kind of unit."""
    return torch.optim.Adam([{"params": [delta["expr"]], "lr": lr_expr},
                             {"params": [delta["rotation"], delta["neck"], delta["jaw"], delta["eyes"]], "lr": lr_pose},
                             {"params": [delta["translation"]], "lr": lr_translation},
                             {"params": [delta["torso"]], "lr": lr_torso}], fused=fused)


@dataclasses.dataclass
class RefineTrackingConfig:
    steps: int = 150  # Adam steps per chunk of frames
    chunk: int = 8  # frames optimised together
    lr_expr: float = 1e-2
    lr_pose: float = 1e-3  # radians
    lr_translation: float = 1e-4  # metres
    lr_torso: float = 3e-4  # metres (starts at 0: the shoulders' shift is not tracked)
    w_prior: float = 1e-3  # squared distance to the tracked values (expression units / radians / cm)
    w_landmarks: float = 0.0  # robust reprojection error of the detected landmarks (``landmark_anchor``); off:
    # on held-out frames it costs far more PSNR than it gains lips IoU (docs/benchmarks.md)
    landmark_points: str = "all"  # "all" or "mouth" (``ANCHOR_POINTS``)
    w_landmark_budget: float = 0.0  # > 0: a frame's landmark error may not rise above its starting motion's
    # (``landmark_budget``), so the refinement cannot make the landmark fit worse
    w_l1: float = 0.8
    w_dssim: float = 0.2


def refine_frame_params(avatar: GaussianAvatar, model: FlameModel, params: FlameParams, data: TrainData,
                        frames: Tensor | list[int], renderer, config: RefineTrackingConfig | None = None,
                        background=(1.0, 1.0, 1.0), progress: bool = False) -> FlameParams:
    """``params`` with the motion of ``frames`` refined against ``data``'s images.  -> FlameParams [N]"""
    cfg = config or RefineTrackingConfig()
    dev = data.images.device
    frames = torch.as_tensor(frames, dtype=torch.long, device=dev).reshape(-1)
    params = params.with_torso()
    bg = torch.tensor(background, device=dev, dtype=torch.float32)
    g0 = avatar.detach()
    out = {k: getattr(params, k).detach().clone() for k in MOTION_FIELDS}
    chunks = list(frames.split(cfg.chunk)) if len(frames) else []  # split() of nothing is one empty chunk
    anchored = anchor_applies(cfg.w_landmarks, data, model)
    budget = landmark_nme_per_frame(model, params, data) if cfg.w_landmark_budget > 0 else None  # [N]
    for idx in tqdm(chunks, desc="refine tracking", disable=not progress, unit="chunk"):
        base = params[idx]
        delta = {k: torch.zeros_like(getattr(base, k), requires_grad=True) for k in MOTION_FIELDS}
        opt = motion_optimizer(delta, cfg.lr_expr, cfg.lr_pose, cfg.lr_translation, cfg.lr_torso)
        target, _ = data.targets(idx, bg)
        seen = data.seen(idx)
        cams = data.cameras[idx] if len(idx) > 1 else data.cameras[int(idx[0])]
        for _ in range(cfg.steps):
            p = base.replace(**{k: getattr(base, k) + delta[k] for k in MOTION_FIELDS})
            verts = model(p, landmark_set=None, check_finite=False).vertices
            pred = renderer.render(bind(g0, verts, model.faces), cams, background=bg).rgb
            loss = photometric_loss(pred, target, cfg.w_l1, cfg.w_dssim, seen)
            loss = loss + cfg.w_prior * sum((_PRIOR_SCALE[k] * d).square().sum(-1).mean() for k, d in delta.items())
            if anchored:
                loss = loss + cfg.w_landmarks * landmark_anchor(model, verts, cams, data.landmarks[idx],
                                                                data.landmarks_valid[idx], points=cfg.landmark_points)
            if budget is not None:
                loss = loss + cfg.w_landmark_budget * landmark_budget(model, verts, cams, data.landmarks[idx],
                                                                      budget[idx.to(budget.device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            for k in MOTION_FIELDS:
                step = delta[k].detach()
                ok = torch.isfinite(step).all(-1, keepdim=True)  # a diverged frame keeps its tracked value
                out[k][idx] = getattr(base, k) + torch.where(ok, step, torch.zeros_like(step))
    return params.replace(**out)


def track_untrained_frames(avatar: GaussianAvatar, model: FlameModel, params: FlameParams, data: TrainData, renderer,
                           steps: int, background=(1.0, 1.0, 1.0), progress: bool = False,
                           w_landmark_budget: float = 0.0) -> FlameParams:
    """The pipeline's photometric tracking stage: after the fit, the frames it did not train on (the
    held-out tail) get their motion fitted to their pixels with the avatar frozen, as the trained
    frames' motion already was during training, so the stored motion of every frame is photometric
    and renders of the whole clip (and its held-out figures without an evaluation-time refinement)
    line up. Only motion moves (``refine_frame_params``), so no appearance of those frames reaches
    the avatar; ``w_landmark_budget`` > 0 keeps each frame's landmark error within the landmark
    fit's (``landmark_budget``). ``steps`` 0, or no untrained frames: ``params`` unchanged.  -> FlameParams [N]"""
    if steps <= 0 or not len(data.eval_idx):
        return params
    cfg = RefineTrackingConfig(steps=steps, w_landmark_budget=w_landmark_budget)
    return refine_frame_params(avatar, model, params, data, data.eval_idx, renderer, cfg, background, progress)
