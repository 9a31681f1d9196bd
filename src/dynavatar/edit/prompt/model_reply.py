"""A chat model's reply -> a validated EditPlan.

Small models wrap JSON in code fences, chatter around it, leave trailing commas, write US spelling
or 255-scale colours: the benign slips are repaired here (``extract_json_object``, ``_coerce``),
while real mistakes (unknown fields, bad labels) still fail validation, so the repair re-ask can
name them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from ..plan import EditPlan, EditPlanError
from .colour_names import hex_to_rgb
from .kind_defaults import KIND_DEFAULTS

__all__ = ["extract_json_object", "plan_from_text"]


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's reply, despite code fences and chatter before or after it.

    Fenced blocks are tried first, then the whole text; each also with trailing commas and curly
    quotes repaired. An object that has plan fields wins over one that has none (a nested
    ``{"smile": 0.7}`` alone is not a plan).
    """
    if not isinstance(text, str) or not text.strip():
        raise EditPlanError("the model returned no text")
    fenced = [m.group(1) for m in re.finditer(r"```(?:json|JSON)?\s*(.*?)```", text, re.S)]
    decoder = json.JSONDecoder()
    fields = {f.name for f in dataclasses.fields(EditPlan)} | {"color"}
    fallback = None
    for candidate in fenced + [text]:
        for variant in (candidate, _lenient_json(candidate)):
            for i, ch in enumerate(variant):
                if ch != "{":
                    continue
                try:
                    obj, _ = decoder.raw_decode(variant, i)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    if fields & set(obj):
                        return obj
                    fallback = fallback if fallback is not None else obj
    if fallback is not None:
        return fallback
    raise EditPlanError(f"no JSON object in the model's reply: {text[:160]!r}")


def _lenient_json(text: str) -> str:
    t = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r",\s*([}\]])", r"\1", t)


def _coerce_colour(c: Any) -> Any:
    """'#ff0000' and [255, 0, 0] -> [1.0, 0.0, 0.0]; anything else is left for validation to judge."""
    if isinstance(c, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", c.strip()):
        return list(hex_to_rgb(c.strip()))
    if isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, (int, float)) for v in c):
        if max(c) > 1.0 and max(c) <= 255:
            return [round(v / 255.0, 4) for v in c]
    return c


def _coerce(d: dict[str, Any]) -> dict[str, Any]:
    """Benign fixes of a model's plan: US spelling, nulls for defaults, kind defaults, 255-scale colours.

    Unknown keys stay, so EditPlan.from_dict still rejects typos (and the repair re-ask names them).
    """
    d = dict(d)
    for us, uk in (("color", "colour"), ("color_name", "colour_name")):
        if us in d and uk not in d:
            d[uk] = d.pop(us)
    defaults = {f.name: f for f in dataclasses.fields(EditPlan)}
    for k in list(d):
        f = defaults.get(k)
        if d[k] is None and f is not None and f.default is not None and f.default is not dataclasses.MISSING:
            del d[k]
        elif d[k] is None and f is not None and f.default_factory is not dataclasses.MISSING:
            del d[k]
    for k in ("regions", "preserve"):
        if isinstance(d.get(k), str):
            d[k] = [d[k]]
    if "colour" in d and d["colour"] is not None:
        d["colour"] = _coerce_colour(d["colour"])
    if isinstance(d.get("kind"), str) and d["kind"] in KIND_DEFAULTS:
        for k, v in KIND_DEFAULTS[d["kind"]].items():
            d.setdefault(k, v)
    for k in ("num_steps", "mask_dilation", "keyframes", "reedit_every", "optimise_steps"):
        if isinstance(d.get(k), float) and d[k].is_integer():
            d[k] = int(d[k])
    if isinstance(d.get("regions"), list) and isinstance(d.get("preserve"), list):
        d["preserve"] = [p for p in d["preserve"] if p not in d["regions"]]
    return d


def plan_from_text(text: str, prompt: str, refiner: str) -> EditPlan:
    """A model's reply -> a validated plan for ``prompt`` (raises EditPlanError naming what is wrong)."""
    d = _coerce(extract_json_object(text))
    d["prompt"] = prompt
    d["refiner"] = refiner
    return EditPlan.from_dict(d)
