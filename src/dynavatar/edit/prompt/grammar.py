"""Clause analysis: a normalised prompt -> clauses -> drafts of edits, each with what it names.

A prompt is split on "and", commas, semicolons and "then"; each clause is read in a fixed order,
and each step blanks what it explained so the next does not read it again (``clause_spans.py``):
negations ("but keep the brows" -> protected labels), expressions ("smile slightly"), removals ("no
glasses", "bald"), then here objects to add or change ("a red cap"), and finally colours, tones and
materials of the named regions.
Pieces that are not edits on their own ("red hair and lips") are glued back to a neighbour
(``split_clauses``). What is left over is the clause's free-form content.

- **Metal names** ("gold", "silver") mean a metallic material on skin, lips, clothes and
  accessories, but a natural colour on hair, brows, beards ("golden hair" is golden blonde) and eyes.
- **Beards** and other objects without a label of their own get an ``appearance`` draft, not a
  colour draft (``_split_by_label``): see ``wording.py`` for why.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from ..plan import EditPlanError

from .clause_spans import (find_expressions, find_negations, find_removals, item_is_definite, item_phrase,
                           phrase_start, scale_expression)
from .colour_names import (EYE_OVERRIDES, HAIR_LIKE_OVERRIDES, HAIR_ONLY_NAMES, SKIN_OVERRIDES, ColourMatch,
                           find_colour, find_qualifiers, hex_to_rgb, nearest_colour)
from .text import blank_span, split_words, with_article
from .vocabulary import (ADD_VERB_RE, HIGH_EXPR, ITEM_OF, ITEM_RE, ITEMS, LOW_ADVERB, LOW_EXPR, MATERIAL_OF,
                         MATERIAL_RE, PERCENT_RE, PERSON_RE, REST_RE, SPLIT_RE, STOP_WORDS, TAKE_OFF_RE, TARGET_OF,
                         TARGET_RE, TARGETS, TAN_WORDS, TONES, VERBS, Item, Target)

__all__ = ["Draft", "Clause", "split_clauses"]

#: a clause that is a tan alone ("a tan", "add a light tan", "some sun tan"): an edit of its own, not
#: a second colour for the clause before it ("red hair and a tan" was red hair with tan ends)
_TAN_CLAUSE = (rf"(?:(?:give|add|get)\s+)?(?:a|an|some)\s+(?:\w+\s+)?(?:{TAN_WORDS})(?:\s+look)?"  # a noun: "a tan"
               r"|(?:\w+\s+)?(?:sun ?tan(?:ned)?|bronzed?|sun-?kissed)(?:\s+look)?")  # bare "tan" may be a colour

logger = logging.getLogger("dynavatar.edit")


@dataclasses.dataclass
class Draft:
    """One edit found in a clause, before it is rendered into an EditPlan."""

    kind: str
    pos: int  # where in the clause it was found (drafts keep the prompt's order)
    targets: list[tuple[Target, str]] = dataclasses.field(default_factory=list)  # (target, as said)
    items: list[tuple[Item, str]] = dataclasses.field(default_factory=list)  # (item, phrase as said)
    colour: ColourMatch | None = None
    material: str | None = None
    expression: dict[str, float] | None = None
    low: bool = False  # "slightly", "a bit": a weaker edit
    percent: float | None = None  # "50%" said explicitly
    text: str = ""  # the clause, for instructions of free-form edits
    residual: list[str] = dataclasses.field(default_factory=list)  # content words no rule explained
    special: str | None = None  # "bald", "clean_shaven"
    qualifiers: list[str] = dataclasses.field(default_factory=list)  # "dark roots", "blue ends" (colour_names)
    note: str = ""  # what the reading assumed ("nearest to 'purpel'"), shown in the plan's colour name


@dataclasses.dataclass
class Clause:
    text: str
    drafts: list[Draft]
    preserve: set[str]
    has_target: bool  # names a region, an object or an expression
    has_content: bool  # has words no rule explained (a free-form edit)
    starts_with_verb: bool
    residual: list[str] = dataclasses.field(default_factory=list)  # those words, in order

    @property
    def complete(self) -> bool:
        return bool(self.drafts) or bool(self.preserve) or (self.has_content and not self.has_target)

    @property
    def target_only(self) -> bool:
        return not self.complete and self.has_target


def _colour_for(text: str, targets: list[Target] | list[Item]) -> ColourMatch | None:
    """The first colour in ``text``, read for the first target (hair, eyes and skin have their own readings)."""
    first = targets[0] if targets else None
    overrides = None
    if first is not None and getattr(first, "hair_like", False):
        overrides = HAIR_LIKE_OVERRIDES
    elif isinstance(first, Target) and first.key in ("eyes", "left_eye", "right_eye"):
        overrides = EYE_OVERRIDES
    elif isinstance(first, Target) and first.key in ("skin", "face"):
        overrides = SKIN_OVERRIDES
    return find_colour(text, overrides)


def _tone_for(text: str, target: Target) -> ColourMatch | None:
    """'dark hair', 'fair skin', 'light eyes': a tone word without a colour name."""
    family = {"hair": "hair", "brows": "hair", "skin": "skin", "face": "skin", "eyes": "eyes"}.get(target.key)
    if family is None:
        return None
    tones = TONES[family]
    m = re.search(r"\b(" + "|".join(tones) + r")\b", text)
    if not m:
        return None
    return ColourMatch(name=m.group(1), base=m.group(1), rgb=hex_to_rgb(tones[m.group(1)]), start=m.start(),
                       end=m.end())


def _material_in(text: str) -> str | None:
    m = MATERIAL_RE.search(text)
    return MATERIAL_OF[m.group(0)] if m else None


def _implied_material(colour: ColourMatch | None, material: str | None, hair_like_or_eyes: bool) -> str | None:
    """Metal names mean metal, except on hair and eyes (see the module docstring)."""
    if material is None and colour is not None and colour.is_metal and not hair_like_or_eyes:
        return "metallic"
    return material


def _analyse(clause: str) -> Clause:
    """Everything one clause asks for: drafts of edits, protected labels, and how complete it is."""
    text = TAKE_OFF_RE.sub(lambda m: "take off " + m.group(1), REST_RE.sub(" ", clause))
    starts_with_verb = bool(split_words(text)) and split_words(text)[0] in VERBS
    text, preserve = find_negations(text)
    text, expression, exact, expr_pos = find_expressions(text)
    text, removed, special, remove_pos = find_removals(text)
    low = bool(re.search(LOW_ADVERB, text))
    pct = PERCENT_RE.search(text)
    percent = min(int(pct.group(1)), 100) / 100.0 if pct else None
    drafts: list[Draft] = []
    if removed or special:
        drafts.append(Draft("remove", remove_pos, items=[(o, p) for o, p in removed if isinstance(o, Item)],
                             targets=[(o, p) for o, p in removed if isinstance(o, Target)], special=special,
                             text=clause))
    if expression:
        low_expr, high_expr = bool(re.search(LOW_EXPR, clause)), bool(re.search(HIGH_EXPR, clause))
        expr = scale_expression(expression, exact, low_expr, high_expr, percent)
        drafts.append(Draft("expression", expr_pos, expression=expr, text=clause))
    item_drafts, targets_text, modified = _item_drafts(text, low, percent, clause)
    drafts.extend(item_drafts)
    target_drafts, residual, has_targets = _target_drafts(targets_text, text, modified, low, percent, clause,
                                                          quiet=bool(drafts))
    drafts.extend(target_drafts)
    if not drafts and not has_targets and re.fullmatch(_TAN_CLAUSE, text.strip()):  # "and a light tan": a look
        drafts.append(Draft("appearance", 0, text=clause))
    has_target = has_targets or bool(expression) or bool(removed) or bool(item_drafts) or bool(special)
    if expression:  # "big smile", "smile gently": the adverbs set the intensity
        residual = [w for w in residual if not re.fullmatch(f"{LOW_EXPR}|{HIGH_EXPR}", w)]
    return Clause(clause, sorted(drafts, key=lambda d: d.pos), preserve, has_target, bool(residual),
                   starts_with_verb, residual)


def _item_drafts(text: str, low: bool, percent: float | None, clause: str):
    """Objects to add (accessory/appearance drafts) and objects already there to change.

    Returns (drafts, text with the objects blanked for the region search, [(item, noun) to modify]).
    """
    add_verb = bool(ADD_VERB_RE.search(text))
    added: dict[str, Draft] = {}
    modified: list[tuple[Item, str, int]] = []
    rest = text
    for m in ITEM_RE.finditer(text):
        item = ITEMS[ITEM_OF[m.group(0)]]
        phrase = item_phrase(text, m.start(), m.end())
        rest = blank_span(rest, m.start(), m.end())
        if item_is_definite(text, m.start()) and not add_verb:
            modified.append((item, m.group(0), m.start()))
            continue
        ph_start = phrase_start(text, m.start())
        span = text[ph_start:m.end()]
        d = added.setdefault(item.add_kind, Draft(item.add_kind, m.start(), low=low, percent=percent, text=clause))
        d.items.append((item, phrase))
        colour = find_colour(span, HAIR_LIKE_OVERRIDES if item.hair_like else None)
        if colour is not None and d.colour is None:
            d.colour = colour
            rest = blank_span(rest, ph_start + colour.start, ph_start + colour.end)
        material = _material_in(span)
        d.material = _implied_material(colour, d.material or material, item.hair_like)
    return list(added.values()), rest, modified


def _item_as_target(item: Item, said: str) -> Target:
    """An object already worn, named as a region to recolour ('make the glasses red')."""
    regions = (item.own_label,) if item.own_label else item.regions
    article = with_article(said).split(" ")[0] if with_article(said) != said else ""
    return Target("item:" + item.key, regions, said, article, wear=item.wear, hair_like=item.hair_like,
                   labelless=item.own_label is None)


def _target_drafts(targets_text: str, text: str, modified, low: bool, percent: float | None, clause: str,
                   quiet: bool):
    """Colour / material / free-form drafts on named regions (and on objects already there).

    ``quiet``: the clause already has another edit, so regions without a colour or material are
    context ("add earrings to the ears"), not a free-form edit of their own.
    """
    found = [(TARGETS[TARGET_OF[m.group(0)]], m.group(0), m.start(), m.end())
             for m in TARGET_RE.finditer(targets_text)]
    found += [(_item_as_target(i, said), said, s, s + len(said)) for i, said, s in modified]
    found.sort(key=lambda f: f[2])
    rest = targets_text
    for _, _, s, e in found:
        rest = blank_span(rest, s, e)
    targets = [t for t, *_ in found]
    rest, qualifiers = find_qualifiers(rest)
    colour = _colour_for(rest, targets)
    if colour is None and targets:
        colour = _tone_for(rest, targets[0])
    if colour is None:
        colour = _colour_for(rest, [])
    material = _material_in(rest)
    note = ""
    if colour is not None:
        rest = blank_span(rest, colour.start, colour.end)
        second = _colour_for(rest, targets)
        if second is not None and found:
            rest = blank_span(rest, second.start, second.end)
            qualifiers.append(_two_colours(colour, second, targets, clause))
    elif found:
        colour, rest, note = _nearest_colour(rest, targets)
    if material is not None:
        m = MATERIAL_RE.search(rest)
        rest = blank_span(rest, m.start(), m.end()) if m else rest
    rest = re.sub(LOW_ADVERB, " ", rest)
    words = [w[:-2] if w.endswith("'s") else w for w in split_words(rest)]  # "the person's hair"
    residual = [w for w in words if w not in STOP_WORDS and not w.isdigit() and not PERSON_RE.fullmatch(w)]
    if not found and colour is not None and (colour.base in HAIR_ONLY_NAMES):
        found, targets = [(TARGETS["hair"], "hair", colour.start, colour.end)], [TARGETS["hair"]]
    elif not found and colour is not None and PERSON_RE.search(text) and not quiet:
        found, targets = [(TARGETS["skin"], "skin", colour.start, colour.end)], [TARGETS["skin"]]
    if not found:
        return [], residual, False
    if colour is None and material is None and (quiet or not residual):
        return [], residual, True
    drafts = _split_by_label(found, colour, material, low, percent, clause, residual)
    for d in drafts:
        d.qualifiers, d.note = list(qualifiers), note
    return drafts, residual, True


def _two_colours(first: ColourMatch, second: ColourMatch, targets, clause: str) -> str:
    """"red and blue hair": on hair (and brows) the defined split, the first colour at the roots and
    the second at the ends, as a qualifier; on anything else one region cannot take two colours."""
    if targets and all(getattr(t, "hair_like", False) for t in targets):
        return f"{second.name} ends"
    raise EditPlanError(f"{clause!r} gives {first.name} and {second.name} to the same region; give each region "
                        f"one colour (e.g. '{first.name} lips and {second.name} eyes')")


def _nearest_colour(rest: str, targets) -> tuple[ColourMatch | None, str, str]:
    """A region named with a word that is no colour we know but spelled like one ("purpel hair"):
    the nearest named colour, and a note that says so. -> (colour or None, rest, note)"""
    for m in re.finditer(r"[a-z]+", rest):
        if m.group(0) in STOP_WORDS or len(m.group(0)) < 3:
            continue
        name = nearest_colour(m.group(0))
        if name is None:
            continue
        match = _colour_for(name, targets)
        if match is None:
            continue
        logger.warning("%r is not a colour I know; using the nearest named colour, %s", m.group(0), match.name)
        colour = dataclasses.replace(match, start=m.start(), end=m.end())
        return colour, blank_span(rest, m.start(), m.end()), f"nearest to '{m.group(0)}'"
    return None, rest, ""


def _split_by_label(found, colour, material, low, percent, clause, residual) -> list[Draft]:
    """Regions with a label get a colour draft; objects without one (beards, earrings) an appearance draft."""
    drafts = []
    for labelless in (False, True):
        group = [(t, said) for t, said, s, e in found if t.labelless == labelless]
        if not group:
            continue
        pos = min(s for t, said, s, e in found if t.labelless == labelless)
        hairish = any(t.hair_like or t.key in ("eyes", "left_eye", "right_eye") for t, _ in group)
        mat = _implied_material(colour, material, hairish)
        kind = "colour" if colour is not None and not labelless else "appearance"
        drafts.append(Draft(kind, pos, targets=group, colour=colour, material=mat, low=low, percent=percent,
                             text=clause, residual=residual))
    return drafts


def split_clauses(norm: str) -> list[Clause]:
    """Split on 'and' / ',' / ';' / 'then', then glue back the pieces that are not edits on their own.

    "red hair and lips": "lips" names a region but asks nothing -> joins the clause before it.
    "make the hair and the eyes blue": "make the hair" -> joins the clause after it (it starts with a verb).
    "red and blue hair": "red" names nothing -> joins the clause after it.
    """
    parts = [p for p in SPLIT_RE.split(norm) if p and p.strip(" ,;")]
    clauses = [_analyse(p.strip()) for p in parts] or [_analyse(norm)]
    changed = True
    while changed and len(clauses) > 1:
        changed = False
        for i, c in enumerate(clauses):
            if c.complete:
                continue
            if c.target_only and i > 0 and not c.starts_with_verb:
                j = i - 1
            else:
                j = i + 1 if i + 1 < len(clauses) else i - 1
            lo, hi = min(i, j), max(i, j)
            clauses[lo:hi + 1] = [_analyse(clauses[lo].text + " and " + clauses[hi].text)]
            changed = True
            break
    return clauses
