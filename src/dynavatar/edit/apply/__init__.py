"""Applying an edit to the avatar: from an EditPlan to new splats (or new FLAME expressions).

- ``loop.py``: the iterative dataset update (IDU) loop: keyframes (``keyframes.py``) are rendered,
  edited by an image editor and distilled back into the region's splats, with a patch
  discriminator (``discriminator.py``); palette plans first recolour the splats themselves
  (``splat_recolour.py``);
- ``sds_loop.py``: the ``method="sds"`` variant, scored by a diffusion model (``sds_guidance.py``,
  with ``sds_config.py``, ``sds_maths.py``, ``sds_loading.py`` and the LoRA adapters of ``lora.py``);
- ``region.py``: what both loops share: which splats the plan may change, their masks, renders and
  the optimiser step that restores everything outside the region;
- ``expression.py``: expression plans change FLAME parameters, not splats.
"""

from .expression import apply_expression, expression_delta
from .keyframes import View, farthest_point_keyframes, keyframe_views, rotate_head
from .loop import EditConfig, edit_splats
from .region import EditResult
from .sds_config import SDSConfig
from .sds_guidance import SDSGuidance
from .sds_loop import SDSEditConfig, edit_splats_sds
from .splat_recolour import recolour_splats

__all__ = ["EditConfig", "EditResult", "edit_splats", "SDSEditConfig", "edit_splats_sds", "SDSConfig", "SDSGuidance",
           "apply_expression", "expression_delta", "View", "farthest_point_keyframes", "keyframe_views",
           "rotate_head", "recolour_splats"]
