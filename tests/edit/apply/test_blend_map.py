"""The colourist's recolour as one affine map on the splats: it commutes with blending.

Scenes are layers of overlapping, half-transparent splats in front of a pinhole camera, some with
colours below 0 (the renderer clamps them to black), as a fitted avatar's hair has them: every pixel
is a sum of several splats, so a per-splat map that is not affine changes what the pixels show.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynavatar.edit.apply.blend_map import (apply_affine_colour_map, fit_affine_colour_map, region_pixels)
from dynavatar.edit.apply.splat_recolour import recolour_splats, takes_affine_map
from dynavatar.edit.colour_space import rgb_to_oklab
from dynavatar.edit.editors.palette_recolour import target_from_plan
from dynavatar.edit.prompt.rule_refiner import RuleRefiner
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.geometry.labels import NUM_LABELS, label_index
from dynavatar.render.torch_renderer import TorchRenderer
from pinhole import square_camera

RES = 40


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _layers(seed: int = 0):
    """Two layers of 30x30 hair splats (opacity 0.5 and 0.9, wide enough to overlap their
    neighbours) covering the image; colours dark brown, 60 % of them below 0.
    -> (GaussianAvatar, WorldGaussians)"""
    g = torch.Generator().manual_seed(seed)
    n = 30
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).float()
    xy = (ij - (n - 1) / 2) * 0.09
    means = torch.cat([torch.cat([xy.flip(-1), torch.full((n * n, 1), z)], 1) for z in (2.0, 2.1)])
    N = len(means)
    black = torch.rand(N, 1, generator=g) < 0.7  # as aoc's hair: most splats black or "blacker than black"
    cols = torch.where(black, -0.1 + 0.14 * torch.rand(N, 1, generator=g), 0.04 + 0.4 * torch.rand(
        N, 1, generator=g)) * torch.tensor([1.0, 0.8, 0.65])  # [N, 3] brown strands over near-black
    labels = torch.zeros(N, NUM_LABELS)
    labels[:, label_index("hair")] = 1.0
    opac = torch.cat([torch.full((n * n,), 0.5), torch.full((n * n,), 0.9)])
    sh = rgb_to_sh(cols)[:, None]  # [N, 1, 3]
    avatar = GaussianAvatar(torch.zeros(N, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1),
                            torch.full((N, 3), math.log(0.09)), torch.logit(opac), sh,
                            torch.zeros(N, dtype=torch.long), labels)
    world = WorldGaussians(means[None], avatar.quats_local[None], torch.full((1, N, 3), 0.09),
                           opac, sh, sh_degree=0)
    return avatar, world


def _render(world: WorldGaussians, sh: torch.Tensor | None = None):
    if sh is not None:
        world = WorldGaussians(world.means, world.quats, world.scales, world.opacities, sh, 0)
    out = TorchRenderer().render(world, square_camera(RES), background=torch.zeros(3))
    return out.rgb[0].double(), out.alpha[0, ..., 0].double()  # [H, W, 3], [H, W]


def test_fit_recovers_an_affine_map_and_leaves_undetermined_directions_as_they_were():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(500, 3, generator=g, dtype=torch.float64)
    A = torch.tensor([[1.2, 0.1, 0.0], [0.05, 0.9, 0.1], [0.0, 0.2, 0.7]], dtype=torch.float64)
    b = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
    A_fit, b_fit = fit_affine_colour_map(x, x @ A.T + b, torch.ones(500, dtype=torch.float64), ridge=0.0)
    assert torch.allclose(A_fit, A, atol=1e-9) and torch.allclose(b_fit, b, atol=1e-9)
    # greys only (x on the grey line), doubled: the grey direction doubles, the others stay the identity
    t = torch.rand(200, 1, generator=g, dtype=torch.float64)
    grey = t.expand(200, 3).clone()
    A_fit, b_fit = fit_affine_colour_map(grey, 2 * grey, torch.ones(200, dtype=torch.float64))
    one = torch.ones(3, dtype=torch.float64)
    assert torch.allclose(A_fit @ one + b_fit, 2 * one, atol=0.02)
    v = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(A_fit @ v, v, atol=1e-6)


def test_the_map_commutes_with_blending_even_for_splats_below_black():
    """Rendered after the map = the map applied to the render (A P + b alpha) at every pixel, although
    most splats' colours were below 0: the map sees them as the renderer does."""
    avatar, world = _layers()
    before, alpha = _render(world)
    A = torch.tensor([[1.5, 0.2, 0.0], [0.1, 1.3, 0.0], [0.0, 0.1, 0.9]], dtype=torch.float64)
    b = torch.tensor([0.45, 0.35, 0.2], dtype=torch.float64)
    new = apply_affine_colour_map(avatar, A, b, torch.ones(avatar.num_splats))
    after, _ = _render(world, new.sh)
    want = before @ A.T + b * alpha[..., None]
    assert (after - want).abs().max() < 1e-4


def test_a_light_shade_keeps_the_rendered_strands_and_splats_outside_stay_bit_identical():
    """"platinum blonde hair" on dark layered hair: the pixels' lightness before and after correlate
    (the per-splat map, which sends every clamped-black splat to one shade, is the reference that
    loses it), the pixels land in the shade's lightness range, and a splat of weight 0 is untouched."""
    avatar, world = _layers()
    before, alpha = _render(world)
    plan = RuleRefiner().refine_all("platinum blonde hair")[0]
    weight = torch.ones(avatar.num_splats)
    weight[0] = 0.0
    pixels = region_pixels(world, square_camera(RES), avatar.labels[:, label_index("hair")], TorchRenderer())
    assert len(pixels[0]) > 0.5 * RES * RES
    affine = recolour_splats(avatar, plan, weight, pixels=pixels)
    per_splat = recolour_splats(avatar, plan, weight)
    assert torch.equal(affine.sh[0], avatar.sh[0])
    core = (alpha > 0.98).flatten()
    L0 = rgb_to_oklab(before.clamp(0, 1)).reshape(-1, 3)[core, 0].numpy()

    def corr(g):
        L = rgb_to_oklab(_render(world, g.sh)[0].clamp(0, 1)).reshape(-1, 3)[core, 0].numpy()
        return float(np.corrcoef(L0, L)[0, 1]), L

    c_affine, L_affine = corr(affine)
    c_splat, _ = corr(per_splat)
    assert c_affine > 0.99 and c_affine > c_splat + 0.01, (c_affine, c_splat)
    target = target_from_plan(plan, torch.zeros(3, dtype=torch.float64))
    lo, hi = float(target.dark[0]) - 0.1, float(target.light[0]) + 0.1
    assert ((L_affine >= lo) & (L_affine <= hi)).mean() > 0.95


@pytest.mark.parametrize("prompt, affine", [("red hair", True), ("platinum blonde hair", True), ("red lipstick", True),
                                            ("blue eyes", False), ("blonde hair with dark roots", False),
                                            ("ombre pink hair", False)])
def test_which_plans_take_the_affine_map(prompt, affine):
    """Only these get their region's pixels rendered (``loop.recolour_region``): the eyes and the
    positional qualifiers keep the per-splat path, and the render would be thrown away."""
    plan = RuleRefiner().refine_all(prompt)[0]
    assert takes_affine_map(plan) is affine
