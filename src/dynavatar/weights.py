"""The optional model weights the toolkit knows, where they live in the ecosystem's caches, and
whether a cached copy is whole.

This module only looks: it reads cache folders and file headers and opens no socket, so every
stage may ask "is it here?" for free. Fetching, and the choice between cache and download, belong
to :mod:`dynavatar.hub` (``resolve_weights``), the one owner of model resolution.

Caches are the ecosystem's own, so weights fetched by diffusers, transformers, ``hf download`` or
torchvision count, and ours count for them: the Hugging Face hub cache (``HF_HUB_CACHE``, else
``$HF_HOME/hub``) and the torch hub checkpoints folder (``$TORCH_HOME/hub/checkpoints``).

Whole means: no file of the snapshot is a dangling link, every file the hub's cached tree listing
names is there (``trees/<commit>.json``, written before a download starts, so an interrupted one is
seen), and each weight file passes a cheap load check (``check_file``: the safetensors header
accounts for the file's size, a torch zip archive has its central directory, JSON parses). The
full check (``verify_file``) hashes the bytes against the hub's own record of them: a blob in the
cache is named by its ETag, which is the sha256 of an LFS file or the git blob sha1 of any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import struct
import sys
import zipfile
from pathlib import Path
from typing import Iterator

__all__ = ["KnownWeights", "KNOWN_WEIGHTS", "hf_hub_cache", "torch_hub_checkpoints", "find_weights", "find_hub_weights",
           "repo_cache_folder", "snapshot_problems", "check_file", "verify_file", "expected_hash", "select_files",
           "weights_label", "fetch_hint", "missing_weights_message", "broken_weights_message", "hub_offline"]


@dataclasses.dataclass(frozen=True)
class KnownWeights:
    name: str  # what a person would call it
    used_for: str
    hub_repo: str | None = None  # Hugging Face repo id (looked up in the hub cache)
    torch_hub_files: tuple[str, ...] = ()  # file name prefixes in $TORCH_HOME/hub/checkpoints
    key: str = ""  # the short name of `dynavatar download KEY` and resolve_weights(KEY)
    revision: str | None = None  # pinned hub commit: what a download fetches (a cached other revision also serves)
    url: str | None = None  # torch-hub style weights: where the one file is published
    sha256_prefix: str | None = None  # the published hash prefix of ``url``'s file (torch.hub's check)
    size_gb: float | None = None  # about how much a first download fetches
    folders: tuple[str, ...] | None = None  # diffusers repos: the component folders used (None: all but safety_checker)
    probe_file: str = "config.json"  # a small file whose metadata says "the hub serves this repo"


KNOWN_WEIGHTS = (
    KnownWeights("InstructPix2Pix", "image editing (ip2p editor)", hub_repo="timbrooks/instruct-pix2pix", key="ip2p",
                 revision="31519b5cb02a7fd89b906d88731cd4d6a7bbf88d", size_gb=4.3, probe_file="model_index.json"),
    KnownWeights("Stable Diffusion 1.5", "SDS guidance (method='sds')", key="sd15",
                 hub_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
                 revision="451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
                 size_gb=4.3, folders=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
                 probe_file="model_index.json"),
    KnownWeights("SD 1.5 inpainting", "image editing (inpaint editor)", key="sd15-inpaint",
                 hub_repo="stable-diffusion-v1-5/stable-diffusion-inpainting",
                 revision="8a4288a76071f7280aedbdb3253bdb9e9d5d84bb", size_gb=4.3, probe_file="model_index.json"),
    KnownWeights("CLIP ViT-L/14", "edit metrics (CLIP direction similarity)", hub_repo="openai/clip-vit-large-patch14",
                 key="clip", revision="32bd64288804d66eefd0ccbe215aa642df71cc41", size_gb=1.7),
    KnownWeights("Qwen2.5 1.5B Instruct", "prompt refinement (local LLM)", hub_repo="Qwen/Qwen2.5-1.5B-Instruct",
                 key="qwen", revision="989aa7980e4cf806f80c7fef2b1adb7bc71aa306", size_gb=3.1),
    KnownWeights("facer FaRL parser (LaPa)", "face parsing (facer backend)", key="farl",
                 torch_hub_files=("face_parsing.farl.lapa.",),
                 url="https://github.com/FacePerceiver/facer/releases/download/models-v1/"
                     "face_parsing.farl.lapa.main_ema_136500_jit191.pt"),
    KnownWeights("facer FaRL parser (CelebAMask-HQ)", "face parsing (facer backend)", key="farl-celebm",
                 torch_hub_files=("face_parsing.farl.celebm.",),
                 url="https://github.com/FacePerceiver/facer/releases/download/models-v1/"
                     "face_parsing.farl.celebm.main_ema_181500_jit.pt"),
    KnownWeights("LPIPS AlexNet", "LPIPS metric (with the lpips package)", key="lpips", torch_hub_files=("alexnet-",),
                 url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
                 size_gb=0.23),
)


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def torch_hub_checkpoints() -> Path:
    home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))
    return home / "hub" / "checkpoints"


def repo_cache_folder(repo: str) -> Path:
    """``<hub cache>/models--org--name``: where huggingface_hub keeps every revision of ``repo``."""
    return hf_hub_cache() / ("models--" + repo.replace("/", "--"))


# ----------------------------------------------------------------------------- which files a model needs
_WEIGHT_EXT = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".onnx_data", ".gguf",
               ".tflite", ".ot", ".pb")


def _is_weight(path: str) -> bool:
    return path.endswith(_WEIGHT_EXT)


def _variant(path: str) -> str | None:
    """``unet/diffusion_pytorch_model.fp16.safetensors`` -> "fp16"; no variant -> None."""
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.rsplit(".", 1)[1] if "." in stem else None


def select_files(files: list[str], variant: str | None = None, folders: tuple[str, ...] | None = None) -> list[str]:
    """The files of a repo listing that a loader needs: per folder, one weight format (safetensors,
    else .bin, else whatever there is) in one variant, plus every non-weight file.

    Why: model repos carry each weight several times (fp32 and fp16, safetensors and .bin, the
    original .ckpt at the root, TF and Flax exports); a plain snapshot of InstructPix2Pix or SD 1.5
    is 10-20 GB of which a diffusers load reads 4. Diffusers repos (a root ``model_index.json``)
    also lose their root checkpoints and the safety checker (the pipelines load without it), and
    keep only ``folders`` when given (SDS needs five components).
    """
    diffusers = "model_index.json" in files
    by_folder: dict[str, list[str]] = {}
    keep = []
    for f in files:
        folder, top = _folder(f), (f.split("/", 1)[0] if "/" in f else "")
        if diffusers and (top == "safety_checker" or (folders is not None and top and top not in folders)):
            continue
        if not _is_weight(f):
            keep.append(f)
        elif not (diffusers and folder == ""):
            by_folder.setdefault(folder, []).append(f)
    for group in by_folder.values():
        keep += _one_format(group, variant)
    return sorted(keep)


def _one_format(group: list[str], variant: str | None) -> list[str]:
    for want in ([variant, None] if variant else [None]):
        for ext in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
            chosen = [f for f in group if f.endswith(ext) and _variant(f) == want]
            if chosen:
                return chosen
    return []


# ----------------------------------------------------------------------------- what is in the caches
def _snapshots(w: KnownWeights) -> list[Path]:
    """Cached snapshot folders of ``w``'s repo, best first: the pinned revision, then what ``main``
    points at, then the newest other one (a revision fetched by another tool serves as well)."""
    root = repo_cache_folder(w.hub_repo or "") / "snapshots"
    if not root.is_dir():
        return []
    snaps = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    main_ref = repo_cache_folder(w.hub_repo or "") / "refs" / "main"
    main = main_ref.read_text().strip() if main_ref.is_file() else None
    return sorted(snaps, key=lambda p: (p.name != w.revision, p.name != main))


def _tree_listing(repo: str, commit: str) -> list[str] | None:
    """The repo's file list at ``commit`` as huggingface_hub cached it before downloading, if it did."""
    path = repo_cache_folder(repo) / "trees" / f"{commit}.json"
    try:
        return sorted(json.loads(path.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _tree_entry(snapshot_file: Path, snapshot: Path, repo: str) -> dict | None:
    path = repo_cache_folder(repo) / "trees" / f"{snapshot.name}.json"
    try:
        return json.loads(path.read_text())["files"].get(snapshot_file.relative_to(snapshot).as_posix())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def snapshot_problems(snapshot: Path, w: KnownWeights | None = None, full: bool = False) -> list[tuple[str, str]]:
    """What is wrong with a cached snapshot folder, as (kind, message naming the file) with kind
    "missing" (a download that did not finish: resumable) or "corrupt" (delete the file named).

    ``full`` also hashes every file against its ETag (``verify_file``): seconds per GB, so only
    after a download and in ``dynavatar download``; otherwise each file gets the cheap load check.
    """
    files = sorted(p for p in snapshot.rglob("*") if p.is_symlink() or p.is_file())
    if not files:
        return [("missing", f"{snapshot} is empty")]
    problems = [("missing", f"{p} points at a missing file") for p in files if not p.exists()]
    if w is not None and w.hub_repo:
        listing = _tree_listing(w.hub_repo, snapshot.name)
        have = {p.relative_to(snapshot).as_posix() for p in files if p.exists()}
        if listing is not None:
            problems += [("missing", f"{snapshot / f} was never downloaded") for f in _missing(listing, have, w)]
    for p in files:
        if p.exists():
            why = verify_file(p, expected_hash(p, snapshot, w)) if full else check_file(p)
            if why:
                problems.append(("corrupt", f"{p.resolve()} is corrupt ({why})"))
    return problems


def _missing(listing: list[str], have: set[str], w: KnownWeights) -> list[str]:
    """Files of ``select_files(listing)`` not in ``have``; a weight folder counts as present when it
    holds any weight file (another tool may have chosen .bin where we would take safetensors)."""
    weight_folders = {_folder(f) for f in have if _is_weight(f)}
    return [f for f in select_files(listing, folders=w.folders)
            if f not in have and not (_is_weight(f) and _folder(f) in weight_folders)]


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def find_weights(w: KnownWeights) -> Path | None:
    """The local path of ``w`` if a whole copy is cached (a snapshot folder or one checkpoint file), else None."""
    if w.hub_repo:
        for snap in _snapshots(w):
            if not snapshot_problems(snap, w):
                return snap
        return None
    ckpt = torch_hub_checkpoints()
    exact = ckpt / w.url.rsplit("/", 1)[-1] if w.url else None
    if exact is not None and exact.is_file():
        return exact
    if w.torch_hub_files and ckpt.is_dir():
        for f in sorted(ckpt.iterdir()):
            if f.name.startswith(w.torch_hub_files) and f.is_file():
                return f
    return None


def find_hub_weights(repo: str) -> Path | None:
    """The local snapshot of any Hugging Face repo id (listed in KNOWN_WEIGHTS or not), else None."""
    for w in KNOWN_WEIGHTS:
        if w.hub_repo == repo:
            return find_weights(w)
    return find_weights(KnownWeights(repo, "", hub_repo=repo))


# ----------------------------------------------------------------------------- is a file whole?
def check_file(path: Path) -> str | None:
    """A cheap load check (reads headers only): why ``path`` cannot be loaded, or None.

    safetensors: the header parses and its tensors end exactly at the end of the file (a truncated
    download fails this). Zip-format torch files (torch.save since 1.6, TorchScript): the central
    directory at the end of the file is there. JSON files parse.
    """
    name = path.name
    try:
        if name.endswith(".safetensors"):
            return _check_safetensors(path)
        if name.endswith((".pt", ".pth", ".bin", ".ckpt")) and _is_zip_start(path):
            with zipfile.ZipFile(path):
                return None
        if name.endswith(".json") and path.stat().st_size < 50_000_000:
            json.loads(path.read_bytes())
    except (zipfile.BadZipFile, ValueError, UnicodeDecodeError, struct.error) as exc:
        return f"{type(exc).__name__}: {str(exc)[:80]}"
    return None


def _is_zip_start(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _check_safetensors(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors file"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"header of {n} bytes in a file of {size}: truncated"
        header = json.loads(f.read(n))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"the tensors need {8 + n + end} bytes, the file has {size}: truncated or padded"
    return None


def _zip_crc(path: Path) -> str | None:
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    return f"member {bad} fails its CRC" if bad else None


def expected_hash(path: Path, snapshot: Path | None = None, w: KnownWeights | None = None) -> tuple[str, str] | None:
    """("sha256" | "git-sha1", hex) the hub recorded for a cached file: the name of the blob a
    snapshot link points at (its ETag), else the cached tree listing's entry; None if unknown."""
    blob = Path(os.path.realpath(path)).name
    if path.is_symlink() and re.fullmatch(r"[0-9a-f]{64}", blob):
        return "sha256", blob
    if path.is_symlink() and re.fullmatch(r"[0-9a-f]{40}", blob):
        return "git-sha1", blob
    entry = _tree_entry(path, snapshot, w.hub_repo) if snapshot is not None and w and w.hub_repo else None
    if entry:
        return ("sha256", entry["lfs_sha256"]) if entry.get("lfs_sha256") else ("git-sha1", entry["blob_id"])
    return None


def verify_file(path: Path, expected: tuple[str, str] | None = None) -> str | None:
    """The full check: the cheap one, then the bytes hashed against ``expected`` (see ``expected_hash``;
    a torch hub file's expected sha256 may be the prefix its published name carries); without a
    published hash (FaRL's files), every member of a zip-format checkpoint against its CRC."""
    why = check_file(path)
    if why:
        return why
    if expected is None:  # no published hash: a zip archive (torch.save, TorchScript) still has a CRC per member
        return _zip_crc(path) if path.name.endswith((".pt", ".pth", ".bin", ".ckpt")) and _is_zip_start(path) else None
    algo, want = expected
    h = hashlib.sha256() if algo == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    got = h.hexdigest()
    return None if got.startswith(want) else f"{algo} {got[:12]}... but the hub published {want[:12]}..."


# ----------------------------------------------------------------------------- offline mode
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


# ----------------------------------------------------------------------------- one wording for every message
# Editors, SDS, the LLM refiner, the parsers and the CLI say the same thing about weights, so a user
# meets the same fix everywhere.
def _known_for(repo: "str | KnownWeights") -> KnownWeights | None:
    if isinstance(repo, KnownWeights):
        return repo
    return next((w for w in KNOWN_WEIGHTS if repo in (w.hub_repo, w.key)), None)


def _repo(repo: "str | KnownWeights") -> str:
    return (repo.hub_repo or repo.key) if isinstance(repo, KnownWeights) else repo


def weights_label(repo: "str | KnownWeights") -> str:
    """``"InstructPix2Pix weights ('timbrooks/instruct-pix2pix')"`` for a known repo, else ``"weights '<repo>'"``."""
    w = _known_for(repo)
    return f"{w.name} weights ({_repo(w)!r})" if w and w.name != _repo(w) else f"weights {_repo(repo)!r}"


def fetch_hint(repo: "str | KnownWeights") -> str:
    """How to get ``repo`` (a hub id, a KNOWN_WEIGHTS name or entry) into the local cache."""
    w, repo = _known_for(repo), _repo(repo)
    if w is not None and not w.hub_repo:
        return (f"Fetch it with `dynavatar download {w.key}` on a machine with internet (or put {w.url} in "
                f"{torch_hub_checkpoints()}; set TORCH_HOME to move that folder).")
    first = f"`dynavatar download {w.key}` or " if w and w.key != repo else f"`dynavatar download {repo}` or "
    return (f"Fetch them once on a machine with internet: {first}`hf download {repo}` (older huggingface_hub: "
            f"`huggingface-cli download {repo}`), or pass a local folder as model=..., or set HF_HUB_CACHE to "
            "where they are.")


def missing_weights_message(repo: "str | KnownWeights", what: str,
                            why_offline: str = "nothing is downloaded here") -> str:
    """The one-line error for ``what`` (e.g. "InstructPix2Pix editor") when ``repo`` is not cached."""
    w = _known_for(repo)
    where = (f"in {torch_hub_checkpoints()} (the torch hub cache)" if w is not None and not w.hub_repo
             else f"in the Hugging Face cache at {hf_hub_cache()}")
    return f"the {what} needs the {weights_label(repo)}, which are not {where} ({why_offline}). {fetch_hint(repo)}"


def broken_weights_message(repo: "str | KnownWeights", what: str, exc: BaseException) -> str:
    """The one-line error for cached weights that fail to load (an interrupted download, say)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    w, repo = _known_for(repo), _repo(repo)
    again = f"`dynavatar download {w.key}` or " if w else ""
    return (f"the {what} found {weights_label(repo)} but could not load them ({type(exc).__name__}: {first}). "
            f"The copy may be incomplete: fetch it again with {again}`hf download {repo}` (older huggingface_hub: "
            f"`huggingface-cli download {repo}`), or pass a complete local folder as model=....")
