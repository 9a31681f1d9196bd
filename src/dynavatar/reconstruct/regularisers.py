"""The fit's terms besides the photometric loss: what a single frontal view cannot decide.

- binding (GaussianAvatars): splats stay near their triangle and small beside it;
- ``face_opacity_loss``: the face is a solid skin, so the layers behind it stop drawing;
- ``flatness_loss``: the splats on the skin lie flat on it, like scales, not fins standing off it;
- ``beyond_frame_loss``: nothing is drawn below where the video's frame ends.

Each splat term is a mean over splats, so its weight means the same whatever the splat count; the
frame term is a mean over pixels, like the photometric loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..flame import FlameModel
from ..flame.torso import TORSO_REGION
from ..gaussians.avatar import GaussianAvatar
from ..geometry.rotations import normalize_quaternion, quaternion_to_matrix
from .config import FLAT_CHOICES, ReconstructConfig
from .surface import face_triangles, triangle_regions

__all__ = ["beyond_frame_loss", "face_opacity_loss", "flatness_loss", "flat_triangles", "normal_share",
           "regularisers"]


def face_opacity_loss(avatar: GaussianAvatar, face: Tensor) -> Tensor:
    """Mean transparency ``1 - o`` of the splats bound to ``face`` triangles (0 when there are none).

    A fit left alone keeps the face half-transparent (opacity median ~0.3 on d10 at 128 px): the
    splats behind it (the neck, the skin behind the jaw, the back of the head) then draw part of the
    face from the front, and a turned head shows them as a second face. The surface box keeps the
    face's splats within a few millimetres of the skin, so an opaque face is a solid skin: the
    front-most layer draws, the others are hidden. (Pushing to "opaque or gone", ``o (1 - o)``, opened
    holes that the splats behind filled: worse turned heads, docs/benchmarks.md.)"""
    on_face = face[avatar.binding].to(avatar.opacity_logits.dtype)  # [N] 0/1 (a mask, not an index: no host sync per step)
    return ((1 - torch.sigmoid(avatar.opacity_logits)) * on_face).sum() / on_face.sum().clamp_min(1)


def normal_share(avatar: GaussianAvatar) -> Tensor:
    """[N] the share of each splat's variance along its triangle's normal, in [0, 1].

    The splat's covariance in its triangle's frame (columns: edge, normal, bitangent) is
    ``Q diag(s^2) Q^T``; its normal-normal entry over its trace is 0 for a disk lying on the triangle,
    1 for a needle along the normal and 1/3 for a ball or a random orientation. Scale-free, so it
    does not fight the size terms."""
    axes = quaternion_to_matrix(normalize_quaternion(avatar.quats_local))  # [N, 3, 3] columns: the splat's axes
    variance = (2 * avatar.log_scales_local).exp()  # [N, 3]
    along_normal = (axes[:, 1, :] ** 2 * variance).sum(-1)  # [N]
    return along_normal / variance.sum(-1)


def flatness_loss(avatar: GaussianAvatar, on: Tensor) -> Tensor:
    """Mean ``normal_share`` of the splats bound to ``on`` triangles ([F] bool; 0 when there are none).

    Left free, the thin axis of the skin's splats points anywhere (|cos| to the normal median 0.54
    on aoc's avatar, a random direction gives 0.5). A splat standing across the skin is a thin line
    from the front, where the fit sees it, and a full disk from the side: the flecks and shards of a
    turned head. A splat lying on the skin shows the same patch of skin from every side."""
    weight = on[avatar.binding].to(avatar.log_scales_local.dtype)  # [N] 0/1
    return (normal_share(avatar) * weight).sum() / weight.sum().clamp_min(1)


@torch.no_grad()
def flat_triangles(model: FlameModel, choice: str, ahead_of_ears: float = 0.02) -> Tensor:
    """[F] bool: the triangles whose splats ``flatness_loss`` lays down (``FLAT_CHOICES``).

    "face": the face (``surface.face_triangles``); "skin": every triangle but the scalp's (hair stands
    off the head) and the torso sheet's; "all": every triangle."""
    if choice not in FLAT_CHOICES:
        raise ConfigError(f"flat_on={choice!r}: choose one of {', '.join(FLAT_CHOICES)}")
    n = model.faces.shape[0]
    if choice == "all":
        return torch.ones(n, dtype=torch.bool, device=model.faces.device)
    if choice == "face":
        return face_triangles(model, ahead_of_ears)
    region = triangle_regions(model)
    if region is None:  # no regions: no way to tell the scalp from the skin
        return torch.ones(n, dtype=torch.bool, device=model.faces.device)
    names = model.region_names
    skin = torch.ones(n, dtype=torch.bool, device=model.faces.device)
    for name in ("scalp", TORSO_REGION):
        if name in names:
            skin &= region != names.index(name)
    return skin


def beyond_frame_loss(alpha: Tensor, frame_bottom: Tensor) -> Tensor:
    """Mean rendered opacity of the rows below each frame's bottom edge (``TrainData.frame_bottom``:
    the crop's row where the video's picture ends; the row itself, part picture, is left alone), over
    all pixels. alpha [B, H, W, 1], frame_bottom [B] long.  -> []

    Why: nothing below a frame's edge is seen, so the splats that draw the clothes at that edge stretch
    past it at no cost, into a fan of thin dark spikes under the shoulders (d0, aoc at 512 px). With
    this term, weak beside the photometric loss (an L1 on opacity: a place any other frame shows often
    enough keeps its colour), the avatar ends where the video always ends, with a clean edge. Only the
    bottom: above and beside the frame the head and shoulders go on, and another frame may show them."""
    rows = torch.arange(alpha.shape[1], device=alpha.device)  # [H]
    below = (rows[None, :] > frame_bottom.to(alpha.device)[:, None]).to(alpha.dtype)  # [B, H]
    return (alpha[..., 0] * below[:, :, None]).mean()


def regularisers(avatar: GaussianAvatar, cfg: ReconstructConfig, face: Tensor | None = None,
                 flat: Tensor | None = None) -> Tensor:
    """The binding terms, ``face_opacity_loss`` on ``face`` and ``flatness_loss`` on ``flat`` ([F] bool
    each; None: that term is off)."""
    pos = torch.relu(avatar.means_local.norm(dim=-1) - cfg.position_margin).mean()
    scale = torch.relu(avatar.log_scales_local.exp() - cfg.scale_margin).mean()
    loss = cfg.w_position * pos + cfg.w_scale * scale
    if face is not None and cfg.w_face_opacity > 0:
        loss = loss + cfg.w_face_opacity * face_opacity_loss(avatar, face)
    if flat is not None and cfg.w_flat > 0:
        loss = loss + cfg.w_flat * flatness_loss(avatar, flat)
    return loss
