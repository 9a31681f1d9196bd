"""The ``Cameras`` container that renderers take (maths in ``dynavatar.geometry.cameras``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.cameras import camera_centers, intrinsics_from_fov, look_at_viewmat, orbit_eyes

__all__ = ["Cameras"]


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
