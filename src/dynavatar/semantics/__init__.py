"""Dual tracking: semantic labels on splats, label masks at any time and pose, mask mapping."""

from .coverage import render_coverage, selection_windows
from .labelling import (LabelResult, label_splats, refine_labels, region_prior, render_label_masks,
                        render_selection, selection_from_mask, splat_pixel_votes)
from .mapper_config import MaskMapperConfig
from .mapper_network import MaskMapper
from .mapper_training import train_mask_mapper
from .mapping import exact_route_sampler, fit_mask_mapper

__all__ = ["LabelResult", "label_splats", "refine_labels", "region_prior", "render_label_masks", "render_selection",
           "selection_from_mask", "splat_pixel_votes", "render_coverage", "selection_windows", "exact_route_sampler",
           "fit_mask_mapper", "MaskMapper", "MaskMapperConfig", "train_mask_mapper"]
