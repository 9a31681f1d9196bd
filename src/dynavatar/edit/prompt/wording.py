"""Wording: drafts of edits -> validated EditPlans (instruction, description, regions, numbers).

Each kind of draft has its own renderer; they write an imperative ``instruction`` for an
InstructPix2Pix-style editor and a ``positive_prompt`` that describes the result ("a photo of a
person with red hair") for inpainting and SDS. ``mergeable`` / ``merge_drafts`` decide when two
drafts of one prompt can share a plan.

- **Objects without a label** (a beard recolour) become ``appearance`` plans with no ``colour`` or
  ``material``: those stay in the instruction's words, so a region-palette editor never restyles
  the whole region the object sits on (all the skin).
- **Preserve.** Protected labels leave ``regions`` unless nothing would remain; ``preserve`` holds
  only what the user asked to keep (everything outside ``regions`` is kept by the region mask anyway).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ...geometry.labels import LABEL_NAMES
from ..plan import EditPlan
from .grammar import Draft
from .kind_defaults import kind_defaults
from .text import join_phrases, pretty_noun, split_words, with_article
from .vocabulary import EXPR_REGIONS, ITEMS, MATERIAL_ADJ, TAN_REGIONS, TAN_WORDS, VERBS

__all__ = ["render_plan", "mergeable", "merge_drafts", "colour_name"]


def _names(targets) -> str:
    return join_phrases([f"the {pretty_noun(t.noun or said)}" for t, said in targets])


def _descriptor(d: Draft) -> str:
    """'metallic gold', 'glossy', 'red' -- the words that describe the new look."""
    words = []
    if d.material and not (d.colour is not None and d.material == "metallic" and d.colour.name.startswith("metal")):
        words.append(MATERIAL_ADJ[d.material])
    if d.colour is not None:
        words.append(d.colour.name)
    return " ".join(words)


def _described(targets, desc: str) -> str:
    """'a photo of a person with red hair and red lips, wearing a red shirt'."""
    having, wearing = [], []
    for t, said in targets:
        noun = pretty_noun(t.noun or said)
        phrase = f"{desc} {noun}".strip()
        if t.wear:
            wearing.append(with_article(phrase))
        else:
            having.append(f"{t.article} {phrase}".strip() if t.article else phrase)
    out = "a photo of a person"
    if having:
        out += " with " + join_phrases(having)
    if wearing:
        out += (", wearing " if having else " wearing ") + join_phrases(wearing)
    return out


def _regions(*groups) -> list[str]:
    seen: list[str] = []
    for g in groups:
        for r in g:
            if r not in seen:
                seen.append(r)
    return seen


def _strength(d: Draft) -> float:
    if d.percent is not None:
        return max(d.percent, 0.05)
    return 0.5 if d.low else 1.0


def _render_colour(d: Draft, obj: str) -> dict[str, Any]:
    desc = _descriptor(d)
    name = colour_name(d)
    desc = desc.replace(d.colour.name, name.split(" (")[0], 1)
    return dict(regions=_regions(*(t.regions for t, _ in d.targets)), instruction=f"make {_names(d.targets)} {desc}",
                positive_prompt=_described(d.targets, desc), colour=d.colour.rgb, colour_name=name,
                material=d.material, strength=_strength(d))


def colour_name(d: Draft) -> str:
    """The plan's ``colour_name``: the colour as said, its qualifiers ("blonde with dark roots, with
    blue ends": ``colour_names.split_qualifiers`` reads them back) and what the reading assumed."""
    name = d.colour.name + "".join(f"{' with' if i == 0 else ', with'} {q}" for i, q in enumerate(d.qualifiers))
    return f"{name} ({d.note})" if d.note else name


