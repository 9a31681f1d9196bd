"""``serve``: the avatar in a local web viewer built on viser (as gsplat's and nerfstudio's are).

viser serves the page, keeps the GUI in sync between browsers and reports each browser's camera;
we render what that camera sees and send it back as the scene's background image (nerfview's
scheme), one render thread per browser (``render_loop``). Orbit, zoom and pan are viser's own
camera controls; the picture follows them.

>>> from dynavatar import Avatar
>>> from dynavatar.view import serve
>>> handle = serve(Avatar.load("runs/clip/avatar"), port=8080, block=False)   # prints the URL
>>> handle.stop()
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import logging
import socket
import threading
import time
import warnings

import numpy as np
import torch

from ..device import resolve_device
from ..errors import ConfigError, MissingDependencyError
from .camera import (
    CameraView,
    Resolution,
    default_max_side,
    split_view,
    start_view,
    to_cameras,
)
from .controls import Controls, Player
from .edits import Workbench
from .render_loop import LatestTask
from .scene import Painter, ViewState, labels_present

__all__ = ["serve", "ViewerHandle", "Sent", "free_port", "require_viser"]

logger = logging.getLogger("dynavatar.view")

PORT_TRIES = 100  # a busy port moves the viewer up to this many ports on


def require_viser():
    """The viser module, or a one-line MissingDependencyError naming the install that brings it."""
    try:
        import viser
    except ImportError:
        raise MissingDependencyError("the viewer needs viser: pip install 'dynavatar[view]'") from None
    return viser


def free_port(host: str, port: int) -> int:
    """The first port from ``port`` on where ``host`` can listen (bound and released at once, with
    the SO_REUSEADDR the server itself uses). A host that cannot be listened on at all is a
    one-line ConfigError, found here rather than after viser's own search."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host}: not a host name or address ({exc}); use 127.0.0.1 (this machine "
                          "only) or 0.0.0.0 (every network interface)") from None
    for p in range(port, min(port + PORT_TRIES, 65536)):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address[0], p, *address[2:]))
                return p
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    raise ConfigError(f"--port {p}: permission denied (ports below 1024 need root); use a port "
                                      "above 1023") from None
                if exc.errno != errno.EADDRINUSE:
                    raise ConfigError(f"--host {host}: cannot listen there ({exc.strerror}); use 127.0.0.1 "
                                      "(this machine only) or 0.0.0.0 (every network interface)") from None
    raise ConfigError(f"ports {port} to {min(port + PORT_TRIES, 65536) - 1} are all busy on {host}; "
                      "pass --port with a free one")


def _not_a_spare_connection(record: logging.LogRecord) -> bool:
    """False for a browser's speculative connection, closed without a request, which websockets logs
    as a failed handshake with a traceback though nothing failed."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (record.getMessage() == "opening handshake failed" and type(exc).__name__ == "InvalidMessage")


def _quiet_websockets() -> None:
    """websockets' per-connection lines are for ``-v`` (DEBUG); its tracebacks for a browser's spare
    connections are dropped always (``addFilter`` adds a filter once)."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("websockets.server").addFilter(_not_a_spare_connection)


def _on_device(avatar, device: torch.device):
    """The avatar on ``device``: itself when it is there already, else a moved copy (the caller's
    avatar is left where it was; its clip's frames are not carried)."""
    here = avatar.device
    if here.type == device.type and (here.index or 0) == (device.index or 0):
        return avatar
    return type(avatar)(avatar.gaussians.to(device), copy.deepcopy(avatar.model).to(device),
                        avatar.params.to(device), avatar.cameras.to(device), avatar.meta, None, avatar.background)


