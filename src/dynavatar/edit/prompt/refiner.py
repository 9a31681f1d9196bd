"""The refiner protocol and the choice between refiners (``get_refiner``).

Three refiners share one output schema (``EditPlan``) and the ``PromptRefiner`` protocol: the rules
(``rule_refiner.py``), a local chat model (``local_llm.py``) and an OpenAI-compatible endpoint
(``openai_compatible.py``). "auto" picks the most capable one this machine is set up for, and never
starts sending prompts to a paid API on its own.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Protocol, runtime_checkable

from ...errors import DynavatarError
from ...weights import find_hub_weights
from ..plan import EditPlan
from .local_llm import DEFAULT_LLM, TransformersRefiner
from .openai_compatible import ENV_BASE, OpenAIRefiner, env_setting
from .rule_refiner import RuleRefiner

__all__ = ["PromptRefiner", "get_refiner"]


@runtime_checkable
class PromptRefiner(Protocol):
    """Anything that turns a prompt into a validated EditPlan."""

    def refine(self, prompt: str) -> EditPlan: ...


def _openai_configured() -> bool:
    """An endpoint was set up for dynavatar. OPENAI_API_KEY alone does not count: "auto" must not start
    sending prompts to a paid API because a key happens to be in the environment."""
    return bool(env_setting(ENV_BASE) or os.environ.get("DYNAVATAR_LLM_API_KEY")
                or os.environ.get("DYNAVATAR_LLM_MODEL"))


def _local_llm_cached() -> bool:
    return find_hub_weights(DEFAULT_LLM) is not None


def _accepted(cls, kw: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kw.items() if k in params}


def get_refiner(name: str = "auto", **kw: Any) -> PromptRefiner:
    """A refiner by name: "rule", "transformers", "openai", or "auto".

    "auto": the OpenAI-compatible endpoint when ``DYNAVATAR_LLM_BASE_URL`` / ``OPENAI_BASE_URL`` /
    ``DYNAVATAR_LLM_API_KEY`` / ``DYNAVATAR_LLM_MODEL`` is set, else the local transformers model
    when its weights are in the Hugging Face cache, else the rules. With "auto", keyword arguments
    the chosen refiner does not take are ignored.
    """
    key = (name or "auto").lower()
    if key == "auto":
        if _openai_configured():
            return OpenAIRefiner(**_accepted(OpenAIRefiner, kw))
        if _local_llm_cached():
            return TransformersRefiner(**_accepted(TransformersRefiner, kw))
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
