"""The demo's gallery of edits on the generated head: files, a loadable avatar, and each edit
changing the pixels of its own region (measured with the splats' known labels and eyeball angles)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from dynavatar.api import Avatar
from dynavatar.demo import run_demo
from dynavatar.demo_gallery import GALLERY_PROMPTS, gallery_camera, gallery_views, render_view
from dynavatar.errors import ConfigError
from dynavatar.flame import FlameModel
from dynavatar.gaussians.binding import bind
from dynavatar.geometry.labels import label_index
from dynavatar.reconstruct.demo_head import demo_head_appearance
from dynavatar.reconstruct.head_appearance import HeadGeometry
from dynavatar.reconstruct.head_colours import IRIS_ANGLE, PUPIL_ANGLE
from dynavatar.reconstruct.synthetic import DEMO_DEPTH, DEMO_LIFT, demo_identity

RES = 192  # the gallery's pictures: the iris is about five pixels across, the visible sclera a few


@pytest.fixture(autouse=True)
def _one_thread():
    """Small renders on a shared 2-core machine run faster on one thread (conftest restores it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(result, out folder, appearance) of a tiny demo run on the default head."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small renders on a shared machine; restored below
    try:
        out = tmp_path_factory.mktemp("demo")
        result = run_demo(out, n_frames=2, resolution=64, device="cpu", progress=False, gallery_resolution=RES,
                          gallery_frames=1)
        model = FlameModel.load()
        app = demo_head_appearance(model, demo_identity(model))
    finally:
        torch.set_num_threads(threads)
    return result, out, app


def _region_masks(app, base, camera) -> dict[str, np.ndarray]:
    """Coverage [H, W] of the splats of each region in the frontal gallery view: hair, lips, the
    iris (eyeball splats within the iris angle, outside the pupil) and the sclera (beyond the limbus)."""
    geo = HeadGeometry.of(app.model, app.shape)
    rest = bind(app.gaussians, torch.from_numpy(geo.verts).float(), app.model.faces).means[0]  # [N, 3]
    angle = torch.full((app.num_splats,), float("nan"))
    for centre, _, _ in geo.eyes:
        d = torch.nn.functional.normalize(rest - torch.from_numpy(centre).float(), dim=-1)
        near = (rest - torch.from_numpy(centre).float()).norm(dim=-1) < 0.014
        angle = torch.where(near, torch.arccos(d[:, 2].clamp(-1, 1)), angle)
    lab = app.gaussians.labels.argmax(1)
    eye = (lab == label_index("iris")) | (lab == label_index("sclera"))  # the eyeballs: iris (with pupil), sclera
    assert bool(((lab == label_index("iris")) == (angle < IRIS_ANGLE))[eye].all())  # labels follow the eye's colours
    sel = {"hair": lab == label_index("hair"),
           "lips": (lab == label_index("upper_lip")) | (lab == label_index("lower_lip")),
           "iris": eye & (angle > PUPIL_ANGLE + 0.03) & (angle < IRIS_ANGLE - 0.05),
           "sclera": eye & (angle > IRIS_ANGLE + 0.08)}
    feats = torch.stack([v.float() for v in sel.values()], 1)
    out = render_view(base, app, gallery_views(base.params)[0], camera, base.renderer, features=feats)
    cov = out.features[0].numpy()
    return {k: cov[..., i] for i, k in enumerate(sel)}


def test_demo_writes_the_gallery_and_a_loadable_avatar(demo):
    result, out, app = demo
    for f in ("demo.mp4", "contact_sheet.png", "gallery.png", "gallery.mp4"):
        assert (out / f).stat().st_size > 0, f
    assert result.gallery == out / "gallery.png" and result.avatar == out / "avatar"
    rows = [line for line in result.ran if line.startswith("edit ")]
    assert len(rows) == len(GALLERY_PROMPTS), result.ran
    back = Avatar.load(out / "avatar", device="cpu")
    assert back.gaussians.num_splats == app.num_splats and back.has_labels
    assert back.model.torso_vertices is not None  # the shoulders came back with it
    assert iio.imread(out / "gallery.mp4").shape[0] == len(GALLERY_PROMPTS)  # one frame a row here
    img = back.render(frame=1)
    assert img.shape == (64, 64, 3) and img[20:44, 20:44].mean() < 200  # a head, not the background


def test_each_gallery_edit_changes_its_own_region(demo):
    result, out, app = demo
    sheet = iio.imread(out / "gallery.png").astype(float)
    assert sheet.shape == (RES * len(GALLERY_PROMPTS), 4 * RES, 3)
    base = Avatar.load(out / "avatar", device="cpu")
    masks = _region_masks(app, base, gallery_camera(RES, DEMO_DEPTH, DEMO_LIFT))
    body = slice(0, int(RES * 0.9))  # above the caption band
    change = {}
    for i, prompt in enumerate(GALLERY_PROMPTS):
        before, after = sheet[i * RES:(i + 1) * RES, :RES], sheet[i * RES:(i + 1) * RES, RES:2 * RES]
        change[prompt] = np.abs(after - before).mean(-1)[body]
    m = {k: v[body] for k, v in masks.items()}
    inside = lambda prompt, key: change[prompt][m[key] > 0.5].mean()  # noqa: E731
    outside = lambda prompt, key: change[prompt][m[key] < 0.05].mean()  # noqa: E731
    assert (m["iris"] > 0.5).sum() >= 8 and (m["sclera"] > 0.5).sum() >= 5  # both visible
    # mean |after - before| (0-255) inside a region's pixels vs outside it (measured: 31 vs 0.04,
    # iris 60 vs sclera 1.2, lips 53 vs 0.003, glasses 11, smile 3 at the mouth vs 0 on top)
    # auburn is a deep red-brown: on brown hair the colourist's recolour moves it ~12/255 on average
    assert inside("auburn hair", "hair") > 8 and outside("auburn hair", "hair") < 2
    assert inside("blue eyes", "iris") > 25 and outside("blue eyes", "iris") < 1
    assert inside("blue eyes", "sclera") < 0.15 * inside("blue eyes", "iris")  # the iris turns blue, not the white
    assert inside("red lipstick", "lips") > 25 and outside("red lipstick", "lips") < 1
    face = np.ix_(range(int(0.3 * RES), int(0.6 * RES)), range(int(0.25 * RES), int(0.75 * RES)))
    assert change["round glasses"][face].mean() > 5  # rims over the eyes, the bridge over the nose
    mouth = np.ix_(range(int(0.6 * RES), int(0.8 * RES)), range(int(0.3 * RES), int(0.7 * RES)))
    top = np.ix_(range(0, int(0.2 * RES)), range(RES))
    assert change["make her smile"][mouth].mean() > 3 * change["make her smile"][top].mean() + 1


def test_run_demo_refuses_no_frames(tmp_path):
    with pytest.raises(ConfigError, match="at least 1 frame"):
        run_demo(tmp_path / "d", n_frames=0, device="cpu")
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_the_iris_follows_the_eye_joint_and_the_hair_the_head(demo):
    """Gaze comes from the eye joints alone (iris splats on the eyeball, coloured in the rest pose),
    and every hair splat is bound to a triangle that no expression moves."""
    _, _, app = demo
    geo = HeadGeometry.of(app.model, app.shape)
    lab = app.gaussians.labels.argmax(1)
    params = app.model.zero_params(1)
    params.shape[0] = app.shape
    rest = bind(app.gaussians, app.model(params, landmark_set=None).vertices, app.model.faces).means[0]
    centre = torch.from_numpy(geo.eyes[0][0]).float()  # the subject's left eyeball
    eyeball = (lab == label_index("iris")) | (lab == label_index("sclera"))
    eye = eyeball & ((rest - centre).norm(dim=-1) < 0.014)  # the left one of the two
    assert eye.sum() > 100
    radius = (rest[eye] - centre).norm(dim=-1)
    assert torch.allclose(radius, torch.full_like(radius, geo.eyes[0][1]), atol=2e-4)  # on the sphere
    iris = eye & (torch.nn.functional.normalize(rest - centre, dim=-1)[:, 2] > np.cos(IRIS_ANGLE))
    params.eyes[0, 1] = 0.3  # the left eye turns 0.3 rad about its vertical axis
    posed = bind(app.gaussians, app.model(params, landmark_set=None).vertices, app.model.faces).means[0]
    d = torch.nn.functional.normalize((posed[iris] - centre).mean(0), dim=0)
    assert abs(float(torch.atan2(d[0], d[2])) - 0.3) < 0.02
    hair = lab == label_index("hair")
    strands = hair & (app.tangent_local.norm(dim=-1) > 0.5)
    assert strands.sum() > 1000
    assert bool(torch.from_numpy(geo.rigid)[app.model.faces[app.gaussians.binding[strands]]].all())
    params.expr[0] = 1.0  # every expression at once: the hair does not move
    moved = bind(app.gaussians, app.model(params, landmark_set=None).vertices, app.model.faces).means[0]
    assert (moved[strands] - posed[strands]).norm(dim=-1).max() < 1e-5


def test_lip_splats_stay_inside_the_lip_line(demo):
    """Every splat labelled lips sits on a triangle whose three corners are on the lips: the radial skin
    triangles fanning out from the lip line have two corners on it and were once called lips by a
    majority vote, so red lipstick drew a fringe of needles into the skin."""
    _, _, app = demo
    geo = HeadGeometry.of(app.model, app.shape)
    lab = app.gaussians.labels.argmax(1)
    lips = (lab == label_index("upper_lip")) | (lab == label_index("lower_lip"))
    tri = app.gaussians.binding[lips].numpy()
    on_lips = geo.in_region("upper_lip", "lower_lip")
    assert lips.sum() > 100 and bool(on_lips[geo.faces[tri]].all())
