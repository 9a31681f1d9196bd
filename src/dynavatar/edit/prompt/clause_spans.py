"""Finding the spans of a clause: what it names, protects, expresses and removes.

Each finder returns the clause with the spans it explained blanked out (``text.blank_span`` keeps
every other index in place), so the next finder does not read them again: "close the eyes" is an
expression, not also a region to recolour; "but keep the brows" protects the brows rather than
editing them. ``grammar.py`` calls them in a fixed order and turns what they found into drafts.

- **"wink"** without a side is the person's left eye.
"""

from __future__ import annotations

import re
from typing import Any

from .text import blank_span, pretty_noun, split_words
from .vocabulary import (BALD_RE, BUT_RE, DEFINITE, EXPR_DEFAULT, EXPRESSION_RES, ITEM_OF, ITEM_RE, ITEMS, NEG_RE,
                         NO_RE, PHRASE_STOP, POSTFIX_NEG_RE, REMOVE_VERB_RE, SHAVEN_RE, TARGET_OF, TARGET_RE, TARGETS)

__all__ = ["mentions", "find_negations", "find_expressions", "scale_expression", "find_removals", "phrase_start",
           "item_phrase", "item_is_definite"]


def mentions(text: str) -> list[tuple[str, Any, re.Match]]:
    """Items and targets named in ``text`` (items first, so 'hair clip' is not 'hair')."""
    found: list[tuple[str, Any, re.Match]] = []
    for m in ITEM_RE.finditer(text):
        found.append(("item", ITEMS[ITEM_OF[m.group(0)]], m))
        text = blank_span(text, m.start(), m.end())
    for m in TARGET_RE.finditer(text):
        found.append(("target", TARGETS[TARGET_OF[m.group(0)]], m))
    return sorted(found, key=lambda f: f[2].start())


def _preserved_labels(mentions) -> set[str]:
    out: set[str] = set()
    for what, obj, _ in mentions:
        if what == "target":
            out.update(obj.regions)
        elif obj.own_label:
            out.add(obj.own_label)
    if out & {"iris", "left_eye", "right_eye"}:  # keeping the eyes keeps their whites too
        out.add("sclera")
    return out


def find_negations(text: str) -> tuple[str, set[str]]:
    """Blank the spans the user protects ("but keep the brows"); return (rest, protected labels).

    A span runs from its trigger to the next "but" or the clause end, and counts only if it names a
    region or object (so "not too dark" stays a modifier). "without"/"no" followed by an object are
    removals, handled elsewhere; followed by a region they protect it.
    """
    preserve: set[str] = set()
    starts = [m.start() for m in NEG_RE.finditer(text)]
    for m in NO_RE.finditer(text):
        rest = text[m.end():]
        first = mentions(rest)
        if first and first[0][2].start() == 0 and first[0][0] == "target":
            starts.append(m.start())
    for s in sorted(starts, reverse=True):
        nxt = BUT_RE.search(text, s + 4)
        e = nxt.start() if nxt else len(text)
        found = mentions(text[s:e])
        if found:
            preserve |= _preserved_labels(found)
            text = blank_span(text, s, e)
    if not starts:
        post = POSTFIX_NEG_RE.search(text)
        before = mentions(text[:post.start()]) if post else []
        if post and before:
            last = before[-1]
            preserve |= _preserved_labels([last])
            text = blank_span(text, last[2].start(), post.end())
    return text, preserve


def find_expressions(text: str) -> tuple[str, dict[str, float], set[str], int]:
    """Expression words -> ({name: default intensity}, names said with an exact amount, first position).

    Their spans are blanked so "close the eyes" does not also name the eyes as a region.
    """
    found: dict[str, float] = {}
    exact: set[str] = set()
    first = len(text)
    for name, rx in EXPRESSION_RES:
        for m in rx.finditer(text):
            first = min(first, m.start())
            span = m.group(0)
            text = blank_span(text, m.start(), m.end())
            if name == "laugh":
                found["smile"] = max(found.get("smile", 0.0), 0.9)
                found["open_mouth"] = max(found.get("open_mouth", 0.0), 0.6)
            elif name == "close_mouth":
                found["open_mouth"] = 0.0
            elif name == "open_eyes":
                found["closed_eyes"] = 0.0
            elif name == "wink":
                found["wink_right" if re.search(r"\bright\b", span) else "wink_left"] = 1.0
            elif name == "closed_eyes" and "half" in span:
                found["closed_eyes"] = 0.5
                exact.add("closed_eyes")
            else:
                found[name] = EXPR_DEFAULT[name]
    if "neutral" in found:
        found.pop("smile", None)
    return text, found, exact, first


