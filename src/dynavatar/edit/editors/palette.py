"""The palette editor: colour and material edits of a labelled region, offline, in milliseconds.

Why a palette editor: recolouring ("red hair", "blue eyes", "platinum blonde", "metallic lips") is
the most common avatar edit, and it needs no diffusion model: moving the region's colour in a
perceptual space while keeping each pixel's shading and texture gives a faithful edit that is also
*consistent across views* (the same pixel colour maps to the same result in every keyframe), which
a diffusion editor is not. It is the offline default (DESIGN §4); text edits that change shape or
add things (a hat, a beard) need a diffusion editor (``diffusion.py``).

The colour maths are in ``palette_recolour.py`` (OKLab, ``edit/colour_space.py``); this module is the
editor around them: which plans it takes, which pixels it may touch (``masks.py``), and the
composite that leaves every other pixel bit-identical.
"""

from __future__ import annotations

import time

import torch

from ...weights import fetch_hint, weights_label
from ..colour_space import oklab_to_rgb, rgb_to_oklab
from ..plan import EditPlan, EditPlanError
from .masks import composite, feather_mask, support_box
from .palette_recolour import (EYE_REGIONS, colour_affinity, colourist_oklab, fit_region, iris_membership,
                               recolour_oklab, region_stats, target_from_plan, weighted_quantiles)

__all__ = ["is_palette_plan", "PaletteEditor"]

_IP2P_MODEL = "timbrooks/instruct-pix2pix"


def is_palette_plan(plan: EditPlan) -> bool:
    """True when ``plan`` is a colour and/or material change of its regions (no new shapes)."""
    return plan.kind in ("colour", "appearance") and (plan.colour is not None or plan.material is not None)


class PaletteEditor:
    """Colour/material edits of masked regions in OKLab; see the module docstring.

    Mask handling (``masks.feather_mask``): the region mask grows by ``plan.mask_dilation`` and is
    feathered with a Gaussian of sigma ``feather`` (both pixels at 512x512). With ``edge_aware``
    the grown ring is further weighted by ``colour_affinity`` (similar colour -> recoloured), which
    only ever lowers alpha: pixels outside the feathered mask are returned bit-identical.

    Colour plans use the colourist's recolour (``palette_recolour.colourist_oklab``: the region's
    colour distribution mapped onto the named shade, its lightness structure kept), with the
    region's statistics per image; positional qualifiers (dark roots, ombre, two-tone) take each
    pixel's height in its image's region (rows: an upright head's up axis). Material-only plans keep
    the statistics-based transform (``recolour_oklab``).

    With ``iris_only``, a plan whose regions are only eyes recolours the iris, not the pupil,
    sclera or glint the eye label also covers (``iris_membership``).

    ``last_timing_s`` holds the wall time of the last ``edit`` call (for reports, not a benchmark).
    """

    name = "palette"

    def __init__(self, feather: float = 3.0, edge_aware: bool = True, min_detail: float = 0.05,
                 iris_only: bool = True) -> None:
        self.feather = feather
        self.edge_aware = edge_aware
        self.min_detail = min_detail
        self.iris_only = iris_only
        self.last_timing_s: float | None = None

    def check(self, plan: EditPlan) -> None:
        if not is_palette_plan(plan):
            raise EditPlanError(
                f"the palette editor does colour and material edits; for {plan.prompt!r} (a {plan.kind!r} "
                f"edit) use editor='ip2p' with the {weights_label(_IP2P_MODEL)}. {fetch_hint(_IP2P_MODEL)}")

    def edit(self, images: torch.Tensor, masks: torch.Tensor, plan: EditPlan, seed: int | None = None) -> torch.Tensor:
        """images [B, H, W, 3] in [0, 1], masks [B, H, W] in [0, 1] -> edited images [B, H, W, 3].

        ``seed`` is accepted for the ImageEditor protocol; the palette edit is deterministic.
        """
        self.check(plan)
        _check_inputs(images, masks)
        t0 = time.perf_counter()
        if plan.strength == 0.0:
            return images.clone()
        m = masks.to(device=images.device, dtype=torch.float32).clamp(0.0, 1.0)
        target = target_from_plan(plan, images.float())
        eye = self.iris_only and set(plan.regions) <= EYE_REGIONS
        if eye:
            m = torch.stack([mb * iris_membership(rgb_to_oklab(ib.float()).view(-1, 3), mb.reshape(-1)).view_as(mb)
                             for ib, mb in zip(images, m)])
        alpha = feather_mask(m, plan.mask_dilation, self.feather)  # [B, H, W]
        box = support_box(alpha)
        if box is None:  # nothing to edit in any image
            return images.clone()
        y0, y1, x0, x1 = box  # colour maths only where some alpha is non-zero (the union over the batch)
        work = images[:, y0:y1, x0:x1].float()  # [B, h, w, 3]
        m, alpha = m[:, y0:y1, x0:x1], alpha[:, y0:y1, x0:x1]
        lab = rgb_to_oklab(work)  # [B, h, w, 3]
        stats = region_stats(lab, m)
        if target is None:
            new_lab = recolour_oklab(lab, m, None, plan.strength, plan.material, min_detail=self.min_detail,
                                     stats=stats)
        else:
            new_lab = torch.stack([self._colourist(lb, mb, target, plan) for lb, mb in zip(lab, m)])
        if self.edge_aware:
            alpha = torch.maximum(m, alpha * colour_affinity(lab, *stats))
        edited = oklab_to_rgb(new_lab).clamp(0.0, 1.0)
        out = images.clone()
        out[:, y0:y1, x0:x1] = composite(images[:, y0:y1, x0:x1], edited.to(images.dtype), alpha)
        self.last_timing_s = time.perf_counter() - t0
        return out


    @staticmethod
    def _colourist(lab: torch.Tensor, m: torch.Tensor, target, plan: EditPlan) -> torch.Tensor:
        """One image's pixels lab [h, w, 3] recoloured with its region ``m`` [h, w]'s statistics."""
        flat, wts = lab.reshape(-1, 3), m.reshape(-1)
        if float(wts.sum()) <= 0:
            return lab
        rows = torch.arange(lab.shape[0], dtype=lab.dtype, device=lab.device)[:, None].expand(lab.shape[:2])
        lo, hi = weighted_quantiles(rows.reshape(-1), wts, torch.tensor([0.02, 0.98], dtype=torch.float64))
        heights = ((rows.reshape(-1) - lo) / (hi - lo).clamp_min(1.0)).clamp(0, 1)
        new = colourist_oklab(flat, fit_region(flat, wts), target, plan.strength, plan.material, heights)
        return new.view_as(lab)


def _check_inputs(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be [B, H, W] = {tuple(images.shape[:3])}, got {tuple(masks.shape)}")
