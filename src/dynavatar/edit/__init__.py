"""Text editing: prompt -> EditPlan -> masked image edits of keyframes -> splats re-optimised in the region.

Importing this package is light: the model refiners import transformers (and torch) only when used.
"""

from .plan import EDIT_KINDS, EXPRESSIONS, MATERIALS, EditPlan, EditPlanError
from .refine import OpenAIRefiner, PromptRefiner, RuleRefiner, TransformersRefiner, get_refiner

__all__ = ["EDIT_KINDS", "EXPRESSIONS", "MATERIALS", "EditPlan", "EditPlanError", "PromptRefiner", "RuleRefiner",
           "TransformersRefiner", "OpenAIRefiner", "get_refiner"]

# Image editors (editors.py, palette.py, diffusion.py, masks.py) import torch, so they load on first
# attribute access: `import dynavatar.edit` stays light.
_LAZY_EDITORS = {
    "ImageEditor": "editors", "EDITOR_NAMES": "editors", "get_editor": "editors",
    "PaletteEditor": "palette", "InstructPix2PixEditor": "diffusion", "InpaintEditor": "diffusion",
    "MissingWeightsError": "diffusion",
}
__all__ += list(_LAZY_EDITORS)


def __getattr__(name: str):
    module = _LAZY_EDITORS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
