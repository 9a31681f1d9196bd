"""Text editing: prompt -> EditPlan -> masked image edits of keyframes -> splats re-optimised in the region.

The sub-packages follow that pipeline, and depend only down it:

- ``plan.py``: ``EditPlan``, what every stage reads (shared);
- ``prompt/``: words -> EditPlan (rules, a local LLM, an OpenAI-compatible endpoint); imports
  neither ``editors/`` nor ``apply/``;
- ``editors/``: keyframe images -> edited images (palette, InstructPix2Pix, inpainting);
- ``apply/``: edited keyframes (or a diffusion model's score) -> new splats; expression plans ->
  new FLAME parameters;
- ``colour_space.py``: the colour-space maths (OKLab, CIE Lab) the editors, ``apply/`` and the
  metrics share; ``metrics.py``: how an edit is judged (used by ``dynavatar bench edit``).

Code outside ``edit/`` imports from ``dynavatar.edit`` only. Importing this package is light: the
refiners and the plan load at once (no torch, transformers or diffusers), everything else on first
attribute access (``__getattr__`` below).
"""

import importlib

from .plan import EDIT_KINDS, EXPRESSIONS, MATERIALS, EditPlan, EditPlanError
from .prompt import OpenAIRefiner, PromptRefiner, RuleRefiner, TransformersRefiner, get_refiner

__all__ = ["EDIT_KINDS", "EXPRESSIONS", "MATERIALS", "EditPlan", "EditPlanError", "PromptRefiner", "RuleRefiner",
           "TransformersRefiner", "OpenAIRefiner", "get_refiner"]

# public name -> module that defines it; these import torch, so they load on first attribute access
_LAZY = {
    # editors
    "ImageEditor": "editors.base", "EDITOR_NAMES": "editors.base", "get_editor": "editors.base",
    "PaletteEditor": "editors.palette", "InstructPix2PixEditor": "editors.diffusion",
    "InpaintEditor": "editors.diffusion", "MissingWeightsError": "editors.pipeline_loading",
    "random_ip2p_pipeline": "editors.random_pipelines",
    # applying an edit
    "EditConfig": "apply.loop", "EditResult": "apply.region", "edit_splats": "apply.loop",
    "SDSEditConfig": "apply.sds_loop", "edit_splats_sds": "apply.sds_loop", "SDSConfig": "apply.sds_config",
    "SDSGuidance": "apply.sds_guidance", "apply_expression": "apply.expression", "rotate_head": "apply.keyframes",
    "add_glasses": "apply.glasses", "glasses_edit": "apply.glasses", "glasses_request": "apply.glasses",
    "is_glasses_plan": "apply.glasses", "GLASSES_STYLES": "apply.glasses",
    "makeup_edit": "apply.makeup", "makeup_look": "apply.makeup", "MAKEUP_LOOKS": "apply.makeup",
    "DrawnRegion": "apply.region", "loop_config": "apply.loop",
    # the dispatch behind Avatar.edit
    "runs_here": "backends", "AvatarParts": "dispatch", "apply_plan": "dispatch", "apply_clauses": "dispatch",
    "edit_avatar": "dispatch", "CapturedFrames": "dispatch",
    # judging an edit (numpy; OpenCV, torch and CLIP load inside the functions)
    "clip_direction_metrics": "metrics", "hue_error_deg": "metrics", "median_hue_deg": "metrics",
    "outside_change": "metrics", "region_colour_consistency": "metrics", "region_colour_spread": "metrics",
    "region_hue_spread": "metrics", "target_coverage": "metrics", "spill_fraction": "metrics", "majority_region": "metrics",
    "lightness_structure": "metrics", "mean_change": "metrics", "rgb_to_oklab": "colour_space",
    "EYE_REGIONS": "editors.palette_recolour", "iris_membership": "editors.palette_recolour",
    "target_from_plan": "editors.palette_recolour",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
