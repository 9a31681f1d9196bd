"""Model resolution: from a short name, a Hugging Face repo id or a path to weights on disk.

Every real backend (the diffusion editors, SDS, the local LLM refiner, the CLIP metric, the FaRL
parser, LPIPS) asks :func:`resolve_weights` for its weights, so they all behave like any Hugging
Face library: a local path is used as given; else a whole copy in the standard cache
(``dynavatar.weights``: the HF hub cache, ``$TORCH_HOME/hub/checkpoints``); else the weights are
fetched on first use, with a progress bar, at the revision pinned in ``KNOWN_WEIGHTS``, through
huggingface_hub's ``snapshot_download`` (resumable: an interrupted fetch continues where it stopped)
or ``torch.hub.download_url_to_file`` (hash-checked). Nothing is fetched when the user asks for
offline: ``HF_HUB_OFFLINE=1`` (also for the torch hub files: one switch for the whole toolkit) or
``local_files_only=True``; absent weights then raise :class:`MissingWeightsError`, one line that
names the weights and the command that fetches them.

A fetched snapshot is hashed against the hub's record of each file before it is used, and a cached
one gets a cheap load check each time (``weights.snapshot_problems``): a corrupt file raises
:class:`CorruptWeightsError` naming the file to delete, so nothing is ever half-loaded.

Environment variables are read when asked, not at import: huggingface_hub reads ``HF_HUB_OFFLINE``
and ``HF_ENDPOINT`` once, when it is imported, so a change made later (a notebook, a test) would
otherwise be ignored; the endpoint is passed explicitly and the offline switch set around calls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ConfigError, DynavatarError
from .weights import (KNOWN_WEIGHTS, KnownWeights, broken_weights_message, check_file, find_weights, hf_hub_cache,
                      missing_weights_message,
                      repo_cache_folder, select_files, snapshot_problems, torch_hub_checkpoints, verify_file,
                      weights_label)

__all__ = ["MissingWeightsError", "CorruptWeightsError", "WeightsDownloadError", "WeightsStatus", "known_weights",
           "resolve_weights", "offline_reason", "load_failure_message", "weights_status", "all_weights_status",
           "lpips_function",
           "PROBE_TIMEOUT_S"]

logger = logging.getLogger("dynavatar.hub")

PROBE_TIMEOUT_S = 3.0  # "is the hub reachable?" must not keep `dynavatar info` or a plan waiting


class MissingWeightsError(DynavatarError, FileNotFoundError):
    """Weights a backend needs are not on this machine and may not be fetched; the message says how to get them."""


class WeightsDownloadError(MissingWeightsError):
    """Fetching the weights failed (no connection, a gated repo, a revision the hub does not have)."""


class CorruptWeightsError(MissingWeightsError):
    """A cached weights file fails its load or hash check; the message names the file to delete."""


# ----------------------------------------------------------------------------- names
def known_weights(name: str) -> KnownWeights:
    """The entry of ``KNOWN_WEIGHTS`` for a short name ("ip2p"), a display name or a repo id; any other
    "org/name" is a Hugging Face repo without a pinned revision. Anything else lists the known names."""
    key = str(name).strip()
    for w in KNOWN_WEIGHTS:
        if key.lower() in (w.key.lower(), w.name.lower()) or key == w.hub_repo:
            return w
    parts = key.split("/")
    known = ", ".join(w.key for w in KNOWN_WEIGHTS)
    if key.startswith(("/", ".", "~")) or len(parts) > 2 or "\\" in key:
        raise ConfigError(f"no folder or file at {key}: give an existing path, a known name ({known}) or a "
                          "Hugging Face repo id 'org/name'")
    if len(parts) == 2 and all(parts):
        return KnownWeights(key, "", hub_repo=key, key=key)
    raise ConfigError(f"unknown model {name!r}: known names are {known} (or give a Hugging Face repo id "
                      "'org/name', or the path of a local folder or file)")


def _is_true(value: str) -> bool:
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def offline_reason(local_files_only: bool | None = None) -> str | None:
    """Why nothing may be fetched now (None: fetching is allowed). ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) set true always wins, as in transformers; ``local_files_only=True`` too."""
    if local_files_only:
        return "local_files_only=True"
    if "HF_HUB_OFFLINE" in os.environ:
        return "HF_HUB_OFFLINE=1 is set: unset it to download" if _is_true(os.environ["HF_HUB_OFFLINE"]) else None
    if _is_true(os.environ.get("TRANSFORMERS_OFFLINE", "")):
        return "TRANSFORMERS_OFFLINE=1 is set: unset it to download"
    constants = sys.modules.get("huggingface_hub.constants")  # the variable was removed after the import read it
    return "huggingface_hub is in offline mode" if getattr(constants, "HF_HUB_OFFLINE", False) else None


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


@contextlib.contextmanager
def _hub_online() -> Iterator[None]:
    """huggingface_hub's import-time offline flag off for the block (the caller decided: online)."""
    constants = sys.modules.get("huggingface_hub.constants")
    saved = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved


