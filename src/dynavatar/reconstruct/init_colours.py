"""The splats' first colours: what the frames show at each splat, and only where they show it.

The fit starts from one colour per splat. Taking the pixel its triangle projects to gives the back of
the head, the neck under the chin and the sides of the head the colours of the face in front of them:
the eyes, brows and lips are copied onto hidden triangles. No training frame shows those splats, so
no gradient ever corrects them, and a turned head shows a second, smeared face on its neck and sides.

Here every splat takes the colour it *draws* in a few training frames with the splats made opaque
(``splat_pixel_votes``: the blending weight is ~0 behind the first surface), the frames composited
on the fit's background as training sees them (a splat past the outline starts as the background, as
before). A splat no frame shows takes the mean colour of the seen splats of its own region (scalp:
the hair's; neck: the neck's), or of all seen splats on a head without regions, counting only what
they draw on the person (the matte), not on the background.

    votes_i = sum_frames sum_p w_ip s_p [c_p, 1, m_p]   # s: the video's picture, c: composited colour, m: matte
    c_i     = votes_i[:3] / votes_i[3]     if votes_i[3] >= min_weight
            = sum_j votes_j[4] c_j / sum_j votes_j[4] over seen j of i's region     otherwise
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..flame import FlameModel
from ..gaussians.avatar import GaussianAvatar, rgb_to_sh
from .data import TrainData
from .frame_votes import spread_frames, votes_over_frames
from .surface import triangle_regions

__all__ = ["seen_colours", "init_colours_"]


@torch.no_grad()
def seen_colours(avatar: GaussianAvatar, data: TrainData, model: FlameModel, renderer, background: Tensor,
                 n_frames: int = 6, opacity: float = 0.995) -> tuple[Tensor, Tensor, Tensor]:
    """Each splat's mean colour (composited on ``background`` [3]) over what it draws in ``n_frames``
    training frames spread over the clip, rendered opaque -> (colour [N, 3] (0 where unseen),
    weight [N]: pixels of blending weight, on_person [N]: the part of that weight on the matte)."""
    opaque = avatar.replace(opacity_logits=torch.full_like(avatar.opacity_logits, float(torch.logit(
        torch.tensor(opacity)))))
    frames = spread_frames(data.train_idx, n_frames)

    def features(i: int) -> Tensor:  # [R, R, 5]: composited colour and matte over the picture, the picture
        at = torch.tensor([i], device=frames.device)
        rgb, matte = data.targets(at, background)  # [1, R, R, 3], [1, R, R, 1]
        seen = data.seen(at)
        s = torch.ones_like(matte[0]) if seen is None else seen[0].float()
        return torch.cat([rgb[0] * s, s, matte[0] * s], -1)

    votes = votes_over_frames(opaque, model, data.params, data.cameras, frames, features, renderer)
    w = votes[:, 3]
    return votes[:, :3] / w.clamp_min(1e-8)[:, None], w, votes[:, 4]


@torch.no_grad()
def init_colours_(avatar: GaussianAvatar, data: TrainData, model: FlameModel, renderer, background: Tensor,
                  min_weight: float = 0.05) -> Tensor:
    """Set ``avatar``'s DC colours in place (see the module docstring); returns the [N] bool of splats
    the frames showed. ``min_weight``: pixels of blending weight below which a splat counts as unseen."""
    colour, w, person = seen_colours(avatar, data, model, renderer, background)
    seen = w >= min_weight
    if not bool(seen.any()):
        return seen
    w = torch.where(seen, person, torch.zeros_like(person))  # the region means: what they draw on the person
    if float(w.sum()) <= 0:
        w = seen.float()
    fill = torch.empty_like(colour)
    fill[:] = (colour * w[:, None]).sum(0) / w.sum()  # all seen splats' mean
    region = triangle_regions(model)
    if region is not None:
        splat_region = region.to(avatar.binding.device)[avatar.binding.long()]  # [N]
        for r in splat_region.unique().tolist():
            here = splat_region == r
            if float(w[here].sum()) > 0:
                fill[here] = (colour[here] * w[here, None]).sum(0) / w[here].sum()
    avatar.sh[:, 0] = rgb_to_sh(torch.where(seen[:, None], colour, fill))
    return seen
