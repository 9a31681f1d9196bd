"""``EditPlan``: what an edit should do, in a form a person can read and a program can check.

A prompt refiner (rule-based, local LLM or HTTP endpoint; see ``prompt/``) turns "red hair" into
an ``EditPlan``; the image editors and the edit loop act only on the plan. Plans are plain JSON so
they can be shown before spending GPU time (``avatar.plan("red hair")``), stored in an edited
avatar's metadata, and written by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, ClassVar

from ..errors import DynavatarError
from ..geometry.labels import LABEL_NAMES

__all__ = ["EditPlan", "EditPlanError", "EDIT_KINDS", "EXPRESSIONS", "MATERIALS"]

EDIT_KINDS = ("appearance", "colour", "accessory", "remove", "expression")
# Named expression targets an "expression" plan may ask for (intensity in [0, 1] each).
EXPRESSIONS = ("smile", "frown", "surprise", "open_mouth", "closed_eyes", "raised_brows", "pucker",
               "neutral", "wink_left", "wink_right", "angry", "sad")
MATERIALS = ("matte", "glossy", "metallic", "velvet")


class EditPlanError(DynavatarError):
    """A plan that does not validate (unknown region, out-of-range strength, bad JSON...)."""


@dataclasses.dataclass
class EditPlan:
    prompt: str  # the user's words, verbatim
    kind: str  # one of EDIT_KINDS
    regions: list[str]  # labels (LABEL_NAMES) the edit may change; empty only for "expression"
    instruction: str  # imperative instruction for an InstructPix2Pix-style editor
    positive_prompt: str = ""  # description of the edited result (inpainting / SDS prompt)
    negative_prompt: str = "blurry, distorted, deformed, low quality, extra limbs"
    preserve: list[str] = dataclasses.field(default_factory=list)  # labels that must not change
    colour: tuple[float, float, float] | None = None  # target sRGB in [0, 1] for colour edits
    colour_name: str | None = None  # the colour's name as the user said it ("red", "platinum blonde")
    material: str | None = None  # one of MATERIALS, for material edits ("metallic hair")
    expression: dict[str, float] | None = None  # {EXPRESSIONS name: intensity in [0, 1]}
    strength: float = 1.0  # how far the edit goes, 0 = no change, 1 = fully (palette mix, SDS weight)
    text_guidance: float = 7.5  # classifier-free guidance on the text (diffusion editors)
    image_guidance: float = 1.5  # InstructPix2Pix image guidance
    num_steps: int = 20  # diffusion sampling steps
    mask_dilation: int = 6  # pixels (at 512x512) the region mask grows before editing
    # The IDU loop's "guiding parameters" (DynamicAvatars derives them from the LLM): None = the
    # loop's own default (plans written before they existed); the refiners fill them per kind
    # (``prompt/kind_defaults.py``), and an explicit EditConfig field the user set overrides them.
    adv_weight: float | None = None  # discriminator (adversarial) loss weight (EditConfig.w_adv)
    keyframes: int | None = None  # keyframes the dynamic editing strategy picks (EditConfig.keyframes)
    reedit_every: int | None = None  # steps between re-edits of the keyframes, 0 = edit once (EditConfig.reedit_every)
    optimise_steps: int | None = None  # splat optimisation steps (EditConfig.steps)
    refiner: str = "rule"  # which refiner produced the plan
    understood: list[str] = dataclasses.field(default_factory=list)  # the prompt's words a rule mapped to the plan
    ignored: list[str] = dataclasses.field(default_factory=list)  # content words nothing used (typos, unknown words)
    # What would run (``with_backend``); not a field: it describes this machine, not the plan, so it
    # stays out of the JSON and of equality.
    backend: ClassVar[str] = ""

    # ------------------------------------------------------------------ checks
    def validate(self) -> "EditPlan":
        """Raise EditPlanError naming the first bad field; return self so calls chain."""
        def bad(msg: str) -> None:
            raise EditPlanError(f"invalid edit plan for {self.prompt!r}: {msg}")

        if not isinstance(self.prompt, str):
            bad("prompt must be a string")
        if self.kind not in EDIT_KINDS:
            bad(f"kind {self.kind!r} is not one of {EDIT_KINDS}")
        for field in ("understood", "ignored"):
            words = getattr(self, field)
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                bad(f"{field} must be a list of words")
        for field in ("regions", "preserve"):
            names = getattr(self, field)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                bad(f"{field} must be a list of label names")
            unknown = [n for n in names if n not in LABEL_NAMES]
            if unknown:
                bad(f"{field} has unknown labels {unknown}; valid: {', '.join(LABEL_NAMES)}")
        if self.kind != "expression" and not self.regions:
            bad("a non-expression edit needs at least one target region")
        if set(self.regions) & set(self.preserve):
            bad(f"regions {sorted(set(self.regions) & set(self.preserve))} are both edited and preserved")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            bad("instruction must be a non-empty string")
        if self.colour is not None:
            if len(self.colour) != 3 or not all(_finite(c) and 0.0 <= c <= 1.0 for c in self.colour):
                bad(f"colour must be three numbers in [0, 1], got {self.colour}")
        if self.kind == "colour" and self.colour is None:
            bad("a colour edit needs a target colour")
        if self.material is not None and self.material not in MATERIALS:
            bad(f"material {self.material!r} is not one of {MATERIALS}")
        if self.kind == "expression":
            if not self.expression:
                bad("an expression edit needs expression targets")
        if self.expression is not None:
            for k, v in self.expression.items():
                if k not in EXPRESSIONS:
                    bad(f"expression {k!r} is not one of {EXPRESSIONS}")
                if not (_finite(v) and 0.0 <= v <= 1.0):
                    bad(f"expression intensity for {k!r} must be in [0, 1], got {v}")
        for name, lo, hi in (("strength", 0.0, 1.0), ("text_guidance", 0.0, 50.0),
                             ("image_guidance", 0.0, 20.0)):
            v = getattr(self, name)
            if not (_finite(v) and lo <= v <= hi):
                bad(f"{name} must be in [{lo}, {hi}], got {v}")
        if not (isinstance(self.num_steps, int) and 1 <= self.num_steps <= 1000):
            bad(f"num_steps must be an integer in [1, 1000], got {self.num_steps}")
        if not (isinstance(self.mask_dilation, int) and 0 <= self.mask_dilation <= 128):
            bad(f"mask_dilation must be an integer in [0, 128], got {self.mask_dilation}")
        if self.adv_weight is not None and not (_finite(self.adv_weight) and 0.0 <= self.adv_weight <= 1.0):
            bad(f"adv_weight must be in [0, 1], got {self.adv_weight}")
        for name, lo, hi in (("keyframes", 1, 64), ("reedit_every", 0, 10_000), ("optimise_steps", 0, 20_000)):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                bad(f"{name} must be an integer in [{lo}, {hi}], got {v}")
        return self

    # ------------------------------------------------------------------ the loop's knobs
    LOOP_FIELDS: ClassVar[dict[str, str]] = {"adv_weight": "w_adv", "keyframes": "keyframes",
                                             "reedit_every": "reedit_every", "optimise_steps": "steps"}

    def guiding(self) -> dict[str, Any]:
        """The loop settings this plan asks for, by ``EditConfig`` field name (only those it sets):
        ``{"w_adv": 0.02, "keyframes": 8, "reedit_every": 100, "steps": 300}``."""
        return {cfg: getattr(self, f) for f, cfg in self.LOOP_FIELDS.items() if getattr(self, f) is not None}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["colour"] is not None:
            d["colour"] = [float(c) for c in d["colour"]]
        return d

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EditPlan":
        """Build and validate a plan from a dict; unknown keys are an error (typos must not pass); a
        field a plan of an older version lacks takes its default (the loop knobs: None)."""
        if not isinstance(d, dict):
            raise EditPlanError(f"an edit plan must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EditPlanError(f"unknown edit plan fields {unknown}; known: {sorted(known)}")
        missing = [f for f in ("prompt", "kind", "regions", "instruction") if f not in d]
        if missing:
            raise EditPlanError(f"edit plan is missing {missing}")
        d = dict(d)
        if d.get("colour") is not None:
            try:
                d["colour"] = tuple(float(c) for c in d["colour"])
            except (TypeError, ValueError):
                raise EditPlanError(f"colour must be three numbers in [0, 1], got {d['colour']!r}") from None
        if d.get("expression") is not None and not isinstance(d["expression"], dict):
            raise EditPlanError("expression must be an object {name: intensity}")
        return cls(**d).validate()

    @classmethod
    def from_json(cls, text: str) -> "EditPlan":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise EditPlanError(f"edit plan is not valid JSON: {e}") from None

    def with_backend(self, editor: Any = "auto", method: str = "idu", probe: bool = True) -> "EditPlan":
        """This plan, with ``summary()`` also saying what would run it here: the editor ``Avatar.edit``
        would use (``editor``/``method`` as there) and whether its weights are cached, fetchable or
        neither (``edit/backends.py``; ``probe`` lets it ask the hub, within a few seconds)."""
        from .backends import describe_backend  # loads the editors' plan test (and torch) only when asked

        self.backend = describe_backend(self, editor, method, probe)
        return self

    def summary(self) -> str:
        """One line a person reads before the GPU starts; it names the words the refiner ignored, so a
        typo or an unknown word is seen before the edit runs without it."""
        extra = []
        if self.colour is not None:
            extra.append(f"colour {self.colour_name or ''} rgb({', '.join(f'{c:.2f}' for c in self.colour)})")
        if self.material:
            extra.append(f"material {self.material}")
        if self.expression:
            extra.append("expression " + ", ".join(f"{k}={v:.2f}" for k, v in self.expression.items()))
        keep = f"; keep {', '.join(self.preserve)}" if self.preserve else ""
        if self.kind != "expression" and self.guiding():
            g = self.guiding()
            keep += "; loop " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in g.items())
        heard = (f"  I understood: {', '.join(self.understood) or 'nothing'}; ignored: {', '.join(self.ignored)}"
                 if self.ignored else "")
        return (f"[{self.kind}] {', '.join(self.regions) or '(FLAME expression)'}: {self.instruction!r}"
                + (f" ({'; '.join(extra)})" if extra else "") + keep + f"  [refiner: {self.refiner}]" + heard
                + (f"  -> {self.backend}" if self.backend else ""))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
