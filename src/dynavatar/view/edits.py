"""The viewer's avatars and the GUI that changes them: text edits, saving, a second avatar.

- **Edit**: "Plan" shows ``avatar.plan(prompt).summary()`` (what would run, on which regions);
  "Apply edit" runs ``avatar.edit(prompt)`` in a worker thread with a progress bar, then shows the
  result; "Before edit" toggles back to the avatar as it was. Edits chain, as in the API.
- **Save**: ``Avatar.save`` of the edited avatar into a folder typed in the panel; a non-empty folder
  dynavatar did not write is refused (``io.output_dir``), and the refusal is shown as one line.
- **Compare**: open a second saved avatar (an edit made elsewhere, another fit) and show it instead
  of the first (A/B) or beside it.

The work runs in the viewer's process, not in a browser: a browser that disconnects mid-edit does
not stop it, and the finished edit is what the next browser sees. Stopping the viewer drops an
unfinished edit (it was only in memory); a save in progress is waited for, and the checkpoint
writer's per-file atomic writes (tensors first, JSON last) mean a folder is never left half-written.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import DynavatarError
from .scene import COMPARE_MODES, ViewState

__all__ = ["Workbench", "one_line"]

logger = logging.getLogger("dynavatar.view")


def one_line(exc: BaseException) -> str:
    """An error as the CLI would print it: the first line of its message; a surprise names its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DynavatarError):
        return text or type(exc).__name__
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}{where}; check the path"
    return f"unexpected {type(exc).__name__}{': ' + text if text else ''} (see the viewer's log)"


def _edit_fraction() -> float | None:
    """How far the running edit's optimisation is, from its progress bar (``edit.apply`` counts its
    steps with tqdm); None when no such bar is live."""
    try:
        from tqdm import tqdm

        bars = [b for b in list(getattr(tqdm, "_instances", ())) if str(getattr(b, "desc", "")).startswith(("edit '", "sds '"))]
    except Exception:  # noqa: BLE001 - the indicator is best effort; the bar stays animated without it
        return None
    return min(1.0, bars[-1].n / bars[-1].total) if bars and bars[-1].total else None


