"""What the viewer draws: the GUI's state (``ViewState``) through one browser camera.

The sliders are offsets added to the frame's tracked motion (``Pose``), so the timeline keeps
playing the clip while a user opens the jaw or turns the head. Everything a picture needs comes
from one render pass: the colour, and when labels are asked for, the splats' label probabilities
blended as feature channels beside it (the overlay in the parser's colours, or one label isolated).

The posed splats (FLAME forward + binding) depend on the frame and the sliders, not on the camera,
so they are cached: orbiting re-rasterises only, which is what a CPU can afford.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import torch

from ..gaussians.avatar import sh_to_rgb
from ..gaussians.binding import WorldGaussians, bind
from ..geometry.cameras import Cameras
from ..geometry.labels import LABEL_COLOURS, LABEL_NAMES, label_index
from ..geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from ..perceive.face_parser import overlay
from ..render import renderer_for

__all__ = ["Pose", "ViewState", "Painter", "posed_params", "labels_present"]

COMPARE_MODES = ("A", "B", "A | B")  # the avatar, the opened second one, both side by side


@dataclasses.dataclass(frozen=True)
class Pose:
    """Offsets the sliders add to a frame's motion (radians; expression coefficients as they are)."""

    jaw: float = 0.0  # mouth opening (jaw about x)
    yaw: float = 0.0  # head turn (about y), composed before the frame's own rotation
    pitch: float = 0.0  # nod (about x)
    roll: float = 0.0  # tilt (about z)
    gaze_yaw: float = 0.0  # both eyes, left/right
    gaze_pitch: float = 0.0  # both eyes, up/down
    expr: tuple[float, ...] = ()  # added to the first len(expr) expression coefficients


@dataclasses.dataclass(frozen=True)
class ViewState:
    """Everything the shared GUI says about the picture (the camera is each browser's own)."""

    frame: int = 0
    pose: Pose = Pose()
    labels: bool = False  # label overlay in the parser's colours
    isolate: str | None = None  # one label kept bright, the rest faded
    before: bool = False  # the avatar before its edits
    compare: str = "A"  # one of COMPARE_MODES


def _euler(yaw: float, pitch: float, roll: float) -> torch.Tensor:
    """R = Ry(yaw) Rx(pitch) Rz(roll).  -> [3, 3]"""
    axes = torch.eye(3, dtype=torch.float64)
    ry, rx, rz = (axis_angle_to_matrix(axes[i] * a) for i, a in ((1, yaw), (0, pitch), (2, roll)))
    return ry @ rx @ rz


def posed_params(params, pose: Pose):
    """FlameParams [1] with the slider offsets applied (a copy; the clip's parameters are untouched).
    The head turn is composed with the frame's rotation (turning a turned head further), the jaw
    and gaze offsets are added to their axis-angles."""
    p = params.map(torch.clone)
    p.jaw[:, 0] += pose.jaw
    if pose.yaw or pose.pitch or pose.roll:
        R = _euler(pose.yaw, pose.pitch, pose.roll).to(p.rotation) @ axis_angle_to_matrix(p.rotation)
        p.rotation = matrix_to_axis_angle(R)
    p.eyes[:, [0, 3]] += pose.gaze_pitch
    p.eyes[:, [1, 4]] += pose.gaze_yaw
    n = min(len(pose.expr), p.expr.shape[1])
    if n:
        p.expr[:, :n] += torch.tensor(pose.expr[:n], dtype=p.expr.dtype, device=p.expr.device)
    return p


def labels_present(avatar) -> list[str]:
    """Label names that are some splat's most likely label (what an overlay can show), in the
    label set's order; empty for an unlabelled avatar."""
    labels = avatar.gaussians.labels
    if labels.shape[1] == 0:
        return []
    found = set(torch.unique(labels.argmax(1)).tolist())
    return [n for i, n in enumerate(LABEL_NAMES) if i in found]


def _uint8(rgb: torch.Tensor) -> np.ndarray:
    """float [H, W, 3] in [0, 1] -> uint8 [H, W, 3]"""
    return (rgb.clamp(0, 1) * 255).round().byte().cpu().numpy()


class Painter:
    """Renders avatars for the viewer on one device, with one renderer (``render.renderer_for``),
    caching the last few posed splat sets. Thread-safe: every browser's render loop shares it."""

    CACHE = 6  # posed sets kept: two avatars side by side, a few browsers

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.renderer = renderer_for(self.device)
        self._lock = threading.Lock()
        self._cache: list[tuple[object, int, Pose, WorldGaussians]] = []

    def posed(self, avatar, frame: int, pose: Pose) -> WorldGaussians:
        """The avatar's splats in world space at ``frame`` (modulo its clip length) with ``pose``."""
        frame = frame % avatar.params.batch_size
        with self._lock:
            for a, f, p, world in self._cache:
                if a is avatar and f == frame and p == pose:
                    return world
        with torch.no_grad():
            params = posed_params(avatar.params[frame].to(self.device), pose)
            model = avatar.model.to(self.device)
            world = bind(avatar.gaussians, model(params, landmark_set=None).vertices, model.faces)
        with self._lock:  # the avatar object is kept with its entry, so its id cannot be reused
            self._cache = [(avatar, frame, pose, world)] + self._cache[: self.CACHE - 1]
        return world

    def picture(self, avatar, state: ViewState, camera: Cameras) -> np.ndarray:
        """One avatar through ``camera`` [1], uint8 [H, W, 3]: colour, optionally one label isolated
        (its probability keeps the colour, the rest fades to the background) and the label overlay."""
        world = self.posed(avatar, state.frame, state.pose)
        labelled = avatar.gaussians.labels.shape[1] > 0 and (state.labels or state.isolate is not None)
        bg = torch.tensor(avatar.background, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            out = self.renderer.render(world, camera.to(self.device), background=bg,
                                       features=avatar.gaussians.labels.to(self.device) if labelled else None)
            rgb = out.rgb[0]  # [H, W, 3]
            if labelled and state.isolate is not None:
                keep = out.features[0, ..., label_index(state.isolate)].clamp(0, 1)[..., None]  # [H, W, 1]
                rgb = rgb * keep + (0.25 * rgb + 0.75 * bg) * (1 - keep)
            img = _uint8(rgb)
            if labelled and state.labels:
                probs = out.features[0].clone()  # [H, W, K]; what no splat covers is background
                probs[..., 0] += 1 - out.alpha[0, ..., 0]
                img = overlay(img, probs.argmax(-1).cpu().numpy())
        return img

    def centres(self, avatar, state: ViewState) -> tuple[np.ndarray, np.ndarray]:
        """The splats' centres at the state's frame and pose, float32 [N, 3], with their colours,
        uint8 [N, 3]: the label colours when the overlay is on, else the splats' base colour."""
        world = self.posed(avatar, state.frame, state.pose)
        points = world.means[0].detach().float().cpu().numpy()
        g = avatar.gaussians
        if state.labels and g.labels.shape[1] > 0:
            colours = np.asarray(LABEL_COLOURS, dtype=np.uint8)[g.labels.argmax(1).cpu().numpy()]
        else:
            colours = _uint8(sh_to_rgb(g.sh[:, 0].detach()))
        return points, colours
