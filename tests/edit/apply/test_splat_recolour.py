"""The splat-space palette edit against the pixel-space one, and the colour-fair temporal metric.

Scenes are planes of opaque splats in front of a pinhole camera, filling the whole image, so every
pixel is a known splat colour: the pixel editor's region statistics and the splats' are then
computable by hand (single colour) or differ only by the few pixels where two colours mix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynavatar.edit import EditPlan
from dynavatar.edit.apply.splat_recolour import (recolour_splats, splat_palette_stats, splat_region_weight,
                                                 splat_visibility)
from dynavatar.edit.colour_space import oklab_to_rgb, rgb_to_oklab
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.edit.editors.palette_recolour import recolour_oklab, region_stats
from dynavatar.edit.metrics import region_colour_consistency, region_colour_spread
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.geometry.labels import NUM_LABELS, label_index
from dynavatar.geometry.cameras import Cameras
from dynavatar.render.sh import eval_sh
from dynavatar.render.torch_renderer import TorchRenderer



@pytest.fixture(autouse=True)
def one_thread():
    """These tiny scenes run fastest on one thread (conftest restores the count afterwards)."""
    torch.set_num_threads(1)


RES = 40
RED = EditPlan(prompt="red hair", kind="colour", regions=["hair"], instruction="make the hair red",
               colour=(0.8, 0.1, 0.1), colour_name="red")
BROWN, DARK = (0.45, 0.30, 0.20), (0.30, 0.20, 0.13)
HAIR, SKIN = label_index("hair"), label_index("skin")


def _camera() -> Cameras:
    K = torch.tensor([[RES, 0.0, RES / 2], [0.0, RES, RES / 2], [0.0, 0.0, 1.0]])
    return Cameras(torch.eye(4), K, RES, RES)


def _scene(colour_of_row, hidden: list[tuple[tuple[float, float, float], float]] = ()):
    """A 26x26 grid of opaque hair splats at z = 2 covering the image (row r coloured
    ``colour_of_row(r)``), plus ``hidden`` splats (colour, hair probability; the rest skin) behind
    the camera, which no pixel shows.  -> (GaussianAvatar, WorldGaussians, labels [N, K])"""
    n = 26
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).float()
    xy = (ij - (n - 1) / 2) * 0.1  # 0.1 world = 2 px apart at z = 2; covers +-1.25 > the +-1.0 in view
    means = torch.cat([xy.flip(-1), torch.full((n * n, 1), 2.0)], 1)
    cols = torch.tensor([colour_of_row(int(r)) for r in ij[:, 0]])
    p_hair = torch.ones(n * n)
    if hidden:
        means = torch.cat([means, torch.tensor([[0.0, 0.0, -1.0]]).repeat(len(hidden), 1)])
        cols = torch.cat([cols, torch.tensor([c for c, _ in hidden])])
        p_hair = torch.cat([p_hair, torch.tensor([p for _, p in hidden])])
    N = len(means)
    labels = torch.zeros(N, NUM_LABELS)
    labels[:, HAIR], labels[:, SKIN] = p_hair, 1 - p_hair
    sh = rgb_to_sh(cols)[:, None]  # [N, 1, 3]
    avatar = GaussianAvatar(torch.zeros(N, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1),
                            torch.full((N, 3), math.log(0.1)), torch.full((N,), math.log(4.0)), sh,  # opacity 0.8
                            torch.zeros(N, dtype=torch.long), labels)
    world = WorldGaussians(means[None], avatar.quats_local[None], torch.full((1, N, 3), 0.1),
                           avatar.opacities, sh, sh_degree=0)
    return avatar, world, labels


def _render(world: WorldGaussians, sh: torch.Tensor | None = None) -> torch.Tensor:
    if sh is not None:
        world = WorldGaussians(world.means, world.quats, world.scales, world.opacities, sh, 0)
    return TorchRenderer().render(world, _camera(), background=torch.ones(3)).rgb  # [1, H, W, 3]


def _both_ways(colour_of_row, plan: EditPlan, hidden=()):
    """Pixel-space edit of the render and the render of the splat-space edit."""
    avatar, world, labels = _scene(colour_of_row, hidden)
    img = _render(world)
    mask = torch.ones(1, RES, RES)  # the hair fills the image
    pixel = PaletteEditor().edit(img, mask, plan)
    sel = labels[:, HAIR] > 0.5
    vis = splat_visibility(world, _camera(), mask, TorchRenderer())
    new = recolour_splats(avatar, plan, splat_region_weight(labels, plan, sel), vis)
    return avatar, new, img, pixel, _render(world, new.sh), vis


@pytest.mark.parametrize("strength,colour", [(0.6, (0.8, 0.1, 0.1)), (1.0, (0.1, 0.2, 0.9))])
def test_single_colour_region_splat_edit_equals_pixel_edit_and_the_closed_form(strength, colour):
    """One colour, std 0: L and ab move straight to the target, so both edits must give the OKLab
    lerp ``lab + strength (target - lab)``."""
    plan = EditPlan(**{**RED.to_dict(), "strength": strength, "colour": colour})
    _, _, img, pixel, splat, _ = _both_ways(lambda r: BROWN, plan)
    assert (img - torch.tensor(BROWN)).abs().max() < 1e-3, "the scene must show the splat colour everywhere"
    err = (splat - pixel).abs().max().item()
    print(f"strength {strength} colour {colour}: |splat-space - pixel-space| max {err * 255:.3f}/255")
    assert err < 1e-3
    lab, tgt = rgb_to_oklab(torch.tensor(BROWN)), rgb_to_oklab(torch.tensor(colour))
    want = oklab_to_rgb(lab + strength * (tgt - lab))
    assert (pixel - want).abs().max() < 1e-3 and (splat - want).abs().max() < 1e-3


@pytest.mark.parametrize("material", [None, "glossy"])
def test_two_colour_region_statistics_and_edit_agree_with_the_pixel_editor(material):
    """Rows 0-12 brown, 13-25 dark brown: the statistics are a real mixture (std > 0). The splats'
    visibility-weighted statistics equal the pixel ones up to the one row of pixels where the two
    colours mix (OKLab of a mix is not the mix of OKLabs)."""
    plan = EditPlan(**{**RED.to_dict(), "material": material})
    _, new, img, pixel, splat, vis = _both_ways(lambda r: BROWN if r < 13 else DARK, plan)
    lab_img = rgb_to_oklab(img)
    mean_p, std_p = region_stats(lab_img, torch.ones(1, RES, RES))
    labs = rgb_to_oklab(torch.tensor([BROWN if r < 13 else DARK for r in range(26) for _ in range(26)]))
    mean_s, std_s = splat_palette_stats(labs, vis[:676])
    print(f"mean pixel {mean_p.tolist()} splat {mean_s.tolist()}; std pixel {std_p.tolist()} splat {std_s.tolist()}")
    assert std_p[0, 0] > 0.05  # a genuine two-colour region
    assert (mean_p - mean_s).abs().max() < 2e-3 and (std_p - std_s).abs().max() < 0.1 * std_p.max()
    # Away from the colour boundary (row 20 of 40 px) the two edits give the same colours.
    rows = torch.cat([torch.arange(0, 16), torch.arange(25, RES)])
    err = (splat[0, rows] - pixel[0, rows]).abs().max().item()
    print(f"two colours, material {material}: |splat-space - pixel-space| max {err * 255:.2f}/255 "
          "away from the boundary")
    assert err < 2.0 / 255


def test_outside_splats_bit_identical_boundary_blends_and_unseen_hair_recoloured():
    """100 unseen grey hair splats (as inside or behind a real head: never optimised, any colour)
    take the pixel editor's colour for grey, yet do not move the statistics (visibility-weighted);
    a p=0.6 splat blends 60 %; splats below the selection threshold keep every tensor bit-identical."""
    grey = (0.35, 0.35, 0.35)
    hidden = [(grey, 1.0)] * 100 + [(grey, 0.6), (grey, 0.4), (grey, 0.0)]  # hair, boundary, mostly skin, skin
    avatar, new, img, _, _, vis = _both_ways(lambda r: BROWN, RED, hidden)
    h = 676 + torch.arange(len(hidden))
    assert (vis[h] == 0).all(), "the hidden splats must be unseen"
    for k in avatar.PARAM_NAMES:  # below the 0.5 selection threshold: bit-identical, every tensor
        assert torch.equal(getattr(new, k)[h[-2:]], getattr(avatar, k)[h[-2:]]), k
    assert torch.equal(new.labels, avatar.labels) and torch.equal(new.opacity_logits, avatar.opacity_logits)
    # The reference: the pixel editor's map (its statistics of the render) applied to a grey pixel.
    stats = region_stats(rgb_to_oklab(img), torch.ones(1, RES, RES))
    g = rgb_to_oklab(torch.tensor(grey)).view(1, 1, 1, 3)
    ref = oklab_to_rgb(recolour_oklab(g, None, rgb_to_oklab(torch.tensor(RED.colour)), stats=stats)).view(3)
    assert 0.0 < ref.min() and ref.max() < 1.0, "keep the reference inside the gamut (no clamp hides errors)"
    got = sh_to_rgb(new.sh[h[[0, -3]], 0])  # [2, 3]: an unseen hair splat, the p=0.6 one
    print(f"unseen hair splat: grey -> {got[0].tolist()} (pixel-editor map {ref.tolist()})")
    assert (got[0] - ref).abs().max() < 2e-3, "an unseen hair splat takes the pixel editor's colour"
    assert (got[1] - (torch.tensor(grey) + 0.6 * (ref - torch.tensor(grey)))).abs().max() < 2e-3, "p=0.6 blends 60%"


def test_view_dependent_bands_follow_the_colour_map_to_first_order():
    """Degree-1 SH: the recoloured splat seen from a direction has (to first order in the bands)
    the mapped colour of what the original showed from there. (A muted target keeps every colour
    inside the sRGB gamut: at the gamut clamp the map has no derivative.)"""
    plan = EditPlan(**{**RED.to_dict(), "colour": (0.65, 0.35, 0.3)})
    gen = torch.Generator().manual_seed(0)
    N = 64
    labels = torch.zeros(N, NUM_LABELS)
    labels[:, HAIR] = 1.0
    dc = rgb_to_sh(torch.tensor(BROWN) + 0.1 * torch.rand(N, 3, generator=gen))
    bands = 0.03 * torch.randn(N, 3, 3, generator=gen)
    bands[:8] = 0.0
    sh = torch.cat([dc[:, None], bands], 1)  # [N, 4, 3]
    z = torch.zeros(N, 3)
    av1 = GaussianAvatar(z, torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1), z, torch.zeros(N), sh,
                         torch.zeros(N, dtype=torch.long), labels, sh_degree=1)
    vis = torch.ones(N)
    vis[N // 2:] = 0.0  # the statistics come from the first half only ...
    sel = torch.ones(N, dtype=torch.bool)
    new1 = recolour_splats(av1, plan, splat_region_weight(labels, plan, sel), vis)
    assert torch.equal(new1.sh[:8, 1:], torch.zeros(8, 3, 3)), "no view dependence in, none out"
    d = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, 1.0]), dim=0).expand(N, 3)
    seen = (eval_sh(1, d, sh) + 0.5)[N // 2:]  # what the original shows from d  [N/2, 3]
    # ... so a degree-0 avatar whose second half has those colours maps them with the same statistics.
    av0 = av1.replace(sh=torch.cat([dc[: N // 2], rgb_to_sh(seen)])[:, None], sh_degree=0)
    want = sh_to_rgb(recolour_splats(av0, plan, splat_region_weight(labels, plan, sel), vis).sh[N // 2:, 0])
    assert 0.01 < want.min() and want.max() < 0.99
    got = (eval_sh(1, d, new1.sh) + 0.5)[N // 2:]
    err, band = (got - want).abs().max().item(), (seen - sh_to_rgb(dc[N // 2:])).abs().max().item()
    print(f"view-dependent colour |linearised - exact| {err:.2e} for bands up to {band:.3f}")
    assert err < band ** 2  # second order in the band amplitude (a first-order error would be ~band)


# ----------------------------------------------------------------------------- the temporal metric
def _frames(chroma: float, hue_deg: float, rel: list[float], hue_jitter: list[float] | None = None
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A textured disc (fixed lightness and chroma texture) of one OKLab hue on white, its chroma scaled by
    ``1 + rel[f]`` in frame f; its outer 2-px ring mixes with the background by a different amount
    each frame (matte edges), about a quarter of the region's pixels."""
    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 24, xx - 24)
    mask, ring = r < 14, (r >= 12) & (r < 14)
    rng = np.random.default_rng(0)
    tex, ctex = rng.uniform(-0.06, 0.06, mask.sum()), rng.uniform(0.7, 1.3, mask.sum())  # texture [P]
    imgs, masks = [], []
    for f, q in enumerate(rel):
        h = math.radians(hue_deg + (hue_jitter[f] if hue_jitter else 0.0))
        c = chroma * (1 + q) * ctex  # [P]
        lab = np.stack([0.55 + tex, c * math.cos(h), c * math.sin(h)], -1)
        img = np.ones((48, 48, 3))
        img[mask] = oklab_to_rgb(torch.from_numpy(lab)).numpy()
        mix = 0.2 + 0.6 * (f % 2)
        img[ring] = mix * img[ring] + (1 - mix) * 1.0
        imgs.append((img.clip(0, 1) * 255).round().astype(np.uint8))
        masks.append(mask)
    return imgs, masks


