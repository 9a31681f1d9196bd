"""``RuleRefiner``: offline, deterministic prompt refinement by a small grammar; no weights.

It understands colours (``colour_names.py``), materials, face regions, accessories, removals,
expressions with adverbs, negations ("not the lips", "keep the brows") and several edits in one
prompt. It is the default refiner and the fallback of the model refiners.

- **Several edits in one prompt.** ``refine_all`` returns one plan per independent clause
  ("red hair and blue eyes" -> two plans). ``refine`` must return one plan: it merges plans that
  can share one (same colour and material, expressions, accessories, removals) and otherwise
  returns the first clause's plan and logs a warning that names ``refine_all``.
- **Preserve.** A "keep the brows" clause applies to every plan of that prompt.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..plan import EditPlan, EditPlanError
from .grammar import Draft, split_clauses
from .text import normalise, pronouns
from .wording import merge_drafts, mergeable, render_plan

__all__ = ["RuleRefiner", "check_prompt"]

logger = logging.getLogger("dynavatar.edit")


class RuleRefiner:
    """Offline, deterministic refinement by a small grammar of edit requests (see the module docstring)."""

    name = "rule"

    def refine(self, prompt: str) -> EditPlan:
        """One plan for the prompt: mergeable edits are merged; otherwise the first clause wins (warned)."""
        drafts, preserve, pronouns = self._drafts(prompt)
        merged = [drafts[0]]
        for d in drafts[1:]:
            if mergeable(merged[0], d):
                merged[0] = merge_drafts(merged[0], d)
            else:
                merged.append(d)
        if len(merged) > 1:
            logger.warning("prompt %r asks for %d separate edits; refine() returns the first (%s); use "
                           "refine_all() for all of them", prompt, len(merged), merged[0].kind)
        return render_plan(merged[0], prompt, preserve, pronouns)

    def refine_all(self, prompt: str) -> list[EditPlan]:
        """One plan per independent edit, in the prompt's order; expressions combine into one face."""
        drafts, preserve, pronouns = self._drafts(prompt)
        out: list[Draft] = []
        for d in drafts:
            same = next((o for o in out if o.kind == "expression" == d.kind), None)
            if same is not None:
                out[out.index(same)] = merge_drafts(same, d)
            else:
                out.append(d)
        return [render_plan(d, prompt, preserve, pronouns) for d in out]

    def _drafts(self, prompt: str) -> tuple[list[Draft], set[str], tuple[str, str]]:
        """The prompt's edits in order, the labels it protects, and the pronouns for instructions."""
        prompt = check_prompt(prompt)
        norm = normalise(prompt)
        clauses = split_clauses(norm) if norm else []
        preserve: set[str] = set().union(*(c.preserve for c in clauses)) if clauses else set()
        drafts: list[Draft] = []
        for c in clauses:  # in the prompt's order; a free-form clause among others is an edit of its own
            if c.drafts:
                drafts.extend(c.drafts)
            elif c.has_content and not c.has_target and len(clauses) > 1:
                drafts.append(Draft("appearance", 0, text=c.text))
        if not drafts:  # nothing the rules understand: the user's words go to the editor as they are
            drafts = [Draft("appearance", 0, text=re.sub(r"\s+", " ", prompt).strip().rstrip("."))]
        return drafts, preserve, pronouns(norm)


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise EditPlanError(f"an edit prompt must be a non-empty string, got {prompt!r}")
    return prompt
