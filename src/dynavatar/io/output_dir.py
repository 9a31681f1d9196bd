"""Output-folder policy: dynavatar never deletes or overwrites what it did not write.

Every folder the project creates carries a small marker file (``MARKER``, JSON ``{"kind", "version"}``).
The marker is what makes a folder the project's own: only marked folders are ever replaced or
deleted. The rest of the policy, in the order a command meets it:

- ``check_output_dir`` / ``check_output_file`` validate ``-o`` BEFORE any work, so a bad path costs
  nothing and changes nothing: a file where a folder is needed (or the reverse), a non-empty folder
  without the marker, an output that holds (or is, or sits inside) one of the inputs, a folder that
  cannot be written (permissions or a read-only disk: checked with a real probe file, since
  ``os.access`` lies for root and for read-only mounts), names over the file system's limit.
- ``staged_dir`` builds a folder beside its target (same file system, so the final swap is a
  rename) and swaps it in only when complete; a failed or killed job leaves the target untouched.
  A replaced folder is deleted only when it carries the marker; an unmarked one (``overwrite`` of a
  user's folder) is kept beside it as ``.<name>.old-XXXX`` and the log says where.
- ``mark_output_dir`` marks a folder that is built in place (run folders that checkpoint as they go).

Every refusal is an :class:`~dynavatar.errors.OutputPathError` with a one-line message that says what
is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import OutputPathError
from .atomic import atomic_path, output_error

__all__ = ["MARKER", "check_output_dir", "check_output_file", "staged_dir", "mark_output_dir", "read_marker"]

logger = logging.getLogger("dynavatar.io")

MARKER = ".dynavatar"
_UNCHANGED = "(nothing was changed)"
_SIBLING_TAGS = ("staging", "old")


# ---------------------------------------------------------------------------------------------- marker
def _version() -> str:
    from .. import __version__

    return __version__


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of ``folder`` as a dict, or None when it has none (or an unreadable one: a file of
    that name that is not our JSON does not make a folder ours)."""
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def _write_marker(folder: Path, kind: str, **extra) -> None:
    with atomic_path(folder / MARKER) as tmp:
        Path(tmp).write_text(json.dumps({"kind": kind, "version": _version(), **extra}))


