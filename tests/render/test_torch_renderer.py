"""TorchRenderer against analytic values, a per-pixel brute-force loop, gsplat's own PyTorch
projection helpers, and finite differences."""

import math

import pytest
import torch

from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.geometry.cameras import Cameras
from dynavatar.render.sh import eval_sh
from dynavatar.render.torch_renderer import TorchRenderer, project_gaussians


def camera(W=32, H=32, f=40.0, dtype=torch.float64, cx=None, cy=None):
    K = torch.tensor([[f, 0, W / 2 if cx is None else cx], [0, f, H / 2 if cy is None else cy],
                      [0, 0, 1]], dtype=dtype)
    return Cameras(torch.eye(4, dtype=dtype), K, W, H)


def random_scene(n, seed=0, dtype=torch.float64, spread=0.25, depth=(1.0, 2.0), scale=(0.02, 0.08)):
    g = torch.Generator().manual_seed(seed)
    z = depth[0] + (depth[1] - depth[0]) * torch.rand(n, generator=g, dtype=dtype)
    xy = spread * (2 * torch.rand(n, 2, generator=g, dtype=dtype) - 1) * z[:, None]
    means = torch.cat([xy, z[:, None]], -1)[None]
    quats = torch.randn(1, n, 4, generator=g, dtype=dtype)
    scales = scale[0] + (scale[1] - scale[0]) * torch.rand(1, n, 3, generator=g, dtype=dtype)
    opac = 0.1 + 0.85 * torch.rand(n, generator=g, dtype=dtype)
    cols = torch.rand(n, 3, generator=g, dtype=dtype)
    return WorldGaussians(means, quats, scales, opac, cols)


def brute_force(g: WorldGaussians, cams: Cameras, bg, eps2d=0.3):
    """Per-pixel loop over all visible splats in depth order (gsplat's rules written plainly)."""
    p = project_gaussians(g.means, g.quats, g.scales, g.opacities[None], cams.viewmats, cams.Ks,
                          cams.width, cams.height, eps2d=eps2d)
    vis = (p.radii[0] > 0).all(-1)
    order = [i for i in torch.argsort(p.depths[0]).tolist() if vis[i]]
    img = torch.zeros(cams.height, cams.width, 3, dtype=g.means.dtype)
    alpha_img = torch.zeros(cams.height, cams.width, dtype=g.means.dtype)
    for i in range(cams.height):
        for j in range(cams.width):
            T, c = 1.0, torch.zeros(3, dtype=g.means.dtype)
            for k in order:
                dx = float(p.means2d[0, k, 0]) - (j + 0.5)
                dy = float(p.means2d[0, k, 1]) - (i + 0.5)
                a, b, cc = p.conics[0, k].tolist()
                sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                alpha = min(0.999, float(p.opacities[0, k]) * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if T * (1 - alpha) <= 1e-4:
                    break
                c = c + alpha * T * g.colors[k]
                T = T * (1 - alpha)
            img[i, j] = c + T * bg
            alpha_img[i, j] = 1 - T
    return img, alpha_img


def test_single_isotropic_gaussian_analytic():
    z, s, op, f = 2.0, 0.1, 0.8, 40.0
    cams = camera(f=f)
    g = WorldGaussians(torch.tensor([[[0.0, 0.0, z]]], dtype=torch.float64),
                       torch.tensor([[[1.0, 0, 0, 0]]], dtype=torch.float64),
                       torch.full((1, 1, 3), s, dtype=torch.float64),
                       torch.tensor([op], dtype=torch.float64),
                       torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64))
    bg = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    out = TorchRenderer().render(g, cams, background=bg)
    var = (f * s / z) ** 2 + 0.3  # EWA at the optical axis + eps2d dilation
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    r2 = (xs + 0.5 - 16) ** 2 + (ys + 0.5 - 16) ** 2
    a = op * torch.exp(-0.5 * r2.double() / var)
    a = torch.where(a >= 1 / 255, a, torch.zeros_like(a))
    assert torch.allclose(out.alpha[0, ..., 0], a, atol=1e-12)
    expected = a[..., None] * torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64) + (1 - a[..., None]) * bg
    assert torch.allclose(out.rgb[0], expected, atol=1e-12)
    covered = a > 0
    assert torch.allclose(out.depth[0, ..., 0][covered], torch.full_like(a[covered], z))
    assert out.radii[0, 0] == math.ceil(math.sqrt(2 * math.log(op * 255)) * math.sqrt(var))
    assert torch.allclose(out.means2d[0, 0], torch.tensor([16.0, 16.0], dtype=torch.float64))


