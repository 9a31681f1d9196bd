"""``TransformersRefiner``: prompt refinement by a local chat model through ``transformers``.

Qwen2.5-1.5B-Instruct by default, loaded lazily: the weights are resolved by
``dynavatar.hub.resolve_weights`` (a folder as given, else the Hugging Face cache, else fetched on
first use at the pinned revision unless ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``), then
transformers loads that folder inside ``dynavatar.weights.hub_offline``, so the load itself opens no
connection. Greedy decoding, so a plan is reproducible. Tests inject tiny random models built offline.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from ...errors import DynavatarError, MissingDependencyError
from ...hub import MissingWeightsError, load_failure_message, resolve_weights
from ...weights import fetch_hint, hub_offline
from .chat import ChatRefiner, GenerationError

__all__ = ["TransformersRefiner", "DEFAULT_LLM"]

DEFAULT_LLM = "Qwen/Qwen2.5-1.5B-Instruct"
_WHAT = "prompt-refinement model"
_RULES_HINT = "Offline, get_refiner('rule') needs no weights."


class TransformersRefiner(ChatRefiner):
    """A local chat model through transformers (loaded lazily; fetched on first use unless offline).

    ``model``: a Hugging Face id or short name ("qwen"), or a folder. ``local_files_only``: None
    follows ``HF_HUB_OFFLINE``; True never fetches. ``pipeline_or_model``
    and ``tokenizer`` inject ready objects (a text-generation pipeline, or a causal LM plus its
    tokenizer) — tests pass tiny random ones. Decoding is greedy, so a plan is reproducible.
    Weights that cannot be had (offline and not cached, transformers missing) fall back to the
    rule-based refiner with a warning, like the endpoint refiner; ``strict=True`` raises instead.
    """

    def __init__(self, model: str = DEFAULT_LLM, device: str = "auto", local_files_only: bool | None = None,
                 pipeline_or_model: Any = None, tokenizer: Any = None, max_new_tokens: int = 300,
                 strict: bool = False):
        self.model_id = str(model)
        self.device = device
        self.local_files_only = local_files_only
        self.max_new_tokens = int(max_new_tokens)
        self.strict = strict
        self._model, self._tokenizer = self._unpack(pipeline_or_model, tokenizer)
        if self._model is not None and pipeline_or_model is not None and model == DEFAULT_LLM:
            cfg = getattr(self._model, "config", None)
            self.model_id = getattr(cfg, "_name_or_path", "") or type(self._model).__name__
        self.name = f"transformers:{self.model_id}"

    @staticmethod
    def _unpack(obj: Any, tokenizer: Any) -> tuple[Any, Any]:
        """A pipeline carries its model and tokenizer; a bare model needs the tokenizer beside it."""
        if obj is not None and not hasattr(obj, "generate") and hasattr(obj, "model"):
            return obj.model, tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
        return obj, tokenizer

    def _components(self) -> tuple[Any, Any]:
        if self._model is None or self._tokenizer is None:
            self._load()
        return self._model, self._tokenizer

    def _load(self) -> None:
        try:
            import torch
            import transformers
        except ImportError as e:
            raise MissingDependencyError(f"the transformers refiner needs transformers: pip install transformers "
                                         f"accelerate ({e})") from e
        from ...device import resolve_device

        device = resolve_device(self.device)
        try:
            folder = resolve_weights(self.model_id, local_files_only=self.local_files_only, what=_WHAT)
        except MissingWeightsError as e:
            raise type(e)(f"{e} {_RULES_HINT}") from e
        try:
            with hub_offline():  # the folder is on disk: transformers has nothing to ask the hub
                self._from_pretrained(transformers, torch, str(folder), device)
        except (OSError, ValueError) as e:
            raise DynavatarError(self._load_failed(folder, e)) from e
        if len(self._tokenizer) == 0:  # an empty tokenizer is what some offline lookups return
            raise DynavatarError(f"the tokenizer of {self.model_id!r} is empty. {fetch_hint(self.model_id)} "
                                 f"{_RULES_HINT}")

    def _from_pretrained(self, transformers: Any, torch: Any, source: str, device: Any) -> None:
        """The tokenizer and the model that were not injected, through transformers' own loaders."""
        if self._tokenizer is None:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        if self._model is None:
            dtype = "auto" if device.type == "cuda" else torch.float32
            key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
            self._model = transformers.AutoModelForCausalLM.from_pretrained(
                source, local_files_only=True, **{key: dtype}).to(device).eval()

    def _load_failed(self, folder: Any, e: Exception) -> str:
        """A folder of the user's: what failed; resolved weights: the file to delete, or "broken" (shared wording)."""
        if os.path.isdir(self.model_id):
            return f"could not load the {_WHAT} from {self.model_id}: {e}"
        return f"{load_failure_message(self.model_id, folder, _WHAT, e)} {_RULES_HINT}"

    def _chat_text(self, messages: list[dict[str, str]], tokenizer: Any) -> str:
        """The tokenizer's chat template when it has one, else a plain role-prefixed transcript."""
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(turns) + "\n\nAssistant:"

    def _generation_config(self, model: Any, pad_id: Any) -> dict[str, Any]:
        """Greedy decoding, without the sampling settings a chat model's own config carries."""
        base = getattr(model, "generation_config", None)
        if base is None:
            return dict(max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad_id)
        gc = copy.deepcopy(base)
        gc.do_sample, gc.num_beams, gc.max_new_tokens, gc.max_length = False, 1, self.max_new_tokens, None
        gc.temperature, gc.top_p, gc.top_k = 1.0, 1.0, 50  # the neutral values: no "ignored flags" warning
        if pad_id is not None:
            gc.pad_token_id = pad_id
        return dict(generation_config=gc)

    def generate_text(self, messages: list[dict[str, str]]) -> str:
        import torch

        try:
            model, tok = self._components()
        except DynavatarError as e:  # no weights offline, no transformers, a broken folder: the rules step in
            if self.strict:
                raise
            raise GenerationError(f"the local model could not load: {e}") from e
        enc = tok(self._chat_text(messages, tok), return_tensors="pt")
        device = getattr(model, "device", None)
        if device is not None:
            enc = {k: v.to(device) for k, v in enc.items()}
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, **self._generation_config(model, pad_id))
        new = out[0, enc["input_ids"].shape[1]:]
        return tok.decode(new, skip_special_tokens=True)