class Workbench:
    """The avatars shown (``original``, the ``current`` one with its edits, an optional ``second``)
    and the Edit and Compare panels. ``on_change(kind)`` is called whenever the picture changes."""

    def __init__(self, gui, avatar, device, on_change: Callable[[str], None]) -> None:
        from ..edit import EditConfig  # rules and dataclasses only: no model loads here

        self.original = self.current = avatar
        self.second = None
        self.device, self._on_change = device, on_change
        self._lock = threading.Lock()
        self._jobs: dict[str, threading.Thread] = {}
        with gui.add_folder("Edit"):
            self.prompt = gui.add_text("Prompt", initial_value="red hair")
            self.plan_button = gui.add_button("Plan", hint="What the edit would do, before running it")
            self.plan_text = gui.add_markdown("")
            self.steps = gui.add_number("Steps", initial_value=EditConfig().steps, min=1, max=100_000, step=1,
                                        hint="Optimisation steps of a splat edit (fewer: a quicker, rougher try)")
            self.apply_button = gui.add_button("Apply edit")
            self.progress = gui.add_progress_bar(0.0, animated=True, visible=False)
            self.status = gui.add_markdown("")
            self.before = gui.add_checkbox("Before edit", initial_value=False, disabled=True)
            self.save_path = gui.add_text("Save to", initial_value="", hint="A new or empty folder")
            self.save_button = gui.add_button("Save", hint="Save the avatar as shown in A, with its edits")
            self.save_status = gui.add_markdown("")
        with gui.add_folder("Compare"):
            self.open_path = gui.add_text("Avatar folder", initial_value="", hint="A saved avatar, e.g. an edit")
            self.open_button = gui.add_button("Open")
            self.compare = gui.add_dropdown("Show", list(COMPARE_MODES), initial_value="A", disabled=True,
                                            hint="A: this avatar, B: the opened one, A | B: side by side")
            self.open_status = gui.add_markdown("")
        self._wire()

    def _wire(self) -> None:
        self.plan_button.on_click(lambda _e: self.plan(self.prompt.value))
        self.apply_button.on_click(lambda _e: self.start_edit(self.prompt.value))
        self.save_button.on_click(lambda _e: self.save(self.save_path.value))
        self.open_button.on_click(lambda _e: self.open(self.open_path.value))
        self.before.on_update(lambda _e: self._on_change("full"))
        self.compare.on_update(lambda _e: self._on_change("full"))

    # ------------------------------------------------------------------ what is shown
    def shown(self, state: ViewState) -> list:
        """The avatars to draw, left to right."""
        with self._lock:
            a = self.original if state.before else self.current
            b = self.second
        if b is None or state.compare == "A":
            return [a]
        return [b] if state.compare == "B" else [a, b]

    def flags(self) -> dict:
        """This panel's part of the ViewState."""
        return {"before": bool(self.before.value), "compare": str(self.compare.value)}

    # ------------------------------------------------------------------ jobs
    def _start(self, name: str, work: Callable[[], None]) -> threading.Thread:
        """Run ``work`` in a daemon thread unless a job of that name is running (-> that one)."""
        with self._lock:
            job = self._jobs.get(name)
            if job is not None and job.is_alive():
                return job
            job = threading.Thread(target=work, name=f"dynavatar-view-{name}", daemon=True)
            self._jobs[name] = job
        job.start()
        return job

    def wait(self, name: str, timeout: float | None = None) -> None:
        """Wait for the job ``name`` ("plan", "edit", "save", "open") if one ran."""
        job = self._jobs.get(name)
        if job is not None:
            job.join(timeout)

    def plan(self, prompt: str) -> threading.Thread:
        """Show the plan an edit of ``prompt`` would follow (a refiner may be a local LLM: a thread)."""
        def work() -> None:
            try:
                self.plan_text.content = f"`{self.current.plan(prompt).summary()}`"
            except Exception as exc:  # noqa: BLE001 - every failure becomes the GUI's one line
                self.plan_text.content = f"**{one_line(exc)}**"
                _log(exc)
        return self._start("plan", work)

    def start_edit(self, prompt: str) -> threading.Thread:
        """Apply ``prompt`` to the current avatar in a worker thread; the panel shows its progress
        and then the result (or the error's one line). One edit at a time."""
        from ..edit import EditConfig

        config = EditConfig(steps=max(int(self.steps.value), 1))

        def work() -> None:
            t0, done = time.perf_counter(), threading.Event()
            self.apply_button.disabled, self.progress.visible, self.progress.value = True, True, 0.0
            ticker = threading.Thread(target=self._tick, args=(prompt, t0, done), daemon=True)
            ticker.start()
            try:
                edited = self.current.edit(prompt, config=config, progress=True)
            except Exception as exc:  # noqa: BLE001 - every failure becomes the GUI's one line
                self.status.content = f"**edit failed: {one_line(exc)}**"
                _log(exc)
            else:
                with self._lock:
                    self.current = edited
                last = edited.meta.get("edits", [{}])[-1]
                self.status.content = (f"edited in {time.perf_counter() - t0:.0f} s: "
                                       f"`{last.get('prompt', prompt)}` ({last.get('editor', '?')})")
                self.before.disabled, self.before.value = False, False
                self._on_change("full")
            finally:
                done.set()
                ticker.join()
                self.progress.visible, self.apply_button.disabled = False, False
        return self._start("edit", work)

    def _tick(self, prompt: str, t0: float, done: threading.Event) -> None:
        """Refresh the progress bar and the elapsed time each half second while an edit runs."""
        while not done.wait(0.5):
            fraction = _edit_fraction()
            if fraction is not None:
                self.progress.value = round(100.0 * fraction, 1)
            self.status.content = f"editing '{prompt}' ... {time.perf_counter() - t0:.0f} s"

    def save(self, folder: str) -> threading.Thread:
        """Save the edited avatar into ``folder``; the outcome (or the refusal) as one line."""
        def work() -> None:
            if not folder.strip():
                self.save_status.content = "**type a folder to save into first**"
                return
            try:
                with self._lock:
                    avatar = self.current
                path = avatar.save(Path(folder).expanduser())
                self.save_status.content = f"saved to `{path}`"
            except Exception as exc:  # noqa: BLE001 - every failure becomes the GUI's one line
                self.save_status.content = f"**{one_line(exc)}**"
                _log(exc)
        return self._start("save", work)

    def open(self, folder: str) -> threading.Thread:
        """Load a second avatar from ``folder`` and show the two side by side."""
        def work() -> None:
            from ..api import Avatar

            try:
                if not folder.strip():
                    raise DynavatarError("type the folder of a saved avatar first")
                second = Avatar.load(Path(folder).expanduser(), device=self.device)
            except Exception as exc:  # noqa: BLE001 - every failure becomes the GUI's one line
                self.open_status.content = f"**{one_line(exc)}**"
                _log(exc)
                return
            with self._lock:
                self.second = second
            self.open_status.content = f"B: `{folder}` ({second.params.batch_size} frames)"
            self.compare.disabled = False
            self.compare.value = "A | B"  # calls on_change
            self._on_change("full")
        return self._start("open", work)


def _log(exc: BaseException) -> None:
    """Project errors are the user's to fix (already shown); anything else gets its traceback logged."""
    if isinstance(exc, DynavatarError):
        logger.info("viewer: %s", one_line(exc))
    else:
        logger.error("viewer: unexpected error", exc_info=exc)
