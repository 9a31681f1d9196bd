"""Expression edits ("make her smile"): change FLAME parameters, not appearance.

The embedded default head has named expression components, so a plan's named expressions map
straight onto them. A FLAME file's components have no names, so the edit is transferred through
what both heads share, the 478 mediapipe landmarks: the default head's landmark motion for the
expression (scaled to the user head's size) is matched by the user head's expression basis in
least squares (ridge-regularised), which is linear because FLAME's expression blendshapes are.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ...errors import DynavatarError
from ...flame import FlameModel, FlameParams

__all__ = ["EXPRESSION_RECIPES", "expression_delta", "apply_expression"]

# Named expression -> (default-head components with weights, jaw opening in radians) at intensity 1.
EXPRESSION_RECIPES: dict[str, tuple[dict[str, float], float]] = {
    "smile": ({"smile_L": 1.0, "smile_R": 1.0, "cheek_squint_L": 0.3, "cheek_squint_R": 0.3}, 0.0),
    "frown": ({"lip_corner_down_L": 1.0, "lip_corner_down_R": 1.0, "brow_down_L": 0.6, "brow_down_R": 0.6}, 0.0),
    "surprise": ({"brow_inner_up_L": 1.0, "brow_inner_up_R": 1.0, "brow_outer_up_L": 1.0, "brow_outer_up_R": 1.0,
                  "eye_wide_L": 0.8, "eye_wide_R": 0.8, "lips_part": 0.5}, 0.2),
    "open_mouth": ({"lips_part": 1.0}, 0.3),
    "closed_eyes": ({"blink_L": 1.0, "blink_R": 1.0}, 0.0),
    "raised_brows": ({"brow_inner_up_L": 1.0, "brow_inner_up_R": 1.0, "brow_outer_up_L": 1.0,
                      "brow_outer_up_R": 1.0}, 0.0),
    "pucker": ({"pucker": 1.0}, 0.0),
    "wink_left": ({"blink_L": 1.0}, 0.0),
    "wink_right": ({"blink_R": 1.0}, 0.0),
    "angry": ({"brow_down_L": 1.0, "brow_down_R": 1.0, "brow_squeeze": 0.8, "nose_wrinkle_L": 0.4,
               "nose_wrinkle_R": 0.4, "lip_press": 0.6}, 0.0),
    "sad": ({"brow_inner_up_L": 0.8, "brow_inner_up_R": 0.8, "lip_corner_down_L": 0.8,
             "lip_corner_down_R": 0.8}, 0.0),
    "neutral": ({}, 0.0),  # handled separately: pulls the clip's expressions towards zero
}


def _default_head_coefficients(head: FlameModel, targets: dict[str, float]) -> Tensor:
    names = head.expr_names or []
    coeffs = torch.zeros(head.n_expr)
    for expr, intensity in targets.items():
        for comp, w in EXPRESSION_RECIPES[expr][0].items():
            if comp in names and names.index(comp) < head.n_expr:
                coeffs[names.index(comp)] += w * intensity
    return coeffs


def _landmark_basis(model: FlameModel) -> Tensor:
    """d landmarks / d expression at the neutral pose: [478*3, n_expr] (exact: blendshapes are linear)."""
    p0 = model.zero_params(1)
    base = model(p0, landmark_set="mediapipe").landmarks[0]
    eye = torch.eye(model.n_expr)
    lm = model(FlameParams.zeros(model.n_expr, model.n_shape, model.n_expr).replace(expr=eye),
               landmark_set="mediapipe").landmarks
    return (lm - base).reshape(model.n_expr, -1).T


def _head_size(model: FlameModel) -> float:
    lm = model(model.zero_params(1), landmark_set="mediapipe").landmarks[0]
    return float((lm[33] - lm[263]).norm())  # outer eye corners


@torch.no_grad()
def expression_delta(model: FlameModel, targets: dict[str, float], reference: FlameModel | None = None,
                     ridge: float = 1e-3) -> tuple[Tensor, float]:
    """Expression coefficients [n_expr] and jaw opening (radians) to add for ``targets``
    ({EXPRESSIONS name: intensity}). ``reference`` is the head with named components (default:
    the embedded default head)."""
    model = model.cpu()
    jaw = sum(EXPRESSION_RECIPES[e][1] * v for e, v in targets.items() if e in EXPRESSION_RECIPES)
    unknown = [e for e in targets if e not in EXPRESSION_RECIPES]
    if unknown:
        raise DynavatarError(f"no recipe for expressions {unknown}; known: {sorted(EXPRESSION_RECIPES)}")
    if model.expr_names and any(c in model.expr_names for r in EXPRESSION_RECIPES.values() for c in r[0]):
        return _default_head_coefficients(model, targets), jaw
    if "mediapipe" not in model.landmark_sets:
        raise DynavatarError("this head model has neither named expressions nor a mediapipe landmark embedding, "
                             "so an expression edit cannot be transferred to it; load it with FlameModel.load so "
                             "the embedding is computed")
    ref = (reference or FlameModel.load()).cpu()
    coeffs = _default_head_coefficients(ref, targets)
    base = ref(ref.zero_params(1), landmark_set="mediapipe").landmarks[0]
    moved = ref(ref.zero_params(1).replace(expr=coeffs[None]), landmark_set="mediapipe").landmarks[0]
    delta = (moved - base) * (_head_size(model) / _head_size(ref))  # [478, 3]
    A = _landmark_basis(model)  # [1434, E]
    lhs = A.T @ A + ridge * torch.eye(A.shape[1]) * A.square().sum() / A.shape[1]
    return torch.linalg.solve(lhs, A.T @ delta.reshape(-1)), jaw


def apply_expression(params: FlameParams, model: FlameModel, targets: dict[str, float],
                     strength: float = 1.0) -> FlameParams:
    """Every frame's parameters with the expression added (``neutral`` scales the clip's own
    expressions towards zero instead)."""
    targets = dict(targets)
    calm = targets.pop("neutral", 0.0)
    expr, jaw = params.expr * (1 - strength * calm), params.jaw.clone()
    if targets:
        d_expr, d_jaw = expression_delta(model, targets)
        expr = expr + strength * d_expr.to(expr)[None, : expr.shape[1]]
        jaw = jaw.clone()
        jaw[:, 0] = jaw[:, 0] + strength * d_jaw
    return dataclasses.replace(params, expr=expr, jaw=jaw)
