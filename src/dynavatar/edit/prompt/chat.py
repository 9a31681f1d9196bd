"""What the model refiners share: one system prompt, one repair re-ask, one fallback to the rules.

``ChatRefiner`` asks a chat model for a plan as JSON (``build_system_prompt`` states the schema),
parses and validates the reply (``model_reply.py``), asks once more naming what was wrong, and
falls back to ``RuleRefiner`` with a warning if the reply is still invalid or the model could not be
asked (``strict=True`` raises instead). Subclasses differ only in ``generate_text(messages) -> str``,
which is also the seam tests override.
"""

from __future__ import annotations

import functools
import json
import logging
import re

from ...errors import DynavatarError
from ...geometry.labels import LABEL_NAMES
from ..plan import EDIT_KINDS, EXPRESSIONS, MATERIALS, EditPlan, EditPlanError
from .model_reply import plan_from_text
from .rule_refiner import RuleRefiner, check_prompt

__all__ = ["ChatRefiner", "GenerationError", "build_system_prompt"]

logger = logging.getLogger("dynavatar.edit")


@functools.lru_cache(maxsize=1)
def build_system_prompt() -> str:
    """The schema, the rules of thumb and three worked examples (made by RuleRefiner, so they agree)."""
    labels = ", ".join(f'"{n}"' for n in LABEL_NAMES if n != "background")
    lines = [
        "You turn a request to edit a 3D head avatar into ONE JSON object, an edit plan. Reply with the JSON "
        "object only: no prose, no code fences.",
        "",
        "Fields:",
        f'- "kind": one of {", ".join(repr(k).replace(chr(39), chr(34)) for k in EDIT_KINDS)}. "colour": recolour '
        'regions to one colour; "accessory": add an object (glasses, hat, earrings, beard); "remove": take '
        'something away; "expression": change the facial expression; "appearance": anything else.',
        f'- "regions": labels the edit may change, from: {labels}. Eye colour is "iris" (with "left_eye" '
        'and "right_eye" for avatars labelled before irises had a label; never "sclera"); brows "left_brow" '
        'and "right_brow"; lips "upper_lip" and "lower_lip". Glasses: "eyeglasses" plus the eyes, '
        'nose and skin they cover; hats: "headwear" plus "hair"; earrings: the ears; beards: "skin". '
        'Non-empty unless kind is "expression".',
        '- "instruction": a short imperative sentence for an image editor, e.g. "make the hair red".',
        '- "positive_prompt": a description of the result, e.g. "a photo of a person with red hair".',
        '- "preserve": labels that must not change ("keep the X", "not the X", "without changing the X"); '
        "never also in regions.",
        '- "colour": [r, g, b] sRGB numbers in [0, 1]; required when kind is "colour", else null.',
        '- "colour_name": the colour as the user said it, or null.',
        f'- "material": one of {", ".join(MATERIALS)}, or null.',
        f'- "expression": an object {{name: intensity in [0, 1]}} with names from {", ".join(EXPRESSIONS)}; '
        'required when kind is "expression", else null. "slightly" about 0.35, plain about 0.7, "very"/"big" 0.95.',
        '- optional numbers: "strength" 0..1 (default 1), "text_guidance" 0..50 (default 7.5, colour edits 5), '
        '"image_guidance" 0..20 (default 1.5), "num_steps" integer 1..1000 (default 20), "mask_dilation" integer '
        "pixels 0..128 (default 6, accessories 16). Leave them out to use the defaults.",
        '- optional guiding parameters of the 3D edit loop: "adv_weight" 0..1 (discriminator weight; default 0.02, '
        'more for new geometry such as accessories), "keyframes" integer 1..64 (default 8), "reedit_every" integer '
        '0..10000 (steps between re-edits of the keyframes; default 100, fewer for accessories), "optimise_steps" '
        "integer 0..20000 (default 300). Leave them out to use the defaults for the kind.",
        "Use no other fields.",
        "",
        "Examples:",
    ]
    rule = RuleRefiner()
    for example in ("red hair but keep the eyebrows", "add round glasses", "make her smile slightly"):
        d = rule.refine(example).to_dict()
        short = {k: v for k, v in d.items() if k not in ("prompt", "refiner", "negative_prompt", "text_guidance",
                                                         "image_guidance", "num_steps", "mask_dilation", "strength",
                                                         "understood", "ignored",
                                                         "adv_weight", "keyframes", "reedit_every",
                                                         "optimise_steps")
                 and v not in (None, [], "")}
        lines += [f"Request: {example}", json.dumps(short)]
    return "\n".join(lines)


class GenerationError(DynavatarError):
    """The model could not be asked (network down, HTTP error, malformed response)."""


class ChatRefiner:
    """Shared by the model refiners: messages, parsing, one repair re-ask, fallback to the rules.

    Subclasses implement ``generate_text(messages) -> str`` (OpenAI-style ``[{"role", "content"}]``);
    that is the only thing that differs between a local model and an HTTP endpoint, and the seam
    tests override.
    """

    name = "chat"
    strict = False

    def generate_text(self, messages: list[dict[str, str]]) -> str:
        raise NotImplementedError

    def messages_for(self, prompt: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": build_system_prompt()}, {"role": "user", "content": prompt}]

    def refine(self, prompt: str) -> EditPlan:
        prompt = check_prompt(prompt)
        messages = self.messages_for(prompt)
        try:
            text = self.generate_text(messages)
            try:
                return plan_from_text(text, prompt, self.name)
            except EditPlanError as first:
                logger.info("%s: plan invalid (%s); asking once more", self.name, first)
                messages = messages + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That reply is not a valid edit plan: {first}. Reply with the "
                                                "corrected JSON object only."}]
                text = self.generate_text(messages)
                try:
                    return plan_from_text(text, prompt, self.name)
                except EditPlanError as second:
                    if self.strict:
                        raise
                    reason = f"invalid plan after one repair: {second}"
        except GenerationError as e:
            if self.strict:
                raise DynavatarError(str(e)) from e
            reason = f"generation failed: {e}"
        return self._fallback(prompt, reason)

    def refine_all(self, prompt: str) -> list[EditPlan]:
        """The model writes one plan per prompt (use RuleRefiner.refine_all to split clauses)."""
        return [self.refine(prompt)]

    def _fallback(self, prompt: str, reason: str) -> EditPlan:
        reason = re.sub(r"\s+", " ", reason)
        reason = reason if len(reason) <= 240 else reason[:237] + "..."
        logger.warning("%s could not refine %r (%s); using the rule-based refiner", self.name, prompt, reason)
        try:
            plan = RuleRefiner().refine(prompt)
        except EditPlanError as e:  # e.g. a prompt in another language: say why the model did not answer too
            raise EditPlanError(f"{self.name} could not refine the prompt ({reason}) and the rule-based refiner "
                                f"cannot either: {e}") from e
        plan.refiner = f"rule (fallback from {self.name}: {reason})"
        return plan.validate()
