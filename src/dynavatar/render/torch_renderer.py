"""TorchRenderer: gsplat's classic 3DGS image formation in pure, differentiable PyTorch.

Why it exists: CI and laptops have no GPU, and tests need an independent reference for the CUDA
path. It reproduces gsplat 1.5's rules (``ProjectionEWA3DGSFused.cu``, ``IntersectTile.cu``,
``RasterizeToPixels3DGSFwd.cu``) so the two agree to float rounding:

projection (``project_gaussians``)
  * camera-space mean ``t = R mu + tr``; culled unless ``near <= t_z <= far``;
  * EWA: ``Sigma2d = J W Sigma W^T J^T`` with the pinhole Jacobian evaluated at ``x/z, y/z``
    clamped to the FoV limits widened by 0.3 tan(fov/2) on each side (gsplat's guard against
    huge Jacobians for splats far off-screen); then ``Sigma2d += eps2d I`` (0.3 px dilation);
  * "antialiased" mode scales opacity by ``sqrt(det(Sigma2d) / det(Sigma2d + eps2d I))``;
  * culled when ``det <= 0`` or opacity < 1/255; half-extents per axis
    ``ceil(extend * sqrt(Sigma2d_ii))`` with ``extend = min(3.33, sqrt(2 ln(255 opacity)))``;
    culled when entirely off the image.
tiles (``intersect_tiles``)
  * each visible splat is listed in the 16x16 tiles its box touches, sorted by (tile, depth).
compositing (``composite_tiles``)
  * pixel centres at (i + 0.5, j + 0.5); ``sigma = 0.5 d^T conic d`` with ``d = mean - pixel``;
    ``alpha = min(0.999, o exp(-sigma))``, skipped when ``sigma < 0`` or ``alpha < 1/255``;
  * front to back; the splat that would bring transmittance to ``<= 1e-4`` is NOT added and
    the pixel stops there; ``C = sum w_i c_i + T_final * bg`` with ``w_i = alpha_i T_i``.

Not naive: splats are bucketed per tile, and all tiles are composited together, a chunk of
``chunk`` splats at a time (``[tiles, 256 px, chunk]`` tensors), carrying transmittance between
chunks and dropping tiles whose pixels are all finished. Autograd does the backward pass; the
decisions (culling, tile lists, the stop rule) are made without gradient, as in gsplat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..gaussians.binding import WorldGaussians
from ..geometry.rotations import quaternion_to_matrix
from ..geometry.cameras import Cameras
from .sh import sh_colors
from .types import RasterSettings, RenderOutput

__all__ = [
    "TorchRenderer",
    "Projected",
    "project_gaussians",
    "intersect_tiles",
    "TileLists",
    "composite_tiles",
    "broadcast_gaussians",
    "ALPHA_THRESHOLD",
    "T_THRESHOLD",
]

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTENT_SIGMAS = 3.33  # a splat's screen half-extent is at most this many standard deviations (gsplat's)
T_THRESHOLD = 1e-4
MAX_ALPHA = 0.999


@dataclass
class Projected:
    """Screen-space splats for C cameras (gsplat's projection outputs)."""

    means2d: Tensor  # [C, N, 2] pixels
    conics: Tensor  # [C, N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor  # [C, N] camera-space z
    opacities: Tensor  # [C, N] (times the compensation in antialiased mode)
    radii: Tensor  # [C, N, 2] int32 half-extents in pixels, 0 = culled


def project_gaussians(
    means: Tensor,  # [C, N, 3]
    quats: Tensor,  # [C, N, 4]
    scales: Tensor,  # [C, N, 3]
    opacities: Tensor,  # [C, N]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Projected:
    """EWA projection of 3D Gaussians (rules in the module docstring)."""
    Rg = quaternion_to_matrix(quats)  # [C, N, 3, 3]
    M = Rg * scales[..., None, :]  # R S
    cov_w = M @ M.transpose(-1, -2)  # [C, N, 3, 3]
    Rv = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    tv = viewmats[:, None, :3, 3]  # [C, 1, 3]
    pc = (Rv @ means[..., None])[..., 0] + tv  # [C, N, 3]
    cov_c = Rv @ cov_w @ Rv.transpose(-1, -2)  # [C, N, 3, 3]

    x, y, z = pc.unbind(-1)  # [C, N]
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled splats finite
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1
    ).reshape(*z.shape, 2, 3)  # [C, N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)  # [C, N, 2]

    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det_s = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], -1)  # [C, N, 3]
    if antialiased:
        comp = (det_orig / det_s).clamp_min(0.0).sqrt()
        opacities = opacities * comp

    with torch.no_grad():
        op = opacities.detach()
        vis = in_depth & ok_det & (op >= ALPHA_THRESHOLD)
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTENT_SIGMAS)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp_min(0).sqrt())
        vis &= ~((rx <= radius_clip) & (ry <= radius_clip))
        mx, my = means2d.detach().unbind(-1)
        vis &= ~((mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height))
        radii = torch.stack([rx, ry], -1).to(torch.int32) * vis[..., None]
    return Projected(means2d, conics, pc[..., 2], opacities, radii)


