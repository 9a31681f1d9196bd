"""Expression edits ("make her smile"): change FLAME parameters, not appearance.

A recipe per named expression says which of the embedded default head's named components make it and
how far the jaw opens, at intensity 1 ("big"); plain words ask for about 0.7 of it, "slightly" about
0.35 (``edit.prompt.vocabulary.EXPR_DEFAULT``). The recipes are sized so the change SHOWS on the
rendered face: ``bench.expression_metrics`` measures it with the landmark detector and its
``EXPRESSION_TARGETS`` are what plain strength must reach (smile: mouth corners up >= 0.04 of the
inter-ocular distance and the mouth >= 6 % wider). A smile is therefore not two corner components but
what a face does when it smiles: corners up and out (about 30 % further than the corner component
alone), cheeks raised, nasolabial folds and dimples deepened, the lips a little apart and the lower
lip drawn down so the upper teeth show, the lower lids pushed up. (The embedded head's components
are left as generated: they are strong enough once combined; scaling them would change every
tracked result.)

The edit is applied RELATIVE to each frame's own expression, so the clip keeps talking and blinking
under it, with headroom instead of saturation:

* how much of the expression a frame already has, feature by feature (mouth, each eye, each brow), is
  its projection onto the recipe's motion of the 478 mediapipe landmarks (a frame mid-smile has 0.6 of a smile, a half blink 0.5 of a closed eye; a
  frame showing the opposite counts as none, so it still gets the whole edit);
* ``have`` is counted from the clip's resting face (its median frame, with ``REST_FRAMES`` or more):
  trackers put part of a person's resting face into expression coefficients (downturned corners,
  low brows), and that is not "already frowning";
* the frame gets ``soft_cap(have + asked) - have`` more, where ``soft_cap`` is the identity up to a
  knee below the recipe's cap and bends smoothly onto it: a frame already smiling widely gains little
  and never reaches a grimace; the absolute amount never passes a hard limit (cap + 0.5; lids: 1,
  "closed", as they would cut through the eyeball beyond it);
* components that fight the expression are released in proportion to the intensity (a smile relaxes
  the corner depressors; closing the eyes releases eye-wide and squint; raising the brows releases
  the frown);
* the jaw opening is capped the same way (``JAW_CAP``). Identity (``shape``), pose and eyes are untouched.

A FLAME file's components have no names, and an avatar fitted with few components (the ``tiny``
preset keeps 20) lacks some of the named ones, so the edit is transferred through what both heads
share, the 478 mediapipe landmarks: the default head's landmark motion for the expression (scaled to
the user head's size) is matched by the user head's own expression basis in least squares
(ridge-regularised), which is linear because FLAME's expression blendshapes are. What a truncated
basis cannot reach (the right lid of a head with 20 components) is logged, with what to do.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...errors import DynavatarError
from ...flame import FlameModel, FlameParams
from ...geometry.landmark_sets import FACE_MESH_POLYGONS, MOUTH_LANDMARKS

__all__ = ["EXPRESSION_RECIPES", "ExpressionRecipe", "JAW_CAP", "REST_FRAMES", "expression_delta", "apply_expression", "soft_cap",
           "expression_amounts", "component_features"]

logger = logging.getLogger("dynavatar")


@dataclass(frozen=True)
class ExpressionRecipe:
    """One named expression on the default head at intensity 1 ("big")."""

    components: dict[str, float]  # named expression component -> coefficient at intensity 1
    jaw: float = 0.0  # jaw opening at intensity 1, radians
    cap: float = 1.35  # the most of this expression a frame may end with (in units of intensity)
    knee: float = 0.35  # soft_cap is the identity up to cap - knee (>= 1: a neutral frame gets what it asks)
    limit: float | None = None  # hard ceiling of the absolute amount (None: cap + 0.5); lids: 1 = closed
    release: tuple[str, ...] = field(default=())  # components fighting it, scaled by (1 - intensity)


def _lr(**kw: float) -> dict[str, float]:
    """{"smile": 1.0} -> {"smile_L": 1.0, "smile_R": 1.0}; names ending in "_" get both sides."""
    out = {}
    for k, v in kw.items():
        if k.endswith("_"):
            out[k + "L"] = out[k + "R"] = v
        else:
            out[k] = v
    return out


def _sides(*names: str) -> tuple[str, ...]:
    return tuple(n + s for n in names for s in ("L", "R")) if all(n.endswith("_") for n in names) else names


# Named expression -> recipe at intensity 1. Component names are the embedded head's (L/R = the
# subject's); see assets/flame/build_default_head.py for what each one moves (2-10 mm per unit).
EXPRESSION_RECIPES: dict[str, ExpressionRecipe] = {
    "smile": ExpressionRecipe(
        _lr(smile_=1.3, cheek_squint_=0.6, nasolabial_deepen_=0.6, dimple_=0.4, squint_=0.15,
            lower_lip_depress_=0.25) | {"lips_part": 0.3},
        jaw=0.04, release=_sides("lip_corner_down_", "brow_down_") + ("lip_press",)),
    "frown": ExpressionRecipe(
        _lr(lip_corner_down_=1.3, brow_down_=0.6, lower_lip_depress_=0.2) | {"brow_squeeze": 0.4, "chin_raise": 0.3},
        release=_sides("smile_", "cheek_squint_", "brow_inner_up_", "brow_outer_up_")),
    "surprise": ExpressionRecipe(
        _lr(brow_inner_up_=2.1, brow_outer_up_=1.8, eye_wide_=0.8) | {"lips_part": 0.6},
        jaw=0.2, release=_sides("brow_down_", "blink_", "squint_") + ("brow_squeeze", "lip_press")),
    "open_mouth": ExpressionRecipe(_lr(lower_lip_depress_=0.3, upper_lip_raise_=0.2) | {"lips_part": 1.3}, jaw=0.25,
                                   release=("lip_press",) + _sides("smile_")),
    "closed_eyes": ExpressionRecipe(_lr(blink_=1.0), cap=1.0, knee=0.05, limit=1.0,
                                    release=_sides("eye_wide_", "squint_")),
    # brows travel further than lips (10-15 mm in a full raise) and trackers often leave them raised
    # already (a clip's resting brows): more headroom before the cap
    "raised_brows": ExpressionRecipe(_lr(brow_inner_up_=2.1, brow_outer_up_=1.8, eye_wide_=0.25), cap=1.7, knee=0.5,
                                     release=_sides("brow_down_") + ("brow_squeeze",)),
    "pucker": ExpressionRecipe({"pucker": 1.0}, release=_sides("smile_", "mouth_stretch_")),
    "wink_left": ExpressionRecipe({"blink_L": 1.0}, cap=1.0, knee=0.05, limit=1.0, release=("eye_wide_L", "squint_L")),
    "wink_right": ExpressionRecipe({"blink_R": 1.0}, cap=1.0, knee=0.05, limit=1.0, release=("eye_wide_R", "squint_R")),
    "angry": ExpressionRecipe(
        _lr(brow_down_=1.0, nose_wrinkle_=0.4) | {"brow_squeeze": 0.8, "lip_press": 0.6},
        release=_sides("smile_", "brow_inner_up_", "brow_outer_up_")),
    "sad": ExpressionRecipe(_lr(brow_inner_up_=0.8, lip_corner_down_=0.8), release=_sides("smile_", "cheek_squint_")),
    "neutral": ExpressionRecipe({}),  # handled separately: pulls the clip's expressions towards zero
}

#: With at least this many frames, headroom is measured from the clip's resting face (the median
#: frame, feature by feature): trackers put part of a person's resting face (downturned corners, low
#: brows) into expression coefficients, and that is not "already frowning". Fewer frames: from zero.
REST_FRAMES = 8

#: The widest jaw opening an expression edit leads to, radians (about 25 degrees: a wide-open mouth).
JAW_CAP = 0.45


def soft_cap(x: Tensor, cap: float, knee: float) -> Tensor:
    """``x`` where ``x <= cap - knee``, ``cap`` where ``x >= cap + knee``, a quadratic blend between
    (continuous with its slope): how far an expression can go without turning into a grimace."""
    lo = cap - knee
    mid = cap - (cap + knee - x).square() / (4 * knee)
    return torch.where(x <= lo, x, torch.where(x >= cap + knee, torch.full_like(x, cap), mid))


# ------------------------------------------------------------------------------ directions
def _named_coefficients(names: list[str], n_expr: int, targets: dict[str, float]) -> tuple[Tensor, list[str]]:
    """Coefficients [n_expr] of ``targets`` ({expression: intensity}) on a head with named components,
    and the recipe components that head lacks (a truncated basis)."""
    coeffs, missing = torch.zeros(n_expr), []
    for expr, intensity in targets.items():
        for comp, w in EXPRESSION_RECIPES[expr].components.items():
            i = names.index(comp) if comp in names else n_expr
            if i < n_expr:
                coeffs[i] += w * intensity
            else:
                missing.append(comp)
    return coeffs, missing


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


def _on_cpu(model: FlameModel) -> FlameModel:
    """``model`` on the CPU without moving the caller's (``nn.Module.cpu`` moves in place)."""
    return model if model.v_template.device.type == "cpu" else copy.deepcopy(model).cpu()


