"""Splats laid flat on the skin (``regularisers.flatness_loss``): the normal share against an explicit
covariance, its analytic cases, a descent that lays a fin down, and which triangles each choice takes."""

from __future__ import annotations

import math

import pytest
import torch

from dynavatar.errors import ConfigError
from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.geometry.rotations import axis_angle_to_matrix, matrix_to_quaternion, quaternion_to_matrix
from dynavatar.reconstruct import ReconstructConfig
from dynavatar.reconstruct.regularisers import flat_triangles, flatness_loss, normal_share
from dynavatar.reconstruct.surface import face_triangles
from flame_fixtures import ellipsoid_head


def _splats(quats: torch.Tensor, scales: torch.Tensor) -> GaussianAvatar:
    g = GaussianAvatar.init_on_mesh(len(quats), 1)
    return g.replace(quats_local=quats.clone().requires_grad_(True),
                     log_scales_local=scales.log().clone().requires_grad_(True))


def test_the_share_is_the_covariances_normal_entry_over_its_trace():
    gen = torch.Generator().manual_seed(0)
    quats = torch.randn(30, 4, generator=gen)
    scales = torch.rand(30, 3, generator=gen) * 2 + 0.01
    g = _splats(quats, scales)
    normal = torch.tensor([0.0, 1.0, 0.0])  # the triangle frame's columns: edge, normal, bitangent
    for i in range(30):  # brute force: build each covariance
        axes = quaternion_to_matrix(quats[i] / quats[i].norm())
        cov = axes @ torch.diag(scales[i] ** 2) @ axes.T
        expected = float(normal @ cov @ normal / cov.trace())
        assert abs(float(normal_share(g)[i].detach()) - expected) < 1e-5


def test_a_disk_on_the_triangle_a_fin_across_it_and_a_ball():
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0])
    standing = matrix_to_quaternion(axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0])))  # normal -> bitangent
    quats = torch.stack([identity, standing, identity])
    scales = torch.tensor([[1.0, 0.01, 1.0], [1.0, 0.01, 1.0], [0.5, 0.5, 0.5]])
    share = normal_share(_splats(quats, scales))
    assert share[0] < 1e-3  # thin along the normal: flat on the skin
    assert abs(float(share[1]) - 0.5) < 1e-3  # stood up: half its variance leaves the surface
    assert abs(float(share[2]) - 1 / 3) < 1e-6  # a ball has no orientation


def test_descent_lays_a_fin_down_and_leaves_other_triangles_alone():
    standing = matrix_to_quaternion(axis_angle_to_matrix(torch.tensor([1.2, 0.3, 0.0])))
    g = _splats(standing.repeat(2, 1), torch.tensor([[1.0, 0.05, 0.6]]).repeat(2, 1))
    on = torch.tensor([True, False])
    before = normal_share(g).detach()
    opt = torch.optim.Adam([g.quats_local], lr=0.02)  # rotation only: the splat's size is the other terms' job
    for _ in range(300):
        opt.zero_grad()
        flatness_loss(g, on).backward()
        opt.step()
    after = normal_share(g).detach()
    assert before[0] > 0.2 and after[0] < 0.01
    assert torch.equal(g.quats_local[1].detach(), standing)  # not selected: no gradient, never moved


def test_no_selected_splats_give_zero_and_still_differentiate():
    g = _splats(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.ones(1, 3))
    loss = flatness_loss(g, torch.zeros(1, dtype=torch.bool))
    loss.backward()
    assert float(loss) == 0.0


def test_the_choices_of_triangles():
    model = FlameModel(ellipsoid_head())
    model.region_names = ["nose", "scalp", "skin"]
    rest = model(model.zero_params(1), landmark_set=None).vertices[0]
    z = rest[:, 2]
    model.vertex_region = torch.where(z > z.quantile(0.7), 0, torch.where(z < z.quantile(0.3), 1, 2))
    scalp = (model.vertex_region[model.faces.long()] == 1).all(dim=1)  # wholly-scalp triangles
    skin = flat_triangles(model, "skin")
    assert not skin[scalp].any() and skin.any()
    assert torch.equal(flat_triangles(model, "face"), face_triangles(model))
    assert flat_triangles(model, "all").all()
    with pytest.raises(ConfigError, match="flat_on"):
        flat_triangles(model, "hair")
    with pytest.raises(ConfigError, match="flat_on"):
        ReconstructConfig(flat_on="hair")
    with pytest.raises(ConfigError, match="w_flat"):
        ReconstructConfig(w_flat=float("nan"))


@pytest.mark.slow
def test_a_fit_with_the_term_lays_the_skins_splats_flat():
    import dataclasses

    from dynavatar.reconstruct import fit_avatar
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer

    model = FlameModel(ellipsoid_head())
    data = synthetic_clip(model, TorchRenderer(), n_frames=6, resolution=40)
    cfg = ReconstructConfig.preset("tiny")
    cfg = dataclasses.replace(cfg, steps=60, resolution=40, track_steps=0, flat_on="all",
                              densify=dataclasses.replace(cfg.densify, refine_start=1000))  # no densify: same splats

    def median_share(w: float) -> float:
        fit = fit_avatar(data, model, TorchRenderer(), dataclasses.replace(cfg, w_flat=w), progress=False)
        return float(normal_share(fit.avatar).median())

    assert median_share(0.1) < 0.5 * median_share(0.0)
