"""Dual tracking: semantic labels on splats, label masks at any time and pose, mask mapping."""

from .labelling import (LabelResult, label_splats, refine_labels, region_prior, render_label_masks,
                        render_selection, selection_from_mask, splat_pixel_votes)

__all__ = ["LabelResult", "label_splats", "refine_labels", "region_prior", "render_label_masks", "render_selection",
           "selection_from_mask", "splat_pixel_votes"]
from .coverage import render_coverage, selection_windows  # noqa: E402
from .mapping import exact_route_sampler, fit_mask_mapper  # noqa: E402
from .mask_mapper import MaskMapper, MaskMapperConfig, train_mask_mapper  # noqa: E402

__all__ += ["render_coverage", "selection_windows", "exact_route_sampler", "fit_mask_mapper", "MaskMapper", "MaskMapperConfig", "train_mask_mapper"]
