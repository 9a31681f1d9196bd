"""Splats kept in a box round their triangle (``reconstruct.surface``): the projection against a
per-splat brute force, the regions of the default head, and a fit that ends inside its boxes."""

from __future__ import annotations

import dataclasses

import torch

from dynavatar.flame import FlameModel
from dynavatar.reconstruct import ReconstructConfig, fit_avatar
from dynavatar.reconstruct.surface import FACE_REGIONS, SurfaceBox, project_to_surface_, surface_bounds
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head


def _brute_force(m: torch.Tensor, binding: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    out = m.clone()
    for i in range(len(m)):
        lo, hi, r = (float(x) for x in bounds[int(binding[i])])
        out[i, 1] = min(max(float(m[i, 1]), lo), hi)
        d = (float(m[i, 0]) ** 2 + float(m[i, 2]) ** 2) ** 0.5
        if d > r:
            out[i, 0], out[i, 2] = m[i, 0] * r / d, m[i, 2] * r / d
    return out


def test_projection_matches_a_per_splat_clamp_and_is_idempotent():
    gen = torch.Generator().manual_seed(3)
    bounds = torch.tensor([[-0.3, 0.6, 1.2], [-0.3, 5.0, 3.0], [-1.0, 1.5, 2.0]])
    binding = torch.randint(3, (400,), generator=gen)
    m = 4 * torch.randn(400, 3, generator=gen, dtype=torch.float64).float()
    m[:5] = 0.0  # inside every box: untouched
    expected = _brute_force(m, binding, bounds)
    got = m.clone()
    project_to_surface_(got, binding, bounds)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(got[:5], m[:5])
    again = got.clone()
    project_to_surface_(again, binding, bounds)
    assert torch.allclose(again, got, atol=1e-6)
    b = bounds[binding]
    assert bool((got[:, 1] >= b[:, 0]).all() and (got[:, 1] <= b[:, 1]).all())
    assert bool((got[:, [0, 2]].norm(dim=1) <= b[:, 2] + 1e-5).all())


def test_default_head_face_is_tight_scalp_and_back_of_head_loose():
    model = FlameModel.load()
    box = SurfaceBox()
    bounds = surface_bounds(model, box)  # [F, 3]
    names = model.region_names
    region = torch.as_tensor(model.vertex_region).long()[model.faces.long()].mode(dim=1).values
    face_row = torch.tensor([*box.face_normal, box.face_plane])
    loose_row = torch.tensor([-box.inside, box.outside_normal, box.outside_plane])
    for name in FACE_REGIONS:
        assert torch.equal(bounds[region == names.index(name)], face_row.expand(int((region == names.index(name)).sum()), 3))
    assert bool((bounds[region == names.index("scalp")] == loose_row).all())
    skin = region == names.index("skin")
    tight_skin = (bounds[skin] == face_row).all(dim=1)
    assert 0.2 < float(tight_skin.float().mean()) < 0.9  # the skin in front of the ears only
    # the skin behind the ears (back of the head, nape) stays loose: hair stands off it
    rest = model(model.zero_params(1), landmark_set=None).vertices[0]
    back = skin & (rest[model.faces.long()].mean(1)[:, 2] < 0.0)
    assert back.any() and bool((bounds[back] == loose_row).all())


def test_model_without_regions_gets_the_loose_box_with_the_inside_limit():
    model = FlameModel(ellipsoid_head())
    model.vertex_region, model.region_names = None, None
    box = SurfaceBox()
    bounds = surface_bounds(model, box)
    assert torch.equal(bounds, torch.tensor([-box.inside, box.outside_normal, box.outside_plane]).repeat(len(bounds), 1))


def test_a_fit_ends_with_every_splat_inside_its_box():
    model = FlameModel(ellipsoid_head())
    data = synthetic_clip(model, TorchRenderer(), n_frames=8, resolution=40)
    cfg = ReconstructConfig.preset("tiny")
    box = SurfaceBox(face_normal=(-0.05, 0.05), face_plane=0.2, inside=0.05, outside_normal=0.1, outside_plane=0.3)
    cfg = dataclasses.replace(cfg, steps=40, resolution=40, track_steps=0, surface=box,
                              densify=dataclasses.replace(cfg.densify, refine_start=10, refine_stop=30, refine_every=10))
    fit = fit_avatar(data, model, TorchRenderer(), cfg, progress=False)
    g = fit.avatar
    b = surface_bounds(fit.model, box)[g.binding.long()]
    m = g.means_local
    assert bool((m[:, 1] >= b[:, 0] - 1e-6).all() and (m[:, 1] <= b[:, 1] + 1e-6).all())
    assert bool((m[:, [0, 2]].norm(dim=1) <= b[:, 2] + 1e-5).all())
    # ... and the box was binding: without it some splats leave it
    free = fit_avatar(data, model, TorchRenderer(), dataclasses.replace(cfg, bind_to_surface=False), progress=False)
    mf, bf = free.avatar.means_local, surface_bounds(free.model, box)[free.avatar.binding.long()]
    outside = (mf[:, 1] < bf[:, 0] - 1e-6) | (mf[:, 1] > bf[:, 1] + 1e-6) | (mf[:, [0, 2]].norm(dim=1) > bf[:, 2] + 1e-5)
    assert bool(outside.any())


def test_near_metres_caps_the_neck_and_ears_in_metres_not_the_scalp_or_face():
    model = FlameModel.load()
    loose, near = surface_bounds(model), surface_bounds(model, SurfaceBox(near_metres=(0.015, 0.012)))
    names = model.region_names
    region = torch.as_tensor(model.vertex_region).long()[model.faces.long()].mode(dim=1).values
    rest = model(model.zero_params(1), landmark_set=None).vertices[0]
    from dynavatar.geometry.triangles import triangle_frames

    k = triangle_frames(rest, model.faces.long()).scales  # [F] metres
    neck = region == names.index("neck")
    assert bool((near[neck, 1] * k[neck] <= 0.015 + 1e-6).all() and (near[neck, 2] * k[neck] <= 0.012 + 1e-6).all())
    assert bool((near[neck, 1] < loose[neck, 1]).any())  # the neck's big triangles were looser than 1.5 cm
    for kept in ("scalp",) + FACE_REGIONS:
        assert torch.equal(near[region == names.index(kept)], loose[region == names.index(kept)])
    assert torch.equal(near[:, 0], loose[:, 0])  # the inside limit is untouched


def test_a_box_that_makes_no_sense_is_refused_with_one_line(tmp_path):
    """A negative size would mirror the splats through their triangle; a reversed range pins them to one
    side. The CLI's --set says which setting, in one line."""
    import pytest
    from click.testing import CliRunner

    from dynavatar.cli import main
    from dynavatar.errors import ConfigError

    for bad in ({"face_plane": -1.0}, {"face_normal": (0.5, 0.1)}, {"near_metres": (-0.01, 0.01)},
                {"outside_normal": float("nan")}):
        with pytest.raises(ConfigError):
            SurfaceBox(**bad)
    res = CliRunner().invoke(main, ["fit", str(tmp_path), "-o", str(tmp_path / "out"), "--set", "surface.face_plane=-1"])
    assert res.exit_code == 2 and "surface.face_plane" in res.output and "Traceback" not in res.output
