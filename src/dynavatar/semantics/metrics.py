"""How well rendered label masks agree with a parser's masks."""

from __future__ import annotations

import numpy as np

from ..geometry.labels import label_index

__all__ = ["LABEL_GROUPS", "group_iou", "group_argmax"]

# The groups the issue judges: lips are one group (upper + lower), as a person would draw them.
# "eyes" is the whole eye opening: the eye labels of avatars labelled before iris and sclera
# existed, and the iris and sclera of those labelled since, so an old prompt or mask means the same.
LABEL_GROUPS: dict[str, tuple[str, ...]] = {
    "skin": ("skin",), "hair": ("hair",), "lips": ("upper_lip", "lower_lip"),
    "eyes": ("left_eye", "right_eye", "iris", "sclera"), "brows": ("left_brow", "right_brow"), "nose": ("nose",),
    "mouth": ("mouth_interior", "teeth"),
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


def group_argmax(probs: np.ndarray, groups: dict[str, tuple[str, ...]] | None = None) -> np.ndarray:
    """Label map of rendered label probabilities ``[K, H, W]`` where each group's channels count
    together: a pixel that is 40 % skin, 30 % upper and 30 % lower lip is lips, as a person asking for
    "the lips" would draw it (a plain argmax calls it skin and thins every two-part region at its
    seams). Each pixel gets the first label of its winning group (or the winning ungrouped label).
    -> int [H, W]"""
    groups = groups or LABEL_GROUPS
    members = [[label_index(n) for n in labs] for labs in groups.values()]
    grouped = {k for idx in members for k in idx}
    rest = [k for k in range(probs.shape[0]) if k not in grouped]
    scores = np.stack([probs[idx].sum(0) for idx in members] + [probs[k] for k in rest])  # [G + R, H, W]
    label_of = np.array([idx[0] for idx in members] + rest)
    return label_of[scores.argmax(0)]
