"""Atomic file writes: a file either appears complete or not at all (a killed job never leaves a
half-written checkpoint, video or model behind).

The file system's refusals (a full disk, a read-only mount, no permission, a name too long, a file
where a folder should be) come out as :class:`~dynavatar.errors.OutputPathError` with a one-line
message naming the path and what to do, not as an ``OSError`` traceback from deep inside a writer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputPathError

__all__ = ["atomic_path", "output_error"]

# errno -> (what is wrong, what to do); the path is named by the caller.
_REASONS = {
    errno.ENOSPC: ("no space left on the device", "free some space or choose another -o"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose another -o"),
    errno.EFBIG: ("the file is too large for this file system", "choose another -o on a different disk"),
    errno.EROFS: ("the file system is read-only", "choose another -o on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you can write to with -o"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to with -o"),
    errno.ENAMETOOLONG: ("the name is too long for this file system", "choose a shorter -o"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another -o"),
    errno.EISDIR: ("a folder is in the way", "remove it or choose another -o"),
}
# Errors that can only be about writing, whoever raised them (a writer may also read other files:
# its EACCES or ENOTDIR is not necessarily about the output).
_WRITING_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def output_error(exc: OSError, path: str | os.PathLike, *, what: str = "write",
                 writing_only: bool = False) -> OutputPathError | None:
    """``exc`` as an OutputPathError about ``path`` ("cannot write X: no space left on the device
    (free some space or choose another -o)"), or None when its errno is not one of the file
    system's refusals (then the caller re-raises the original)."""
    code = getattr(exc, "errno", None)
    if code not in _REASONS or (writing_only and code not in _WRITING_ONLY):
        return None
    reason, fix = _REASONS[code]
    err = OutputPathError(f"cannot {what} {path}: {reason} ({fix})")
    err.__cause__ = exc
    return err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path, suffix: str) -> str:
    """``.<name>.`` shortened so the temp name (plus mkstemp's 8 characters and ``suffix``) fits
    the name limit even when ``name`` itself is near it."""
    try:
        limit = int(os.pathconf(path.parent, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        limit = 255
    name = path.name
    while name and len(os.fsencode(f".{name}.{suffix}")) + 8 > limit:
        name = name[:-1]
    return f".{name}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (with the usual
    permissions, not mkstemp's 0600), on error it is removed.  ``suffix`` keeps writers that
    infer the format from the name happy (``.npz``, ``.mp4``).

    OSErrors of the file system become OutputPathError: all of them while creating the folder, the
    temp file and the final replace; a full or read-only disk also while the caller writes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path, suffix), suffix=suffix)
        os.close(fd)
    except OSError as exc:
        raise output_error(exc, path) or exc
    try:
        try:
            yield tmp
        except OSError as exc:
            raise output_error(exc, path, writing_only=True) or exc
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as exc:
            raise output_error(exc, path) or exc
    finally:
        with contextlib.suppress(OSError):
            if os.path.exists(tmp):
                os.unlink(tmp)
