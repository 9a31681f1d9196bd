"""The browser's camera as the project's ``Cameras``, where a viewer starts, and how big to render.

viser reports each client's camera as a camera-to-world pose in OpenCV axes (x right, y down,
z forward: ``P_world = R p_camera + t``, ``wxyz`` the quaternion of R), a vertical field of view in
radians and the canvas size in pixels. Our renderers take world-to-camera ``viewmats`` and pixel
intrinsics in the same axes (DESIGN.md §3), so the conversion is an inverse and a focal length.

The size policy (``Resolution``) is what keeps the viewer interactive on a CPU: while the camera
moves, a *draft* sized to fit a time budget from the measured cost per pixel; once it stops, the
*full* image (the canvas, capped).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..geometry.cameras import Cameras, camera_centers, intrinsics_from_fov
from ..geometry.rotations import quaternion_to_matrix

__all__ = ["CameraView", "StartView", "Resolution", "start_view", "to_cameras", "split_view", "default_max_side"]


@dataclasses.dataclass(frozen=True)
class CameraView:
    """One browser camera: where it is and what it sees (a snapshot; viser's handle keeps changing)."""

    wxyz: tuple[float, float, float, float]  # camera-to-world rotation (w, x, y, z), OpenCV axes
    position: tuple[float, float, float]  # camera centre, world metres
    fov_y: float  # vertical field of view, radians
    canvas: tuple[int, int]  # (width, height) of the browser's canvas in pixels

    @classmethod
    def of(cls, camera) -> "CameraView":
        """Snapshot a ``viser.CameraHandle``."""
        return cls(tuple(float(v) for v in camera.wxyz), tuple(float(v) for v in camera.position),
                   float(camera.fov), (max(int(camera.image_width), 1), max(int(camera.image_height), 1)))

    @property
    def aspect(self) -> float:
        return self.canvas[0] / self.canvas[1]


def to_cameras(view: CameraView, width: int, height: int, device=None) -> Cameras:
    """The browser camera at ``width`` x ``height`` pixels (same field of view and aspect as its
    canvas when the size keeps the canvas's aspect).  -> Cameras [1]"""
    R = quaternion_to_matrix(torch.tensor(view.wxyz, dtype=torch.float64))  # camera -> world  [3, 3]
    t = torch.tensor(view.position, dtype=torch.float64)  # [3]
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = R.T  # world -> camera
    viewmat[:3, 3] = -(R.T @ t)
    K = intrinsics_from_fov(math.degrees(view.fov_y), width, height, dtype=torch.float64)
    return Cameras(viewmat[None].float(), K[None].float(), int(width), int(height)).to(device)


def split_view(cameras: Cameras) -> Cameras:
    """The same camera for one half of a side-by-side picture: half the width, same vertical field
    of view, so the two halves together cover the canvas.  Cameras [1] -> Cameras [1]"""
    w = max(cameras.width // 2, 1)
    K = cameras.Ks.clone()
    K[:, 0, 2] = w / 2.0
    return Cameras(cameras.viewmats, K, w, cameras.height)


@dataclasses.dataclass(frozen=True)
class StartView:
    """Where a browser's camera starts (and where viser's "Reset View" returns): the clip's own
    camera, looking at the head."""

    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_y: float  # radians


def start_view(cameras: Cameras, head_centre: torch.Tensor) -> StartView:
    """The first clip camera's centre, its image-up direction and vertical field of view, aimed at
    ``head_centre`` [3] (the posed head of the first frame), so the viewer opens on what the clip
    showed and orbits around the head."""
    viewmat, K = cameras.viewmats[0].double().cpu(), cameras.Ks[0].double().cpu()
    eye = camera_centers(viewmat)  # [3]
    up = -viewmat[1, :3]  # image up (OpenCV y is down) in world coordinates
    fov = 2.0 * math.atan(0.5 * cameras.height / float(K[1, 1]))
    as_tuple = lambda v: tuple(float(x) for x in v)  # noqa: E731
    return StartView(as_tuple(eye), as_tuple(head_centre.double().cpu()), as_tuple(up), fov)


@dataclasses.dataclass
class Resolution:
    """How many pixels to render: the full canvas (capped at ``max_side`` on its longer side) when
    the view is still, and while it moves a draft whose pixel count fits ``budget_s`` seconds at
    the measured cost per pixel (an exponential average over the renders so far). On a GPU the draft
    is usually the full size; on a CPU it drops to a few thousand pixels and comes back sharp when
    the camera stops."""

    max_side: int = 256
    budget_s: float = 0.1  # seconds a draft may take (about 10 frames a second while moving)
    min_side: int = 32
    _cost: float | None = None  # seconds per pixel, averaged

    def full(self, canvas: tuple[int, int]) -> tuple[int, int]:
        """(width, height) with the canvas's aspect and the longer side at most ``max_side``."""
        w, h = canvas
        s = min(1.0, self.max_side / max(w, h))
        return max(round(w * s), 1), max(round(h * s), 1)

    def draft(self, canvas: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of a moving-camera render: the full size shrunk to the time budget, with
        the shorter side no smaller than ``min_side`` (or the full size's)."""
        w, h = self.full(canvas)
        if self._cost is None or self._cost * w * h <= self.budget_s:
            return w, h
        s = math.sqrt(self.budget_s / (self._cost * w * h))
        s = max(s, min(1.0, self.min_side / min(w, h)))
        return max(round(w * s), 1), max(round(h * s), 1)

    def record(self, pixels: int, seconds: float) -> None:
        """Fold one render's time into the cost per pixel."""
        cost = seconds / max(pixels, 1)
        self._cost = cost if self._cost is None else 0.7 * self._cost + 0.3 * cost


def default_max_side(device: torch.device) -> int:
    """The longest side of a still image: 1024 px where gsplat renders (CUDA), 256 on a CPU, where
    the pure-PyTorch renderer takes about a second for that."""
    return 1024 if torch.device(device).type == "cuda" else 256
