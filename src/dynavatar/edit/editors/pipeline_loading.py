"""Loading diffusers pipelines for the editors from a local folder or the Hugging Face cache.

Weights are looked up (``dynavatar.weights``) before diffusers is even imported, so a missing model
fails at once with the shared "weights missing" wording, which names the weights and the command
that fetches them. Nothing is downloaded unless ``local_files_only=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...device import resolve_device
from ...errors import DynavatarError, MissingDependencyError
from ...weights import broken_weights_message, find_hub_weights, hf_hub_cache, missing_weights_message

__all__ = ["MissingWeightsError", "PIPELINES", "load_pipeline"]


class MissingWeightsError(DynavatarError, FileNotFoundError):
    """Model weights a backend needs are not on this machine; the message says how to fetch them."""


PIPELINES = {
    "ip2p": "StableDiffusionInstructPix2PixPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "controlnet-inpaint": "StableDiffusionControlNetInpaintPipeline",
}


def _is_cached(model: str) -> bool:
    return Path(model).is_dir() or find_hub_weights(model) is not None


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise MissingDependencyError("the diffusion editors need diffusers: pip install 'diffusers>=0.30' "
                                     "transformers accelerate") from exc
    return diffusers


def _dtype_key() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype`` (and warns on the old name)."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def load_pipeline(kind: str, model: str, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                  local_files_only: bool = True, controlnet: Any = None, what: str = "editor") -> Any:
    """Load a diffusers pipeline of ``kind`` (``PIPELINES``) from a local folder or the HF cache.

    The tokenizer is checked for a non-empty vocabulary (offline, ``CLIPTokenizer.from_pretrained``
    can return an empty one). The pipeline's own denoising progress bar starts disabled: the edit
    loop shows one bar for the whole edit, and a bar per keyframe between its updates is noise.
    """
    if local_files_only and not _is_cached(model):
        raise MissingWeightsError(missing_weights_message(model, what))
    diffusers = _import_diffusers()
    dev = resolve_device(device)
    dtype = dtype or _default_dtype(dev)
    common = {_dtype_key(): dtype, "local_files_only": local_files_only, "cache_dir": str(hf_hub_cache())}
    extra: dict[str, Any] = {}
    if kind == "controlnet-inpaint":
        if isinstance(controlnet, str):
            if local_files_only and not _is_cached(controlnet):
                raise MissingWeightsError(missing_weights_message(controlnet, what + "'s ControlNet"))
            try:
                controlnet = diffusers.ControlNetModel.from_pretrained(controlnet, **common)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise MissingWeightsError(broken_weights_message(controlnet, what + "'s ControlNet", exc)) from exc
        extra["controlnet"] = controlnet
    cls = getattr(diffusers, PIPELINES[kind])
    try:
        pipe = cls.from_pretrained(model, safety_checker=None, requires_safety_checker=False, **common, **extra)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingWeightsError(broken_weights_message(model, what, exc)) from exc
    tok = getattr(pipe, "tokenizer", None)
    if tok is not None and not getattr(tok, "vocab_size", 0):
        raise MissingWeightsError(f"the tokenizer of {model!r} loaded empty (vocab_size 0): the tokenizer files "
                                  f"are missing from the cache. {missing_weights_message(model, what)}")
    if hasattr(pipe, "set_progress_bar_config"):  # the edit shows its own bar; an editor asked for
        pipe.set_progress_bar_config(disable=True)  # ``progress=True`` turns the pipeline's back on
    return pipe.to(dev)
