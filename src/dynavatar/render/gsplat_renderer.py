"""GsplatRenderer: the CUDA path, a thin adapter over ``gsplat.rasterization()``.

gsplat is imported on first use (``import dynavatar`` never loads it). Features are appended to
the colour channels and split back after rasterisation, so they are blended with exactly the
same weights as RGB; depth comes from gsplat's "RGB+ED" mode (expected depth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..gaussians.binding import WorldGaussians
from ..geometry.cameras import Cameras
from .sh import sh_colors
from .types import RasterSettings, RenderOutput

__all__ = ["GsplatRenderer", "import_gsplat"]


def import_gsplat():
    try:
        import gsplat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "GsplatRenderer needs gsplat: `pip install gsplat` (a CUDA build of torch is required); "
            "on CPU use dynavatar.render.TorchRenderer instead"
        ) from exc
    return gsplat


@dataclass
class GsplatRenderer(RasterSettings):
    """gsplat's ``rasterization()`` behind the Renderer protocol (CUDA only)."""

    def render(
        self,
        gaussians: WorldGaussians,
        cameras: Cameras,
        background: Optional[Tensor] = None,  # [3] or [C, 3]
        features: Optional[Tensor] = None,  # [N, D] or [B, N, D]
    ) -> RenderOutput:
        """Render B frames (B == C, one camera each, or B == 1 seen by all C cameras).

        ``means2d`` is gsplat's own tensor (so ``retain_grad`` works): ``[C, N, 2]`` for B == 1,
        ``[C, 1, N, 2]`` for B == C; ``grad.reshape(C, N, 2)`` fits both.
        """
        gsplat = import_gsplat()
        if not gaussians.means.is_cuda or not torch.cuda.is_available():
            raise RuntimeError(
                "GsplatRenderer needs CUDA tensors and a CUDA device (gsplat has no CPU rasteriser); "
                "use dynavatar.render.TorchRenderer on CPU"
            )
        g = gaussians
        C, B, N = len(cameras), g.means.shape[0], g.means.shape[1]
        if B not in (1, C):
            raise ValueError(f"{B} frames of Gaussians for {C} cameras: need B == C or B == 1")
        dev, dt = g.means.device, g.means.dtype
        viewmats, Ks = cameras.viewmats.to(dev, dt), cameras.Ks.to(dev, dt)
        col_nd = 2 if g.sh_degree is None else 3
        colors = g.colors if g.colors.dim() > col_nd else g.colors[None]  # [1 or B, N, ...]
        opac = g.opacities if g.opacities.dim() == 2 else g.opacities[None]  # [1 or B, N]
        sh_degree = g.sh_degree
        n_feat = 0
        if features is not None:
            if sh_degree is not None:  # evaluate SH here so features can ride along as channels
                means_c = g.means.expand(C, N, 3)
                colors = sh_colors(sh_degree, means_c, cameras.centers.to(dev, dt),
                                   colors.expand(C, *colors.shape[1:]))
                sh_degree = None
            f = features if features.dim() == 3 else features[None]
            n_feat = f.shape[-1]
            lead = max(colors.shape[0], f.shape[0])  # 1, B or C
            colors = torch.cat([colors.expand(lead, N, -1), f.expand(lead, N, n_feat)], -1)
        n_rgb = 3
        bg = None
        if background is not None:
            bg = background.to(dev, dt).reshape(-1, 3).expand(C, 3)
            if n_feat:
                bg = torch.cat([bg, bg.new_zeros(C, n_feat)], -1)

        if B == 1:
            # one set of splats, C cameras; colours may be per camera ([C, N, D])
            col = colors[0] if colors.shape[0] == 1 else colors
            means, quats, scales, opacities = g.means[0], g.quats[0], g.scales[0], opac[0]
            vm, ks, bgs = viewmats, Ks, bg
        else:
            # C frames, one camera each: batch dims [C], 1 camera per batch
            means, quats, scales = g.means, g.quats, g.scales
            opacities = opac.expand(C, N)
            col = colors.expand(C, *colors.shape[1:])
            vm, ks = viewmats[:, None], Ks[:, None]
            bgs = bg[:, None] if bg is not None else None
        renders, alphas, meta = gsplat.rasterization(
            means, quats, scales, opacities, col, vm, ks, cameras.width, cameras.height,
            near_plane=self.near_plane, far_plane=self.far_plane, eps2d=self.eps2d,
            sh_degree=sh_degree, packed=False, tile_size=self.tile_size, backgrounds=bgs,
            render_mode="RGB+ED" if self.render_depth else "RGB",
            rasterize_mode=self.rasterize_mode,
        )
        H, W = cameras.height, cameras.width
        renders = renders.reshape(C, H, W, -1)
        alphas = alphas.reshape(C, H, W, 1)
        radii = meta["radii"]
        radii = (radii.amax(-1) if radii.dim() >= 3 and radii.shape[-1] == 2 else radii).reshape(C, N)
        return RenderOutput(
            rgb=renders[..., :n_rgb],
            alpha=alphas,
            means2d=meta["means2d"],
            radii=radii,
            depth=renders[..., -1:] if self.render_depth else None,
            features=renders[..., n_rgb:n_rgb + n_feat] if n_feat else None,
        )
