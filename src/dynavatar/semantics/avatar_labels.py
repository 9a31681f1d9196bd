"""Labels for a fitted avatar's splats from what there is, and the label names a request means.

With parsed training frames, every splat gets a soft label from the pixels it covers (votes), then
a few steps fit the rendered labels to the parsed frames (``labelling``); without them, the head
model's vertex regions are all there is (``region_prior``). A name asked for may be a label or a
group of labels (``metrics.LABEL_GROUPS``: "lips" is the upper and the lower lip).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DynavatarError
from ..geometry.labels import LABEL_NAMES, label_index
from .labelling import label_splats, refine_labels, region_prior
from .metrics import LABEL_GROUPS

__all__ = ["labels_from_parsing", "labels_from_head_regions", "label_group_indices", "split_eye_and_mouth_labels",
           "has_iris_labels"]


def labels_from_parsing(gaussians, model, params, cameras, parsing: Tensor, frames: list[int], renderer,
                        refine_steps: int = 300, progress: bool = True, seen=None, **kw) -> tuple[Tensor, dict]:
    """Labels [N, K] voted from the parsed ``frames`` (``parsing`` [F, H, W] label indices) posed with
    ``params``, then refined for ``refine_steps``; and a record of how (for the avatar's metadata).
    ``seen``: which pixels show the video's picture (``TrainData.seen``); the others are ignored."""
    res = label_splats(gaussians, model, params, cameras, parsing, renderer, frames=frames, progress=progress,
                       seen=seen, **kw)
    labels = refine_labels(gaussians, model, params, cameras, parsing, res.labels, renderer, frames=frames,
                           steps=refine_steps, progress=progress, seen=seen)
    return labels, {"source": "parsing", "frames": len(frames), "visible_splats": int((res.visibility > 1).sum()),
                    "refine_steps": refine_steps}


def labels_from_head_regions(binding: Tensor, model) -> tuple[Tensor, dict]:
    """Labels [N, K] from the head model's regions of the triangles the splats are bound to."""
    prior = region_prior(binding, model)
    if prior.sum() == 0:
        raise DynavatarError("no parsed frames and the head model has no vertex regions: nothing to label "
                             "from; preprocess with parsing (the default) or use a head with regions")
    return prior, {"source": "head regions"}


def label_group_indices(name: str) -> list[int]:
    """The label indices ``name`` means: a label of ``LABEL_NAMES`` or a group of ``LABEL_GROUPS``."""
    names = LABEL_GROUPS.get(name, (name,))
    if any(n not in LABEL_NAMES for n in names):
        raise DynavatarError(f"unknown label {name!r}; choose from {list(LABEL_NAMES)} or the groups "
                             f"{sorted(LABEL_GROUPS)}")
    return [label_index(n) for n in names]


def has_iris_labels(labels: Tensor, min_splats: int = 3) -> bool:
    """Whether ``labels`` [N, K] give some splats mostly to ``iris`` (labelled since iris existed)."""
    return labels.shape[1] > 0 and int((labels[:, label_index("iris")] > 0.5).sum()) >= min_splats


def _lightness_chroma(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """sRGB [N, 3] -> (lightness [N] ~ cube root of luminance, as OKLab's L; chroma [N] = max - min
    channel). Enough to tell white from coloured; the edit stage's OKLab lives above this one."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0) + 0.055) / 1.055) ** 2.4)
    y = lin @ torch.tensor([0.2126, 0.7152, 0.0722], dtype=rgb.dtype, device=rgb.device)
    return y.clamp_min(0) ** (1 / 3), rgb.max(1).values - rgb.min(1).values


@torch.no_grad()
def split_eye_and_mouth_labels(labels: Tensor, rgb: Tensor, weight: Tensor | None = None,
                               min_spread: float = 0.15, max_white_chroma: float = 0.25) -> Tensor:
    """Labels [N, K] of an avatar labelled before iris, sclera and teeth existed, with its eye and
    mouth splats split by colour: each splat's ``left_eye`` + ``right_eye`` mass goes to ``sclera``
    when it is light and nearly grey, else to ``iris``; its ``mouth_interior`` mass goes to
    ``teeth`` when it is light and nearly grey.

    Why colour: an eye opening is the white sclera around a darker, coloured disc (iris and pupil)
    whatever the eye's colour, and without the parser's iris points colour is what is left.
    "Light" is above the midpoint of the region's 10th and 90th lightness percentiles (weighted by
    ``weight`` [N], e.g. opacity); a region without that spread (< ``min_spread``) is left as it
    was (it cannot be split). rgb: [N, 3] in [0, 1] (the splats' DC colour). -> a new [N, K].
    """
    out = labels.clone()
    light, chroma = _lightness_chroma(rgb.to(labels).clamp(0, 1))
    w = torch.ones_like(light) if weight is None else weight.to(light)
    for sources, white, rest in (((label_index("left_eye"), label_index("right_eye")), label_index("sclera"),
                                  label_index("iris")),
                                 ((label_index("mouth_interior"),), label_index("teeth"), None)):
        mass = labels[:, list(sources)].sum(1)  # [N]
        member = mass > 0.5
        if int(member.sum()) < 8:
            continue
        lo, hi = _weighted_quantile(light[member], w[member], 0.1), _weighted_quantile(light[member], w[member], 0.9)
        if float(hi - lo) < min_spread:
            continue
        is_white = (light > (lo + hi) / 2) & (chroma < max_white_chroma) & (mass > 0)
        out[:, white] += torch.where(is_white, mass, torch.zeros_like(mass))
        if rest is not None:
            out[:, rest] += torch.where(is_white | (mass <= 0), torch.zeros_like(mass), mass)
            out[:, list(sources)] = 0.0
        else:
            out[:, list(sources)] *= (~is_white).to(out)[:, None]
    return out


def _weighted_quantile(x: Tensor, w: Tensor, q: float) -> Tensor:
    order = torch.argsort(x)
    cw = torch.cumsum(w[order], 0)
    k = int(torch.searchsorted(cw, q * cw[-1]).clamp(max=len(x) - 1))
    return x[order][k]
