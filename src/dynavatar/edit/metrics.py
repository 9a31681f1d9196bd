"""How an edit is judged: locality, whether the region changed as asked, temporal consistency,
and (with CLIP weights, fetched on first use unless offline) Instruct-NeRF2NeRF's CLIP direction
similarity and consistency.

The metrics take plain uint8 images and bool masks, whichever editor or loop made them, so they sit
beside the plan rather than inside ``apply/``. OpenCV, torch and transformers load inside the
functions that need them: importing the metrics costs nothing.
"""

from __future__ import annotations

import colorsys
import logging

import numpy as np

from ..hub import CorruptWeightsError, MissingWeightsError, resolve_weights

logger = logging.getLogger("dynavatar.edit")

__all__ = ["outside_change", "median_hue_deg", "hue_error_deg", "region_colour_spread", "region_hue_spread",
           "region_colour_consistency", "clip_direction_metrics", "target_coverage", "spill_fraction", "majority_region",
           "lightness_structure", "mean_change"]


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0


def outside_change(before: np.ndarray, after: np.ndarray, region: np.ndarray, margin: int = 2) -> float:
    """Mean |after - before| in 1/255 units over pixels outside the region (grown by ``margin``
    px, the splats' own footprint at the region's edge).  before/after: uint8 [H, W, 3]."""
    outside = ~_dilate(region, margin)
    if not outside.any():
        return 0.0
    return float(np.abs(after.astype(np.int16) - before.astype(np.int16))[outside].mean())


def median_hue_deg(img: np.ndarray, mask: np.ndarray) -> float:
    """Circular median hue (degrees in (-180, 180]) of the masked pixels, saturation-weighted so grey
    pixels (whose hue is noise) do not vote.  img: uint8 [H, W, 3]."""
    import cv2

    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(np.float64)
    h = hsv[..., 0][mask] / 256 * 2 * np.pi
    s = hsv[..., 1][mask] / 255
    if h.size == 0 or s.sum() == 0:
        return float("nan")
    # The circular median: the angle minimising the weighted sum of angular distances.
    cand = np.linspace(-np.pi, np.pi, 721)[:-1]
    d = np.abs(np.angle(np.exp(1j * (h[None] - cand[:, None]))))
    return float(np.degrees(cand[np.argmin((d * s[None]).sum(1))]))


def hue_error_deg(hue: float, target_rgb) -> float:
    """Angular distance between a hue and the target colour's hue, degrees."""
    t = colorsys.rgb_to_hsv(*target_rgb)[0] * 360
    return float(abs((hue - t + 180) % 360 - 180))


