"""``RuleRefiner``: offline, deterministic prompt refinement by a small grammar; no weights.

It understands colours (``colour_names.py``), materials, face regions, accessories, removals,
expressions with adverbs, negations ("not the lips", "keep the brows") and several edits in one
prompt. It is the default refiner and the fallback of the model refiners.

- **Several edits in one prompt.** ``refine_all`` returns one plan per independent clause
  ("red hair and blue eyes" -> two plans). ``refine`` must return one plan: it merges plans that
  can share one (same colour and material, expressions, accessories, removals) and otherwise
  returns the first clause's plan and logs a warning that names ``refine_all``.
- **Preserve.** A "keep the brows" clause applies to every plan of that prompt.
- **What was heard.** Every plan carries ``understood`` (content words a rule mapped) and
  ``ignored`` (content words nothing used: not mapped, and not passed on to the editor in a
  free-form instruction); ``EditPlan.summary`` shows them when something was ignored. Stop words
  ("the", "please", "make", "her") are neither.
- **Limits.** At most ``MAX_PROMPT_CHARS`` characters and ``MAX_CLAUSES`` clauses; a prompt in
  which nothing is English (``language.py``) is an error that points to the model refiners.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import reprlib
from typing import Any

from ..plan import EditPlan, EditPlanError
from .grammar import Clause, Draft, split_clauses
from .language import looks_non_english
from .text import normalise, pronouns, split_words
from .vocabulary import FILLER_WORDS, GLASSES_DETAIL_WORDS, PERSON_RE
from .wording import merge_drafts, mergeable, render_plan

__all__ = ["RuleRefiner", "check_prompt", "MAX_PROMPT_CHARS", "MAX_CLAUSES"]

logger = logging.getLogger("dynavatar.edit")

MAX_PROMPT_CHARS = 500  # an edit is a sentence or two; longer text is a paste, not a request
MAX_CLAUSES = 8  # each clause may become an edit of its own; more is several edits in one line


class RuleRefiner:
    """Offline, deterministic refinement by a small grammar of edit requests (see the module docstring)."""

    name = "rule"

    def refine(self, prompt: str) -> EditPlan:
        """One plan for the prompt: mergeable edits are merged; otherwise the first clause wins (warned)."""
        drafts, preserve, pronouns, clauses = self._drafts(prompt)
        merged = [drafts[0]]
        for d in drafts[1:]:
            if mergeable(merged[0], d):
                merged[0] = merge_drafts(merged[0], d)
            else:
                merged.append(d)
        if len(merged) > 1:
            logger.warning("prompt %r asks for %d separate edits; refine() returns the first (%s); use "
                           "refine_all() for all of them", prompt, len(merged), merged[0].kind)
        return _report([render_plan(merged[0], prompt, preserve, pronouns)], clauses)[0]

    def refine_all(self, prompt: str) -> list[EditPlan]:
        """One plan per independent edit, in the prompt's order; expressions combine into one face."""
        drafts, preserve, pronouns, clauses = self._drafts(prompt)
        out: list[Draft] = []
        for d in drafts:
            same = next((o for o in out if o.kind == "expression" == d.kind), None)
            if same is not None:
                out[out.index(same)] = merge_drafts(same, d)
            else:
                out.append(d)
        return _report([render_plan(d, prompt, preserve, pronouns) for d in out], clauses)

    def _drafts(self, prompt: str) -> tuple[list[Draft], set[str], tuple[str, str], list[Clause]]:
        """The prompt's edits in order, the labels it protects, the pronouns for instructions, and the clauses."""
        prompt = check_prompt(prompt)
        norm = normalise(prompt)
        clauses = split_clauses(norm) if norm else []
        if len(clauses) > MAX_CLAUSES:
            raise EditPlanError(f"the prompt has {len(clauses)} clauses; at most {MAX_CLAUSES} per edit — split it "
                                "into several edits")
        preserve: set[str] = set().union(*(c.preserve for c in clauses)) if clauses else set()
        drafts: list[Draft] = []
        for c in clauses:  # in the prompt's order; a free-form clause among others is an edit of its own
            if c.drafts:
                drafts.extend(c.drafts)
            elif c.has_content and not c.has_target and len(clauses) > 1:
                drafts.append(Draft("appearance", 0, text=c.text))
        if not drafts:  # nothing the rules understand: the user's words go to the editor as they are
            if not preserve and not any(_understood(c) for c in clauses) and looks_non_english(prompt):
                raise EditPlanError(
                    f"the rule refiner understands English only and found no English edit in {reprlib.repr(prompt)}; "
                    "write the prompt in English, or use a model refiner: refiner='transformers' (a local chat "
                    "model) or set DYNAVATAR_LLM_BASE_URL to an OpenAI-compatible endpoint")
            drafts = [Draft("appearance", 0, text=re.sub(r"\s+", " ", prompt).strip().rstrip("."))]
        return drafts, preserve, pronouns(norm), clauses


def check_prompt(prompt: Any) -> str:
    """A prompt is a non-empty string of at most MAX_PROMPT_CHARS characters (messages stay one line)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise EditPlanError(f"an edit prompt must be a non-empty string, got {reprlib.repr(prompt)}; describe "
                            "the edit in words, e.g. 'red hair'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise EditPlanError(f"the prompt is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS} — "
                            "describe one edit in a sentence or two, and make several edits one after another")
    return prompt


# ------------------------------------------------------------------------------ what was heard
def _content_words(text: str) -> list[str]:
    """Words that could carry an edit: no stop or filler words, numbers or person words ("the man")."""
    words = [w[:-2] if w.endswith("'s") else w for w in split_words(text)]
    return [w for w in words if w not in FILLER_WORDS and not w.isdigit() and not PERSON_RE.fullmatch(w)]


def _understood(clause: Clause) -> list[str]:
    """The clause's content words that some rule explained (everything but its residual words)."""
    left = set(clause.residual)
    return [w for w in _content_words(clause.text) if w not in left]


def _report(plans: list[EditPlan], clauses: list[Clause]) -> list[EditPlan]:
    """Fill ``understood`` / ``ignored`` on every plan of one prompt.

    A residual word is ignored unless a plan passes it on in its own words (a free-form instruction
    "give him a steampunk look", an adjective of an object "add round glasses").
    """
    passed_on = {w for p in plans for w in split_words(normalise(f"{p.instruction} {p.positive_prompt}"))}
    if any(p.kind == "accessory" and "eyeglasses" in p.regions for p in plans):
        passed_on |= GLASSES_DETAIL_WORDS  # the glasses editor reads the prompt's own words for these
    understood = _unique(w for c in clauses for w in _understood(c))
    ignored = _unique(w for c in clauses for w in c.residual if w not in FILLER_WORDS and w not in passed_on)
    return [dataclasses.replace(p, understood=understood, ignored=ignored).validate() for p in plans]


def _unique(words) -> list[str]:
    return list(dict.fromkeys(words))