def mark_output_dir(path: str | os.PathLike, kind: str) -> Path:
    """Create ``path`` if needed and write the marker into it: for folders built in place (a run folder
    that checkpoints as it goes), after ``check_output_dir`` accepted it. Returns the folder."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, folder) or exc
    _write_marker(folder, kind)
    return folder


# ---------------------------------------------------------------------------------------------- checks
def _resolve(path: str | os.PathLike) -> Path:
    """Absolute path with ``~`` and symlinks resolved; ``""`` and ``"."`` are the working folder."""
    try:
        return Path(os.fspath(path) or ".").expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise OutputPathError(f"cannot use {path} as an output path ({exc}); choose another -o") from exc


def _nearest_existing_parent(target: Path) -> Path:
    """The closest ancestor of ``target`` that exists: where its parent folders (or its staging
    siblings) will be created. A file there is refused, since no folder can be made inside it."""
    anc = target.parent
    while not os.path.exists(anc):  # os.path: False (not an error) for names over the limit
        anc = anc.parent
    if not os.path.isdir(anc):
        raise OutputPathError(f"{anc} is a file, so {target} cannot be created inside it; "
                              f"choose another -o {_UNCHANGED}")
    return anc


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
        return 255


def _check_names(target: Path, existing: Path) -> None:
    """Refuse names the file system will refuse later (ENAMETOOLONG halfway through a job)."""
    limit = _name_max(existing)
    for part in target.relative_to(existing).parts:
        if len(os.fsencode(part)) > limit:
            raise OutputPathError(f"the name {part[:40]}... is {len(os.fsencode(part))} bytes long, over this file "
                                  f"system's limit of {limit}; choose a shorter -o {_UNCHANGED}")
    try:
        path_max = int(os.pathconf(existing, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        path_max = 4096
    if len(os.fsencode(str(target))) + 32 >= path_max:  # + room for staging names and files inside
        raise OutputPathError(f"the path {str(target)[:60]}... is too long for this file system "
                              f"(limit {path_max} bytes); choose a shorter -o {_UNCHANGED}")


def _probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test that also catches read-only mounts and
    full disks (``os.access`` says yes to root everywhere)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write to the folder {folder} (permission denied); "
                              f"choose a folder you can write to with -o {_UNCHANGED}")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".dynavatar-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, folder, what="write to the folder") or OutputPathError(
            f"cannot write to the folder {folder} ({exc.strerror or exc}); choose another -o {_UNCHANGED}") from exc


def _check_inputs(target: Path, inputs: Iterable, as_dir: bool) -> None:
    """An output must never replace an input: not the input itself, not a folder holding it, not a
    place inside an input folder (a folder of frames)."""
    for inp in inputs:
        src = _resolve(inp)
        clash = src == target or (as_dir and (src.is_relative_to(target) or target.is_relative_to(src)))
        if not clash and target.exists() and src.exists():
            with contextlib.suppress(OSError):
                clash = os.path.samefile(src, target)  # hard links, bind mounts
        if clash:
            where = "is" if src == target else ("holds" if src.is_relative_to(target) else "is inside")
            raise OutputPathError(f"the output {target} {where} the input {src}; choose another -o {_UNCHANGED}")


def check_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                     inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate an output folder before any work; returns its resolved absolute path.

    Accepted: a path that does not exist yet (its nearest existing ancestor writable), an empty
    folder, a folder marked by dynavatar as ``kind``. Refused: a file; a non-empty folder without
    the marker, or marked as another kind (unless ``overwrite``); and, even with ``overwrite``, a
    folder that is, holds or lies inside one of ``inputs``. Nothing is created or changed.
    """
    target = _resolve(path)
    if target.parent == target:
        raise OutputPathError(f"{target} is the root of the file system; choose a folder inside it with -o")
    parent = _nearest_existing_parent(target)
    _check_names(target, parent)
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{target} is a file, not a folder; choose a folder name with -o {_UNCHANGED}")
    _check_inputs(target, inputs, as_dir=True)
    if target.is_dir():
        _check_owner(target, kind, overwrite)
        _probe_writable(target)
    _probe_writable(parent)
    return target


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _check_owner(target: Path, kind: str, overwrite: bool) -> None:
    if overwrite:
        return
    marker = read_marker(target)
    if marker is None:
        try:
            empty = _is_empty(target)
        except OSError as exc:
            raise output_error(exc, target, what="read the folder") or exc
        if not empty:
            raise OutputPathError(f"{target} is not empty and was not written by dynavatar; "
                                  f"choose a new folder {_UNCHANGED}")
    elif marker["kind"] != kind:
        raise OutputPathError(f"{target} holds dynavatar output of kind {marker['kind']!r}, not {kind!r}; choose a new "
                              f"folder, or pass --overwrite to replace it {_UNCHANGED}")


