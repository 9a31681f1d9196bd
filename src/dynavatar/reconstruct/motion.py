"""Which per-frame FLAME parameters pose an avatar: its training clip's, or another clip's.

The fit leaves two motions for the training clip: the landmark tracker's and the photometrically
refined one the splats were optimised under (``refine_tracking``). ``training_motion`` picks one,
keeping the fitted identity either way. ``reenactment_params`` drives an avatar with another clip's
tracked frame (cross-reenactment): that frame's expression and pose, the avatar's own identity and framing.
"""

from __future__ import annotations

import torch

from ..errors import DynavatarError
from ..flame import FlameModel, FlameParams
from .refine_tracking import MOTION_FIELDS

__all__ = ["MOTIONS", "training_motion", "reenactment_params", "pad_expression"]

#: the training clip's motions: the photometrically refined one (what the splats were fitted under)
#: and the landmark tracker's
MOTIONS = ("refined", "tracked")


def training_motion(fitted: FlameParams, tracked: FlameParams | None, model: FlameModel, motion: str,
                    device: torch.device | str) -> FlameParams:
    """The clip's per-frame parameters with the ``"refined"`` or ``"tracked"`` motion: tracked keeps
    the ``fitted`` identity and takes expression, pose and translation from ``tracked``, with the torso
    shift the head's motion predicts (``model.predict_torso``).  fitted, tracked: [N] -> FlameParams [N]"""
    if motion == "refined":
        return fitted
    if motion != "tracked":
        raise DynavatarError(f"motion must be 'refined' or 'tracked', not {motion!r}")
    if tracked is None:
        raise DynavatarError("the tracked motion comes with the clip's frames, which this avatar was loaded without")
    tracked = tracked.to(device)
    params = fitted.to(device)
    params = params.replace(**{k: getattr(tracked, k) for k in MOTION_FIELDS if k != "torso"})
    if params.torso is not None:
        params = params.replace(torso=model.to(device).predict_torso(params))
    return params


def pad_expression(expr: torch.Tensor, n_expr: int) -> torch.Tensor:
    """Expression coefficients [B, E] of another head model as [B, n_expr] on the CPU: the first
    components kept, missing ones zero (FLAME's components are ordered by variance)."""
    out = torch.zeros(expr.shape[0], n_expr)
    k = min(n_expr, expr.shape[1])
    out[:, :k] = expr[:, :k]
    return out


def reenactment_params(driving: FlameParams, own: FlameParams, n_expr: int) -> FlameParams:
    """One driving frame [1] (another clip's tracking) as parameters for an avatar whose clip is ``own``:
    its expression (padded to ``n_expr``) and pose, ``own``'s identity (shape) and framing (translation
    of its first frame).  -> FlameParams [1] on the CPU"""
    q = driving.replace(shape=own.shape[:1].cpu(), expr=pad_expression(driving.expr, n_expr))
    return q.replace(translation=own.translation[:1].cpu())