def _has_names(model: FlameModel) -> bool:
    return bool(model.expr_names) and any(c in model.expr_names for r in EXPRESSION_RECIPES.values()
                                          for c in r.components)


def _transfer(model: FlameModel, ref: FlameModel, coeffs_ref: Tensor, ridge: float) -> tuple[Tensor, float]:
    """``coeffs_ref`` [E_ref] on the reference head as coefficients [E] of ``model``'s basis: least
    squares on the mediapipe landmarks' motion. -> (coefficients, share of the motion left unreached)"""
    base = ref(ref.zero_params(1), landmark_set="mediapipe").landmarks[0]
    moved = ref(ref.zero_params(1).replace(expr=coeffs_ref[None]), landmark_set="mediapipe").landmarks[0]
    delta = ((moved - base) * (_head_size(model) / _head_size(ref))).reshape(-1)  # [1434]
    A = _landmark_basis(model)  # [1434, E]
    lhs = A.T @ A + ridge * torch.eye(A.shape[1]) * A.square().sum() / A.shape[1]
    c = torch.linalg.solve(lhs, A.T @ delta)
    unreached = float((A @ c - delta).norm() / delta.norm().clamp_min(1e-12))
    return c, unreached


def _check_names(targets: dict[str, float]) -> None:
    unknown = [e for e in targets if e not in EXPRESSION_RECIPES]
    if unknown:
        known = ", ".join(sorted(EXPRESSION_RECIPES))
        raise DynavatarError(f"no recipe for expressions {unknown}; choose from: {known}")


