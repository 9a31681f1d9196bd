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