@dataclass
class TileLists:
    """Per-tile splat lists, front to back, padded with -1."""

    ids: Tensor  # [n_tiles_total, L] long: flat index c * N + n, -1 = empty
    counts: Tensor  # [n_tiles_total] long
    tiles_x: int
    tiles_y: int
    n_isects: int


@torch.no_grad()
def intersect_tiles(
    means2d: Tensor,  # [C, N, 2]
    radii: Tensor,  # [C, N, 2]
    depths: Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int = 16,
) -> TileLists:
    """Bucket splats into screen tiles, as gsplat's ``isect_tiles`` (same box rule)."""
    C, N = depths.shape
    dev = means2d.device
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    m = means2d.detach().reshape(-1, 2).double() / tile_size
    r = radii.reshape(-1, 2).double() / tile_size
    vis = (radii[..., 0] > 0) & (radii[..., 1] > 0)
    vis = vis.reshape(-1)
    x0 = torch.floor(m[:, 0] - r[:, 0]).clamp(0, tw).long()
    x1 = torch.ceil(m[:, 0] + r[:, 0]).clamp(0, tw).long()
    y0 = torch.floor(m[:, 1] - r[:, 1]).clamp(0, th).long()
    y1 = torch.ceil(m[:, 1] + r[:, 1]).clamp(0, th).long()
    nx, ny = (x1 - x0), (y1 - y0)
    cnt = torch.where(vis, nx * ny, torch.zeros_like(nx))  # [C*N]
    total = int(cnt.sum())
    n_tiles = C * tw * th
    if total == 0:
        return TileLists(torch.full((n_tiles, 0), -1, dtype=torch.long, device=dev),
                         torch.zeros(n_tiles, dtype=torch.long, device=dev), tw, th, 0)
    gid = torch.repeat_interleave(torch.arange(C * N, device=dev), cnt)  # [I]
    start = torch.cumsum(cnt, 0) - cnt
    off = torch.arange(total, device=dev) - start[gid]
    w = nx[gid]
    tx = x0[gid] + off % w
    ty = y0[gid] + off // w
    cam = gid // N
    tile = cam * (tw * th) + ty * tw + tx  # [I]
    # sort by (tile, depth): stable sort by depth, then stable sort by tile
    d = depths.detach().reshape(-1)[gid]
    o1 = torch.sort(d, stable=True).indices
    o2 = torch.sort(tile[o1], stable=True).indices
    order = o1[o2]
    tile_s, gid_s = tile[order], gid[order]
    counts = torch.bincount(tile_s, minlength=n_tiles)
    tstart = torch.cumsum(counts, 0) - counts
    pos = torch.arange(total, device=dev) - tstart[tile_s]
    L = int(counts.max())
    ids = torch.full((n_tiles, L), -1, dtype=torch.long, device=dev)
    ids[tile_s, pos] = gid_s
    return TileLists(ids, counts, tw, th, total)