# ----------------------------------------------------------------------------- resolution
def resolve_weights(name_or_repo: str | os.PathLike | KnownWeights, *, revision: str | None = None,
                    local_files_only: bool | None = None, allow_patterns: list[str] | None = None,
                    progress: bool = True, what: str | None = None, verify: bool = False,
                    variant: str | None = None) -> Path:
    """The weights on disk: a local folder/file as given > a whole copy in the cache > a download.

    name_or_repo: a short name from ``KNOWN_WEIGHTS`` ("ip2p", "sd15", "sd15-inpaint", "clip",
    "qwen", "farl", "farl-celebm", "lpips"), a Hugging Face repo id, a path, or a ``KnownWeights``.
    revision: the hub revision to fetch (default: the pinned one, else "main"); a cached snapshot of
    another revision serves unless ``revision`` is given. local_files_only: None follows
    ``HF_HUB_OFFLINE``; True never fetches. allow_patterns: the repo files to fetch (default:
    ``weights.select_files``, one format of each weight). what: the backend, for messages.
    verify: hash a cached copy too (a fresh download always is). variant: fetch the repo's "fp16"
    (say) weight files where it has them. Returns the snapshot folder of a
    hub repo, the checkpoint file of a torch hub model.
    """
    if not isinstance(name_or_repo, KnownWeights):
        path = Path(os.fspath(name_or_repo)).expanduser()
        if path.exists():
            return path
    w = name_or_repo if isinstance(name_or_repo, KnownWeights) else known_weights(str(name_or_repo))
    what = what or f"{w.key or w.hub_repo} model"
    if w.hub_repo:
        return _resolve_repo(w, revision, local_files_only, allow_patterns, progress, what, verify, variant)
    return _resolve_file(w, local_files_only, progress, what, verify)


def _fail_on_corrupt(problems: list[tuple[str, str]], w: KnownWeights) -> None:
    corrupt = [text for kind, text in problems if kind == "corrupt"]
    if corrupt:
        more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
        raise CorruptWeightsError(f"{corrupt[0]}{more}: delete it and fetch it again with "
                                  f"`dynavatar download {w.key or w.hub_repo}`")


def _cached_snapshot(w: KnownWeights, revision: str | None) -> tuple[Path | None, list[tuple[str, str]]]:
    """(a whole cached snapshot or None, the problems of the best partial one)."""
    if revision is None:
        found = find_weights(w)
        if found is not None:
            return found, []
    root = repo_cache_folder(w.hub_repo or "")
    ref = root / "refs" / (revision or w.revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or w.revision or "main")
    snap = root / "snapshots" / commit
    if not snap.is_dir():
        return None, []
    problems = snapshot_problems(snap, w)
    return (snap if not problems else None), problems


def _resolve_repo(w: KnownWeights, revision: str | None, local_files_only: bool | None,
                  allow_patterns: list[str] | None, progress: bool, what: str, verify: bool,
                  variant: str | None) -> Path:
    repo = w.hub_repo or ""
    snap, problems = _cached_snapshot(w, revision)
    if snap is not None:
        if verify:
            _fail_on_corrupt(snapshot_problems(snap, w, full=True), w)
        return snap
    _fail_on_corrupt(problems, w)
    offline = offline_reason(local_files_only)
    if offline:
        if problems:
            raise MissingWeightsError(f"the {what} found an incomplete copy of the {weights_label(w)} "
                                      f"({problems[0][1]}; {offline}): finish it with "
                                      f"`dynavatar download {w.key or repo}` on a machine with internet")
        raise MissingWeightsError(missing_weights_message(w, what, offline))
    return _download_repo(w, revision or w.revision or "main", allow_patterns, progress, what, variant)


def _download_repo(w: KnownWeights, revision: str, allow_patterns: list[str] | None, progress: bool,
                   what: str, variant: str | None) -> Path:
    """snapshot_download of the files the loaders need, then every file hashed against its ETag."""
    from huggingface_hub import HfApi, snapshot_download

    repo, endpoint = w.hub_repo or "", _endpoint()
    size = f", about {w.size_gb:g} GB" if w.size_gb else ""
    logger.info("fetching the %s at revision %s into %s%s", weights_label(w), revision[:12], hf_hub_cache(), size)
    try:
        with _hub_online():
            patterns = allow_patterns or select_files(
                HfApi(endpoint=endpoint).list_repo_files(repo, revision=revision), variant, w.folders)
            folder = Path(snapshot_download(repo, revision=revision, cache_dir=str(hf_hub_cache()), endpoint=endpoint,
                                            allow_patterns=patterns, tqdm_class=_bar_class(progress)))
    except (KeyboardInterrupt, DynavatarError):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of the hub client becomes one line that says what to do
        raise WeightsDownloadError(_download_failed(w, revision, what, exc)) from exc
    _fail_on_corrupt(snapshot_problems(folder, w, full=True), w)
    return folder


