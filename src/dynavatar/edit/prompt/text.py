"""Small text helpers shared by the grammar (reading a prompt) and the wording (writing a plan).

Reading: one normal form of a prompt (lower case, British spelling, no hyphens), and span blanking
that keeps every other index in place, so later patterns still report positions in the clause.
Writing: English lists ("a, b and c"), articles ("a red hat", but "red glasses"), and the pronouns
of the person the prompt talks about.
"""

from __future__ import annotations

import re

from .vocabulary import DEFINITE, MASS_NOUNS

__all__ = ["normalise", "blank_span", "split_words", "join_phrases", "pretty_noun", "with_article", "pronouns"]


def normalise(text: str) -> str:
    """Lower case, one spelling (colour, grey), no hyphens, sentence ends as clause breaks."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"\bcolor", "colour", t)
    t = re.sub(r"\bgray", "grey", t)
    t = re.sub(r"\beye\s+brows?\b", lambda m: m.group(0).replace(" ", ""), t)
    t = re.sub(r"\beye\s+lashes\b", "eyelashes", t)
    t = t.replace("-", " ")
    t = re.sub(r"[.!?:]+", ",", t)
    t = re.sub(r"[^a-z0-9,;&%' ]+", " ", t)
    t = re.sub(r"\s+", " ", t)
    return t.strip(" ,;")


def blank_span(text: str, start: int, end: int) -> str:
    """Replace a span by spaces, keeping every other index where it was."""
    return text[:start] + " " * (end - start) + text[end:]


def split_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text)


def join_phrases(parts: list[str], conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" {conj} " + parts[-1]


def pretty_noun(noun: str) -> str:
    return re.sub(r"\bt shirt\b", "t-shirt", noun)


def with_article(phrase: str) -> str:
    """'red hat' -> 'a red hat'; plural and mass nouns and phrases with an article stay as they are."""
    words = phrase.split()
    if not words or words[0] in ("a", "an", "some") or words[0] in DEFINITE:
        return phrase
    last = words[-1]
    if (last.endswith("s") and not last.endswith("ss")) or phrase in MASS_NOUNS or any(
            phrase.endswith(m) for m in MASS_NOUNS):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def pronouns(norm: str) -> tuple[str, str]:
    """(object, possessive) for the person the prompt talks about: ('her', 'her'), ('him', 'his')..."""
    if re.search(r"\b(?:she|her|hers|herself|woman|girl|lady)\b", norm):
        return "her", "her"
    if re.search(r"\b(?:he|him|his|himself|man|guy|boy)\b", norm):
        return "him", "his"
    return "the person", "their"
