"""Text editing: prompt -> EditPlan -> masked image edits of keyframes -> splats re-optimised in the region."""

from .plan import EDIT_KINDS, EXPRESSIONS, MATERIALS, EditPlan, EditPlanError

__all__ = ["EDIT_KINDS", "EXPRESSIONS", "MATERIALS", "EditPlan", "EditPlanError"]
