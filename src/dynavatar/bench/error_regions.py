"""Where a fit's held-out error lives: the share of the squared error on the matte's outline, on the
hair, the face, the mouth, the neck and clothes and the background.

Why: a clip's held-out PSNR says how far the renders are from the frames, not why. On the worst
clips the frames' own mattes were wrong (a band of wall kept round dark hair): that error sits on
the outline, where no change to the avatar can remove it, while error on the face or the mouth is
the avatar's. ``bench fit`` prints the shares per clip, and for each region the PSNR the clip would
have with no error there, so the region worth working on is named by a measurement.

Regions are exclusive: the outline band first (pixels within ``band_px`` of the frame's matte
contour at 0.5), then the background (matte below 0.5 or labelled background), then the parser's
label groups of the frame. Only the pixels the video shows count (``TrainData.seen``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["REGIONS", "OUTLINE_PX", "region_squared_errors", "error_shares", "held_out_error_regions",
           "format_error_regions"]

#: Width of the outline band on each side of the frame matte's 0.5 contour, in pixels (512-px crops:
#: a hair outline the matte gets wrong is a band of 3-15 px).
OUTLINE_PX = 4

#: Label groups of the frame's parsing (``geometry.labels.LABEL_NAMES``), after the outline and the
#: background. Labels in none of them (eyeglasses, headwear) count as "other".
REGIONS: dict[str, tuple[str, ...]] = {
    "face": ("skin", "nose", "left_brow", "right_brow", "left_eye", "right_eye", "iris", "sclera",
             "left_ear", "right_ear"),
    "mouth": ("upper_lip", "lower_lip", "mouth_interior", "teeth"),
    "hair": ("hair",),
    "neck+clothes": ("neck", "clothes"),
}
_ORDER = ("outline", "background", *REGIONS, "other")


def _outline(matte: Tensor, px: int) -> Tensor:
    """Pixels within ``px`` of the 0.5 contour of ``matte`` [H, W] (a square neighbourhood holds
    both sides of it). -> bool [H, W]"""
    hard = (matte >= 0.5).float()[None, None]
    k = 2 * px + 1
    grown = F.max_pool2d(hard, k, 1, px)
    shrunk = -F.max_pool2d(-hard, k, 1, px)
    return (grown - shrunk)[0, 0] > 0


def region_squared_errors(pred: Tensor, target: Tensor, matte: Tensor, labels: Tensor | None,
                          seen: Tensor | None = None, band_px: int = OUTLINE_PX) -> dict[str, float]:
    """Sum of squared colour error per region of one frame, and ``"pixels"``: the values compared.

    pred, target: [H, W, 3] in [0, 1]; matte: [H, W] in [0, 1] (the frame's); labels: [H, W] label
    indices of the frame (None: everything in the matte is "other"); seen: [H, W] bool or None (all)."""
    from ..geometry.labels import label_index

    err = (pred.float() - target.float()).pow(2).sum(-1)  # [H, W]
    seen = torch.ones_like(err, dtype=torch.bool) if seen is None else seen.bool()
    left = seen.clone()
    out: dict[str, float] = {}

    def take(name: str, where: Tensor) -> None:
        nonlocal left
        sel = where & left
        out[name] = float(err[sel].sum())
        left = left & ~sel

    take("outline", _outline(matte, band_px))
    bg = matte < 0.5
    if labels is not None:
        bg = bg | (labels == label_index("background"))
    take("background", bg)
    for name, members in REGIONS.items():
        where = torch.zeros_like(left)
        if labels is not None:
            for m in members:
                where |= labels == label_index(m)
        take(name, where)
    take("other", left)
    out["pixels"] = float(seen.sum()) * 3
    return out


def error_shares(totals: dict[str, float]) -> dict[str, dict[str, float]]:
    """Summed ``region_squared_errors`` -> {region: {"share": fraction of all squared error,
    "psnr_without": the PSNR [dB] with that region's error removed}} (regions in ``_ORDER``)."""
    total = sum(totals[r] for r in _ORDER)
    n = totals["pixels"]
    out = {}
    for r in _ORDER:
        rest = (total - totals[r]) / n if n else math.nan
        out[r] = {"share": totals[r] / total if total > 0 else math.nan,
                  "psnr_without": 10 * math.log10(1 / rest) if rest > 0 else math.inf}
    return out


@torch.no_grad()
def held_out_error_regions(avatar, frames: list[int] | None = None) -> dict[str, dict[str, float]] | None:
    """``error_shares`` over ``avatar``'s held-out frames (``frames``: other ones) with its stored
    motion (after ``evaluate(refine_tracking=True)``: the refined one); None when the avatar's frames
    are gone or none is held out. Unparsed frames split into outline, background and "other" only.
    Renders as ``trainer.evaluate`` does (over the avatar's background)."""
    from ..gaussians.binding import bind

    data = avatar.frame_data(required=False)
    frames = data.eval_idx.tolist() if frames is None and data is not None else frames
    if data is None or not frames:
        return None
    bg = torch.tensor(avatar.background, device=avatar.device)
    totals: dict[str, float] = {}
    for i in frames:
        verts = avatar.model(avatar.params[i], landmark_set=None, check_finite=False).vertices
        pred = avatar.renderer.render(bind(avatar.gaussians, verts, avatar.model.faces), data.cameras[i],
                                      background=bg).rgb.clamp(0, 1)[0]  # [R, R, 3]
        at = torch.tensor([i], device=bg.device)
        target, matte = data.targets(at, bg)  # [1, R, R, 3], [1, R, R, 1]
        seen = data.seen(at)
        labels = data.parsing[i].long() if data.parsing is not None else None
        one = region_squared_errors(pred, target[0], matte[0, ..., 0], labels,
                                    None if seen is None else seen[0, ..., 0])
        for k, v in one.items():
            totals[k] = totals.get(k, 0.0) + v
    return error_shares(totals)


def format_error_regions(shares: dict[str, dict[str, float]] | None) -> str:
    """One line: 'outline 41 % (27.3 dB without), hair 22 % (24.0), ...', largest share first."""
    if not shares:
        return "n/a"
    items = sorted(((r, s) for r, s in shares.items() if s.get("share") is not None and s["share"] == s["share"]),
                   key=lambda x: -x[1]["share"])
    without = lambda s: "no error left" if s.get("psnr_without") in (None, math.inf) else f"{s['psnr_without']:.1f} dB without"  # noqa: E731
    return ", ".join(f"{r} {100 * s['share']:.0f} % ({without(s)})" for r, s in items if s["share"] >= 0.005) or "n/a"
