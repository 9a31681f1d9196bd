"""GsplatRenderer (CUDA) against TorchRenderer on the same scene: images and gradients."""

import os

import pytest
import torch

from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.render import Cameras, GsplatRenderer, TorchRenderer

pytestmark = pytest.mark.gpu


def _log(msg):
    print(msg)
    path = os.environ.get("DYNAVATAR_TEST_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(msg + "\n")


def scene(n=3000, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    means = 0.1 * d * (1 + 0.05 * torch.rand(n, 1, generator=g))
    quats = torch.randn(n, 4, generator=g)
    scales = 0.006 * torch.exp(0.3 * torch.randn(n, 3, generator=g))
    opac = 0.1 + 0.8 * torch.rand(n, generator=g)
    cols = torch.rand(n, 3, generator=g)
    return [t.to(device) for t in (means[None], quats[None], scales[None], opac, cols)]


def cams(C=1, res=128, device="cuda"):
    return Cameras.orbit(C, radius=0.5, azimuth_range_deg=(-40, 40), width=res, height=res,
                         fov_y_deg=30.0, device=device)


def cosine(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return (a @ b / (a.norm() * b.norm()).clamp_min(1e-30)).item()


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_gsplat_matches_torch_renderer(mode):
    inputs = scene()
    cam = cams()
    bg = torch.tensor([0.2, 0.3, 0.4], device="cuda")
    w = torch.rand(1, 128, 128, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    results = {}
    for name, r in (("gsplat", GsplatRenderer(rasterize_mode=mode)),
                    ("torch", TorchRenderer(rasterize_mode=mode))):
        ins = [t.clone().requires_grad_() for t in inputs]
        out = r.render(WorldGaussians(*ins), cam, background=bg)
        loss = (out.rgb * w).sum() + out.alpha.sum()
        loss.backward()
        results[name] = (out, [t.grad for t in ins])
    (og, gg), (ot, gt) = results["gsplat"], results["torch"]
    diff = (og.rgb - ot.rgb).abs().mean().item()
    adiff = (og.alpha - ot.alpha).abs().mean().item()
    cos = {k: cosine(a, b) for k, a, b in zip(("means", "quats", "scales", "opacities", "colors"), gg, gt)}
    _log(f"[{mode}] mean |rgb diff| {diff:.2e} max {(og.rgb - ot.rgb).abs().max().item():.2e} "
         f"mean |alpha diff| {adiff:.2e}; grad cosines {cos}")
    assert diff <= 1e-3 and adiff <= 1e-3
    assert torch.equal(og.radii.cpu(), ot.radii.cpu()) or (og.radii != ot.radii).float().mean() < 1e-3
    for k, c in cos.items():
        assert c >= 0.99, (k, c)


def test_features_depth_and_batched_frames_on_gpu():
    m, q, s, o, c = scene(2000)
    C = 3
    frames = WorldGaussians(torch.cat([m, m + 0.01, m - 0.01]), q.expand(C, -1, -1),
                            s.expand(C, -1, -1), o, c)
    cam = cams(C)
    feats = torch.cat([c, torch.ones_like(c[:, :1])], -1)
    og = GsplatRenderer().render(frames, cam, features=feats)
    ot = TorchRenderer().render(frames, cam, features=feats)
    assert og.rgb.shape == (C, 128, 128, 3) and og.features.shape == (C, 128, 128, 4)
    assert (og.features[..., :3] - og.rgb).abs().max() < 1e-5
    assert (og.features - ot.features).abs().mean() < 1e-3
    covered = (ot.alpha[..., 0] > 0.5) & (og.alpha[..., 0] > 0.5)
    dd = (og.depth[covered] - ot.depth[covered]).abs().mean().item()
    _log(f"batched frames: mean |features diff| {(og.features - ot.features).abs().mean().item():.2e}, "
         f"mean |depth diff| {dd:.2e}")
    assert dd < 1e-3


def test_means2d_grad_from_gsplat():
    m, q, s, o, c = scene(500)
    out = GsplatRenderer().render(WorldGaussians(m.requires_grad_(), q, s, o, c), cams())
    out.means2d.retain_grad()
    out.rgb.sum().backward()
    assert out.means2d.grad is not None and out.means2d.grad.reshape(1, 500, 2).abs().sum() > 0


@pytest.mark.gpu
def test_graphed_poser_matches_eager():
    from dynavatar.flame import FlameModel
    from dynavatar.gaussians.avatar import GaussianAvatar
    from dynavatar.render.animate import GraphedPoser

    model = FlameModel.load().cuda()
    av = GaussianAvatar.init_on_mesh(model.faces.shape[0], 2, jitter=0.2, device="cuda")
    poser = GraphedPoser(model, av, batch=3)
    eager = GraphedPoser(model, av, batch=3, use_graph=False)
    for seed in range(3):
        p = model.zero_params(3)
        g = torch.Generator(device="cpu").manual_seed(seed)
        p.expr = torch.randn(3, model.n_expr, generator=g).cuda()
        p.jaw = torch.rand(3, 3, generator=g).cuda() * 0.2
        p.rotation = torch.randn(3, 3, generator=g).cuda() * 0.3
        a, b = poser(p), eager(p)
        assert torch.allclose(a.means, b.means, atol=1e-6) and torch.allclose(a.quats, b.quats, atol=1e-6)
