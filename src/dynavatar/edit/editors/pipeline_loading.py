"""Loading diffusers pipelines for the editors from a local folder, the Hugging Face cache or the hub.

The weights are resolved (``dynavatar.hub.resolve_weights``: a folder as given, else the cache, else
fetched on first use at the pinned revision, unless ``HF_HUB_OFFLINE=1`` or ``local_files_only``)
before diffusers is even imported, so a missing model fails at once with the shared "weights
missing" wording, which names the weights and the command that fetches them. diffusers then loads
the resolved folder, which opens no connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...device import resolve_device
from ...errors import MissingDependencyError
from ...hub import MissingWeightsError, load_failure_message, resolve_weights
from ...weights import missing_weights_message

__all__ = ["MissingWeightsError", "PIPELINES", "load_pipeline"]


PIPELINES = {
    "ip2p": "StableDiffusionInstructPix2PixPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "controlnet-inpaint": "StableDiffusionControlNetInpaintPipeline",
}


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
                  local_files_only: bool | None = None, controlnet: Any = None, what: str = "editor",
                  progress: bool = True) -> Any:
    """Load a diffusers pipeline of ``kind`` (``PIPELINES``) from ``model``: a folder, or a hub id /
    short name resolved by ``resolve_weights`` (cache, else fetched unless offline; ``local_files_only``
    None follows ``HF_HUB_OFFLINE``). ``progress``: the download's progress bar.

    The tokenizer is checked for a non-empty vocabulary (offline, ``CLIPTokenizer.from_pretrained``
    can return an empty one). The pipeline's own denoising progress bar starts disabled: the edit
    loop shows one bar for the whole edit, and a bar per keyframe between its updates is noise.
    """
    folder = _resolve(model, local_files_only, what, progress)
    diffusers = _import_diffusers()
    dev = resolve_device(device)
    dtype = dtype or _default_dtype(dev)
    common = {_dtype_key(): dtype, "local_files_only": True}
    extra: dict[str, Any] = {}
    if kind == "controlnet-inpaint":
        if isinstance(controlnet, str):
            cn_folder = _resolve(controlnet, local_files_only, what + "'s ControlNet", progress)
            try:
                controlnet = diffusers.ControlNetModel.from_pretrained(str(cn_folder), **common)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise MissingWeightsError(load_failure_message(controlnet, cn_folder, what + "'s ControlNet",
                                                               exc)) from exc
        extra["controlnet"] = controlnet
    cls = getattr(diffusers, PIPELINES[kind])
    try:
        pipe = cls.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False, **common, **extra)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingWeightsError(load_failure_message(model, folder, what, exc)) from exc
    tok = getattr(pipe, "tokenizer", None)
    if tok is not None and not getattr(tok, "vocab_size", 0):
        raise MissingWeightsError(f"the tokenizer of {model!r} loaded empty (vocab_size 0): the tokenizer files "
                                  f"are missing from the cache. {missing_weights_message(model, what)}")
    if hasattr(pipe, "set_progress_bar_config"):  # the edit shows its own bar; an editor asked for
        pipe.set_progress_bar_config(disable=True)  # ``progress=True`` turns the pipeline's back on
    return pipe.to(dev)


def _resolve(model: str, local_files_only: bool | None, what: str, progress: bool) -> Path:
    """The folder of ``model``; a file path (a single-file checkpoint) is refused with the way out."""
    folder = resolve_weights(model, local_files_only=local_files_only, what=what, progress=progress)
    if not folder.is_dir():
        raise MissingWeightsError(f"the {what} loads diffusers folders, and {folder} is a file: convert it with "
                                  "diffusers' from_single_file(...).save_pretrained(folder) and pass the folder")
    return folder
