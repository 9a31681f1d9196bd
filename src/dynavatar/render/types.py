"""Renderer protocol and its output dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

from torch import Tensor

from ..gaussians.binding import WorldGaussians
from ..geometry.cameras import Cameras

__all__ = ["RasterSettings", "RenderOutput", "Renderer"]


@dataclass
class RenderOutput:
    """What every renderer returns, one image per camera.

    ``means2d`` is the projected splat centres in pixels; it is a non-leaf tensor on the graph
    of the image, so ``out.means2d.retain_grad()`` before ``backward()`` gives the screen-space
    gradients that densification accumulates. ``radii`` is the larger of the two screen-space
    half-extents in pixels (0 = culled / not visible).
    """

    rgb: Tensor  # [C, H, W, 3]
    alpha: Tensor  # [C, H, W, 1]
    means2d: Tensor  # [C, N, 2]
    radii: Tensor  # [C, N] int32
    depth: Optional[Tensor] = None  # [C, H, W, 1] expected depth, sum(w z) / alpha
    features: Optional[Tensor] = None  # [C, H, W, D] extra per-splat channels, no background


@dataclass
class RasterSettings:
    """The rasterisation settings both renderers share, with gsplat's defaults, so the CPU
    reference and the CUDA path are configured (and compared) with the same words."""

    near_plane: float = 0.01  # metres; closer splats are culled
    far_plane: float = 1e10
    eps2d: float = 0.3  # pixels^2 added to the 2D covariance (screen-space dilation)
    rasterize_mode: str = "classic"  # or "antialiased" (opacity compensation, as gsplat)
    tile_size: int = 16
    render_depth: bool = True  # expected depth sum(w z) / alpha


@runtime_checkable
class Renderer(Protocol):
    def render(
        self,
        gaussians: WorldGaussians,
        cameras: Cameras,
        background: Optional[Tensor] = None,  # [3] or [C, 3]
        features: Optional[Tensor] = None,  # [N, D] or [B, N, D]
    ) -> RenderOutput: ...