def test_temporal_metric_is_fair_across_colours_and_ignores_edge_pixels():
    rel = [0.0, 0.1, -0.1, 0.05, -0.05, 0.0]  # the same relative chroma flicker for both colours
    brown = _frames(0.06, 60.0, rel)
    red = _frames(0.18, 28.0, rel)
    cb, cr = region_colour_consistency(*brown), region_colour_consistency(*red)
    sb, sr = region_colour_spread(*brown), region_colour_spread(*red)
    print(f"brown: cv {cb['chroma_cv']:.4f} spread {sb:.2f}; red: cv {cr['chroma_cv']:.4f} spread {sr:.2f}")
    want = float(np.std(rel) / np.mean(1 + np.array(rel)))
    assert abs(cb["chroma_cv"] - want) < 0.2 * want and abs(cr["chroma_cv"] - want) < 0.1 * want
    assert sr > 2.5 * sb, "the absolute spread charges the red for being saturated"
    # The swinging edge ring: eroded away by default, counted without erosion.
    steady = region_colour_consistency(*_frames(0.18, 28.0, [0.0] * 6))
    swing0 = region_colour_consistency(*_frames(0.18, 28.0, [0.0] * 6), erode=0)
    print(f"steady colour, swinging edge: cv {steady['chroma_cv']:.4f} eroded, {swing0['chroma_cv']:.4f} not")
    assert steady["chroma_cv"] < 0.005 and swing0["chroma_cv"] > 3 * steady["chroma_cv"] + 0.005
    # Hue flicker shows in the circular std, to within the uint8 rounding.
    jit = [0.0, 4.0, -4.0, 2.0, -2.0, 0.0]
    hue = region_colour_consistency(*_frames(0.18, 28.0, [0.0] * 6, jit))["hue_std_deg"]
    assert abs(hue - np.std(jit)) < 0.5, hue
    grey = region_colour_consistency(*_frames(0.005, 28.0, rel))
    assert math.isnan(grey["hue_std_deg"]), "a grey region has no hue to be consistent in"
