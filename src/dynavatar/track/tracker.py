"""Fit one FLAME model to a whole preprocessed clip from its dense landmarks.

Unknowns: identity ``shape`` and the focal length shared by the clip; per frame the expression,
jaw, neck, eyes, head rotation and translation. The camera is fixed at the origin looking down
FLAME's -z axis (OpenCV: x right, y down, z forward); the head moves in front of it. The crop has
one side length for the whole clip (see ``perceive.crop``), so one focal length fits every frame.

Objective (all frames optimised together, in two stages: rigid, then everything):
  * robust (Cauchy) reprojection error of the 478 landmarks, in units of the crop size;
  * temporal smoothness of pose, expression, jaw and eyes between consecutive frames;
  * Gaussian priors on shape and expression, small-angle priors on neck, jaw and eyes.
Frames without a detection carry no data term and are filled by the smoothness term.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..device import resolve_device
from ..errors import InvalidParametersError
from ..flame import FlameModel, FlameParams
from ..perceive.dataset import FrameDataset
from ..geometry.cameras import Cameras
from ..geometry.landmark_sets import MP_FACE_OVAL, MP_OUTER_EYE_CORNERS
from .landmark_model import LandmarkFlame
from .result import TrackingResult

__all__ = ["TrackerConfig", "track", "camera_viewmat", "project", "interocular"]

logger = logging.getLogger("dynavatar.track")

@dataclasses.dataclass
class TrackerConfig:
    n_shape: int = 100  # identity coefficients to fit (capped at the model's)
    n_expr: int = 100  # expression coefficients to fit (capped at the model's)
    rigid_steps: int = 150  # stage 1: pose, translation, focal, coarse shape
    steps: int = 500  # stage 2: everything
    lr: float = 0.01  # base Adam learning rate (per-group multiples below)
    robust_sigma: float = 0.004  # Cauchy scale of the reprojection error, fraction of the crop size
    oval_weight: float = 0.5  # weight of face-oval (silhouette) landmarks
    w_shape: float = 2e-3  # prior on identity coefficients
    w_expr: float = 1e-3  # prior on expression coefficients
    w_neck: float = 1.0  # neck rotation prior (global rotation explains head pose)
    w_jaw: float = 0.1  # jaw rotation prior (side/twist axes get 10x)
    w_eyes: float = 0.01  # eye rotation prior
    w_smooth_pose: float = 5.0  # temporal smoothness of rotation/translation (per frame step)
    w_smooth_expr: float = 0.05  # temporal smoothness of expression, jaw and eyes
    init_focal: float = 2.0  # initial focal length, in units of the crop size
    device: str = "auto"  # "auto": CUDA if available

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrackerConfig":
        """Named settings (``tiny`` for tests, ``fast``, ``default``, ``quality``), with ``overrides``
        changing fields of it, e.g. ``TrackerConfig.preset("fast", device="cpu")``."""
        presets = {
            "tiny": dict(n_shape=20, n_expr=20, rigid_steps=60, steps=150),
            "fast": dict(rigid_steps=100, steps=300),
            "default": dict(),
            "quality": dict(rigid_steps=200, steps=1000),
        }
        if name not in presets:
            raise ValueError(f"unknown tracker preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


def camera_viewmat(dtype=torch.float32, device=None) -> Tensor:
    """World (FLAME: y up, z toward the viewer) -> OpenCV camera at the origin.  -> [4, 4]"""
    return torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=dtype, device=device))


def project(points: Tensor, focal: Tensor, resolution: int) -> Tensor:
    """Points in FLAME world [B, L, 3] -> crop pixels [B, L, 2] (pixel-edge convention)."""
    x, y, z = points.unbind(-1)
    zc = (-z).clamp_min(1e-3)  # camera z
    c = resolution / 2.0
    return torch.stack([focal * x / zc + c, focal * (-y) / zc + c], -1)


def interocular(lmk_2d: np.ndarray) -> np.ndarray:
    """Inter-ocular distance (outer eye corners) per frame.  [N, L, 2] -> [N]"""
    a, b = MP_OUTER_EYE_CORNERS
    return np.linalg.norm(lmk_2d[:, a, :2] - lmk_2d[:, b, :2], axis=-1)


def _initial_translation(target: Tensor, valid: Tensor, rest_lmk: Tensor, focal: float, res: int) -> Tensor:
    """Per-frame translation that puts the neutral face where the detections are, at the depth
    that matches its size.  target [N, L, 2] pixels -> [N, 3] metres."""
    a, b = MP_OUTER_EYE_CORNERS
    model_iod = (rest_lmk[a] - rest_lmk[b]).norm()
    img_iod = (target[:, a] - target[:, b]).norm(dim=-1).clamp_min(1.0)
    depth = focal * model_iod / img_iod  # [N]
    centre = target.mean(1) - res / 2.0  # [N, 2]
    rest_centre = rest_lmk.mean(0)
    tx = centre[:, 0] * depth / focal - rest_centre[0]
    ty = -centre[:, 1] * depth / focal - rest_centre[1]
    tz = -depth - rest_centre[2]
    t = torch.stack([tx, ty, tz], -1)
    if (~valid).any():  # frames without detection: nearest detected frame's value
        idx = torch.arange(len(t), device=t.device)
        vidx = idx[valid]
        nearest = vidx[(idx[:, None] - vidx[None]).abs().argmin(1)]
        t = t[nearest]
    return t


def track(dataset: FrameDataset, head: FlameModel | str | None = None, config: TrackerConfig | None = None,
          progress: bool = True) -> TrackingResult:
    """Track FLAME through every frame of a preprocessed clip."""
    cfg = config or TrackerConfig()
    dev = resolve_device(cfg.device)
    t_start = time.perf_counter()
    model = head if isinstance(head, FlameModel) else FlameModel.load(head)
    n_shape, n_expr = min(cfg.n_shape, model.n_shape), min(cfg.n_expr, model.n_expr)
    model = model.with_components(n_shape, n_expr)
    model = model.to(dev)
    lmk_model = LandmarkFlame(model, "mediapipe").to(dev)
    n, res = len(dataset), dataset.resolution
    if dataset.lmk_crop.shape[1] != lmk_model.bary.shape[0]:
        raise InvalidParametersError(
            f"the dataset has {dataset.lmk_crop.shape[1]} landmarks per frame but the head model embeds "
            f"{lmk_model.bary.shape[0]}; preprocess with the mediapipe (478-point) detector")

    target = torch.as_tensor(dataset.lmk_crop[..., :2], dtype=torch.float32, device=dev)  # [N, L, 2]
    valid = torch.as_tensor(dataset.detected, device=dev)
    weights = torch.ones(target.shape[1], device=dev)
    weights[list(MP_FACE_OVAL)] = cfg.oval_weight
    frame_w = valid.float()

    zeros = lambda *s: torch.zeros(*s, device=dev)  # noqa: E731
    rest = lmk_model(FlameParams.zeros(1, n_shape, n_expr, device=dev))[0]
    focal0 = cfg.init_focal * res
    var = {
        "rotation": zeros(n, 3), "translation": _initial_translation(target, valid, rest, focal0, res),
        "shape": zeros(1, n_shape), "expr": zeros(n, n_expr), "jaw": zeros(n, 3), "neck": zeros(n, 3),
        "eyes": zeros(n, 6), "log_focal": torch.tensor(math.log(cfg.init_focal), device=dev),
    }
    for v in var.values():
        v.requires_grad_(True)
    lr_scale = {"rotation": 1.0, "translation": 0.3, "shape": 3.0, "expr": 5.0, "jaw": 1.0, "neck": 0.3,
                "eyes": 1.0, "log_focal": 0.5}

    def params_now() -> FlameParams:
        return FlameParams(shape=var["shape"].expand(n, -1), expr=var["expr"], rotation=var["rotation"],
                           neck=var["neck"], jaw=var["jaw"], eyes=var["eyes"], translation=var["translation"])

    def loss_fn(stage: int) -> tuple[Tensor, Tensor]:
        p = params_now()
        focal = var["log_focal"].exp() * res
        proj = project(lmk_model(p), focal, res)  # [N, L, 2]
        r2 = ((proj - target) / res).square().sum(-1)  # [N, L]
        data = (torch.log1p(r2 / cfg.robust_sigma**2) * weights).sum(1) / weights.sum()  # [N]
        loss = (data * frame_w).sum() / frame_w.sum().clamp_min(1.0)
        loss = loss + cfg.w_shape * var["shape"].square().mean() * n_shape / 10
        if n > 1:
            d = lambda x: (x[1:] - x[:-1]).square().sum(-1).mean()  # noqa: E731
            loss = loss + cfg.w_smooth_pose * (d(var["rotation"]) + d(var["translation"]) * 100)
            if stage == 2:
                loss = loss + cfg.w_smooth_expr * (d(var["expr"]) / 10 + d(var["jaw"]) * 10 + d(var["eyes"]))
        if stage == 2:
            jaw = var["jaw"]
            loss = loss + cfg.w_expr * var["expr"].square().sum(-1).mean()
            loss = loss + cfg.w_jaw * (jaw[:, 1:].square().sum(-1) * 10 + torch.relu(-jaw[:, 0]).square() * 10).mean()
            loss = loss + cfg.w_neck * var["neck"].square().sum(-1).mean() + cfg.w_eyes * var["eyes"].square().sum(-1).mean()
        return loss, r2

    stages = [(1, cfg.rigid_steps, ("rotation", "translation", "log_focal", "shape")),
              (2, cfg.steps, tuple(var))]
    timings = {}
    for stage, steps, names in stages:
        t0 = time.perf_counter()
        opt = torch.optim.Adam([{"params": [var[k]], "lr": cfg.lr * lr_scale[k]} for k in names])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** (s / max(steps, 1)))
        bar = tqdm(range(steps), desc=f"track stage {stage}", disable=not progress, leave=False)
        for _ in bar:
            opt.zero_grad(set_to_none=True)
            loss, _ = loss_fn(stage)
            if not torch.isfinite(loss):
                raise InvalidParametersError("tracking diverged (loss is NaN/inf); check the landmarks or lower lr")
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        timings[f"stage{stage}_s"] = round(time.perf_counter() - t0, 3)

    with torch.no_grad():
        p = params_now().map(lambda t: t.detach().clone())
        focal = var["log_focal"].exp() * res
        proj = project(lmk_model(p), focal, res).cpu().numpy()
    det = dataset.lmk_crop[..., :2]
    err = np.linalg.norm(proj - det, axis=-1).mean(1) / np.maximum(interocular(det), 1e-6)
    err = np.where(dataset.detected, err, np.nan)
    K = torch.tensor([[focal.item(), 0, res / 2], [0, focal.item(), res / 2], [0, 0, 1]])
    cams = Cameras(camera_viewmat().expand(n, 4, 4).clone(), K.expand(n, 3, 3).clone(), res, res)
    timings["total_s"] = round(time.perf_counter() - t_start, 3)
    head_info = {"source": getattr(model, "source", "?"), "n_shape": n_shape, "n_expr": n_expr}
    result = TrackingResult(params=p.to("cpu"), cameras=cams, frame_index=dataset.frame_index.copy(),
                            crop=dataset.crop.copy(), detected=dataset.detected.copy(), landmarks_2d=proj,
                            lmk_error=err, head=head_info, timings=timings)
    s = result.summary()
    logger.info("tracked %d frames in %.1fs: landmark error mean %.2f%% max %.2f%% of inter-ocular distance",
                n, timings["total_s"], 100 * (s["lmk_error_mean"] or 0), 100 * (s["lmk_error_max"] or 0))
    return result

