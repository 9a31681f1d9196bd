"""The exact mask route's renders, only where the selected splats can reach.

A region mask at (t, pose) is the blended coverage of the selected splats: ``features`` = 1 on them,
0 elsewhere, rendered with every splat (the others still occlude). Outside the selected splats'
screen footprint that coverage is exactly zero, so rendering the whole frame wastes most of the
work on a small region: a pair of lips covers ~3 % of a 512-pixel head crop. ``render_coverage``
renders a window around the footprint instead (the camera's principal point shifted, the image
smaller) and pastes it into an empty frame.

The footprint is bounded the renderers' way (``render.torch_renderer``, gsplat): a splat reaches at
most 3.33 standard deviations of its screen-space Gaussian, whose variance along x is at most
(fx / z)^2 (1 + (x / z)^2) s_max^2 + eps2d for a largest axis s_max (the Jacobian's row norm times the
largest 3-D variance). The crop changes one thing for splats whose *centre* lies far outside the
window: both renderers clamp the projection Jacobian at 15 % of the image width beyond its edge, so a
large splat centred there is shaped slightly differently. Measured on real avatars it moves the
masks by far less than a grey level (see the tests); ``crop=False`` renders the whole frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..gaussians.binding import WorldGaussians
from ..geometry.cameras import Cameras
from ..render.torch_renderer import MAX_EXTENT_SIGMAS, broadcast_gaussians

__all__ = ["selection_windows", "render_coverage"]

def selection_windows(g: WorldGaussians, cameras: Cameras, selected: Tensor, eps2d: float = 0.3,
                      pad: int = 2) -> Tensor:
    """int64 [C, 4] pixel windows (x0, y0, x1, y1), end exclusive and clipped to the image, outside
    which the ``selected`` splats (bool [N]) contribute nothing; (0, 0, 0, 0) where none is in view."""
    sel = selected.to(g.means.device).bool()
    C = len(cameras)
    if not sel.any():
        return torch.zeros(C, 4, dtype=torch.long)
    means = g.means[:, sel].expand(C, -1, -1)  # [C, M, 3]
    s_max = g.scales[:, sel].amax(-1).expand(C, -1)  # [C, M]
    R, tr = cameras.viewmats[:, None, :3, :3], cameras.viewmats[:, None, :3, 3]
    pc = (R @ means[..., None])[..., 0] + tr  # [C, M, 3] camera space
    z = pc[..., 2]
    front = z > 1e-6
    z = torch.where(front, z, torch.ones_like(z))
    fx, fy = cameras.Ks[:, 0, 0, None], cameras.Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = cameras.Ks[:, 0, 2, None], cameras.Ks[:, 1, 2, None]
    u, v = fx * pc[..., 0] / z + cx, fy * pc[..., 1] / z + cy  # [C, M] projected centres
    slope2 = 1.0 + (pc[..., 0] / z) ** 2 + (pc[..., 1] / z) ** 2  # bounds both Jacobian rows' norms
    rx = MAX_EXTENT_SIGMAS * torch.sqrt((fx / z) ** 2 * slope2 * s_max ** 2 + eps2d) + 1 + pad
    ry = MAX_EXTENT_SIGMAS * torch.sqrt((fy / z) ** 2 * slope2 * s_max ** 2 + eps2d) + 1 + pad
    big = torch.finfo(u.dtype).max
    lo_x = torch.where(front, u - rx, big).amin(1).floor()
    lo_y = torch.where(front, v - ry, big).amin(1).floor()
    hi_x = torch.where(front, u + rx, -big).amax(1).ceil()
    hi_y = torch.where(front, v + ry, -big).amax(1).ceil()
    W, H = cameras.width, cameras.height
    win = torch.stack([lo_x.clamp(0, W), lo_y.clamp(0, H), hi_x.clamp(0, W), hi_y.clamp(0, H)], -1)
    win = win.long()
    empty = (win[:, 2] <= win[:, 0]) | (win[:, 3] <= win[:, 1])
    return torch.where(empty[:, None], torch.zeros_like(win), win)


def render_coverage(g: WorldGaussians, cameras: Cameras, selected: Tensor, renderer, crop: bool = True,
                    per_camera: bool | None = None) -> Tensor:
    """The exact route's second half: the ``selected`` splats' (bool [N]) blended coverage, rendered
    with all splats (occlusion) -> [C, H, W] in [0, 1].  ``crop``: render only a window around the
    footprint (module docstring); ``per_camera``: one render call per camera, each in its own window,
    instead of one call for all in windows of the largest size (default: on a CPU)."""
    feats = selected.float()[:, None].to(g.means)
    if not crop:
        return renderer.render(g, cameras, features=feats).features[..., 0].clamp(0, 1)
    C = len(cameras)
    if per_camera is None:
        per_camera = g.means.device.type == "cpu"
    if per_camera and C > 1:
        # one camera at a time on a CPU, each in its own window: 16 views of a real avatar's lips
        # (48k splats) took 0.19 s a mask instead of 1.1 s in windows of the largest size; a GPU
        # renders the whole batch in one call
        b = broadcast_gaussians(g, C)
        return torch.cat([render_coverage(_one_frame(b, i), cameras[i], selected, renderer) for i in range(C)])
    win = selection_windows(g, cameras, selected).cpu()  # [C, 4]
    W, H = cameras.width, cameras.height
    out = torch.zeros(C, H, W, device=g.means.device)
    w, h = int((win[:, 2] - win[:, 0]).max()), int((win[:, 3] - win[:, 1]).max())
    if w == 0 or h == 0:
        return out
    x0 = win[:, 0].clamp(max=W - w)  # one size for the batch: windows grow to the largest, inside the image
    y0 = win[:, 1].clamp(max=H - h)
    Ks = cameras.Ks.clone()
    Ks[:, 0, 2] -= x0.to(Ks)
    Ks[:, 1, 2] -= y0.to(Ks)
    part = renderer.render(g, Cameras(cameras.viewmats, Ks, w, h), features=feats).features[..., 0]
    for i, (x, y) in enumerate(zip(x0.tolist(), y0.tolist())):
        out[i, y:y + h, x:x + w] = part[i].clamp(0, 1)
    return out


def _one_frame(g: WorldGaussians, i: int) -> WorldGaussians:
    """Frame i of Gaussians already broadcast to one frame per camera."""
    return WorldGaussians(g.means[i:i + 1], g.quats[i:i + 1], g.scales[i:i + 1], g.opacities[i:i + 1],
                          g.colors[i:i + 1], g.sh_degree)