def _render_appearance(d: Draft, obj: str) -> dict[str, Any]:
    regions = _regions(*(t.regions for t, _ in d.targets), *(i.regions for i, _ in d.items))
    if d.items:  # makeup, freckles, tattoos
        phrases = [p for _, p in d.items]
        instruction = f"add {join_phrases(phrases)}"
        positive = f"a photo of a person with {join_phrases(phrases)}"
        if all(i.wear for i, _ in d.items):
            positive = f"a photo of a person wearing {join_phrases(phrases)}"
        return dict(regions=regions, instruction=instruction, positive_prompt=positive, strength=_strength(d))
    desc = _descriptor(d)
    if desc:  # a material on its own, or a colour on something without a label of its own
        # Objects without a label (a beard) keep colour and material in words only: a palette
        # editor given them would restyle the whole region they sit on (all the skin).
        labelless = any(t.labelless for t, _ in d.targets)
        return dict(regions=regions, instruction=f"make {_names(d.targets)} {desc}",
                    positive_prompt=_described(d.targets, desc), material=None if labelless else d.material,
                    strength=_strength(d))
    words = split_words(d.text)
    instruction = d.text if words and words[0] in VERBS else f"give {obj} {d.text}"
    return dict(regions=regions, instruction=instruction,
                positive_prompt=_described(d.targets, " ".join(d.residual)), strength=_strength(d))


def _render_accessory(d: Draft, obj: str) -> dict[str, Any]:
    phrases = [with_article(p) for _, p in d.items]
    worn = [p for (i, _), p in zip(d.items, phrases) if i.wear]
    had = [p for (i, _), p in zip(d.items, phrases) if not i.wear]
    positive = "a photo of a person" + (" wearing " + join_phrases(worn) if worn else "") + (
        (" and" if worn else "") + " with " + join_phrases(had) if had else "")
    out = dict(regions=_regions(*(i.regions for i, _ in d.items)), instruction=f"add {join_phrases(phrases)}",
               positive_prompt=positive, material=d.material)
    if d.colour is not None:
        out.update(colour=d.colour.rgb, colour_name=d.colour.name)
    return out


def _render_remove(d: Draft, obj: str) -> dict[str, Any]:
    regions = _regions(*(i.regions for i, _ in d.items), *(t.regions for t, _ in d.targets))
    things = [p for _, p in d.items] + [pretty_noun(t.noun or said) for t, said in d.targets]
    instructions, without = [], []
    if d.special == "bald":
        regions = _regions(regions, ("hair",))
        instructions.append(f"make {obj} bald")
    if d.special == "clean_shaven" and not any(i.key == "beard" for i, _ in d.items):
        regions = _regions(regions, ITEMS["beard"].regions)
        things.insert(0, "beard")
    if things:
        instructions.insert(0, "remove " + join_phrases([f"the {t}" for t in things]))
        without = [with_article(t) for t in things]
    positive = "a photo of a " + ("bald " if d.special == "bald" else "") + "person"
    if without:
        positive += " without " + join_phrases(without, "or")
    return dict(regions=regions, instruction=" and ".join(instructions), positive_prompt=positive)


# expression -> (instruction verb phrase, description), with {poss}; low/high variants by suffix
_EXPR_PHRASES: dict[str, tuple[str, str]] = {
    "smile": ("smile", "smiling"), "frown": ("frown", "frowning"), "angry": ("look angry", "looking angry"),
    "sad": ("look sad", "looking sad"), "surprise": ("look surprised", "looking surprised"),
    "open_mouth": ("open {poss} mouth", "with an open mouth"), "closed_eyes": ("close {poss} eyes", "with closed eyes"),
    "raised_brows": ("raise {poss} eyebrows", "with raised eyebrows"),
    "wink_left": ("wink {poss} left eye", "winking the left eye"),
    "wink_right": ("wink {poss} right eye", "winking the right eye"),
    "pucker": ("pucker {poss} lips", "with puckered lips"), "neutral": ("look neutral", "with a neutral expression"),
}
_EXPR_ZERO: dict[str, tuple[str, str]] = {"open_mouth": ("close {poss} mouth", "with a closed mouth"),
                                          "closed_eyes": ("open {poss} eyes", "with open eyes")}


