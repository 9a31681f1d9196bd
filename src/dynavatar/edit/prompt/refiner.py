"""The refiner protocol and the choice between refiners (``get_refiner``).

Three refiners share one output schema (``EditPlan``) and the ``PromptRefiner`` protocol: the rules
(``rule_refiner.py``), a local chat model (``local_llm.py``) and an OpenAI-compatible endpoint
(``openai_compatible.py``). "auto" picks the most capable one this machine is set up for, and never
starts sending prompts over the network on its own: the endpoint is opt-in, by
``DYNAVATAR_LLM_BASE_URL`` or a ``base_url`` argument. ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` are
set for many other tools, so they never select it (an explicit ``get_refiner("openai")`` still reads
them). Deciding opens no connection: the local model counts only if its weights are already in the
Hugging Face cache, which is a look at the disk (``dynavatar.weights.find_hub_weights``).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Protocol, runtime_checkable

from ...errors import DynavatarError
from ...weights import find_hub_weights
from ..plan import EditPlan
from .local_llm import DEFAULT_LLM, TransformersRefiner
from .openai_compatible import OpenAIRefiner
from .rule_refiner import RuleRefiner

__all__ = ["PromptRefiner", "get_refiner", "ENV_OPT_IN"]

logger = logging.getLogger("dynavatar.edit")

ENV_OPT_IN = "DYNAVATAR_LLM_BASE_URL"  # the one setting that lets "auto" send prompts to an endpoint
_NOT_ENOUGH = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "DYNAVATAR_LLM_API_KEY", "DYNAVATAR_LLM_MODEL")


@runtime_checkable
class PromptRefiner(Protocol):
    """Anything that turns a prompt into a validated EditPlan."""

    def refine(self, prompt: str) -> EditPlan: ...


def _endpoint_opted_in(kw: dict[str, Any]) -> bool:
    """An endpoint was chosen for dynavatar: DYNAVATAR_LLM_BASE_URL or an explicit ``base_url``. A key or
    a base URL set for other OpenAI tools does not count: "auto" must not start sending prompts over
    the network (to a paid API, say) because they happen to be in the environment."""
    return bool(kw.get("base_url") or os.environ.get(ENV_OPT_IN))


def _why_not_endpoint() -> str:
    present = [n for n in _NOT_ENOUGH if os.environ.get(n)]
    if not present:
        return f"{ENV_OPT_IN} is not set"
    return (f"{ENV_OPT_IN} is not set ({', '.join(present)} alone does not send prompts anywhere; set "
            f"{ENV_OPT_IN} or use refiner='openai' to use an endpoint)")


def _local_llm_cached() -> bool:
    return find_hub_weights(DEFAULT_LLM) is not None


def _accepted(cls, kw: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kw.items() if k in params}


def get_refiner(name: str = "auto", **kw: Any) -> PromptRefiner:
    """A refiner by name: "rule", "transformers", "openai", or "auto".

    "auto": the OpenAI-compatible endpoint when ``DYNAVATAR_LLM_BASE_URL`` is set or ``base_url`` is
    given (never because of ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` alone), else the local
    transformers model when its weights are in the Hugging Face cache, else the rules; the choice
    and its reason are logged (``dynavatar.edit``, INFO). With "auto", keyword arguments the chosen
    refiner does not take are ignored.
    """
    key = (name or "auto").lower()
    if key == "auto":
        if _endpoint_opted_in(kw):
            refiner: PromptRefiner = OpenAIRefiner(**_accepted(OpenAIRefiner, kw))
            logger.info("refiner 'auto': %r (%s)", refiner,
                        "base_url given" if kw.get("base_url") else f"{ENV_OPT_IN} is set")
            return refiner
        why = _why_not_endpoint()
        if _local_llm_cached():
            logger.info("refiner 'auto': the local model %s, cached (%s)", DEFAULT_LLM, why)
            return TransformersRefiner(**_accepted(TransformersRefiner, kw))
        logger.info("refiner 'auto': the rule-based refiner (%s; %s is not in the Hugging Face cache)", why,
                    DEFAULT_LLM)
        return RuleRefiner()
    if key in ("rule", "rules"):
        if kw:
            raise DynavatarError(f"the rule refiner takes no options, got {sorted(kw)}")
        return RuleRefiner()
    if key in ("transformers", "local", "hf"):
        return TransformersRefiner(**kw)
    if key in ("openai", "http", "endpoint"):
        return OpenAIRefiner(**kw)
    raise DynavatarError(f"unknown refiner {name!r}; choose 'auto', 'rule', 'transformers' or 'openai'")