def check_output_file(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate a single-file output (.mp4, .png, .ply, .npz) before any work; returns its resolved
    path. Refused: a folder in its place, an input's own path, a parent that cannot be created or
    written, names over the file system's limit."""
    target = _resolve(path)
    if target.parent == target:
        raise OutputPathError(f"{path!s} is not a file name; give one with -o {_UNCHANGED}")
    parent = _nearest_existing_parent(target)
    _check_names(target, parent)
    if target.is_dir():
        raise OutputPathError(f"{target} is a folder; give a file name (e.g. {target / ('out' + (target.suffix or '.mp4'))}) "
                              f"with -o {_UNCHANGED}")
    _check_inputs(target, inputs, as_dir=False)
    _probe_writable(parent)
    return target


# ---------------------------------------------------------------------------------------------- staging
def _sibling_prefix(target: Path, tag: str) -> str:
    """``.<name>.<tag>-`` shortened so the sibling's name (plus mkdtemp's 8 characters) fits the
    file system's name limit even when ``name`` itself is near it."""
    limit = _name_max(target.parent) - len(f"..{tag}-") - 8
    name = target.name
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return f".{name}.{tag}-"


def _is_stale_staging(marker: dict) -> bool:
    """A staging folder whose process is gone on this machine (killed job); another machine's (a
    shared disk) or a live one is never stale."""
    who = marker.get("staging")
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(who.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # PermissionError: alive, someone else's
        return False
    return False


def _remove_owned(folder: Path) -> None:
    """Delete a marked folder, the marker last: a deletion killed halfway leaves a folder that is
    still recognisably ours (and cleaned next time), never an unmarked half."""
    for child in folder.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    folder.rmdir()


def _remove_stale_siblings(target: Path) -> None:
    """Leftovers of killed jobs beside ``target``: marked ``.old-`` folders, and marked ``.staging-``
    folders of processes that are gone. Unmarked ones (a user's folder moved aside) stay."""
    prefixes = {tag: _sibling_prefix(target, tag) for tag in _SIBLING_TAGS}
    for sib in target.parent.iterdir():
        for tag, prefix in prefixes.items():
            if not sib.name.startswith(prefix):
                continue
            marker = read_marker(sib) if sib.is_dir() and not sib.is_symlink() else None
            if marker is None or (tag == "staging" and not _is_stale_staging(marker)):
                continue
            logger.info("removing %s, left by an interrupted dynavatar job", sib)
            with contextlib.suppress(OSError):
                _remove_owned(sib)


def _discard_old(old: Path, target: Path) -> None:
    """The replaced folder: deleted when it is ours (marked) or empty, otherwise kept and reported."""
    if read_marker(old) is not None:
        _remove_owned(old)
    elif _is_empty(old):
        old.rmdir()
    else:
        logger.warning("the previous contents of %s (not written by dynavatar) were kept in %s; "
                       "delete that folder when you no longer need it", target, old)


def _holds_cwd(target: Path) -> bool:
    try:
        return Path.cwd().resolve().is_relative_to(target)
    except OSError:
        return False


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` folder at ``target``; the previous ``target`` goes to a
    ``.old-`` sibling first (renames, so the target is never half-written)."""
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
        return
    if not target.is_dir():
        raise OutputPathError(f"{target} is a file, not a folder; choose a folder name with -o")
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=_sibling_prefix(target, "old")))  # reserves a name
    if _holds_cwd(target):
        _swap_contents(staging, target, old)  # a shell sitting in target keeps a valid folder
    else:
        old.rmdir()
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old, target)
            raise
    _discard_old(old, target)


def _swap_contents(staging: Path, target: Path, old: Path) -> None:
    """Swap entry by entry, keeping ``target`` itself (the working folder of this process, and
    most likely of the user's shell: renaming it would strand them in a deleted folder)."""
    for entry in list(target.iterdir()):
        os.rename(entry, old / entry.name)
    marker_first = sorted(staging.iterdir(), key=lambda p: p.name != MARKER)
    for entry in marker_first:
        os.rename(entry, target / entry.name)
    staging.rmdir()


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path`` (``.<name>.staging-XXXX``, same file system);
    fill it, and on success it is marked and swapped in as ``path``. On any error (Ctrl-C included)
    the staging folder is removed and ``path`` is left exactly as it was.

    ``path`` must have passed :func:`check_output_dir`: an existing folder there is replaced, and is
    deleted only when it carries the marker (an unmarked one is kept as ``.<name>.old-XXXX``).
    """
    target = _resolve(path)
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{target} is a file, not a folder; choose a folder name with -o {_UNCHANGED}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(target)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=_sibling_prefix(target, "staging")))
    except OSError as exc:
        raise output_error(exc, target.parent, what="write to the folder") or exc
    try:
        # marked from the start, with its owner: a killed job's staging is recognisably ours
        _write_marker(staging, kind, staging={"pid": os.getpid(), "host": socket.gethostname()})
        try:
            yield staging
        except OSError as exc:  # the writer's own errors: only a full or read-only disk is about -o
            raise output_error(exc, target, writing_only=True) or exc
        _write_marker(staging, kind)
        try:
            _swap_in(staging, target)
        except OSError as exc:
            raise output_error(exc, target) or exc
    except BaseException:
        if staging.exists():
            with contextlib.suppress(OSError):
                shutil.rmtree(staging)
        raise
