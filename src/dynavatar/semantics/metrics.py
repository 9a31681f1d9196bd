"""How well rendered label masks agree with a parser's masks."""

from __future__ import annotations

import numpy as np

from ..perceive.labels import label_index

__all__ = ["LABEL_GROUPS", "group_iou"]

# The groups the issue judges: lips are one group (upper + lower), as a person would draw them.
LABEL_GROUPS: dict[str, tuple[str, ...]] = {
    "skin": ("skin",), "hair": ("hair",), "lips": ("upper_lip", "lower_lip"),
    "eyes": ("left_eye", "right_eye"), "brows": ("left_brow", "right_brow"), "nose": ("nose",),
}


def group_iou(pred: np.ndarray, truth: np.ndarray, groups: dict[str, tuple[str, ...]] | None = None) -> dict[str, float]:
    """Intersection over union per label group. pred, truth: label-index maps [..., H, W]; a group
    absent from both gives NaN (not a perfect score)."""
    out = {}
    for name, labels in (groups or LABEL_GROUPS).items():
        idx = [label_index(n) for n in labels]
        p, t = np.isin(pred, idx), np.isin(truth, idx)
        union = (p | t).sum()
        out[name] = float((p & t).sum() / union) if union else float("nan")
    return out
