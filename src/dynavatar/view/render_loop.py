"""Render threads that always draw the latest request and drop the stale ones.

A browser sends camera updates far faster than a CPU renders (dozens a second while dragging). A
queue of them would show the camera's path long after the mouse stopped; instead each browser has
one ``LatestTask``: a request only marks the picture out of date, and the thread draws whatever the
state is when it gets to it. While requests keep coming it draws *drafts* (small, fast); once they
have stopped for ``settle`` seconds it draws the *full* picture once (nerfview's scheme).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

__all__ = ["LatestTask"]

logger = logging.getLogger("dynavatar.view")


class LatestTask:
    """A daemon thread running ``work(kind)`` for the newest request only, ``kind`` "draft" or "full";
    ``work`` returns True when what it drew is already the full picture (a fast GPU), so none is owed.

    ``request("draft")``: something is changing (camera drag, slider drag, playback); the thread
    draws a draft, and ``settle`` seconds after the last draft request, a full picture.
    ``request("full")``: draw the full picture next (a new browser, a finished edit). Requests that
    arrive while ``work`` runs collapse into one. ``settle=None``: no follow-up full picture (tasks
    whose work has no draft form)."""

    def __init__(self, work: Callable[[str], bool], name: str, settle: float | None = 0.25) -> None:
        self._work, self._settle = work, settle
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._draft_shown = False  # the last picture was a draft: a full one is owed
        self._last_request = 0.0
        self._stopped = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, kind: str = "draft") -> None:
        with self._cond:
            if kind == "full" or self._pending is None:
                self._pending = kind
            self._last_request = time.monotonic()
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for the picture in progress (at most ``timeout`` s)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def idle(self) -> bool:
        """Nothing pending, nothing owed, nothing running."""
        with self._cond:
            return self._pending is None and not self._draft_shown and not self._busy

    def _next(self) -> str | None:
        """Block until there is something to draw; None once stopped."""
        with self._cond:
            while not self._stopped:
                if self._pending is not None:
                    kind, self._pending = self._pending, None
                    return kind
                if self._draft_shown and self._settle is not None:
                    quiet = time.monotonic() - self._last_request
                    if quiet >= self._settle:
                        return "full"
                    self._cond.wait(self._settle - quiet)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        while (kind := self._next()) is not None:
            with self._cond:
                self._busy = True
            final = True
            try:
                final = bool(self._work(kind))
            except Exception:  # noqa: BLE001 - a failed picture must not end the viewer; say why, draw the next
                logger.exception("viewer: drawing failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._draft_shown = kind == "draft" and not final
