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
from .palette_recolour import EYE_REGIONS, colour_affinity, darker_part, recolour_oklab, region_stats

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

    With ``iris_only``, a plan whose regions are only eyes recolours the iris, not the sclera the
    eye label also covers (``darker_part``).

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
        if self.iris_only and set(plan.regions) <= EYE_REGIONS:
            m = darker_part(rgb_to_oklab(images.float()), m)
        alpha = feather_mask(m, plan.mask_dilation, self.feather)  # [B, H, W]
        box = support_box(alpha)
        if box is None:  # nothing to edit in any image
            return images.clone()
        y0, y1, x0, x1 = box  # colour maths only where some alpha is non-zero (the union over the batch)
        work = images[:, y0:y1, x0:x1].float()  # [B, h, w, 3]
        m, alpha = m[:, y0:y1, x0:x1], alpha[:, y0:y1, x0:x1]
        lab = rgb_to_oklab(work)  # [B, h, w, 3]
        target = None if plan.colour is None else rgb_to_oklab(torch.tensor(plan.colour, dtype=work.dtype,
                                                                            device=work.device))
        stats = region_stats(lab, m)
        new_lab = recolour_oklab(lab, m, target, plan.strength, plan.material, min_detail=self.min_detail,
                                 stats=stats)
        if self.edge_aware:
            alpha = torch.maximum(m, alpha * colour_affinity(lab, *stats))
        edited = oklab_to_rgb(new_lab).clamp(0.0, 1.0)
        out = images.clone()
        out[:, y0:y1, x0:x1] = composite(images[:, y0:y1, x0:x1], edited.to(images.dtype), alpha)
        self.last_timing_s = time.perf_counter() - t0
        return out


def _check_inputs(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be [B, H, W] = {tuple(images.shape[:3])}, got {tuple(masks.shape)}")