def scale_expression(expr: dict[str, float], exact: set[str], low: bool, high: bool,
                      percent: float | None) -> dict[str, float]:
    """Adverbs move every non-zero intensity: low halves it, high lifts it to at least 0.95."""
    out = {}
    for k, v in expr.items():
        if v > 0.0 and k != "neutral" and k not in exact:
            if percent is not None:
                v = percent
            elif low and not high:
                v = v * 0.5
            elif high and not low:
                v = max(v, 0.95)
        out[k] = round(min(max(v, 0.0), 1.0), 3)
    return out


def find_removals(text: str) -> tuple[str, list[tuple[Any, str]], str | None, int]:
    """Objects and regions the clause removes -> (rest, [(item or target, phrase)], special, position)."""
    removed: list[tuple[Any, str]] = []
    special = None
    pos = len(text)
    for rx, key in ((BALD_RE, "bald"), (SHAVEN_RE, "clean_shaven")):
        m = rx.search(text)
        if m:
            special, pos = key, min(pos, m.start())
            text = blank_span(text, m.start(), m.end())
    for m in NO_RE.finditer(text):  # "no beard", "without glasses"
        rest = text[m.end():]
        first = mentions(rest)
        if first and first[0][0] == "item" and re.fullmatch(r"(?:\S+\s+){0,2}", rest[:first[0][2].start()]):
            im = first[0][2]
            s, e = m.end() + im.start(), m.end() + im.end()
            removed.append((first[0][1], item_phrase(text, s, e, definite_ok=True)))
            pos = min(pos, m.start())
            text = blank_span(text, m.start(), e)
    verb = REMOVE_VERB_RE.search(text)
    if verb:
        pos = min(pos, verb.start())
        stop = BUT_RE.search(text, verb.end())
        end = stop.start() if stop else len(text)
        objs = mentions(text[verb.end():end])
        if not objs and re.search(r"\bhead\b", text[verb.end():end]) and verb.group(0).startswith("shav"):
            special = "bald"
        elif not objs and verb.group(0).startswith("shav"):
            special = special or "clean_shaven"
        for what, obj, m in objs:
            s, e = verb.end() + m.start(), verb.end() + m.end()
            phrase = item_phrase(text, s, e, definite_ok=True) if what == "item" else (obj.noun or m.group(0))
            removed.append((obj, phrase))
        text = blank_span(text, verb.start(), end)
    return text, removed, special, pos


def phrase_start(text: str, start: int) -> int:
    """Where the object's phrase begins: up to four adjectives and an article before its noun."""
    begin = start
    for n, w in enumerate(reversed(list(re.finditer(r"[a-z0-9']+", text[:start])))):
        if w.group(0) in ("a", "an"):
            return w.start()
        if w.group(0) in PHRASE_STOP or n >= 4:
            break
        begin = w.start()
    return begin


def item_phrase(text: str, start: int, end: int, definite_ok: bool = False) -> str:
    """The object as said with its adjectives: 'give her a red baseball cap' -> 'a red baseball cap'.

    ``definite_ok``: drop a leading a/an (the phrase will follow "the": "remove the glasses").
    """
    phrase = " ".join(split_words(text[phrase_start(text, start):end]))
    if definite_ok and phrase.startswith(("a ", "an ")):
        phrase = phrase.split(" ", 1)[1]
    return pretty_noun(phrase)


def item_is_definite(text: str, start: int) -> bool:
    """True when the word before the object's phrase points at one already there ('the hat', 'his glasses')."""
    before = split_words(text[:start])
    for w in reversed(before):
        if w in DEFINITE:
            return True
        if w in PHRASE_STOP or w in ("a", "an"):
            return False
    return False
