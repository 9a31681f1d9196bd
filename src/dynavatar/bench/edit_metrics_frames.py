"""Figures of one edit on held-out frames and turned heads: what a person would see as real or fake.

Per pose (held-out frames, and the first of them with the head turned by +-``turn`` radians):
coverage of the target shade on the region, spill off it, lightness structure kept, the sclera's
change for eye edits (``edit.metrics``), each summarised over the poses by its median, its worst
pose and its spread (std: the temporal/pose consistency). The renders come back for the gallery.
"""

from __future__ import annotations

import numpy as np

__all__ = ["edit_poses", "edit_figures", "THRESHOLDS"]

# The bars: coverage >= 0.95, spill <= 0.3 % of the frame, structure >= 0.9, sclera <= 3/255.
THRESHOLDS = {"coverage": (">=", 0.95), "spill_pct": ("<=", 0.3), "structure": (">=", 0.9), "sclera": ("<=", 3.0)}


def edit_poses(avatar, frames: list[int], turn: float = 0.5) -> list[dict]:
    """Render arguments of the poses an edit is judged on: ``frames`` (held-out), then the first of
    them with the head turned by -``turn`` and +``turn`` radians (titles in "title")."""
    from ..flame.pose import rotate_head

    poses = [{"frame": f, "title": f"frame {f}"} for f in frames]
    for yaw in (-turn, turn):
        poses.append({"params": rotate_head(avatar.params[frames[0]], yaw), "camera": avatar.cameras[frames[0]],
                      "title": f"frame {frames[0]} yaw {yaw:+.1f}"})
    return poses


def _render_args(pose: dict) -> dict:
    return {k: v for k, v in pose.items() if k != "title"}


def edit_figures(before, after, plans, poses: list[dict]) -> dict:
    """Figures of ``after`` (edited by ``plans``) against ``before`` over ``poses`` (``edit_poses``).
    -> {"coverage"/"spill_pct"/"structure"/"sclera": {"median", "worst", "spread"} or None,
    "changed_pct": median share of pixels changed, "images": [(before, after) uint8 per pose]}"""
    import torch

    from ..edit import (EYE_REGIONS, iris_membership, lightness_structure, majority_region, mean_change, rgb_to_oklab,
                        spill_fraction, target_coverage, target_from_plan)
    from ..geometry.labels import label_index

    colour = next((p for p in plans if p.colour is not None), None)
    regions = sorted({label_index(n) for p in plans for n in p.regions})
    eye = colour is not None and set(colour.regions) <= EYE_REGIONS
    target = target_from_plan(colour, torch.zeros(3, dtype=torch.float64)) if colour is not None else None
    per: dict[str, list[float]] = {"coverage": [], "spill_pct": [], "structure": [], "sclera": [], "changed_pct": []}
    images = []
    for pose in poses:
        kw = _render_args(pose)
        a, b = before.render(**kw), after.render(**kw)
        images.append((a, b))
        probs = before.render_masks(**kw)
        region = probs[regions].sum(0) > 0.5 if regions else np.zeros(a.shape[:2], bool)
        per["changed_pct"].append(100.0 * float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > 4).mean()))
        if colour is None:
            continue
        # spill is judged off what the region draws, its soft fringe over the background included
        per["spill_pct"].append(100.0 * spill_fraction(a, b, majority_region(probs, regions, label_index("background"))))
        if eye:  # the iris's own pixels: not the pupil, the glint or sclera the eye label may still cover
            lab = rgb_to_oklab(torch.from_numpy(a.reshape(-1, 3).astype(np.float64) / 255))
            member = iris_membership(lab, torch.from_numpy(region.reshape(-1).astype(np.float64))).numpy()
            iris = region & (member.reshape(region.shape) > 0.5)
            per["coverage"].append(target_coverage(b, iris, target, erode=0))
            per["structure"].append(lightness_structure(a, b, iris, erode=0))
            sclera = probs[label_index("sclera")] > 0.5
            per["sclera"].append(mean_change(a, b, sclera))
        else:
            per["coverage"].append(target_coverage(b, region, target))
            per["structure"].append(lightness_structure(a, b, region))
    out: dict = {"images": images, "titles": [p["title"] for p in poses]}
    for k, v in per.items():
        v = np.array([x for x in v if x == x], dtype=np.float64)
        if not len(v):
            out[k] = None
            continue
        worst = v.max() if k in ("spill_pct", "sclera", "changed_pct") else v.min()
        out[k] = {"median": float(np.median(v)), "worst": float(worst), "spread": float(v.std())}
    return out
