"""How much of each pixel every splat draws, by one backward pass through the renderer.

A rendered feature channel is ``F(p) = sum_i w_ip f_i`` (``w_ip`` = splat i's alpha-blending weight
at pixel p). So for any per-pixel weight image ``M(p)``, ``d/df_i sum_p M(p) F(p) = sum_p w_ip M(p)``:
one backward pass gives every splat's blending-weighted overlap with every weight image at once,
exactly, with any renderer (gsplat or the PyTorch one) and without per-pixel splat lists. The
semantic labels vote with it (``semantics.labelling``); the fit uses it to find splats that only
the crops' padding past the video's frame shows (``reconstruct.trainer``).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..gaussians.binding import WorldGaussians
from ..geometry.cameras import Cameras

__all__ = ["splat_pixel_votes"]


def splat_pixel_votes(g: WorldGaussians, camera: Cameras, pixel_weights: Tensor, renderer) -> Tensor:
    """Blending-weighted overlap of every splat with every weight image.

    g: one frame of world gaussians; camera: one camera; pixel_weights: [H, W, D] -> votes [N, D]
    with ``votes[i, d] = sum_p w_ip * pixel_weights[p, d]``.
    """
    g = dataclasses.replace(g, **{f.name: getattr(g, f.name).detach() for f in dataclasses.fields(g)
                                  if isinstance(getattr(g, f.name), Tensor)})
    d = pixel_weights.shape[-1]
    with torch.enable_grad():
        feats = torch.zeros(g.num_splats, d, device=g.means.device, dtype=g.means.dtype, requires_grad=True)
        out = renderer.render(g, camera, features=feats)
        objective = (out.features[0] * pixel_weights.to(out.features)).sum()
        (votes,) = torch.autograd.grad(objective, feats, allow_unused=True)
    return torch.zeros_like(feats) if votes is None else votes.detach()
