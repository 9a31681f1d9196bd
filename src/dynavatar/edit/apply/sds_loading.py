"""Loading Stable Diffusion's components for SDS from a local folder, the Hugging Face cache or the hub.

The weights are resolved by ``dynavatar.hub.resolve_weights``: a folder as given, else the cache,
else fetched on first use at the pinned revision (only the five components SDS uses), unless
``HF_HUB_OFFLINE=1`` or ``local_files_only=True``. Absent or broken weights raise the shared "weights
missing" wording (``dynavatar.weights``), which names the weights and the command that fetches
them; SDS needs only a part of the repository, which the message says too. Offline,
``CLIPTokenizer.from_pretrained`` can return a tokenizer with only its special tokens instead of
raising (DESIGN.md §7), so the tokenizer is checked: with it every prompt would embed identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import DynavatarError, MissingDependencyError
from ...hub import MissingWeightsError, load_failure_message, resolve_weights
from ...weights import fetch_hint, find_hub_weights

__all__ = ["DEFAULT_SD_MODEL", "SD_SUBFOLDERS", "load_sd_components", "check_tokenizer"]

DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WHAT = "SDS guidance"
_NEEDED = f"SDS needs only model_index.json and the {', '.join(SD_SUBFOLDERS)} folders."


def load_sd_components(model: str = DEFAULT_SD_MODEL, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None, variant: str | None = None,
                       local_files_only: bool | None = None) -> tuple[dict[str, Any], torch.device, torch.dtype]:
    """(components by ``SDSGuidance`` argument name, device, dtype) of a Stable Diffusion checkpoint.

    ``model`` is a Hugging Face repo id or short name ("sd15"; from the hub cache, fetched on first
    use unless offline: ``local_files_only`` None follows ``HF_HUB_OFFLINE``) or a local folder with
    the diffusers layout. dtype defaults to float16 on CUDA, float32 elsewhere; ``variant="fp16"``
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
    folder = _resolve(model, local_files_only, variant)
    kw: dict[str, Any] = dict(local_files_only=True)
    src = str(folder)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
        check_tokenizer(tokenizer, model)
        # transformers renamed torch_dtype to dtype: load the text encoder as stored, SDSGuidance casts it
        text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", variant=variant, **kw)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", variant=variant, torch_dtype=dt, **kw)
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", variant=variant, torch_dtype=dt, **kw)
        scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler", **kw)
    except DynavatarError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        raise DynavatarError(_load_error(model, folder, exc)) from exc
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


def _resolve(model: str, local_files_only: bool | None, variant: str | None) -> Path:
    """The checkpoint's folder (``resolve_weights``); a missing one names what SDS needs of it."""
    try:
        return resolve_weights(model, local_files_only=local_files_only, what=_WHAT, variant=variant)
    except MissingWeightsError as exc:
        raise type(exc)(f"{exc} {_NEEDED}") from exc


def _fetch_advice(model: str) -> str:
    """What to do about an empty tokenizer: fix the folder, or fetch the weights again."""
    if Path(model).is_dir():
        return _folder_layout(model)
    if find_hub_weights(model) is None:
        return f"The weights are not cached whole. {fetch_hint(model)} {_NEEDED}"
    return f"The cached copy may be incomplete. {fetch_hint(model)}"


def _load_error(model: str, folder: Path, exc: BaseException) -> str:
    """A folder of the user's: its layout; a cached or fetched one: the file to delete, or "broken"."""
    if Path(model).is_dir():
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"the {_WHAT} could not load {model} ({type(exc).__name__}: {first}). {_folder_layout(model)}"
    return f"{load_failure_message(model, folder, _WHAT, exc)} {_NEEDED}"