def test_opaque_stack_stops_before_transmittance_limit():
    """Two 0.999-alpha splats on the same pixel: the second would take T to 1e-6 <= 1e-4, so it
    is not added and the pixel keeps T = 1e-3 of background."""
    cams = camera(W=16, H=16, cx=8.5, cy=8.5)  # both centres exactly on pixel (8, 8)
    g = WorldGaussians(torch.tensor([[[0.0, 0, 1.0], [0.0, 0, 1.5]]], dtype=torch.float64),
                       torch.tensor([[[1.0, 0, 0, 0]] * 2], dtype=torch.float64),
                       torch.full((1, 2, 3), 0.2, dtype=torch.float64),
                       torch.tensor([1.0, 1.0], dtype=torch.float64),
                       torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64))
    bg = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    out = TorchRenderer().render(g, cams, background=bg)
    assert torch.allclose(out.rgb[0, 8, 8], torch.tensor([0.999, 0.0, 0.001], dtype=torch.float64))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
@pytest.mark.parametrize("chunk", [3, 64])
def test_tiled_equals_brute_force(dtype, tol, chunk):
    g = random_scene(14, seed=1, dtype=dtype)
    g = WorldGaussians(g.means, g.quats, g.scales, g.opacities, g.colors)
    cams = camera(W=40, H=24, dtype=dtype)  # not a multiple of the tile size
    bg = torch.tensor([0.3, 0.2, 0.9], dtype=dtype)
    out = TorchRenderer(chunk=chunk).render(g, cams, background=bg)
    ref, ref_a = brute_force(g, cams, bg)
    assert (out.rgb[0] - ref).abs().max() <= tol
    assert (out.alpha[0, ..., 0] - ref_a).abs().max() <= tol


def test_dense_stack_hits_stop_rule_like_brute_force():
    g = random_scene(40, seed=2, spread=0.05, scale=(0.05, 0.1))
    g = WorldGaussians(g.means, g.quats, g.scales, torch.full_like(g.opacities, 0.97), g.colors)
    cams = camera(W=20, H=20)
    bg = torch.ones(3, dtype=torch.float64)
    out = TorchRenderer(chunk=5).render(g, cams, background=bg)
    ref, ref_a = brute_force(g, cams, bg)
    assert (ref_a > 1 - 1e-3).any()  # the stop rule really triggered somewhere
    assert (out.rgb[0] - ref).abs().max() <= 1e-10


def test_projection_matches_gsplat_torch_reference():
    gs = pytest.importorskip("gsplat.cuda._torch_impl")
    from dynavatar.geometry.rotations import quaternion_to_matrix
    g = random_scene(50, seed=3, spread=0.6)  # some splats beyond the FoV clamp
    cams = camera(W=64, H=48, dtype=torch.float64, cx=30.0, cy=20.0)
    R = quaternion_to_matrix(g.quats[0])
    covars = R @ torch.diag_embed(g.scales[0] ** 2) @ R.transpose(-1, -2)
    radii, m2, depths, conics, comp = gs._fully_fused_projection(
        g.means[0], covars, cams.viewmats, cams.Ks, 64, 48, calc_compensations=True)
    p = project_gaussians(g.means, g.quats, g.scales, g.opacities[None], cams.viewmats, cams.Ks, 64, 48,
                          antialiased=True)
    ok = (p.radii > 0).all(-1) & (radii > 0).all(-1)
    assert ok.sum() > 20
    assert torch.allclose(p.means2d[ok], m2[ok], atol=1e-9)
    assert torch.allclose(p.conics[ok], conics[ok], atol=1e-9)
    assert torch.allclose(p.depths[ok], depths[ok])
    assert torch.allclose(p.opacities[ok], (g.opacities[None] * comp)[ok], atol=1e-12)