def _url(host: str, port: int) -> str:
    """The address a browser on this machine opens (a wildcard host is reached through loopback)."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


@dataclasses.dataclass(frozen=True)
class Sent:
    """A picture sent to a browser (what its page shows as the scene's background)."""

    seq: int  # 1, 2, ... over all browsers
    client_id: int
    image: np.ndarray  # uint8 [H, W, 3]
    full: bool  # at full size (False: a draft while something moved)


class ViewerHandle:
    """A running viewer: ``url``, ``port`` (``requested_port`` when that one was busy), the viser
    ``server``, its GUI (``controls``: timeline, face sliders, display toggles; ``workbench``: edit,
    save, compare) and ``stop()``. Threads: viser's, one render loop per browser, the player, one
    that keeps the splat-centre point cloud current, and the workbench's jobs."""

    def __init__(self, server, avatar, device: torch.device, host: str, requested_port: int,
                 max_size: int | None = None) -> None:
        self.server, self.avatar, self.device = server, avatar, device
        self.host, self.requested_port, self.port = host, requested_port, int(server.get_port())
        self.url = _url(host, self.port)
        self.painter = Painter(device)
        self.resolution = Resolution(max_side=max_size or default_max_side(device))
        self._lock, self._sent_cond = threading.Lock(), threading.Condition()
        self._tasks: dict[int, LatestTask] = {}
        self._sent: Sent | None = None
        self._stopped = threading.Event()
        self._cloud = None
        self._setup_scene()
        self._build_gui()
        self._centres = LatestTask(self._sync_centres, name="dynavatar-view-centres", settle=None)
        server.on_client_connect(self._attach)
        server.on_client_disconnect(self._detach)

    # ------------------------------------------------------------------ set-up
    def _setup_scene(self) -> None:
        """Open on the clip's first camera, orbiting the head; the scene's up is the image's up."""
        a = self.avatar
        with torch.no_grad():
            verts = a.model(a.params[0], landmark_set=None).vertices[0, : a.model.n_vertices]  # [V, 3] head only
        view = start_view(a.cameras, verts.mean(0))
        self.server.scene.set_up_direction(view.up)
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up, cam.fov = view.position, view.look_at, view.up, view.fov_y
        self.server.gui.configure_theme(control_width="medium", show_share_button=False)

    def _build_gui(self) -> None:
        a, gui = self.avatar, self.server.gui
        what = "gsplat" if self.device.type == "cuda" else "PyTorch renderer"
        gui.add_markdown(f"**{a.params.batch_size} frames, {a.gaussians.num_splats} splats** on {self.device} "
                         f"({what}; stills up to {self.resolution.max_side} px)")
        self.controls = Controls(gui, a.params.batch_size, a.model.expr_names, a.model.n_expr, labels_present(a),
                                 self.changed)
        self.player = Player(self.controls)
        self.workbench = Workbench(gui, a, self.device, self.changed)

    # ------------------------------------------------------------------ browsers and pictures
    def state(self) -> ViewState:
        return self.controls.state(**self.workbench.flags())

    def changed(self, kind: str = "full") -> None:
        """The GUI's picture changed: every browser redraws (drafts while it keeps changing)."""
        with self._lock:
            tasks = list(self._tasks.values())
        for t in tasks:
            t.request(kind)
        if self.controls.centres.value or self._cloud is not None:
            self._centres.request()

    def _attach(self, client) -> None:
        task = LatestTask(lambda kind: self._draw(client, kind), name=f"dynavatar-view-{client.client_id}")
        with self._lock:
            self._tasks[client.client_id] = task
        client.camera.on_update(lambda _camera: task.request("draft"))
        task.request("full")

    def _detach(self, client) -> None:
        with self._lock:
            task = self._tasks.pop(client.client_id, None)
        if task is not None:
            task.stop(timeout=0)

    def draw(self, state: ViewState, view: CameraView, size: tuple[int, int]) -> np.ndarray:
        """The picture for one browser camera at ``size`` (width, height): the avatars the GUI
        shows, side by side when there are two (each half its own view of the same camera)."""
        shown = self.workbench.shown(state)
        cams = to_cameras(view, *size)
        if len(shown) == 1:
            return self.painter.picture(shown[0], state, cams)
        half = split_view(cams)
        return np.concatenate([self.painter.picture(a, state, half) for a in shown], axis=1)

    def _draw(self, client, kind: str) -> bool:
        """Render for ``client`` and send it; -> whether that was the full size."""
        view = CameraView.of(client.camera)
        full = self.resolution.full(view.canvas)
        size = full if kind == "full" else self.resolution.draft(view.canvas)
        t0 = time.perf_counter()
        img = self.draw(self.state(), view, size)
        self.resolution.record(size[0] * size[1], time.perf_counter() - t0)
        with self._lock:
            if client.client_id not in self._tasks:  # the browser left while this was drawn
                return True
        client.scene.set_background_image(img, format="jpeg", jpeg_quality=90)
        with self._sent_cond:
            seq = self._sent.seq + 1 if self._sent else 1
            self._sent = Sent(seq, client.client_id, img, size == full)
            self._sent_cond.notify_all()
        return size == full

    def _sync_centres(self, _kind: str) -> bool:
        """Show, move or remove the point cloud of splat centres (shared by every browser)."""
        state = self.state()
        shown = self.workbench.shown(state)
        if not self.controls.centres.value or len(shown) != 1:  # side by side: the 3-D cloud fits neither half
            if self._cloud is not None:
                self._cloud.remove()
                self._cloud = None
            return True
        points, colours = self.painter.centres(shown[0], state)
        self._cloud = self.server.scene.add_point_cloud("/splat_centres", points, colours, point_size=0.0015,
                                                        point_shape="circle", precision="float32")
        return True

    # ------------------------------------------------------------------ for scripts and tests
    @property
    def point_cloud(self):
        """viser's handle of the splat-centre point cloud while it is shown, else None."""
        return self._cloud

    @property
    def last_sent(self) -> Sent | None:
        with self._sent_cond:
            return self._sent

    def wait_for_picture(self, after: int = 0, full: bool = True, timeout: float = 60.0) -> Sent:
        """The first picture sent after number ``after`` (at full size when ``full``); TimeoutError
        when none comes within ``timeout`` seconds (no browser connected, or rendering stalled)."""
        deadline = time.monotonic() + timeout
        with self._sent_cond:
            while not (self._sent and self._sent.seq > after and (self._sent.full or not full)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no picture sent within {timeout:.0f} s (is a browser connected?)")
                self._sent_cond.wait(left)
            return self._sent

    def wait(self) -> None:
        """Block until Ctrl-C (or ``stop`` from another thread), then stop."""
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the viewer: playback, render threads, then the server; a save in progress is
        finished first (an unfinished edit is dropped: it was only in memory)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.player.stop()
        with self._lock:
            tasks, self._tasks = list(self._tasks.values()), {}
        for t in [*tasks, self._centres]:
            t.stop()
        self.workbench.wait("save", timeout=60.0)
        self.server.stop()

    def __enter__(self) -> "ViewerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(avatar, port: int = 8080, host: str = "127.0.0.1", device: str = "auto", block: bool = True,
          max_size: int | None = None, verbose: bool = True) -> ViewerHandle:
    """Start the viewer on ``avatar`` at http://host:port and print that URL (``verbose``).

    ``port``: the first one tried; when it is busy the next free one is used, and the printed line
    says so. ``host``: 127.0.0.1 serves this machine only; 0.0.0.0 every network interface (anyone
    who can reach the machine can then see, edit and save). ``device``: "auto" renders where the avatar
    is; another device gets a copy there. ``max_size``: the longest side of a still picture (default
    1024 px on CUDA, 256 on a CPU); pictures drawn while something moves are smaller, to keep up.
    ``block``: serve until Ctrl-C, then stop; otherwise return at once (``handle.stop()`` ends it)."""
    viser = require_viser()
    _quiet_websockets()
    # a browser that leaves while its picture is drawn: nothing to tell anyone
    warnings.filterwarnings("ignore", message="Queued a BackgroundImageMessage on a closed connection")
    dev = avatar.device if device == "auto" else resolve_device(device)
    avatar = _on_device(avatar, dev)
    chosen = free_port(host, int(port))
    server = viser.ViserServer(host=host, port=chosen, label="dynavatar", verbose=False)
    try:
        handle = ViewerHandle(server, avatar, dev, host, int(port), max_size)
    except BaseException:  # nothing may keep listening for a viewer that failed to start
        server.stop()
        raise
    line = f"dynavatar view: open {handle.url} in a browser" + (" (Ctrl-C stops)" if block else "")
    if handle.port != handle.requested_port and handle.requested_port != 0:  # 0: any free port
        line += f"; port {handle.requested_port} was busy, so it uses {handle.port}"
    if verbose:
        print(line, flush=True)
    else:
        logger.info("%s", line)
    if block:
        handle.wait()
    return handle
