"""The viewer's shared GUI panel: timeline, face sliders and display toggles.

Controls added through ``server.gui`` are shared: every connected browser sees the same frame,
sliders and toggles (only the camera is each browser's own), so the GUI state is one ``ViewState``.
Angles are shown in degrees and handed to the renderer in radians; expression sliders carry the
head model's component names when it has them (the embedded head does: smile_L, pucker ...).

Every change calls ``on_change(kind)``: "draft" for continuous controls (a slider being dragged, the
timeline playing), "full" for discrete ones (a toggle), so the render threads know whether more is
coming (``render_loop``).
"""

from __future__ import annotations

import math
import threading
from typing import Callable

from ..geometry.labels import LABEL_COLOURS, LABEL_NAMES
from .scene import Pose, ViewState

__all__ = ["Controls", "Player", "legend_html", "N_EXPR_SLIDERS"]

N_EXPR_SLIDERS = 8  # the first expression components get a slider each
NO_LABEL = "(none)"


def legend_html(names: list[str]) -> str:
    """Colour swatches of ``names`` in the parser's colours (``geometry.labels.LABEL_COLOURS``),
    two to a row, for the label overlay's legend."""
    cells = []
    for name in names:
        r, g, b = LABEL_COLOURS[LABEL_NAMES.index(name)]
        cells.append(f'<span style="display:inline-block;width:50%;white-space:nowrap">'
                     f'<span style="display:inline-block;width:0.8em;height:0.8em;margin-right:0.4em;'
                     f'vertical-align:middle;border:1px solid #888;background:rgb({r},{g},{b})"></span>'
                     f'{name.replace("_", " ")}</span>')
    return f'<div style="font-size:0.8em;line-height:1.6;padding:0 0.5em">{"".join(cells)}</div>'


class Controls:
    """GUI handles of the timeline, the face sliders and the display toggles, and the ``ViewState``
    they say. ``labels``: the label names the avatar's splats carry (empty: the label controls are
    disabled, with a note saying why)."""

    def __init__(self, gui, n_frames: int, expr_names: list[str] | None, n_expr: int, labels: list[str],
                 on_change: Callable[[str], None], fps: float = 25.0) -> None:
        self.n_frames, self._on_change = n_frames, on_change
        with gui.add_folder("Timeline"):
            self.frame = gui.add_slider("Frame", min=0, max=max(n_frames - 1, 1), step=1, initial_value=0,
                                        disabled=n_frames < 2, hint="A frame of the clip's tracked motion")
            self.play = gui.add_button("Play", disabled=n_frames < 2, hint="Play the clip's motion (again: pause)")
            self.fps = gui.add_slider("FPS", min=1.0, max=60.0, step=1.0, initial_value=float(fps))
        with gui.add_folder("Face (added to the frame's motion)"):
            self.jaw = gui.add_slider("Jaw open °", min=-5.0, max=30.0, step=0.5, initial_value=0.0)
            self.yaw = gui.add_slider("Head yaw °", min=-60.0, max=60.0, step=1.0, initial_value=0.0)
            self.pitch = gui.add_slider("Head pitch °", min=-40.0, max=40.0, step=1.0, initial_value=0.0)
            self.roll = gui.add_slider("Head roll °", min=-40.0, max=40.0, step=1.0, initial_value=0.0)
            self.gaze_yaw = gui.add_slider("Gaze left/right °", min=-30.0, max=30.0, step=1.0, initial_value=0.0)
            self.gaze_pitch = gui.add_slider("Gaze up/down °", min=-25.0, max=25.0, step=1.0, initial_value=0.0)
            with gui.add_folder("Expression", expand_by_default=False):
                names = list(expr_names or [])
                self.expr = [gui.add_slider(names[i] if i < len(names) else f"Expression {i + 1}", min=-2.0,
                                            max=2.0, step=0.05, initial_value=0.0)
                             for i in range(min(n_expr, N_EXPR_SLIDERS))]
            self.reset = gui.add_button("Reset face")
        with gui.add_folder("Display"):
            note = "" if labels else "This avatar's splats carry no labels (`avatar.label_splats()` adds them)."
            self.labels = gui.add_checkbox("Labels", initial_value=False, disabled=not labels,
                                           hint="Each pixel's most likely label in the parser's colours")
            self.legend = gui.add_html(legend_html(labels), visible=False)
            self.isolate = gui.add_dropdown("Isolate label", [NO_LABEL] + labels, initial_value=NO_LABEL,
                                            disabled=not labels)
            self.centres = gui.add_checkbox("Splat centres", initial_value=False,
                                            hint="The splats' centres as a point cloud over the picture")
            self.note = gui.add_markdown(note, visible=bool(note))
        self._wire()

    @property
    def sliders(self) -> list:
        return [self.jaw, self.yaw, self.pitch, self.roll, self.gaze_yaw, self.gaze_pitch, *self.expr]

    def _wire(self) -> None:
        """Continuous controls ask for drafts, discrete ones for the full picture."""
        for s in [self.frame, *self.sliders]:
            s.on_update(lambda _e: self._on_change("draft"))
        for c in (self.isolate, self.centres):
            c.on_update(lambda _e: self._on_change("full"))

        @self.labels.on_update
        def _(_e) -> None:
            self.legend.visible = bool(self.labels.value)
            self._on_change("full")

        @self.reset.on_click
        def _(_e) -> None:
            for s in self.sliders:
                s.value = 0.0

    def pose(self) -> Pose:
        """The face sliders as offsets (radians)."""
        rad = math.radians
        return Pose(jaw=rad(self.jaw.value), yaw=rad(self.yaw.value), pitch=rad(self.pitch.value),
                    roll=rad(self.roll.value), gaze_yaw=rad(self.gaze_yaw.value),
                    gaze_pitch=rad(self.gaze_pitch.value), expr=tuple(float(s.value) for s in self.expr))

    def state(self, before: bool = False, compare: str = "A") -> ViewState:
        """The picture the GUI asks for (``before``/``compare`` come from the edit panel)."""
        isolate = None if self.isolate.value == NO_LABEL else str(self.isolate.value)
        return ViewState(frame=min(int(self.frame.value), self.n_frames - 1), pose=self.pose(),
                         labels=bool(self.labels.value), isolate=isolate, before=before, compare=compare)


class Player:
    """Plays the timeline: a daemon thread that advances the frame slider at the FPS slider's rate
    while playing (setting the slider is what any browser sees, and what asks for drafts); the Play
    button toggles it."""

    def __init__(self, controls: Controls) -> None:
        self._c = controls
        self.playing = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dynavatar-view-play", daemon=True)
        self._thread.start()

        @controls.play.on_click
        def _(_e) -> None:
            self.toggle()

    def toggle(self) -> None:
        if self.playing.is_set():
            self.playing.clear()
            self._c.play.label = "Play"
            self._c._on_change("full")  # the paused frame, sharp
        else:
            self.playing.set()
            self._c.play.label = "Pause"

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.playing.wait(0.2):
                continue
            n = self._c.n_frames
            self._c.frame.value = (int(self._c.frame.value) + 1) % n
            self._stop.wait(1.0 / max(float(self._c.fps.value), 1.0))

    def stop(self) -> None:
        self.playing.clear()
        self._stop.set()
        self._thread.join(2.0)