def region_colour_spread(images: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """How much a region's mean colour varies across frames: the std over frames of the mean OKLab
    (a, b) chroma, x1000. Compare before vs after an edit: temporal consistency. (Absolute units: a
    saturated target colour spreads more for the same relative change; see region_hue_spread.)"""
    import torch

    from .colour_space import rgb_to_oklab

    means = []
    for img, m in zip(images, masks):
        if m.any():
            lab = rgb_to_oklab(torch.from_numpy(img[m].astype(np.float32) / 255)).numpy()
            means.append(lab[:, 1:].mean(0))
    if len(means) < 2:
        return 0.0
    return float(np.linalg.norm(np.std(np.stack(means), 0)) * 1000)


def region_hue_spread(images: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Std over frames (degrees) of the region's median hue: does the colour flicker?"""
    hues = [median_hue_deg(img, m) for img, m in zip(images, masks) if m.any()]
    hues = np.radians([h for h in hues if h == h])
    if len(hues) < 2:
        return 0.0
    r = min(max(np.abs(np.exp(1j * hues).mean()), 1e-12), 1.0)
    return float(np.degrees(np.sqrt(-2 * np.log(r)))) + 0.0  # circular std (+ 0.0: no "-0.0" in tables)


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    if r <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask.astype(np.uint8), k, borderValue=0) > 0


def region_colour_consistency(images: list[np.ndarray], masks: list[np.ndarray], erode: int = 2,
                              min_pixels: int = 10, min_chroma: float = 0.02) -> dict:
    """Temporal consistency of a region's colour that is fair across colours.

    Per frame, on the mask eroded by ``erode`` px (edge pixels mix the region with skin or
    background and swing more when the region is saturated): the median OKLab chroma ``|ab|`` and
    the hue of the median ``(a, b)``. Across frames:

    * ``chroma_cv``: std / mean of the per-frame median chroma (relative, so a saturated red is not
      penalised for being saturated, as ``region_colour_spread``'s absolute units are);
    * ``hue_std_deg``: circular std of the per-frame hues (NaN when the region is nearly grey,
      mean median chroma < ``min_chroma``, where hue is noise).

    images: uint8 [H, W, 3] per frame; masks: bool [H, W] per frame. Frames with fewer than
    ``min_pixels`` eroded pixels are skipped; fewer than two frames give zeros. "After an edit <=
    before" is the criterion: the edit did not make the region flicker more than it did.
    """
    import torch

    from .colour_space import rgb_to_oklab

    chroma, hue = [], []
    for img, m in zip(images, masks):
        core = _erode(m, erode)
        if core.sum() < min_pixels:
            continue
        ab = rgb_to_oklab(torch.from_numpy(img[core].astype(np.float64) / 255)).numpy()[:, 1:]  # [P, 2]
        chroma.append(float(np.median(np.linalg.norm(ab, axis=1))))
        a, b = np.median(ab, axis=0)
        hue.append(float(np.arctan2(b, a)))
    if len(chroma) < 2:
        return {"frames": len(chroma), "chroma_median": float(np.mean(chroma)) if chroma else float("nan"),
                "chroma_cv": 0.0, "hue_std_deg": 0.0}
    c = np.array(chroma)
    r = np.abs(np.exp(1j * np.array(hue)).mean())
    hue_std = float(np.degrees(np.sqrt(-2 * np.log(min(max(r, 1e-12), 1.0))))) + 0.0  # circular std
    if c.mean() < min_chroma:
        hue_std = float("nan")
    return {"frames": len(c), "chroma_median": float(c.mean()), "chroma_cv": float(c.std() / max(c.mean(), 1e-12)),
            "hue_std_deg": hue_std}


def clip_direction_metrics(before: list[np.ndarray], after: list[np.ndarray], source_text: str, target_text: str,
                           model: str = "openai/clip-vit-large-patch14", device: str = "cpu",
                           local_files_only: bool | None = None) -> dict | None:
    """Instruct-NeRF2NeRF's metrics with CLIP: direction similarity = cos(E(after) - E(before),
    T(target) - T(source)); direction consistency = cos between consecutive frames' image
    directions. The CLIP weights come from the Hugging Face cache or are fetched on first use
    (``dynavatar.hub.resolve_weights``); None when they are absent and may not be fetched
    (``HF_HUB_OFFLINE=1`` / ``local_files_only``) or the fetch failed: the other metrics stand alone."""
    try:
        path = resolve_weights(model, local_files_only=local_files_only, what="CLIP edit metric")
    except CorruptWeightsError:
        raise  # a broken cached copy is the user's to fix, not a metric to drop quietly
    except MissingWeightsError as exc:
        logger.info("CLIP direction metrics skipped: %s", exc)
        return None
    import torch
    import transformers

    clip = transformers.CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    proc = transformers.CLIPProcessor.from_pretrained(str(path), local_files_only=True)
    with torch.no_grad():
        def img_emb(imgs):
            x = proc(images=list(imgs), return_tensors="pt").to(device)
            return torch.nn.functional.normalize(clip.get_image_features(**x), dim=-1)
        t = proc(text=[source_text, target_text], return_tensors="pt", padding=True).to(device)
        te = torch.nn.functional.normalize(clip.get_text_features(**t), dim=-1)
        d_img = img_emb(after) - img_emb(before)
        d_txt = te[1] - te[0]
        sim = torch.nn.functional.cosine_similarity(d_img, d_txt[None]).mean().item()
        cons = torch.nn.functional.cosine_similarity(d_img[1:], d_img[:-1]).mean().item() if len(d_img) > 1 else 1.0
    return {"clip_direction_similarity": sim, "clip_direction_consistency": cons}


# ------------------------------------------------------------------ figures a person would agree with
def _oklab(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    from .colour_space import rgb_to_oklab

    return rgb_to_oklab(torch.from_numpy(img[mask].astype(np.float64) / 255)).numpy()  # [P, 3]


def target_coverage(after: np.ndarray, region: np.ndarray, target, erode: int = 2, hue_slack_deg: float = 25.0,
                    lightness_slack: float = 0.1, grey_chroma: float = 0.035) -> float:
    """Share of the region's pixels (eroded by ``erode`` px: edge pixels mix with what is next to
    them) whose colour reached the target shade ``target`` (``palette_recolour.ColourTarget``):
    OKLab lightness within the shade's range widened by ``lightness_slack``, and hue within
    ``hue_slack_deg`` of the arc between the shade's dark and light hues; for a grey shade (chroma
    below ``grey_chroma`` at both ends: black, platinum, silver, white) chroma below twice that
    instead of a hue. NaN when the eroded region is empty. after: uint8 [H, W, 3]; region: bool [H, W]."""
    core = _erode(region, erode)
    if not core.any():
        return float("nan")
    lab = _oklab(after, core)
    d, lt = np.asarray(target.dark, dtype=np.float64), np.asarray(target.light, dtype=np.float64)
    lo, hi = min(d[0], lt[0]) - lightness_slack, max(d[0], lt[0]) + lightness_slack
    ok_l = (lab[:, 0] >= lo) & (lab[:, 0] <= hi)
    c = np.linalg.norm(lab[:, 1:], axis=1)
    if max(np.linalg.norm(d[1:]), np.linalg.norm(lt[1:])) < grey_chroma:
        ok_c = c < 2 * grey_chroma
    else:
        hd, hl = np.arctan2(d[2], d[1]), np.arctan2(lt[2], lt[1])
        span = np.angle(np.exp(1j * (hl - hd)))
        centre, half = hd + span / 2, abs(span) / 2 + np.radians(hue_slack_deg)
        h = np.arctan2(lab[:, 2], lab[:, 1])
        ok_c = (np.abs(np.angle(np.exp(1j * (h - centre)))) <= half) | (c < 0.02)  # near-black pixels: any hue
    return float((ok_l & ok_c).mean())


def majority_region(probs: np.ndarray, labels: list[int], background: int = 0, min_drawn: float = 0.02) -> np.ndarray:
    """Where ``labels`` hold more than half of what the render draws: bool [H, W] from rendered label
    probabilities ``probs`` [K, H, W] (``Avatar.render_masks``; channel ``background`` = uncovered).

    Why not ``probs[labels].sum(0) > 0.5``, the region the edit addresses: that counts the uncovered
    share as a competing label, so the hair's own soft fringe against the background (alpha 0.1-0.5,
    nothing but hair drawn there) falls outside it, and the fringe taking the new colour would count
    as spill. A pixel shared with another label (the hairline over the forehead) stays outside unless
    the region's labels are most of it; pixels where almost nothing is drawn (``min_drawn``) stay outside."""
    drawn = 1.0 - probs[background]
    own = probs[labels].sum(0) if labels else np.zeros_like(drawn)
    return (own > 0.5 * drawn) & (drawn > min_drawn)


def spill_fraction(before: np.ndarray, after: np.ndarray, region: np.ndarray, dilate: int = 3,
                   threshold: float = 4.0) -> float:
    """Share of the whole frame's pixels outside the region (dilated by ``dilate`` px) whose colour
    changed by more than ``threshold``/255 in some channel: colour that leaked off the region."""
    outside = ~_dilate(region, dilate)
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(-1) > threshold
    return float((diff & outside).sum() / diff.size)


def lightness_structure(before: np.ndarray, after: np.ndarray, region: np.ndarray, erode: int = 2) -> float:
    """Correlation of OKLab lightness inside the region (eroded) before vs after: strands, shading
    and highlights kept (1) or painted flat (0). NaN with fewer than 10 pixels or a flat region."""
    core = _erode(region, erode)
    if core.sum() < 10:
        return float("nan")
    a, b = _oklab(before, core)[:, 0], _oklab(after, core)[:, 0]
    if a.std() < 1e-6 or b.std() < 1e-6:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def mean_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """Mean |after - before| in 1/255 over ``mask``'s pixels (NaN when empty): e.g. the sclera
    during an eye-colour edit."""
    if not mask.any():
        return float("nan")
    return float(np.abs(after.astype(np.int16) - before.astype(np.int16))[mask].mean())
