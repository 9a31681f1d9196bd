"""Loading Stable Diffusion's components for SDS from a local folder or the Hugging Face cache.

Nothing is downloaded. Absent or broken weights raise the shared "weights missing" wording
(``dynavatar.weights``), which names the weights and the command that fetches them; SDS needs only
a part of the repository, which the message says too. Offline, ``CLIPTokenizer.from_pretrained`` can
return a tokenizer with only its special tokens instead of raising (DESIGN.md §7), so the tokenizer
is checked: with it every prompt would embed identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import DynavatarError, MissingDependencyError
from ...weights import broken_weights_message, fetch_hint, find_hub_weights, missing_weights_message

__all__ = ["DEFAULT_SD_MODEL", "SD_SUBFOLDERS", "load_sd_components", "check_tokenizer"]

DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WHAT = "SDS guidance"
_NEEDED = f"SDS needs only model_index.json and the {', '.join(SD_SUBFOLDERS)} folders."


def load_sd_components(model: str = DEFAULT_SD_MODEL, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None, variant: str | None = None
                       ) -> tuple[dict[str, Any], torch.device, torch.dtype]:
    """(components by ``SDSGuidance`` argument name, device, dtype) of a Stable Diffusion checkpoint.

    ``model`` is a Hugging Face repo id (looked up in the hub cache) or a local folder with the
    diffusers layout. dtype defaults to float16 on CUDA, float32 elsewhere; ``variant="fp16"``
    loads the half-size weight files where the repo has them.
    """
    try:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:  # pragma: no cover - both are install requirements
        raise MissingDependencyError(
            "SDS needs diffusers and transformers: pip install diffusers transformers") from exc
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    dt = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    kw: dict[str, Any] = dict(local_files_only=True)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw)
        check_tokenizer(tokenizer, model)
        # transformers renamed torch_dtype to dtype: load the text encoder as stored, SDSGuidance casts it
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", variant=variant, **kw)
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", variant=variant, torch_dtype=dt, **kw)
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", variant=variant, torch_dtype=dt, **kw)
        scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler", **kw)
    except DynavatarError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        raise DynavatarError(_load_error(model, exc)) from exc
    components = dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
    return components, dev, dt


def check_tokenizer(tokenizer: Any, model: str | None = None) -> None:
    """Raise when ``tokenizer`` has no vocabulary beyond its special tokens (see the module docstring)."""
    size = int(getattr(tokenizer, "vocab_size", 0) or 0)
    if size <= 3:
        where = f" loaded from {model!r}" if model else ""
        raise DynavatarError(
            f"the CLIP tokenizer{where} is empty (vocab_size={size}): its vocab.json/merges.txt were not found. "
            + (_fetch_advice(model) if model else "Pass a tokenizer built from real vocab files."))


def _folder_layout(model: str) -> str:
    return (f"The folder {model} needs the diffusers layout ({', '.join(SD_SUBFOLDERS)} subfolders, "
            f"tokenizer/vocab.json and tokenizer/merges.txt included).")


def _missing(model: str) -> str:
    return f"{missing_weights_message(model, _WHAT)} {_NEEDED}"


def _fetch_advice(model: str) -> str:
    """What to do about an empty tokenizer: fix the folder, fetch the weights, or fetch them again."""
    if Path(model).is_dir():
        return _folder_layout(model)
    if find_hub_weights(model) is None:
        missing = _missing(model)
        return missing[0].upper() + missing[1:]
    return f"The cached copy may be incomplete. {fetch_hint(model)}"


def _load_error(model: str, exc: BaseException) -> str:
    """The shared wording: "missing" when the cache has no copy, "broken" when a copy fails to load."""
    if Path(model).is_dir():
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"the {_WHAT} could not load {model} ({type(exc).__name__}: {first}). {_folder_layout(model)}"
    if find_hub_weights(model) is None:
        return _missing(model)
    return f"{broken_weights_message(model, _WHAT, exc)} {_NEEDED}"