def test_sh_matches_gsplat_torch_reference():
    gs = pytest.importorskip("gsplat.cuda._torch_impl")
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(100, 3, generator=g, dtype=torch.float64)
    coeffs = torch.randn(100, 16, 3, generator=g, dtype=torch.float64)
    for deg in range(4):
        assert torch.allclose(eval_sh(deg, dirs, coeffs), gs._spherical_harmonics(deg, dirs, coeffs))


def test_gradcheck_tiny_scene():
    g = random_scene(4, seed=4, scale=(0.08, 0.12))
    cams = camera(W=16, H=16, f=20.0)
    bg = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    r = TorchRenderer(chunk=2)
    inputs = [t.clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors)]

    def f(m, q, s, o, c):
        out = r.render(WorldGaussians(m, q, s, o, c), cams, background=bg)
        return out.rgb, out.alpha, out.depth

    # fast_mode checks random projections of the Jacobian (the full one takes ~1 min here)
    assert torch.autograd.gradcheck(f, inputs, atol=1e-6, fast_mode=True)


def test_gradients_finite_and_means2d_grad_available():
    g = random_scene(200, seed=5, dtype=torch.float32)
    inputs = [t.clone().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors)]
    out = TorchRenderer().render(WorldGaussians(*inputs), camera(W=48, H=48, dtype=torch.float32))
    out.means2d.retain_grad()
    (out.rgb.sum() + out.depth.sum()).backward()
    for t in inputs:
        assert torch.isfinite(t.grad).all()
    assert out.means2d.grad.shape == (1, 200, 2)
    vis = out.radii[0] > 0
    assert (out.means2d.grad[0, ~vis] == 0).all() and out.means2d.grad[0, vis].abs().sum() > 0


def test_features_render_like_colors():
    g = random_scene(30, seed=6)
    cams = camera(W=32, H=32)
    out = TorchRenderer().render(g, cams, features=torch.cat([g.colors, g.opacities[:, None]], -1))
    assert torch.allclose(out.features[..., :3], out.rgb, atol=1e-12)
    # a constant-one feature renders as alpha
    assert torch.allclose(out.features[..., 3:] * 0 + TorchRenderer().render(
        WorldGaussians(g.means, g.quats, g.scales, g.opacities, torch.ones_like(g.colors)), cams
    ).rgb[..., :1], out.alpha, atol=1e-12)


def test_batched_frames_match_separate_renders_and_sh():
    g1, g2 = random_scene(30, seed=7), random_scene(30, seed=8)
    cams = Cameras(torch.stack([torch.eye(4, dtype=torch.float64)] * 2),
                   camera().Ks.expand(2, 3, 3), 32, 32)
    sh = torch.zeros(30, 4, 3, dtype=torch.float64)
    sh[:, 0] = (g1.colors - 0.5) / 0.28209479177387814
    batched = WorldGaussians(torch.cat([g1.means, g2.means]), torch.cat([g1.quats, g2.quats]),
                             torch.cat([g1.scales, g2.scales]), g1.opacities, sh, sh_degree=1)
    bg = torch.tensor([[0.0, 0, 0], [1.0, 1, 1]], dtype=torch.float64)
    out = TorchRenderer().render(batched, cams, background=bg)
    for i, gi in enumerate([g1, g2]):
        single = TorchRenderer().render(WorldGaussians(gi.means, gi.quats, gi.scales, g1.opacities, g1.colors),
                                        cams[i], background=bg[i])
        assert torch.allclose(out.rgb[i], single.rgb[0], atol=1e-12)
