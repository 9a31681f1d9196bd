"""Per-kind defaults of an EditPlan's numbers (strength, guidance, steps, mask dilation, and the IDU
loop's guiding parameters: discriminator weight, keyframes, re-edit period, optimisation steps).

Both the rule refiner (when it writes a plan) and the model refiners (when a model leaves a number
out) fill these in, so a plan's numbers never depend on which refiner wrote it.
"""

from __future__ import annotations

from typing import Any

from ..plan import EDIT_KINDS, EditPlanError

__all__ = ["KIND_DEFAULTS", "kind_defaults"]


# Colour edits are easy for an editor (fewer steps, less text guidance keeps identity); accessories
# need room around the region for frames and brims (larger mask dilation) and more steps.
# The loop: a colour edit is the same in every view (few re-edits, a light discriminator); new
# geometry (accessories, removals) needs more keyframes, more steps, more frequent re-edits so the
# 2D edits converge to one 3D object, and a stronger discriminator to keep unconstrained views sharp.
_LOOP = {
    "colour": dict(adv_weight=0.02, keyframes=8, reedit_every=100, optimise_steps=300),
    "appearance": dict(adv_weight=0.03, keyframes=8, reedit_every=75, optimise_steps=400),
    "accessory": dict(adv_weight=0.05, keyframes=10, reedit_every=50, optimise_steps=500),
    "remove": dict(adv_weight=0.05, keyframes=10, reedit_every=50, optimise_steps=400),
    "expression": dict(adv_weight=0.02, keyframes=8, reedit_every=100, optimise_steps=300),  # unused: FLAME edit
}
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "colour": dict(strength=1.0, text_guidance=5.0, image_guidance=1.5, num_steps=12, mask_dilation=4, **_LOOP["colour"]),
    "appearance": dict(strength=1.0, text_guidance=7.5, image_guidance=1.5, num_steps=20, mask_dilation=6,
                       **_LOOP["appearance"]),
    "accessory": dict(strength=1.0, text_guidance=8.0, image_guidance=1.2, num_steps=25, mask_dilation=16,
                      **_LOOP["accessory"]),
    "remove": dict(strength=1.0, text_guidance=7.0, image_guidance=1.3, num_steps=25, mask_dilation=10,
                   **_LOOP["remove"]),
    "expression": dict(strength=1.0, text_guidance=6.5, image_guidance=1.6, num_steps=20, mask_dilation=6,
                       **_LOOP["expression"]),
}
assert set(KIND_DEFAULTS) == set(EDIT_KINDS)


def kind_defaults(kind: str) -> dict[str, Any]:
    """Default strength/guidance/steps/dilation for a kind of edit (a copy; safe to modify)."""
    if kind not in KIND_DEFAULTS:
        raise EditPlanError(f"kind {kind!r} is not one of {EDIT_KINDS}")
    return dict(KIND_DEFAULTS[kind])
