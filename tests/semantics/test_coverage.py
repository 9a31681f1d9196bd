"""The exact mask route rendered in a window around the selected splats: the window must hold every
pixel they reach (checked against a whole-frame render), and the windowed render must equal it."""

import math

import pytest
import torch

from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.geometry.cameras import Cameras
from dynavatar.render.torch_renderer import TorchRenderer
from dynavatar.semantics import render_coverage, selection_windows


def scene(n: int, seed: int) -> WorldGaussians:
    """Anisotropic, rotated splats spread past the edges of a wide-angle view (off-axis Jacobians)."""
    g = torch.Generator().manual_seed(seed)
    z = 1.0 + torch.rand(n, generator=g)
    xy = 0.7 * (2 * torch.rand(n, 2, generator=g) - 1) * z[:, None]
    means = torch.cat([xy, z[:, None]], -1)[None]
    quats = torch.randn(1, n, 4, generator=g)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    scales = torch.exp(math.log(0.005) + math.log(30) * torch.rand(1, n, 3, generator=g))  # 5 mm .. 15 cm
    return WorldGaussians(means, quats, scales, 0.2 + 0.79 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g))


def cameras(n: int = 3, W: int = 96, H: int = 80) -> Cameras:
    """n views of the scene, each turned a little more about y and shifted; a 70-degree field of view."""
    f = 0.5 * W / math.tan(math.radians(35))
    views = []
    for i in range(n):
        a = math.radians(8.0 * i)
        v = torch.eye(4)
        v[0, 0], v[0, 2], v[2, 0], v[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        v[0, 3] = 0.05 * i
        views.append(v)
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]])
    return Cameras(torch.stack(views), K.expand(n, 3, 3), W, H)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_window_holds_every_pixel_the_selection_reaches(seed):
    g, cams, renderer = scene(400, seed), cameras(), TorchRenderer()
    g = WorldGaussians(g.means.expand(len(cams), -1, -1), g.quats.expand(len(cams), -1, -1),
                       g.scales.expand(len(cams), -1, -1), g.opacities, g.colors)
    small = g.scales[0].amax(-1) < 0.03
    selected = (g.means[0, :, 0] < -0.25) & (g.means[0, :, 1] > 0.0) & small  # a cluster on one side, ~30 splats
    full = render_coverage(g, cams, selected, renderer, crop=False)  # [C, H, W]
    win = selection_windows(g, cams, selected)
    for c, (x0, y0, x1, y1) in enumerate(win.tolist()):
        outside = torch.ones_like(full[c], dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert full[c][outside].max() == 0, f"camera {c}: coverage outside the window"
        assert full[c].sum() > 1 and (x1 - x0) * (y1 - y0) < 0.6 * cams.width * cams.height  # a real crop
    for per_camera in (True, False):  # own windows (CPU default) or one call in windows of the largest size
        cropped = render_coverage(g, cams, selected, renderer, per_camera=per_camera)
        assert (cropped - full).abs().max() < 2e-3  # the off-window Jacobian clamp: far below a grey level


def test_window_of_one_splat_is_its_reach_and_nothing_selected_renders_nothing():
    f, s, z = 50.0, 0.02, 1.5
    g = WorldGaussians(torch.tensor([[[0.0, 0.0, z], [0.0, 0.0, -1.0]]]), torch.tensor([[[1.0, 0, 0, 0]] * 2]),
                       torch.full((1, 2, 3), s), torch.tensor([0.9, 0.9]), torch.ones(2, 3))
    cams = Cameras(torch.eye(4), torch.tensor([[f, 0, 32.0], [0, f, 32.0], [0, 0, 1]]), 64, 64)
    x0, y0, x1, y1 = selection_windows(g, cams, torch.tensor([True, False]), pad=0)[0].tolist()
    half = 3.33 * math.sqrt((f * s / z) ** 2 + 0.3) + 1  # the renderers' cut-off, plus rounding
    assert x1 - x0 == pytest.approx(2 * half, abs=2) and y1 - y0 == pytest.approx(2 * half, abs=2)
    assert (x0 + x1) / 2 == pytest.approx(32, abs=1)
    for sel in (torch.tensor([False, False]), torch.tensor([False, True])):  # none, or only one behind the camera
        assert selection_windows(g, cams, sel).tolist() == [[0, 0, 0, 0]]
        assert render_coverage(g, cams, sel, TorchRenderer()).abs().max() == 0
