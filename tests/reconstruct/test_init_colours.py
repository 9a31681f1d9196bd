"""The splats' first colours (``reconstruct.init_colours``): a splat takes the colour it draws, a hidden
one takes its region's mean, never the colour of the face in front of it."""

from __future__ import annotations

import torch

from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar, sh_to_rgb
from dynavatar.gaussians.binding import bind
from dynavatar.geometry.cameras import project_points
from dynavatar.reconstruct.init_colours import init_colours_
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head

RED, BLUE = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])


def _scene(pattern: str, regions: str):
    """The ellipsoid head seen from the front, its frames painted red/blue by image half (``pattern``:
    "rows" or "cols"), its regions split front/back or left/right (``regions``)."""
    model = FlameModel(ellipsoid_head())
    rest = model(model.zero_params(1), landmark_set=None).vertices[0]
    axis = 2 if regions == "front_back" else 0
    model.region_names = ["nose", "scalp"]
    model.vertex_region = (rest[:, axis] <= rest[:, axis].median()).long()  # 0: front (or +x), 1: back (or -x)
    data = synthetic_clip(model, TorchRenderer(), n_frames=4, resolution=40)
    r = data.resolution
    first = (torch.arange(r) < r // 2)[:, None] if pattern == "rows" else (torch.arange(r) < r // 2)[None, :]
    img = torch.where(first.expand(r, r)[..., None], RED * 255, BLUE * 255).to(torch.uint8)
    data.images[:] = img
    data.mattes[:] = 255
    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1)
    return model, data, avatar, rest


def test_seen_splats_take_their_pixels_and_hidden_ones_the_seen_mean_not_the_face_in_front():
    model, data, avatar, rest = _scene("rows", "front_back")
    seen = init_colours_(avatar, data, model, TorchRenderer(), torch.ones(3))
    rgb = sh_to_rgb(avatar.sh[:, 0])
    centre = rest[model.faces.long()].mean(1)  # [F, 3]
    back = centre[:, 2] < centre[:, 2].min() + 0.2 * (centre[:, 2].max() - centre[:, 2].min())  # (the clip turns ±0.4 rad)
    assert not bool(seen[back].any())  # behind the head: no frame shows them
    # the projection would have painted the upper back red and the lower back blue; they take the mean
    assert torch.allclose(rgb[back], rgb[back][0].expand_as(rgb[back]))
    assert abs(float(rgb[back][0, 0] - rgb[back][0, 2])) < 0.25 and float(rgb[back][0, 1]) < 0.05
    # the front splats well inside a half take its colour
    verts = model(data.params[0], landmark_set=None).vertices[0]
    uv, _ = project_points(bind(avatar, verts[None], model.faces).means[0], data.cameras[0].viewmats[0],
                           data.cameras[0].Ks[0])
    front = seen & (centre[:, 2] > centre[:, 2].quantile(0.8))
    top, bottom = front & (uv[:, 1] < 0.4 * 40), front & (uv[:, 1] > 0.6 * 40)
    assert top.sum() > 5 and bottom.sum() > 5
    assert float((rgb[top] - RED).abs().max()) < 0.1 and float((rgb[bottom] - BLUE).abs().max()) < 0.1


def test_hidden_splats_take_their_own_regions_mean():
    model, data, avatar, rest = _scene("cols", "left_right")
    seen = init_colours_(avatar, data, model, TorchRenderer(), torch.ones(3))
    rgb = sh_to_rgb(avatar.sh[:, 0])
    region = model.vertex_region[model.faces.long()].mode(1).values
    for r in (0, 1):
        hidden = ~seen & (region == r)
        mine = seen & (region == r)
        assert hidden.any() and mine.any()
        assert torch.allclose(rgb[hidden], rgb[hidden][0].expand_as(rgb[hidden]), atol=1e-6)
        assert float((rgb[hidden][0] - rgb[mine].mean(0)).abs().max()) < 0.15  # (the mean is vote-weighted)
    assert float(rgb[~seen & (region == 0)][0, 2] - rgb[~seen & (region == 1)][0, 2]) * \
        float(rgb[~seen & (region == 0)][0, 0] - rgb[~seen & (region == 1)][0, 0]) < 0  # two different means


def test_an_unknown_choice_is_refused_with_one_line():
    import pytest

    from dynavatar.errors import ConfigError
    from dynavatar.reconstruct import ReconstructConfig

    with pytest.raises(ConfigError, match="init_colours"):
        ReconstructConfig.preset("tiny", init_colours="painted")
    for bad in (-0.1, float("nan")):
        with pytest.raises(ConfigError, match="w_face_opacity"):
            ReconstructConfig.preset("tiny", w_face_opacity=bad)
