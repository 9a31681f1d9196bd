"""What each splat draws, summed over some frames of the clip.

Both the first colours (``init_colours``) and the hiding of splats drawn only past the video's frame
(``trainer``) ask the same question of a handful of frames: pose the head, bind the splats, and sum
``splat_pixel_votes`` of a per-frame feature image. They differ only in the features and the motion.

    votes_i = sum_frames sum_p w_ip f_p     # w_ip: splat i's blending weight at pixel p; f: [D] features
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar
from ..gaussians.binding import bind
from ..geometry.cameras import Cameras
from ..render.pixel_votes import splat_pixel_votes

__all__ = ["spread_frames", "votes_over_frames"]


def spread_frames(frames: Tensor, n: int) -> Tensor:
    """At most ``n`` of ``frames`` [F] (indices), spread evenly from the first to the last."""
    if len(frames) <= n:
        return frames
    return frames[torch.linspace(0, len(frames) - 1, n).round().long()]


@torch.no_grad()
def votes_over_frames(avatar: GaussianAvatar, model: FlameModel, params: FlameParams, cameras: Cameras,
                      frames: Tensor, features: Callable[[int], Tensor], renderer) -> Tensor:
    """Sum over ``frames`` (indices into ``params`` and ``cameras``) of each splat's blending weight
    times ``features(i)`` [R, R, D], the frame's per-pixel features.  -> [N, D]"""
    votes = None
    for i in frames.tolist():
        verts = model(params[i], landmark_set=None, check_finite=False).vertices
        v = splat_pixel_votes(bind(avatar, verts, model.faces), cameras[i], features(i), renderer)  # [N, D]
        votes = v if votes is None else votes + v
    if votes is None:
        return torch.zeros(avatar.num_splats, 0, device=avatar.means_local.device)
    return votes