@torch.no_grad()
def expression_delta(model: FlameModel, targets: dict[str, float], reference: FlameModel | None = None,
                     ridge: float = 1e-3) -> tuple[Tensor, float]:
    """Expression coefficients [n_expr] and jaw opening (radians) to add for ``targets``
    ({EXPRESSION_RECIPES name: intensity}) to a neutral face. ``reference`` is the head with named
    components (default: the embedded default head), used when ``model`` lacks them."""
    model = _on_cpu(model)
    _check_names(targets)
    jaw = sum(EXPRESSION_RECIPES[e].jaw * v for e, v in targets.items())
    if _has_names(model):
        coeffs, missing = _named_coefficients(model.expr_names, model.n_expr, targets)
        if not missing:
            return coeffs, jaw
    if "mediapipe" not in model.landmark_sets:
        raise DynavatarError("this head model has neither the named expressions nor a mediapipe landmark embedding, "
                             "so an expression edit cannot be transferred to it; load it with FlameModel.load so "
                             "the embedding is computed")
    ref = _on_cpu(reference or FlameModel.load())
    coeffs_ref, _ = _named_coefficients(ref.expr_names or [], ref.n_expr, targets)
    coeffs, unreached = _transfer(model, ref, coeffs_ref, ridge)
    if unreached > 0.5:  # half an expression is another expression (closed eyes -> a wink): refuse
        raise DynavatarError(f"this avatar's head model has only {model.n_expr} expression components, too few for "
                             f"{'/'.join(targets)} ({100 * (1 - unreached):.0f} % of its motion); refit the avatar "
                             "with the 'fast' or 'quality' preset, which keep all of them")
    if unreached > 0.35:
        logger.warning("the avatar's head model has %d expression components: %s reaches only %.0f %% of its "
                       "landmark motion; fit the avatar with more (the 'fast' preset keeps all) for the full "
                       "expression", model.n_expr, "/".join(targets), 100 * (1 - unreached))
    return coeffs, jaw


# ------------------------------------------------------------------------------ per frame
def expression_amounts(expr: Tensor, unit: Tensor, gram: Tensor) -> Tensor:
    """How much of the expression whose unit coefficients are ``unit`` [E] each frame ``expr`` [B, E]
    already shows: the projection of the frame's landmark motion onto the expression's, with ``gram``
    [E, E] = B^T B of the landmark basis B.  -> [B] (1 = the whole unit expression)."""
    g_unit = gram @ unit  # [E]
    return (expr @ g_unit) / (unit @ g_unit).clamp_min(1e-20)


