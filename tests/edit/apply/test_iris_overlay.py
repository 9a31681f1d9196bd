"""The eye recolour's boost under what is drawn over the iris, against the render it is meant to give.

Scene: a plane of opaque "iris" splats filling the image, and over its left half a layer of
translucent "lid" splats. Every iris splat is recoloured by the same change d. Without the boost the
pixels under the lid move by (1 - a) d (a: the lid's alpha there); with it they should move by d,
the pixels beside the lid by d as before, and nothing else may change.
"""

from __future__ import annotations

import math

import pytest
import torch

from dynavatar.edit.apply.iris_overlay import boost_under_overlay, moved_share
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.render.torch_renderer import TorchRenderer
from pinhole import square_camera

RES = 40
BROWN, GREEN = (0.30, 0.20, 0.13), (0.20, 0.45, 0.25)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _grid(z: float, n: int = 26) -> torch.Tensor:
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).float()
    xy = (ij - (n - 1) / 2) * 0.1 * z / 2  # 2 px apart at any depth, covering the image
    return torch.cat([xy.flip(-1), torch.full((n * n, 1), z)], 1)


def _scene(lid_opacity: float, stray_colour: float = -0.4):
    """Iris splats at z = 2, lid splats at z = 1.5 over x < 0, one unseen splat behind the camera whose
    colour is below 0 (fitted avatars have many). -> (avatar, world, iris [N] bool, lid [N] bool)"""
    iris_xyz, lid_xyz = _grid(2.0), _grid(1.5)
    lid_xyz = lid_xyz[lid_xyz[:, 0] < -0.1]
    means = torch.cat([iris_xyz, lid_xyz, torch.tensor([[0.0, 0.0, -1.0]])])
    n_iris, n_lid, N = len(iris_xyz), len(lid_xyz), len(iris_xyz) + len(lid_xyz) + 1
    cols = torch.cat([torch.tensor(BROWN).repeat(n_iris, 1), torch.tensor([0.9, 0.75, 0.7]).repeat(n_lid, 1),
                      torch.full((1, 3), stray_colour)])
    opacity = torch.cat([torch.full((n_iris,), 0.99), torch.full((n_lid,), lid_opacity), torch.ones(1) * 0.9])
    scales = torch.cat([torch.full((n_iris, 3), 0.1), torch.full((n_lid, 3), 0.075), torch.full((1, 3), 0.1)])
    sh = rgb_to_sh(cols)[:, None]  # [N, 1, 3]
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1)
    avatar = GaussianAvatar(torch.zeros(N, 3), quats, scales.log(), torch.logit(opacity), sh,
                            torch.zeros(N, dtype=torch.long), torch.zeros(N, 0))
    world = WorldGaussians(means[None], quats[None], scales[None], opacity, sh, sh_degree=0)
    iris = torch.zeros(N, dtype=torch.bool)
    iris[:n_iris] = True
    lid = torch.zeros(N, dtype=torch.bool)
    lid[n_iris:n_iris + n_lid] = True
    return avatar, world, iris, lid


def _render(world: WorldGaussians, sh: torch.Tensor) -> torch.Tensor:
    w = WorldGaussians(world.means, world.quats, world.scales, world.opacities, sh, 0)
    return TorchRenderer().render(w, square_camera(RES), background=torch.ones(3)).rgb[0]  # [H, W, 3]


def _recoloured(avatar: GaussianAvatar, iris: torch.Tensor) -> GaussianAvatar:
    sh = avatar.sh.clone()
    sh[iris, 0] = rgb_to_sh(torch.tensor(GREEN))
    return avatar.replace(sh=sh)


def test_pixels_under_the_lid_move_the_full_change():
    avatar, world, iris, lid = _scene(lid_opacity=0.08)
    after = _recoloured(avatar, iris)
    boosted = boost_under_overlay(avatar, after, world, square_camera(RES), TorchRenderer())
    before_img, plain_img, boosted_img = (_render(world, g.sh) for g in (avatar, after, boosted))
    d = torch.tensor(GREEN) - torch.tensor(BROWN)  # the change asked of every iris pixel
    rows = slice(8, 32)
    under, beside = (rows, slice(4, 14)), (rows, slice(26, 36))  # away from the lid's edge at the centre
    alpha_lid = 1 - ((plain_img - before_img)[under] / d).mean()  # what the lid hides of the change
    assert 0.2 < float(alpha_lid) < 0.7  # the scene does what it says: a lid that matters
    moved_under = (boosted_img - before_img)[under]  # [h, w, 3]
    assert torch.allclose(moved_under, d.expand_as(moved_under), atol=0.1 * float(d.abs().max()))
    moved_beside = (boosted_img - before_img)[beside]
    assert torch.allclose(moved_beside, d.expand_as(moved_beside), atol=0.05 * float(d.abs().max()))
    assert torch.equal(boosted.sh[~iris], avatar.sh[~iris])  # the lid and the unseen splat: bit-identical


def test_gain_is_capped_and_colours_stay_displayable():
    avatar, world, iris, _ = _scene(lid_opacity=0.9)  # the lid hides nearly all of the iris on the left
    after = _recoloured(avatar, iris)
    cap = 1.5
    boosted = boost_under_overlay(avatar, after, world, square_camera(RES), TorchRenderer(), max_gain=cap)
    base = torch.tensor(BROWN)
    new = boosted.sh[iris, 0] * 0.28209479177387814 + 0.5  # [M, 3] rgb
    assert float(((new - base) / (torch.tensor(GREEN) - base)).max()) <= cap + 1e-4
    assert float(new.min()) >= 0.0 and float(new.max()) <= 1.0


def test_share_is_one_without_overlay_and_nothing_moved_is_a_no_op():
    avatar, world, iris, lid = _scene(lid_opacity=0.08)
    share, drawn = moved_share(world, square_camera(RES), iris.float(), TorchRenderer())
    right = iris & (world.means[0, :, 0] > 0.3) & (drawn > 0.5)  # in view, well away from the lid
    assert torch.allclose(share[right], torch.ones(int(right.sum())), atol=1e-3)
    assert float(share[lid].max()) < 1.0  # the lid's splats draw over iris pixels, not as iris
    same = boost_under_overlay(avatar, avatar.replace(sh=avatar.sh.clone()), world, square_camera(RES), TorchRenderer())
    assert torch.equal(same.sh, avatar.sh)
    assert math.isfinite(float(drawn.sum()))
