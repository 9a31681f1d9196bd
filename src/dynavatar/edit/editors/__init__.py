"""Image editors: keyframe images + region masks + an EditPlan -> edited keyframes.

- ``base.py``: the ``ImageEditor`` protocol and ``get_editor`` (which editor "auto" picks);
- ``palette.py`` + ``palette_recolour.py``: the offline palette editor and its OKLab recolour maths;
- ``diffusion.py``: InstructPix2Pix and SD-inpainting editors, with ``crops.py`` (region crops at the
  model's size) and ``pipeline_loading.py`` (diffusers pipelines from the local cache);
- ``masks.py``: grow, feather and composite, the contract every editor keeps (outside pixels stay
  bit-identical);
- ``random_pipelines.py``: real architectures with random weights, for benchmarks and tests without
  the published weights.

Importing this package imports torch but not diffusers or transformers: those load when a pipeline
is built.
"""

from .base import EDITOR_NAMES, ImageEditor, get_editor
from .diffusion import CropDiffusionEditor, InpaintEditor, InstructPix2PixEditor
from .palette import PaletteEditor, is_palette_plan
from .pipeline_loading import MissingWeightsError, load_pipeline
from .random_pipelines import random_ip2p_pipeline

__all__ = ["ImageEditor", "EDITOR_NAMES", "get_editor", "PaletteEditor", "is_palette_plan", "CropDiffusionEditor",
           "InstructPix2PixEditor", "InpaintEditor", "MissingWeightsError", "load_pipeline", "random_ip2p_pipeline"]