def _release(expr: Tensor, names: list[str] | None, comps: tuple[str, ...], amount: float) -> Tensor:
    """``expr`` [B, E] with the positive values of the named ``comps`` scaled by (1 - amount)."""
    if not names or amount <= 0:
        return expr
    idx = [names.index(c) for c in comps if c in names and names.index(c) < expr.shape[1]]
    if idx:
        sub = expr[:, idx]
        expr[:, idx] = torch.where(sub > 0, sub * (1 - min(amount, 1.0)), sub)
    return expr


#: Facial features whose headroom is judged apart (mediapipe indices): a clip whose resting brows the
#: tracker set low is not "already frowning" at the mouth.
_FEATURES = (MOUTH_LANDMARKS + FACE_MESH_POLYGONS["chin"], FACE_MESH_POLYGONS["right_eye"],
             FACE_MESH_POLYGONS["left_eye"], FACE_MESH_POLYGONS["right_brow"], FACE_MESH_POLYGONS["left_brow"])


def component_features(basis: Tensor, named: bool) -> Tensor:
    """Which facial feature (index into ``_FEATURES``; ``len(_FEATURES)`` for elsewhere) each
    expression component mostly moves, from the landmark basis [478*3, E] -> long [E]. Unnamed
    (global, PCA-like) components all get one group: they cannot be told apart by feature."""
    n = basis.shape[1]
    if not named:
        return torch.zeros(n, dtype=torch.long)
    energy = basis.reshape(-1, 3, n).square().sum(1)  # [478, E]
    per = torch.stack([energy[list(idx)].sum(0) for idx in _FEATURES] + [energy.sum(0) * 0.25])  # [G+1, E]
    return per.argmax(0)


def _add_one(expr: Tensor, jaw: Tensor, model: FlameModel, name: str, intensity: float, gram: Tensor,
             features: Tensor) -> None:
    """Add ``intensity`` of expression ``name`` to every frame in place: expr [B, E], jaw [B, 3]; each
    facial feature the expression moves (``features`` [E]) gets its own headroom."""
    recipe = EXPRESSION_RECIPES[name]
    expr[:] = _release(expr, model.expr_names, recipe.release, intensity)
    unit, jaw_unit = expression_delta(model, {name: 1.0})
    unit = unit[:expr.shape[1]].to(expr)
    limit = recipe.cap + 0.5 if recipe.limit is None else recipe.limit
    for f in torch.unique(features[unit != 0]).tolist():
        part = torch.where(features == f, unit, torch.zeros_like(unit))  # [E] this feature's share
        amount = expression_amounts(expr, part, gram)  # [B]
        rest = amount.median() if len(amount) >= REST_FRAMES else amount.new_zeros(())
        have = (amount - rest).clamp_min(0)  # beyond the clip's resting face; the opposite counts as none
        more = (soft_cap(have + intensity, recipe.cap, recipe.knee) - have).clamp_min(0)
        more = torch.minimum(more, (limit - amount.clamp_min(0)).clamp_min(0))  # never past the hard limit
        expr += more[:, None] * part[None]
    if jaw_unit:
        opened = jaw[:, 0].clamp_min(0)
        cap = min(JAW_CAP, recipe.cap * jaw_unit)
        jaw[:, 0] += (soft_cap(opened + intensity * jaw_unit, cap, recipe.knee * jaw_unit) - opened).clamp_min(0)


@torch.no_grad()
def apply_expression(params: FlameParams, model: FlameModel, targets: dict[str, float],
                     strength: float = 1.0) -> FlameParams:
    """Every frame's parameters with the expressions added relative to its own (module docstring);
    ``neutral`` scales the clip's own expressions towards zero instead. ``targets``: {name: intensity
    in [0, 1]} (1 = big), each multiplied by ``strength``."""
    targets = dict(targets)
    _check_names(targets)
    calm = targets.pop("neutral", 0.0)
    expr = (params.expr * (1 - strength * calm)).clone()
    jaw = params.jaw.clone()
    if targets:
        cpu = _on_cpu(model)
        basis = _landmark_basis(cpu) if "mediapipe" in cpu.landmark_sets else torch.eye(cpu.n_expr)
        e = expr.shape[1]
        gram = (basis.T @ basis)[:e, :e].to(expr)  # [E, E]
        features = component_features(basis, bool(cpu.expr_names) and "mediapipe" in cpu.landmark_sets)[:e]
        for name, intensity in targets.items():
            if intensity * strength > 0:
                _add_one(expr, jaw, cpu, name, float(intensity * strength), gram, features.to(expr.device))
    return dataclasses.replace(params, expr=expr, jaw=jaw)
