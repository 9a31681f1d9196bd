"""Pinhole camera maths in the project's convention (DESIGN.md §3).

OpenCV: world-to-camera ``viewmats [..., 4, 4]`` (x right, y down, z forward), intrinsics
``Ks [..., 3, 3]`` in pixels with pixel centres at integer + 0.5. Pure functions, and the ``Cameras``
container every stage passes around (tracker, renderers, editors), which only holds tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .triangles import safe_normalize

__all__ = [
    "Cameras",
    "look_at_viewmat",
    "intrinsics_from_fov",
    "orbit_eyes",
    "camera_centers",
    "project_points",
]


def look_at_viewmat(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target``.

    eye, target: [..., 3]; up: [3] or [..., 3], the world direction that should appear up in the
    image (default +y). Returns [..., 4, 4]. The camera's +y axis points image-down (OpenCV), so
    it is ``-up`` projected onto the image plane.
    """
    if up is None:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device)
    up = up.to(eye).expand_as(eye)
    z = safe_normalize(target - eye)  # forward  [..., 3]
    x = safe_normalize(torch.cross(z, up, dim=-1))  # right
    y = torch.cross(z, x, dim=-1)  # down
    R = torch.stack([x, y, z], dim=-2)  # rows: world -> camera  [..., 3, 3]
    t = -(R @ eye[..., None])[..., 0]  # [..., 3]
    M = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    M[..., :3, :3] = R
    M[..., :3, 3] = t
    M[..., 3, 3] = 1.0
    return M


def intrinsics_from_fov(
    fov_y_deg: float, width: int, height: int, dtype=torch.float32, device=None
) -> Tensor:
    """Square-pixel pinhole intrinsics [3, 3] with the principal point at the image centre."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor(
        [[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )


def orbit_eyes(
    n: int,
    radius: float,
    target: Tensor,
    elevation_deg: float = 0.0,
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0),
) -> Tensor:
    """Camera positions [n, 3] on a horizontal circle around ``target`` (y up), azimuth 0 = +z.

    The end of the range is excluded, so a full circle has no repeated view.
    """
    a0, a1 = azimuth_range_deg
    az = torch.linspace(math.radians(a0), math.radians(a1), n + 1, dtype=target.dtype)[:n]
    el = math.radians(elevation_deg)
    offs = torch.stack(
        [radius * math.cos(el) * torch.sin(az), radius * math.sin(el) * torch.ones_like(az),
         radius * math.cos(el) * torch.cos(az)], dim=-1,
    )  # [n, 3]
    return target.reshape(1, 3) + offs.to(target.device)


def camera_centers(viewmats: Tensor) -> Tensor:
    """Camera centres in world space.  viewmats: [..., 4, 4] -> [..., 3] (= -R^T t)."""
    R = viewmats[..., :3, :3]
    t = viewmats[..., :3, 3]
    return -(R.transpose(-1, -2) @ t[..., None])[..., 0]


def project_points(points: Tensor, viewmats: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection of world points.

    points: [..., N, 3]; viewmats: [..., 4, 4]; Ks: [..., 3, 3] (broadcast against points' batch)
    -> (pixels [..., N, 2] with the +0.5 centre convention already in K, depth z [..., N]).
    """
    R = viewmats[..., None, :3, :3]
    t = viewmats[..., None, :3, 3]
    pc = (R @ points[..., None])[..., 0] + t  # [..., N, 3]
    z = pc[..., 2]
    uvw = (Ks[..., None, :, :] @ pc[..., None])[..., 0]
    return uvw[..., :2] / z[..., None], z


@dataclass
class Cameras:
    """C pinhole cameras sharing one image size (OpenCV, world-to-camera, pixels)."""

    viewmats: Tensor  # [C, 4, 4]
    Ks: Tensor  # [C, 3, 3]
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.viewmats.dim() == 2:
            self.viewmats = self.viewmats[None]
        if self.Ks.dim() == 2:
            self.Ks = self.Ks[None].expand(self.viewmats.shape[0], 3, 3)
        if self.viewmats.shape[0] != self.Ks.shape[0]:
            raise ValueError(f"{self.viewmats.shape[0]} viewmats but {self.Ks.shape[0]} Ks")

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    @property
    def centers(self) -> Tensor:  # [C, 3]
        return camera_centers(self.viewmats)

    def to(self, device=None, dtype=None) -> "Cameras":
        return Cameras(self.viewmats.to(device=device, dtype=dtype), self.Ks.to(device=device, dtype=dtype),
                       self.width, self.height)

    def scaled(self, scale: float) -> "Cameras":
        """The same cameras at ``scale`` of the image size (rounded, at least 1 px; intrinsics scaled
        to match). ``scale >= 1`` returns ``self``."""
        if scale >= 1.0:
            return self
        w, h = max(1, round(self.width * scale)), max(1, round(self.height * scale))
        K = self.Ks.clone()
        K[:, 0] *= w / self.width
        K[:, 1] *= h / self.height
        return Cameras(self.viewmats, K, w, h)

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(self.viewmats[idx], self.Ks[idx], self.width, self.height)

    @classmethod
    def look_at(
        cls,
        eyes: Tensor,  # [C, 3] or [3]
        target: Tensor | None = None,  # [3] or [C, 3]
        width: int = 512,
        height: int = 512,
        fov_y_deg: float = 20.0,
        up: Tensor | None = None,
    ) -> "Cameras":
        eyes = torch.as_tensor(eyes, dtype=torch.float32) if not isinstance(eyes, Tensor) else eyes
        eyes = eyes.reshape(-1, 3)
        if target is None:
            target = torch.zeros(3, dtype=eyes.dtype, device=eyes.device)
        target = torch.as_tensor(target, dtype=eyes.dtype, device=eyes.device).expand_as(eyes)
        V = look_at_viewmat(eyes, target, up)
        K = intrinsics_from_fov(fov_y_deg, width, height, dtype=eyes.dtype, device=eyes.device)
        return cls(V, K.expand(eyes.shape[0], 3, 3).clone(), width, height)

    @classmethod
    def orbit(
        cls,
        n: int,
        radius: float = 0.6,
        target: Tensor | tuple = (0.0, 0.0, 0.0),
        elevation_deg: float = 0.0,
        azimuth_range_deg: tuple[float, float] = (-180.0, 180.0),
        width: int = 512,
        height: int = 512,
        fov_y_deg: float = 20.0,
        dtype=torch.float32,
        device=None,
    ) -> "Cameras":
        """n cameras on a circle around ``target``, all looking at it (demos, tests, videos)."""
        target = torch.as_tensor(target, dtype=dtype, device=device)
        eyes = orbit_eyes(n, radius, target, elevation_deg, azimuth_range_deg)
        return cls.look_at(eyes, target, width, height, fov_y_deg)
