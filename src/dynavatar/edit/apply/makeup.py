"""Makeup offline: eyeshadow, blush and a tan, as pigment on the skin's splats.

Makeup is a thin layer over skin whose place is set by the face's anatomy (the lid between lash
line and brow, the apples of the cheeks), that fades out softly and never covers the eyes, brows,
lips or hair. So each look is a soft weight per splat, a Gaussian falloff around anchors placed on
the avatar's own rest head (mediapipe's points embedded in the head model), times the splat's skin
label, and a colour rule that keeps the skin's shading:

- eyeshadow and blush: a powder pigment blended over the splat's colour in OKLab with an opacity
  that falls off from the anchor: the hue moves to the pigment's (its chroma bounded), the lightness
  scales by the pigment's relative to the region's mean, so the skin's shading stays;
- a tan: every skin splat's colour multiplied by a warm factor (a multiply keeps the skin's own
  variation and shading, as a real tan does).

Splats the falloff does not reach are bit-for-bit unchanged, so a restore is exact and edits chain.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import Tensor

from ...errors import DynavatarError
from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from ...gaussians.binding import bind
from ...geometry.labels import label_index
from ...geometry.landmark_sets import MP_OUTER_EYE_CORNERS
from ..colour_space import linear_to_srgb, oklab_to_rgb, rgb_to_oklab, srgb_to_linear
from ..prompt.vocabulary import TAN_REGIONS, TAN_WORDS
from .splat_recolour import rest_pose

__all__ = ["MakeupLook", "MAKEUP_LOOKS", "makeup_look", "makeup_weights", "makeup_edit", "LANDMARK_SET"]

LANDMARK_SET = "mediapipe"


@dataclasses.dataclass(frozen=True)
class MakeupLook:
    name: str
    anchors: tuple[tuple[int, int, float], ...]  # (point a, point b, t): an anchor at a + t (b - a), per side
    sigma: tuple[float, float, float]  # falloff across / up / out of the face, fractions of the inter-ocular distance
    opacity: float  # pigment opacity at an anchor at strength 1 (0 for a tan: it multiplies instead)
    pigment: tuple[float, float, float]  # default sRGB pigment (a tan: the sRGB multiply factor)
    labels: tuple[str, ...]  # the labels whose splats may take it
    max_chroma: float = 0.0  # OKLab chroma the pigment is held to on skin (a powder, not a light source)


#: Mediapipe indices on the subject's right / left: upper lid middle 159 / 386, lower brow middle 52 / 282,
#: cheek 50 / 280 and the cheek's front 205 / 425.
MAKEUP_LOOKS = {
    "eyeshadow": MakeupLook("eyeshadow", ((159, 52, 0.4), (386, 282, 0.4)), (0.16, 0.085, 0.12), 0.6,
                            (0.54, 0.40, 0.46), ("skin",), 0.11),
    "blush": MakeupLook("blush", ((50, 205, 0.15), (280, 425, 0.15)), (0.15, 0.09, 0.14), 0.45,
                        (0.88, 0.45, 0.50), ("skin", "nose"), 0.085),
    "tan": MakeupLook("tan", (), (0.0, 0.0, 0.0), 0.0, (0.93, 0.86, 0.79),
                      TAN_REGIONS),
}

_WORDS = (("eyeshadow", r"\beye ?shadows?\b|\beye ?liner\b|\bsmoky eyes?\b"),
          ("blush", r"\bblush(ed)?\b|\brosy cheeks\b|\brouge\b"),
          ("tan", TAN_WORDS))
_SMOKY = (0.16, 0.14, 0.15)  # "smoky eyes": a charcoal that darkens more than it tints
_NOT_SKIN = {"hair", "left_brow", "right_brow", "upper_lip", "lower_lip", "iris", "sclera", "eyeglasses", "headwear",
             "clothes"}


def makeup_look(plan) -> MakeupLook | None:
    """The look a plan asks for, or None: an appearance plan whose words name eyeshadow, blush or a
    tan, or a colour plan for the skin alone that says "tan" ("tanned skin"; "tan hair" is a hair
    colour and stays the colourist's)."""
    if plan.kind not in ("appearance", "colour"):
        return None
    text = f"{plan.prompt} {plan.instruction}".lower()
    name = next((n for n, pattern in _WORDS if re.search(pattern, text)), None)
    if name is None or (plan.kind == "colour" and (name != "tan" or _NOT_SKIN & set(plan.regions))):
        return None
    return MAKEUP_LOOKS[name]


def _anchor_frames(rest_landmarks: Tensor, look: MakeupLook) -> tuple[Tensor, Tensor, float]:
    """Anchor points [A, 3], the face's axes [3, 3] (rows: across, up, out) and the inter-ocular distance."""
    a, b = MP_OUTER_EYE_CORNERS
    across = rest_landmarks[b] - rest_landmarks[a]
    iod = float(across.norm())
    up = torch.tensor([0.0, 1.0, 0.0], dtype=across.dtype)
    up = up - (up @ across) / (across @ across) * across
    out = torch.linalg.cross(across, up)
    axes = torch.stack([across / across.norm(), up / up.norm(), out / out.norm()])
    anchors = torch.stack([rest_landmarks[i] + t * (rest_landmarks[j] - rest_landmarks[i]) for i, j, t in look.anchors])
    return anchors, axes, iod


def makeup_weights(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, look: MakeupLook) -> Tensor:
    """Per-splat weight [N] in [0, 1]: the look's falloff (max over its anchors; 1 for a tan) times
    the splat's probability of the look's labels."""
    labels = gaussians.labels
    if labels.shape[1] == 0:
        raise DynavatarError("makeup needs labelled splats; label the avatar first (avatar.label_splats())")
    skin = labels[:, [label_index(n) for n in look.labels]].sum(1).clamp(0.0, 1.0)
    if not look.anchors:
        return skin
    if LANDMARK_SET not in model.landmark_sets:
        raise DynavatarError(f"{look.name} is placed from face landmarks, and this head model has no embedding of "
                             "mediapipe's points; use a head with one (the default head, or a FLAME file with "
                             "its mediapipe embedding)")
    rest = model(rest_pose(params), landmark_set=LANDMARK_SET)  # the head's own frame, +y up
    anchors, axes, iod = _anchor_frames(rest.landmarks[0].detach().cpu().double(), look)  # from [L, 3]
    pos = bind(gaussians, rest.vertices, model.faces).means[0].detach().cpu().double()  # [N, 3]
    local = (pos[:, None, :] - anchors[None]) @ axes.T  # [N, A, 3]
    sigma = torch.tensor(look.sigma, dtype=torch.float64) * iod
    falloff = torch.exp(-0.5 * (local / sigma).square().sum(-1)).amax(1)  # [N]
    falloff = torch.where(falloff < 1e-3, torch.zeros_like(falloff), falloff)  # beyond ~3.7 sigma: untouched
    return falloff.to(skin) * skin


@torch.no_grad()
def makeup_edit(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, plan,
                look: MakeupLook | None = None) -> tuple[GaussianAvatar, dict]:
    """``plan``'s makeup on a copy of ``gaussians``. -> (new splats, {look, colour, splats changed})"""
    from ..prompt.colour_names import find_colour

    look = look or makeup_look(plan)
    if look is None:
        raise DynavatarError(f"{plan.prompt!r} asks for no eyeshadow, blush or tan")
    colour = plan.colour
    if colour is None and look.name != "tan":
        found = find_colour(plan.prompt.lower())
        colour = found.rgb if found is not None else None
    if colour is None and look.name == "eyeshadow" and "smok" in plan.prompt.lower():
        colour = _SMOKY
    pigment = torch.tensor(colour if colour is not None and look.name != "tan" else look.pigment)
    w = makeup_weights(gaussians, model, params, look) * float(plan.strength)  # [N]
    changed = w > 0
    rgb = sh_to_rgb(gaussians.sh[changed, 0]).clamp(0, 1)  # [M, 3]
    wm = w[changed][:, None]  # [M, 1]
    if look.name == "tan":  # a multiply in linear light, scaled by the weight in log
        new = linear_to_srgb(srgb_to_linear(rgb) * srgb_to_linear(pigment.to(rgb)) ** wm)
    else:
        new = _pigment_over(rgb, pigment.to(rgb), look.opacity * wm, look.max_chroma)
    sh = gaussians.sh.clone()
    sh[changed, 0] = rgb_to_sh(new.clamp(0, 1)).to(sh)
    out = gaussians.replace(sh=sh)
    info = {"look": look.name, "colour": [round(float(c), 3) for c in pigment], "splats_changed": int(changed.sum())}
    return out, info


def _pigment_over(rgb: Tensor, pigment: Tensor, opacity: Tensor, max_chroma: float) -> Tensor:
    """A powder pigment over skin, in OKLab: the hue moves to the pigment's (its chroma held to
    ``max_chroma``, so a saturated blue reads as eyeshadow, not as a glow), and the lightness scales
    by the pigment's lightness relative to the region's, so the skin's shading stays (a dark pigment
    darkens, a pale one lifts a little). rgb: sRGB [M, 3]; pigment: sRGB [3]; opacity: [M, 1] -> sRGB [M, 3]"""
    lab = rgb_to_oklab(rgb)  # [M, 3]
    pig = rgb_to_oklab(pigment[None])[0]  # [3]
    chroma = pig[1:].norm()
    ab = pig[1:] * (min(1.0, max_chroma / float(chroma)) if float(chroma) > 1e-6 else 0.0)
    ref = (lab[:, :1] * opacity).sum() / opacity.sum().clamp_min(1e-8)  # the region's mean lightness
    scale = (pig[0] / ref.clamp_min(1e-3)).clamp(0.55, 1.15)
    target = torch.cat([lab[:, :1] * scale, ab.expand(len(lab), 2)], 1)
    return oklab_to_rgb(lab + opacity * (target - lab))
