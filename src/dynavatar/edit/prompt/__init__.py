"""Prompt refinement: the user's words -> a validated ``EditPlan``.

The modules follow the way a prompt travels:

- ``refiner.py``: the ``PromptRefiner`` protocol and ``get_refiner`` (which refiner "auto" picks);
- ``rule_refiner.py``: ``RuleRefiner``, offline and deterministic, the default and every model
  refiner's fallback. It reads a prompt with ``vocabulary.py`` (the words and patterns) and
  ``colour_names.py`` (colour names -> sRGB), parses it into drafts with ``grammar.py`` and writes
  plans from the drafts with ``wording.py`` (``text.py`` holds the helpers both share; ``language.py``
  tells a prompt in another language, which it refuses rather than misreads);
- ``chat.py``: ``ChatRefiner``, the base of the model refiners (system prompt, repair re-ask,
  fallback), with ``model_reply.py`` turning a model's reply into a plan;
- ``local_llm.py``: ``TransformersRefiner``, a local chat model through transformers;
- ``openai_compatible.py``: ``OpenAIRefiner``, any OpenAI-compatible endpoint, standard library only;
- ``kind_defaults.py``: the numbers a plan of each kind gets by default, whichever refiner wrote it.

Nothing here imports torch or transformers at import time, nor the editors or the edit loops: a
plan can be made and shown before any model is loaded.
"""

from .chat import ChatRefiner, build_system_prompt
from .kind_defaults import kind_defaults
from .local_llm import DEFAULT_LLM, TransformersRefiner
from .model_reply import extract_json_object, plan_from_text
from .openai_compatible import OpenAIRefiner
from .refiner import PromptRefiner, get_refiner
from .rule_refiner import RuleRefiner

__all__ = ["PromptRefiner", "RuleRefiner", "TransformersRefiner", "OpenAIRefiner", "ChatRefiner", "get_refiner",
           "extract_json_object", "plan_from_text", "build_system_prompt", "kind_defaults", "DEFAULT_LLM"]