def _expression_phrase(name: str, v: float, poss: str) -> tuple[str, str]:
    """Instruction and description for one expression at intensity ``v``."""
    if v <= 0.0:
        verb, desc = _EXPR_ZERO.get(name, _EXPR_PHRASES[name])
    else:
        verb, desc = _EXPR_PHRASES[name]
        if v <= 0.5 and name != "neutral":
            verb = verb.replace("look ", "look slightly ") if verb.startswith("look") else verb + " slightly"
            desc = (desc.replace("with ", "with slightly ", 1) if desc.startswith("with")
                    else desc.replace("looking ", "looking slightly ", 1) if desc.startswith("looking")
                    else desc + " slightly")
        elif v >= 0.9 and name in ("smile", "open_mouth", "raised_brows", "surprise", "angry", "sad", "frown"):
            verb = verb.replace("look ", "look very ") if verb.startswith("look") else verb + {
                "smile": " broadly", "open_mouth": " wide", "raised_brows": " high", "frown": " deeply"}[name]
            desc = desc.replace("looking ", "looking very ") if desc.startswith("looking") else {
                "smile": "smiling broadly", "open_mouth": "with the mouth wide open",
                "raised_brows": "with high raised eyebrows", "frown": "frowning deeply"}[name]
    return verb.format(poss=poss), desc


def _render_expression(d: Draft, obj: str, poss: str) -> dict[str, Any]:
    phrases = [_expression_phrase(k, v, poss) for k, v in d.expression.items()]
    regions = _regions(*(EXPR_REGIONS[k] for k in d.expression))
    return dict(regions=regions, instruction=f"make {obj} " + join_phrases([p[0] for p in phrases]),
                positive_prompt="a photo of a person " + join_phrases([p[1] for p in phrases]),
                expression=dict(d.expression))


def render_plan(d: Draft, prompt: str, preserve: set[str], pronouns: tuple[str, str]) -> EditPlan:
    """A draft -> a validated plan; protected labels leave ``regions`` (unless nothing would remain)."""
    obj, poss = pronouns
    if d.kind == "colour":
        fields = _render_colour(d, obj)
    elif d.kind == "accessory":
        fields = _render_accessory(d, obj)
    elif d.kind == "remove":
        fields = _render_remove(d, obj)
    elif d.kind == "expression":
        fields = _render_expression(d, obj, poss)
    elif d.targets or d.items:
        fields = _render_appearance(d, obj)
    else:  # free-form: the user's words are the instruction
        regions = list(TAN_REGIONS) if re.search(TAN_WORDS, d.text) else ["skin", "hair"]
        fields = dict(regions=regions, instruction=d.text, positive_prompt=f"a photo of a person, {d.text}")
    regions = list(fields.pop("regions"))
    kept = [r for r in regions if r not in preserve]
    if kept or d.kind == "expression":
        regions = kept
    plan_preserve = [r for r in LABEL_NAMES if r in preserve and r not in regions]
    params = kind_defaults(d.kind)
    params["strength"] = fields.pop("strength", params["strength"])
    return EditPlan(prompt=prompt, kind=d.kind, regions=regions, preserve=plan_preserve, refiner="rule",
                    **fields, **params).validate()


def mergeable(a: Draft, b: Draft) -> bool:
    """Two drafts that one plan can carry without losing either."""
    if a.kind != b.kind or a.kind == "appearance":
        return False
    if a.kind == "colour":
        return (a.colour.rgb == b.colour.rgb and a.material == b.material and a.low == b.low
                and a.qualifiers == b.qualifiers)
    if a.kind == "accessory":
        return (a.colour is None or b.colour is None or a.colour.rgb == b.colour.rgb)
    return True


def merge_drafts(a: Draft, b: Draft) -> Draft:
    """One draft doing both; an expression said twice keeps its stronger intensity."""
    expression = None
    if a.expression is not None or b.expression is not None:
        expression = dict(a.expression or {})
        for k, v in (b.expression or {}).items():
            expression[k] = max(expression.get(k, 0.0), v)
    return dataclasses.replace(a, targets=a.targets + b.targets, items=a.items + b.items,
                               colour=a.colour or b.colour, material=a.material or b.material,
                               expression=expression, special=a.special or b.special,
                               text=f"{a.text} and {b.text}")
