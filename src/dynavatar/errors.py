"""The project's exception types.

Every error a user can cause (a bad file, a bad video, bad numbers) is raised as one of these,
with a message that says what is wrong and what to do, instead of surfacing deep inside a
third-party library.
"""

from __future__ import annotations


class DynavatarError(Exception):
    """Base class of every error raised on purpose by dynavatar."""


class FlameFileError(DynavatarError, ValueError):
    """A FLAME-format head model file is missing, unreadable, unsafe or malformed."""


class MissingDependencyError(DynavatarError, ImportError):
    """An optional package is needed for this feature; the message names the pip command."""


class InvalidParametersError(DynavatarError, ValueError):
    """Parameters have the wrong shape, or contain NaN/inf."""


class VideoError(DynavatarError):
    """A video (or image folder) is missing, unreadable, empty or unusable."""


class NoFaceError(DynavatarError):
    """No usable face was found where one is required."""


class OutputPathError(DynavatarError):
    """An output path cannot be written (read-only, full disk, a file where a folder is needed) or
    must not be (a non-empty folder that dynavatar did not write, or one holding the input)."""


class ConfigError(DynavatarError, ValueError):
    """A configuration field or command-line value is unknown or out of range; the message lists
    the valid ones."""


class AvatarFileError(DynavatarError):
    """A saved avatar folder is missing, corrupt or inconsistent (wrong types, missing keys or
    tensors, indices out of range)."""


class RunInterrupted(DynavatarError):
    """A long job was interrupted (Ctrl-C); its state was saved and the same command resumes it."""
