"""Where optional model weights live in the ecosystem's own caches, and whether they are there.

Nothing here downloads anything: it only looks, so ``dynavatar info`` can say which real backends
can run offline on this machine and which weights to fetch for the others. Looking opens no socket:
``find_weights`` reads the cache folders, and ``hub_offline`` puts huggingface_hub in offline mode
around loads that must come from the cache only (``local_files_only``), so nothing in them (a
metadata request, a telemetry ping) reaches the network either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import Iterator

__all__ = ["KnownWeights", "KNOWN_WEIGHTS", "hf_hub_cache", "torch_hub_checkpoints", "find_weights", "find_hub_weights",
           "weights_label", "fetch_hint", "missing_weights_message", "broken_weights_message", "hub_offline"]


@dataclasses.dataclass(frozen=True)
class KnownWeights:
    name: str  # what a person would call it
    used_for: str
    hub_repo: str | None = None  # Hugging Face repo id (looked up in the hub cache)
    torch_hub_files: tuple[str, ...] = ()  # file name prefixes in $TORCH_HOME/hub/checkpoints


KNOWN_WEIGHTS = (
    KnownWeights("InstructPix2Pix", "image editing (ip2p editor)", hub_repo="timbrooks/instruct-pix2pix"),
    KnownWeights("Stable Diffusion 1.5", "SDS / inpainting base", hub_repo="stable-diffusion-v1-5/stable-diffusion-v1-5"),
    KnownWeights("SD 1.5 inpainting", "image editing (inpaint editor)", hub_repo="stable-diffusion-v1-5/stable-diffusion-inpainting"),
    KnownWeights("CLIP ViT-L/14", "edit metrics (CLIP direction similarity)", hub_repo="openai/clip-vit-large-patch14"),
    KnownWeights("Qwen2.5 1.5B Instruct", "prompt refinement (local LLM)", hub_repo="Qwen/Qwen2.5-1.5B-Instruct"),
    KnownWeights("facer FaRL parser", "face parsing (facer backend)", torch_hub_files=("face_parsing.farl", "mobilenet0.25_Final")),
    KnownWeights("LPIPS (VGG/Alex)", "LPIPS metric", torch_hub_files=("vgg16-", "alexnet-")),
)


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def torch_hub_checkpoints() -> Path:
    home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))
    return home / "hub" / "checkpoints"


def find_weights(w: KnownWeights) -> Path | None:
    """The local path of ``w`` if a usable copy is cached, else None."""
    if w.hub_repo:
        snapshots = hf_hub_cache() / ("models--" + w.hub_repo.replace("/", "--")) / "snapshots"
        if snapshots.is_dir():
            for snap in sorted(snapshots.iterdir()):
                if any(snap.iterdir()):
                    return snap
    ckpt = torch_hub_checkpoints()
    if w.torch_hub_files and ckpt.is_dir():
        for f in sorted(ckpt.iterdir()):
            if f.name.startswith(w.torch_hub_files):
                return f
    return None


def find_hub_weights(repo: str) -> Path | None:
    """The local snapshot of any Hugging Face repo id (listed in KNOWN_WEIGHTS or not), else None."""
    return find_weights(KnownWeights(repo, "", hub_repo=repo))


@contextlib.contextmanager
def hub_offline(enabled: bool = True) -> Iterator[None]:
    """Within the block, huggingface_hub (and transformers / diffusers through it) is in offline mode.

    ``HF_HUB_OFFLINE`` is read once, when huggingface_hub is imported, so setting the variable is
    not enough once it is loaded: its ``constants.HF_HUB_OFFLINE`` is set too, and both are restored
    on exit. Process-wide while it lasts (like the variable itself). ``enabled=False`` does nothing,
    so callers can pass their ``local_files_only``.
    """
    if not enabled:
        yield
        return
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    constants = sys.modules.get("huggingface_hub.constants")
    saved_const = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        now = sys.modules.get("huggingface_hub.constants")  # if first imported in the block, it read "1"
        if now is not None:
            now.HF_HUB_OFFLINE = saved_const if constants is not None else (
                _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"))


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")


# One wording for every "weights missing" error (editors, SDS, the LLM refiner, parsers), so a user
# meets the same fix everywhere.
def weights_label(repo: str) -> str:
    """``"InstructPix2Pix weights ('timbrooks/instruct-pix2pix')"`` for a known repo, else ``"weights '<repo>'"``."""
    for w in KNOWN_WEIGHTS:
        if w.hub_repo == repo:
            return f"{w.name} weights ({repo!r})"
    return f"weights {repo!r}"


def fetch_hint(repo: str) -> str:
    """How to get ``repo`` into the local Hugging Face cache."""
    return (f"Fetch them once on a machine with internet: `hf download {repo}` (older huggingface_hub: "
            f"`huggingface-cli download {repo}`), or pass a local folder as model=..., or set HF_HUB_CACHE to "
            "where they are.")


def missing_weights_message(repo: str, what: str) -> str:
    """The one-line error for ``what`` (e.g. "InstructPix2Pix editor") when ``repo`` is not cached."""
    return (f"the {what} needs the {weights_label(repo)}, which are not in the Hugging Face cache at "
            f"{hf_hub_cache()} (nothing is downloaded here). {fetch_hint(repo)}")


def broken_weights_message(repo: str, what: str, exc: BaseException) -> str:
    """The one-line error for cached weights that fail to load (an interrupted download, say)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (f"the {what} found {weights_label(repo)} but could not load them ({type(exc).__name__}: {first}). "
            f"The copy may be incomplete: fetch it again with `hf download {repo}` (older huggingface_hub: "
            f"`huggingface-cli download {repo}`), or pass a complete local folder as model=....")
