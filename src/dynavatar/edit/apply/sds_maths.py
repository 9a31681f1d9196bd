"""The pure functions of score distillation: view words, timestep schedule, weights, keyframe blending.

Tensors in, tensors out, no model: ``SDSGuidance`` (``sds_guidance.py``) composes them with the
diffusion components, and tests check them on their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import DynavatarError, InvalidParametersError
from ...geometry.cameras import camera_centers
from ...geometry.rotations import axis_angle_to_matrix
from .sds_config import WEIGHTINGS, SDSConfig

__all__ = ["view_word", "view_angles", "head_view_angles", "time_tag", "timestep_range", "sds_weight", "keyframe_blend", "latent_mask",
           "sds_surrogate", "eps_from_prediction", "add_noise"]


def view_word(yaw_deg: float, pitch_deg: float, front_deg: float = 45.0, back_deg: float = 135.0,
              overhead_deg: float = 60.0) -> str:
    """DreamFusion's view words from camera yaw (0 = facing the face) and pitch (elevation), degrees."""
    yaw = (float(yaw_deg) + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    if float(pitch_deg) >= overhead_deg:
        return "overhead view"
    if abs(yaw) <= front_deg:
        return "front view"
    if abs(yaw) >= back_deg:
        return "back view"
    return "side view"


def view_angles(viewmats: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Yaw and pitch (degrees) of cameras around a head at ``target`` (default the origin).

    viewmats: [C, 4, 4] world-to-camera (OpenCV); world axes are FLAME's: y up, the face looks
    along +z. yaw = atan2(x, z) of the camera centre relative to the head (0 = in front, +-90 =
    profile, 180 = behind; ``orbit_eyes`` azimuths), pitch = its elevation (positive = above).
    -> (yaw [C], pitch [C]).
    """
    d = camera_centers(viewmats)  # [C, 3]
    if target is not None:
        d = d - target.to(d).reshape(1, 3)
    yaw = torch.rad2deg(torch.atan2(d[..., 0], d[..., 2]))
    pitch = torch.rad2deg(torch.atan2(d[..., 1], torch.hypot(d[..., 0], d[..., 2])))
    return yaw, pitch


def head_view_angles(rotation: Tensor, translation: Tensor, viewmats: Tensor) -> tuple[Tensor, Tensor]:
    """Yaw and pitch (degrees) of each camera as the HEAD sees it: the camera centre in the head's
    frame (FLAME global rotation [B, 3] axis-angle, translation [B, 3]), so a head turned 30 deg
    in front of a fixed camera is seen from 30 deg to the side, as an orbiting camera would be.
    viewmats: [B, 4, 4] world-to-camera. -> (yaw [B], pitch [B])."""
    R = axis_angle_to_matrix(rotation.float())  # [B, 3, 3] head -> world
    c = camera_centers(viewmats.float()) - translation.float()  # [B, 3]
    d = (R.transpose(1, 2) @ c[..., None])[..., 0]  # camera centre in head coordinates
    yaw = torch.rad2deg(torch.atan2(d[..., 0], d[..., 2]))
    pitch = torch.rad2deg(torch.atan2(d[..., 1], torch.hypot(d[..., 0], d[..., 2])))
    return yaw, pitch


def time_tag(t: float) -> str:
    """The time token of a keyframe at normalised clip time ``t`` in [0, 1] ("time 0.25")."""
    return f"time {float(t):.2f}"


def timestep_range(config: SDSConfig, step: int, total_steps: int, num_train_timesteps: int) -> tuple[int, int]:
    """Inclusive integer timestep range at optimisation ``step`` of ``total_steps``.

    The upper end falls linearly from ``t_max`` to ``t_max_final``: early steps use heavy noise,
    which lets the diffusion model change the layout of the region; late steps use light noise,
    which only refines texture (the DreamTime/AvatarStudio observation that late large-t steps undo
    detail).
    """
    T = int(num_train_timesteps)
    t_hi = config.t_max
    if config.t_max_final is not None and total_steps > 0:
        frac = min(max(step / total_steps, 0.0), 1.0)
        t_hi = config.t_max + (config.t_max_final - config.t_max) * frac
    lo = min(max(int(config.t_min * T), 0), T - 1)
    hi = min(max(int(t_hi * T), lo), T - 1)
    return lo, hi


def sds_weight(alpha_bar: Tensor, kind: str) -> Tensor:
    """w(t) per sample.  alpha_bar: [B] -> [B]. "sds" = 1 - alpha_bar (DreamFusion), "uniform" = 1."""
    if kind == "sds":
        return 1.0 - alpha_bar
    if kind == "uniform":
        return torch.ones_like(alpha_bar)
    raise InvalidParametersError(f"unknown SDS weighting {kind!r}; use one of {WEIGHTINGS}")


def keyframe_blend(times: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Piecewise-linear interpolation indices: t is between keyframes i0 and i1 with weight w on i1.

    times: [K] ascending, distinct; t: [B] -> (i0 [B] long, i1 [B] long, w [B] in [0, 1]).
    Exact at the keyframes (w = 0 on the left keyframe, or w = 1 at the last one); clamped outside.
    """
    K = times.numel()
    t = t.to(times).clamp(times[0], times[-1])
    if K == 1:
        zero = torch.zeros_like(t, dtype=torch.long)
        return zero, zero, torch.zeros_like(t)
    i1 = torch.searchsorted(times, t, right=True).clamp(1, K - 1)
    i0 = i1 - 1
    w = ((t - times[i0]) / (times[i1] - times[i0])).clamp(0.0, 1.0)
    return i0, i1, w


def latent_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Region mask at the latent resolution.  mask: [B, H, W] (bool or [0, 1]) -> [B, 1, h, w].

    Area averaging, so a latent cell is weighted by how much of it lies in the region: cells wholly
    outside get exactly zero (no push at all), border cells a partial push.
    """
    m = mask.float()[:, None]  # [B, 1, H, W]
    return F.interpolate(m, size=size, mode="area")


def sds_surrogate(latents: Tensor, grad: Tensor) -> Tensor:
    """Scalar whose gradient w.r.t. ``latents`` is ``grad / B``.  latents, grad: [B, C, h, w]."""
    target = (latents.float() - grad).detach()
    return 0.5 * F.mse_loss(latents.float(), target, reduction="sum") / latents.shape[0]


def eps_from_prediction(pred: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """The noise estimate from a UNet output.  pred, x_t: [B, C, h, w]; alpha_bar: [B]."""
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":  # v = sqrt(ab) eps - sqrt(1-ab) x0  =>  eps = sqrt(ab) v + sqrt(1-ab) x_t
        ab = alpha_bar.view(-1, 1, 1, 1)
        return ab.sqrt() * pred + (1.0 - ab).sqrt() * x_t
    raise DynavatarError(f"SDS needs an epsilon or v_prediction scheduler, not {prediction_type!r}")


def add_noise(x0: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """Forward diffusion q(x_t | x0).  x0, noise: [B, C, h, w]; alpha_bar: [B]."""
    ab = alpha_bar.view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