def _download_failed(w: KnownWeights, revision: str, what: str, exc: BaseException) -> str:
    """One line for a failed fetch, by what went wrong (the hub client's error classes vary by version)."""
    kind = type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    label = weights_label(w)
    if kind == "GatedRepoError":
        return (f"the {label} are gated: accept their licence on the model page and log in (`hf auth login`), "
                f"then run `dynavatar download {w.key}` again")
    if kind in ("RevisionNotFoundError", "RepositoryNotFoundError"):
        return f"the hub has no {w.hub_repo} at revision {revision} ({kind}); check the name or pass revision=..."
    again = "the download resumes where it stopped" if w.hub_repo else f"`dynavatar download {w.key}`"
    return (f"the {what} could not fetch the {label} ({kind}: {first}); check the connection (proxy, HF_ENDPOINT) "
            f"and run again ({again}). To stay offline set HF_HUB_OFFLINE=1.")


def _bar_class(progress: bool) -> type:
    """The progress bar class for the hub client: tqdm's own (shown, like torch.hub's, also when
    stderr is not a terminal: a multi-GB fetch should be visible in a log), or a silent one."""
    from tqdm.auto import tqdm

    if progress:
        return tqdm

    class Quiet(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def _resolve_file(w: KnownWeights, local_files_only: bool | None, progress: bool, what: str, verify: bool) -> Path:
    """A torch hub style checkpoint: cached in ``$TORCH_HOME/hub/checkpoints`` or fetched there."""
    found = find_weights(w)
    if found is not None:
        why = verify_file(found, ("sha256", w.sha256_prefix) if verify and w.sha256_prefix else None)
        if why:
            raise CorruptWeightsError(f"{found} is corrupt ({why}): delete it and fetch it again with "
                                      f"`dynavatar download {w.key}`")
        return found
    offline = offline_reason(local_files_only)
    if offline or not w.url:
        raise MissingWeightsError(missing_weights_message(w, what, offline or "no download address is known"))
    import torch.hub

    dst = torch_hub_checkpoints() / w.url.rsplit("/", 1)[-1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    logger.info("fetching the %s into %s", weights_label(w), dst)
    try:  # writes a temporary file and moves it into place only once the hash matched
        torch.hub.download_url_to_file(w.url, str(dst), hash_prefix=w.sha256_prefix, progress=progress)
    except (KeyboardInterrupt, DynavatarError):
        raise
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, a hash mismatch (RuntimeError), a full disk
        raise WeightsDownloadError(_download_failed(w, "-", what, exc)) from exc
    why = verify_file(dst)
    if why:
        raise CorruptWeightsError(f"{dst} is corrupt ({why}): delete it and fetch it again with "
                                  f"`dynavatar download {w.key}`")
    return dst


def load_failure_message(model: str, folder: Path, what: str, exc: BaseException) -> str:
    """The one line for resolved weights that a loader could not load: the file to delete when one
    fails its hash (or load) check, else the shared "found but could not load" wording."""
    problems = [text for kind, text in snapshot_problems(folder, None, full=True) if kind == "corrupt"] \
        if folder.is_dir() else ([f"{folder} is corrupt ({why})"] if (why := verify_file(folder)) else [])
    if problems:
        w = next((k for k in KNOWN_WEIGHTS if model in (k.key, k.hub_repo)), None)
        again = f"`dynavatar download {w.key}`" if w else f"`hf download {model}`"
        return f"the {what} cannot load {problems[0]}: delete it and fetch it again with {again}"
    return broken_weights_message(model, what, exc)


# ----------------------------------------------------------------------------- present / fetchable / neither
@dataclasses.dataclass(frozen=True)
class WeightsStatus:
    weights: KnownWeights
    state: str  # "present" (cached, whole), "fetchable" (absent, downloads allowed and the host answers) or "neither"
    path: Path | None  # where the cached copy is
    detail: str  # for "fetchable" the size of the first download, for "neither" why not

    def describe(self) -> str:
        """``"present (/path)"``, ``"fetchable (~4.3 GB on first use)"``, ``"neither (HF_HUB_OFFLINE=1 ...)"``."""
        return f"{self.state} ({self.path if self.state == 'present' else self.detail})"


def weights_status(name: str | KnownWeights, *, probe: bool = True, timeout: float = PROBE_TIMEOUT_S,
                   local_files_only: bool | None = None) -> WeightsStatus:
    """Whether ``name``'s weights are here, could be fetched now, or neither. Present and offline
    are decided from the disk and the environment alone (no socket); otherwise a metadata request
    of ``timeout`` seconds asks the host (``probe=False`` skips it and trusts that downloads are allowed)."""
    w = name if isinstance(name, KnownWeights) else known_weights(name)
    path = find_weights(w) if w.hub_repo else _cached_file(w)
    if path is not None:
        return WeightsStatus(w, "present", path, "")
    corrupt = [text for kind, text in (_cached_snapshot(w, None)[1] if w.hub_repo else []) if kind == "corrupt"]
    if corrupt:
        return WeightsStatus(w, "neither", None, f"{corrupt[0]}: delete it, then `dynavatar download {w.key}`")
    offline = offline_reason(local_files_only)
    if offline:
        return WeightsStatus(w, "neither", None, f"not cached; {offline}")
    size = f"~{w.size_gb:g} GB" if w.size_gb else "size unknown"
    if not probe:
        return WeightsStatus(w, "fetchable", None, f"not cached; will download {size} on first use (host not asked)")
    why_not = _probe(w, timeout)
    if why_not:
        return WeightsStatus(w, "neither", None, f"not cached; {why_not}")
    return WeightsStatus(w, "fetchable", None, f"not cached; will download {size} on first use")


def _cached_file(w: KnownWeights) -> Path | None:
    found = find_weights(w)
    return found if found is not None and check_file(found) is None else None


def all_weights_status(probe: bool = True, timeout: float = PROBE_TIMEOUT_S) -> list[WeightsStatus]:
    """``weights_status`` of every known model, probed in parallel (the slowest probe bounds the wait).
    The hub client's offline flag is set once around the pool, so the threads agree on it."""
    online = _hub_online() if probe and not offline_reason() else contextlib.nullcontext()
    with online, concurrent.futures.ThreadPoolExecutor(max_workers=len(KNOWN_WEIGHTS)) as pool:
        return list(pool.map(lambda w: weights_status(w, probe=probe, timeout=timeout), KNOWN_WEIGHTS))


def _probe(w: KnownWeights, timeout: float) -> str | None:
    """None when the host serves ``w`` (a HEAD of one small file answers), else why not."""
    try:
        if w.hub_repo:
            from huggingface_hub import get_hf_file_metadata, hf_hub_url

            url = hf_hub_url(w.hub_repo, w.probe_file, revision=w.revision or "main", endpoint=_endpoint())
            with _hub_online():
                get_hf_file_metadata(url, timeout=timeout)
        else:
            import urllib.request

            with urllib.request.urlopen(urllib.request.Request(w.url or "", method="HEAD"), timeout=timeout):
                pass
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable from here, now"
        first = (str(exc).strip().splitlines() or [""])[0][:100]
        return f"not reachable ({type(exc).__name__}: {first})"
    return None


# ----------------------------------------------------------------------------- LPIPS
def lpips_function(device: Any = "cpu", local_files_only: bool | None = None
                   ) -> Callable[[Any, Any], float] | None:
    """LPIPS (AlexNet, the lpips package's default) as ``fn(pred, target) -> float`` on images
    [H, W, 3] or [B, H, W, 3] in [0, 1] (the mean over the batch), or None when it cannot run here: the ``lpips`` package (which needs
    torchvision) is not installed or does not import, or its AlexNet weights are absent offline.

    The weights are resolved first (cache, else fetched unless offline), into the torch hub folder
    torchvision loads them from, so constructing the metric never downloads on its own.
    """
    try:
        import lpips
    except Exception as exc:  # noqa: BLE001 - ImportError, or a torchvision built for another torch
        logger.info("LPIPS not computed: the lpips package does not import (%s: %s); pip install lpips",
                    type(exc).__name__, str(exc)[:100])
        return None
    try:
        resolve_weights("lpips", local_files_only=local_files_only)
    except MissingWeightsError as exc:
        logger.info("LPIPS not computed: %s", exc)
        return None
    import torch

    net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    def fn(pred: Any, target: Any) -> float:
        # [H, W, 3] or [B, H, W, 3] in [0, 1] -> [B, 3, H, W] in [-1, 1]
        x, y = (torch.as_tensor(t, device=device).float().reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2) * 2 - 1
                for t in (pred, target))
        with torch.no_grad():
            return float(net(x, y).mean().item())

    return fn
