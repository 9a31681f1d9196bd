"""Labels for a fitted avatar's splats from what there is, and the label names a request means.

With parsed training frames, every splat gets a soft label from the pixels it covers (votes), then
a few steps fit the rendered labels to the parsed frames (``labelling``); without them, the head
model's vertex regions are all there is (``region_prior``). A name asked for may be a label or a
group of labels (``metrics.LABEL_GROUPS``: "lips" is the upper and the lower lip).
"""

from __future__ import annotations

from torch import Tensor

from ..errors import DynavatarError
from ..geometry.labels import LABEL_NAMES, label_index
from .labelling import label_splats, refine_labels, region_prior
from .metrics import LABEL_GROUPS

__all__ = ["labels_from_parsing", "labels_from_head_regions", "label_group_indices"]


def labels_from_parsing(gaussians, model, params, cameras, parsing: Tensor, frames: list[int], renderer,
                        refine_steps: int = 300, progress: bool = True, **kw) -> tuple[Tensor, dict]:
    """Labels [N, K] voted from the parsed ``frames`` (``parsing`` [F, H, W] label indices) posed with
    ``params``, then refined for ``refine_steps``; and a record of how (for the avatar's metadata)."""
    res = label_splats(gaussians, model, params, cameras, parsing, renderer, frames=frames, progress=progress, **kw)
    labels = refine_labels(gaussians, model, params, cameras, parsing, res.labels, renderer, frames=frames,
                           steps=refine_steps, progress=progress)
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