def composite_tiles(
    proj: Projected,
    channels: Tensor,  # [C, N, D] per-splat values to blend (colours, features, depth)
    lists: TileLists,
    width: int,
    height: int,
    tile_size: int = 16,
    chunk: int = 64,
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing -> (blended [C, H, W, D], transmittance [C, H, W]).

    No background: the caller adds ``T * bg`` to the channels that want it.
    """
    C, N, D = channels.shape
    dev, dt = channels.device, channels.dtype
    tw, th, P = lists.tiles_x, lists.tiles_y, tile_size * tile_size
    n_tiles = C * tw * th
    m2 = proj.means2d.reshape(C * N, 2)
    con = proj.conics.reshape(C * N, 3)
    opa = proj.opacities.reshape(C * N)
    ch = channels.reshape(C * N, D)

    # pixel centres of every tile  [n_tiles, P, 2]
    t = torch.arange(n_tiles, device=dev) % (tw * th)
    ly, lx = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev),
                            indexing="ij")
    px = (t % tw)[:, None] * tile_size + lx.reshape(1, P)  # [n_tiles, P] column
    py = (t // tw)[:, None] * tile_size + ly.reshape(1, P)  # row
    inside = (px < width) & (py < height)
    pix = torch.stack([px, py], -1).to(dt) + 0.5  # [n_tiles, P, 2]

    acc = torch.zeros(n_tiles, P, D, dtype=dt, device=dev)
    T = torch.ones(n_tiles, P, dtype=dt, device=dev)
    done = ~inside  # pixels outside the image never composite
    L = lists.ids.shape[1]
    for s in range(0, L, chunk):
        act = torch.nonzero((lists.counts > s) & ~done.all(-1)).squeeze(-1)  # [A]
        if act.numel() == 0:
            break
        ids = lists.ids[act, s:s + chunk]  # [A, K]
        valid = ids >= 0
        g = ids.clamp_min(0)
        mu = m2[g]  # [A, K, 2]
        cn = con[g]  # [A, K, 3]
        dx = mu[:, None, :, 0] - pix[act][:, :, None, 0]  # [A, P, K]
        dy = mu[:, None, :, 1] - pix[act][:, :, None, 1]
        sigma = 0.5 * (cn[:, None, :, 0] * dx * dx + cn[:, None, :, 2] * dy * dy) \
            + cn[:, None, :, 1] * dx * dy
        alpha = torch.clamp_max(opa[g][:, None, :] * torch.exp(-sigma), MAX_ALPHA)  # [A, P, K]
        T_in = T[act]  # [A, P]
        with torch.no_grad():
            keep = valid[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done[act][:, :, None]
            a_k = torch.where(keep, alpha, torch.zeros_like(alpha))
            T_after = T_in[:, :, None] * torch.cumprod(1.0 - a_k, -1)
            fail = keep & (T_after <= T_THRESHOLD)
            stopped = torch.cumsum(fail.to(torch.int32), -1) > 0
            use = keep & ~stopped  # [A, P, K]
        a_u = torch.where(use, alpha, torch.zeros_like(alpha))
        trans = torch.cumprod(1.0 - a_u, -1)  # T after each splat, relative to T_in
        trans_before = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], -1)
        w = a_u * trans_before * T_in[:, :, None]  # [A, P, K]
        acc = acc.index_add(0, act, torch.einsum("apk,akd->apd", w, ch[g]))
        T = T.index_copy(0, act, T_in * trans[..., -1])
        done = done.index_copy(0, act, done[act] | fail.any(-1))

    # tiles -> images
    def untile(x: Tensor) -> Tensor:  # [n_tiles, P, ...] -> [C, H, W, ...]
        x = x.reshape(C, th, tw, tile_size, tile_size, *x.shape[2:])
        x = x.transpose(2, 3).reshape(C, th * tile_size, tw * tile_size, *x.shape[5:])
        return x[:, :height, :width]

    return untile(acc), untile(T)


def broadcast_gaussians(g: WorldGaussians, C: int) -> WorldGaussians:
    """Match B frames to C cameras: B == C (frame i seen by camera i) or B == 1 (shared)."""
    B = g.means.shape[0]
    if B not in (1, C):
        raise ValueError(f"{B} frames of Gaussians for {C} cameras: need B == C or B == 1")
    N = g.means.shape[1]
    col_nd = 2 if g.sh_degree is None else 3
    colors = g.colors if g.colors.dim() > col_nd else g.colors[None]
    opac = g.opacities if g.opacities.dim() == 2 else g.opacities[None]
    return WorldGaussians(
        means=g.means.expand(C, N, 3),
        quats=g.quats.expand(C, N, 4),
        scales=g.scales.expand(C, N, 3),
        opacities=opac.expand(C, N),
        colors=colors.expand(C, *colors.shape[1:]),
        sh_degree=g.sh_degree,
    )


@dataclass
class TorchRenderer(RasterSettings):
    """Pure-PyTorch renderer (CPU or GPU), differentiable, matching gsplat's classic mode."""

    chunk: int = 64  # splats per tile composited per vectorised step

    def render(
        self,
        gaussians: WorldGaussians,
        cameras: Cameras,
        background: Optional[Tensor] = None,  # [3] or [C, 3]
        features: Optional[Tensor] = None,  # [N, D] or [B, N, D]
    ) -> RenderOutput:
        C, W, H = len(cameras), cameras.width, cameras.height
        g = broadcast_gaussians(gaussians, C)
        dt = g.means.dtype
        viewmats, Ks = cameras.viewmats.to(g.means), cameras.Ks.to(g.means)
        proj = project_gaussians(
            g.means, g.quats, g.scales, g.opacities, viewmats, Ks, W, H,
            self.near_plane, self.far_plane, self.eps2d, 0.0, self.rasterize_mode == "antialiased",
        )
        if g.sh_degree is None:
            rgb = g.colors
        else:
            rgb = sh_colors(g.sh_degree, g.means, cameras.centers.to(g.means), g.colors)
        parts = [rgb]
        n_feat = 0
        if features is not None:
            f = features if features.dim() == 3 else features[None]
            f = f.expand(C, *f.shape[1:]).to(dt)
            parts.append(f)
            n_feat = f.shape[-1]
        if self.render_depth:
            parts.append(proj.depths[..., None])
        ch = torch.cat(parts, -1)  # [C, N, D]
        lists = intersect_tiles(proj.means2d, proj.radii, proj.depths, W, H, self.tile_size)
        img, T = composite_tiles(proj, ch, lists, W, H, self.tile_size, self.chunk)
        alpha = (1.0 - T)[..., None]  # [C, H, W, 1]
        n_rgb = rgb.shape[-1]
        out_rgb = img[..., :n_rgb]
        if background is not None:
            bg = background.to(out_rgb).reshape(-1, n_rgb).expand(C, n_rgb)
            out_rgb = out_rgb + T[..., None] * bg[:, None, None, :]
        feats = img[..., n_rgb:n_rgb + n_feat] if features is not None else None
        depth = img[..., -1:] / alpha.clamp_min(1e-10) if self.render_depth else None
        return RenderOutput(
            rgb=out_rgb, alpha=alpha, means2d=proj.means2d, radii=proj.radii.amax(-1),
            depth=depth, features=feats,
        )
