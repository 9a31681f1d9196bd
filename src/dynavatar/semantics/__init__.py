"""Dual tracking: semantic labels on splats, label masks at any time and pose, mask mapping."""

from .labelling import (LabelResult, label_splats, region_prior, render_label_masks, render_selection,
                        selection_from_mask, splat_pixel_votes)

__all__ = ["LabelResult", "label_splats", "region_prior", "render_label_masks", "render_selection",
           "selection_from_mask", "splat_pixel_votes"]
