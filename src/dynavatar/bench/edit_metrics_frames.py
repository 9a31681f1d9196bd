"""Before/after comparison of an edited avatar on held-out frames and a novel pose."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["held_out_comparison"]


def held_out_comparison(before, after, plans, frames: list[int], out_dir: str | Path | None = None,
                        novel_yaw: float = 0.6) -> dict:
    """Locality, region hue (colour plans) and temporal spread on ``frames`` plus one novel pose
    (the first frame with the head turned by ``novel_yaw`` radians).

    Temporal consistency over ``frames``, before vs after (criterion: after <= before): the old
    absolute ``spread_*`` / ``hue_spread_*`` and the colour-fair ``chroma_cv_*`` / ``hue_std_*``
    (``region_colour_consistency``: per-frame medians on the 2-px-eroded region)."""
    from ..edit import (clip_direction_metrics, hue_error_deg, median_hue_deg, outside_change,
                        region_colour_consistency, region_colour_spread, region_hue_spread)
    from ..flame.pose import rotate_head
    from ..geometry.labels import label_index

    region = sorted({label_index(n) for p in plans for n in p.regions})
    colour_plans = [p for p in plans if p.colour is not None]
    poses = [{"frame": f} for f in frames]
    poses.append({"params": rotate_head(before.params[frames[0]], novel_yaw), "camera": before.cameras[frames[0]]})
    outs, hue_err, imgs_b, imgs_a, masks, stills = [], [], [], [], [], []
    for kw in poses:
        a, b = before.render(**kw), after.render(**kw)
        probs = before.render_masks(**kw)
        reg = probs[region].sum(0) > 0.5 if region else np.zeros(a.shape[:2], bool)
        outs.append(outside_change(a, b, reg))
        for p in colour_plans:
            core = probs[[label_index(n) for n in p.regions]].sum(0) > 0.8
            if core.sum() > 20:
                hue_err.append(hue_error_deg(median_hue_deg(b, core), p.colour))
        if "frame" in kw:
            imgs_b.append(a), imgs_a.append(b), masks.append(reg)
        stills.append(np.concatenate([a, b], 0))
    cons_b, cons_a = region_colour_consistency(imgs_b, masks), region_colour_consistency(imgs_a, masks)
    res = {"frames": len(frames), "outside_change_mean": float(np.mean(outs)), "outside_change_max": float(np.max(outs)),
           "hue_error_median": float(np.median(hue_err)) if hue_err else None,
           "hue_error_max": float(np.max(hue_err)) if hue_err else None,
           "spread_before": region_colour_spread(imgs_b, masks), "spread_after": region_colour_spread(imgs_a, masks),
           "hue_spread_before": region_hue_spread(imgs_b, masks), "hue_spread_after": region_hue_spread(imgs_a, masks),
           "chroma_cv_before": cons_b["chroma_cv"], "chroma_cv_after": cons_a["chroma_cv"],
           "hue_std_before": cons_b["hue_std_deg"], "hue_std_after": cons_a["hue_std_deg"],
           "consistency_frames": cons_a["frames"],
           "clip": clip_direction_metrics(imgs_b, imgs_a, "a photo of a person",
                                          plans[0].positive_prompt or plans[0].instruction) if plans else None}
    if out_dir is not None:
        import imageio.v3 as iio

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pick = [stills[j] for j in np.linspace(0, len(stills) - 2, min(3, len(stills) - 1)).round().astype(int)]
        iio.imwrite(out / "edit_before_after.png", np.concatenate(pick + [stills[-1]], 1))
        res["stills"] = str(out / "edit_before_after.png")
    return res
