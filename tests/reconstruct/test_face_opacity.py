"""The face's splats pushed to opaque (``trainer.face_opacity_loss``): the term against a per-splat
sum, its gradient's direction, and a fit that ends with fewer half-transparent face splats."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.reconstruct import ReconstructConfig, fit_avatar
from dynavatar.reconstruct.surface import face_triangles
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.reconstruct.trainer import face_opacity_loss
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head


def _avatar(n_faces: int, logits: torch.Tensor) -> GaussianAvatar:
    g = GaussianAvatar.init_on_mesh(n_faces, len(logits) // n_faces)
    return g.replace(opacity_logits=logits.clone().requires_grad_(True))


def test_the_term_is_the_mean_transparency_of_the_face_splats():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(40, generator=gen)
    g = _avatar(20, logits)
    face = torch.zeros(20, dtype=torch.bool)
    face[[1, 4, 7, 11]] = True
    terms = []
    for i in range(g.num_splats):  # brute force, splat by splat
        if bool(face[int(g.binding[i])]):
            o = 1 / (1 + float(torch.exp(-logits[i])))
            terms.append(1 - o)
    assert abs(float(face_opacity_loss(g, face)) - sum(terms) / len(terms)) < 1e-6


def test_it_raises_every_face_splats_opacity_and_leaves_the_rest():
    g = _avatar(3, torch.tensor([2.0, -2.0, 0.5]))
    face = torch.tensor([True, True, False])
    face_opacity_loss(g, face).backward()
    grad = g.opacity_logits.grad
    assert grad[0] < 0 and grad[1] < 0  # a descent step raises both
    assert torch.allclose(grad[:2], -torch.sigmoid(g.opacity_logits[:2]) * torch.sigmoid(-g.opacity_logits[:2]) / 2)
    assert grad[2] == 0  # not on the face
    none = _avatar(3, torch.tensor([2.0, -2.0, 0.5]))
    loss = face_opacity_loss(none, torch.zeros(3, dtype=torch.bool))
    loss.backward()  # no face splats: zero, and still differentiable
    assert float(loss) == 0.0


@pytest.mark.slow
def test_a_fit_with_the_term_leaves_fewer_half_transparent_face_splats():
    model = FlameModel(ellipsoid_head())
    model.region_names = ["nose", "scalp"]  # the front half of the ellipsoid is face, the back is not
    rest = model(model.zero_params(1), landmark_set=None).vertices[0]
    model.vertex_region = (rest[:, 2] <= rest[:, 2].median()).long()
    data = synthetic_clip(model, TorchRenderer(), n_frames=6, resolution=40)
    cfg = ReconstructConfig.preset("tiny")
    cfg = dataclasses.replace(cfg, steps=60, resolution=40, track_steps=0,
                              densify=dataclasses.replace(cfg.densify, refine_start=1000))  # no densify: same splats

    def half_transparent(w: float) -> float:
        fit = fit_avatar(data, model, TorchRenderer(), dataclasses.replace(cfg, w_face_opacity=w), progress=False)
        g = fit.avatar
        o = torch.sigmoid(g.opacity_logits[face_triangles(fit.model)[g.binding]])
        return float(((o > 0.2) & (o < 0.8)).float().mean())

    assert half_transparent(1.0) < 0.5 * half_transparent(0.0)
