"""Glasses built as splats on the default head: placement, rigid riding, rendering, options, words.

References are computed here independently of the code under test: triangle frames from DESIGN.md §3
in numpy, point-in-polygon by winding number, the ears' tops from the raw vertex regions, the
changed-pixel box from landmarks, and the lens opacity from a render of the lenses alone.
"""

from __future__ import annotations

import copy
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from dynavatar.edit import EditPlan, RuleRefiner
from dynavatar.edit.apply.glasses import (GLASSES_STYLES, PART_NAMES, add_glasses, glasses_request,
                                          glasses_splats, rigid_faces)
from dynavatar.errors import ConfigError
from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
from dynavatar.gaussians.binding import WorldGaussians, bind
from dynavatar.geometry.cameras import Cameras, project_points
from dynavatar.geometry.labels import NUM_LABELS, label_index
from dynavatar.geometry.landmark_sets import FACE_MESH_POLYGONS
from dynavatar.reconstruct.synthetic import face_albedo, face_labels, shade_faces
from dynavatar.render.torch_renderer import TorchRenderer

RES = 112
TURN = 0.5


@pytest.fixture(autouse=True)
def one_thread():
    """Small CPU renders run fastest on one thread (conftest restores the count afterwards)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> FlameModel:
    torch.set_num_threads(1)  # module fixtures are built before the function-scoped one_thread runs
    return FlameModel.load()


@pytest.fixture(scope="module")
def head(model) -> GaussianAvatar:
    """One opaque, shaded, labelled splat per triangle of the neutral head."""
    verts = model(model.zero_params(), landmark_set=None).vertices[0]
    av = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.55, init_opacity=0.97,
                                     num_labels=NUM_LABELS)
    av.sh[:, 0] = rgb_to_sh(shade_faces(face_albedo(model), verts, model.faces))
    av.labels[torch.arange(av.num_splats), face_labels(model)] = 1.0
    return av


@pytest.fixture(scope="module")
def worn(head, model) -> dict[str, GaussianAvatar]:
    torch.set_num_threads(1)
    return {s: add_glasses(head, model, style=s) for s in GLASSES_STYLES}


def _camera(yaw: float, res: int = RES, fov: float = 17.0) -> Cameras:
    eye = torch.tensor([0.6 * math.sin(yaw), 0.04, 0.6 * math.cos(yaw)])
    return Cameras.look_at(eye, torch.tensor([0.0, 0.015, 0.0]), res, res, fov_y_deg=fov)


def _render(avatar: GaussianAvatar, model: FlameModel, yaw: float, res: int = RES) -> np.ndarray:
    verts = model(model.zero_params(), landmark_set=None).vertices
    return TorchRenderer().render(bind(avatar, verts, model.faces), _camera(yaw, res),
                                  background=torch.ones(3)).rgb[0].clamp(0, 1).numpy()


@pytest.fixture(scope="module")
def renders(head, worn, model) -> dict[tuple[str, float], np.ndarray]:
    """Before (style None) and after for every style, frontal and turned."""
    torch.set_num_threads(1)
    out = {}
    for style, av in [(None, head)] + list(worn.items()):
        for yaw in (0.0, TURN):
            out[style, yaw] = _render(av, model, yaw)
    return out


# ------------------------------------------------------------------------------------ references
def _frames_numpy(verts: np.ndarray, faces: np.ndarray):
    """DESIGN.md §3 binding frames, written again: R [F, 3, 3] columns (e, n, e x n), k [F], T [F, 3]."""
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    e = (v1 - v0) / np.linalg.norm(v1 - v0, axis=-1, keepdims=True)
    n = np.cross(e, v2 - v0)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    b = np.cross(e, n)
    k = (np.linalg.norm(v1 - v0, axis=-1) + np.abs((b * (v2 - v0)).sum(-1))) / 2
    return np.stack([e, n, b], -1), k, (v0 + v1 + v2) / 3


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)


def _inside(point: np.ndarray, poly: np.ndarray) -> bool:
    """Winding number of a closed polygon [P, 2] around a point [2] is non-zero."""
    d = poly - point
    ang = np.arctan2(d[:, 1], d[:, 0])
    turn = np.diff(np.concatenate([ang, ang[:1]]))
    turn = (turn + np.pi) % (2 * np.pi) - np.pi
    return abs(turn.sum()) > np.pi


def _centre_curve(g, part: str) -> np.ndarray:
    """A part's curve through the middle of its band: splats averaged over rows, in curve order.  [N, 3]"""
    sel = g.part == PART_NAMES.index(part)
    means, order = g.means[sel].numpy(), g.order[sel].numpy()
    return np.stack([means[order == i].mean(0) for i in range(order.max() + 1)])


def _ear_tops(model: FlameModel, verts: np.ndarray) -> dict[str, np.ndarray]:
    """Highest vertex of each ear region (the top of the ear where it meets the scalp)."""
    region = model.vertex_region.numpy()
    return {s: verts[region == model.region_names.index(f"{s}_ear")][verts[region == model.region_names.index(
        f"{s}_ear"), 1].argmax()] for s in ("right", "left")}


# ------------------------------------------------------------------------------------ placement
def test_rest_pose_reproduces_the_fitted_splats(head, worn, model):
    """bind() at rest and an independent numpy binding both give back the fitted curve splats."""
    n0 = head.num_splats
    verts = model(model.zero_params(), landmark_set=None).vertices
    for style in ("round", "aviator"):
        av = worn[style]
        g = glasses_splats(model, style=style)
        world = bind(av, verts, model.faces).means[0, n0:].double()
        assert len(world) == len(g.means) > 2000
        assert (world - g.means).abs().max() < 1e-5, style
        R, k, T = _frames_numpy(verts[0].double().numpy(), model.faces.numpy())
        f = av.binding[n0:].numpy()
        ml = av.means_local[n0:].double().numpy()
        ref = k[f, None] * np.einsum("nij,nj->ni", R[f], ml) + T[f]
        assert np.abs(ref - g.means.numpy()).max() < 1e-5, style
        rot = np.einsum("nij,njk->nik", R[f], _quat_matrix(av.quats_local[n0:].double().numpy()))
        assert np.abs(rot - g.rotations.numpy()).max() < 1e-4, style
        scales = k[f, None] * np.exp(av.log_scales_local[n0:].double().numpy())
        assert np.abs(scales / g.scales.numpy() - 1).max() < 1e-5, style


def test_glasses_ride_rigidly_with_the_head(head, worn, model):
    """Head turn + neck + open jaw + a strong expression: the jaw and lids move, the glasses do not bend."""
    n0 = head.num_splats
    md = copy.deepcopy(model).double()  # (Module.double() works in place)
    rest = md.zero_params().to(torch.float64)
    posed = md.zero_params().to(torch.float64)
    posed.rotation[0] = torch.tensor([0.2, 0.6, 0.1], dtype=torch.float64)
    posed.neck[0] = torch.tensor([0.1, -0.25, 0.05], dtype=torch.float64)
    posed.jaw[0, 0] = 0.35
    posed.expr[0] = torch.linspace(-2.0, 2.0, model.n_expr, dtype=torch.float64)
    posed.translation[0] = torch.tensor([0.01, 0.02, -0.5], dtype=torch.float64)
    v0, v1 = md(rest, landmark_set=None).vertices, md(posed, landmark_set=None).vertices
    av = worn["cat-eye"].to(dtype=torch.float64)
    w0 = bind(av, v0, md.faces).means[0, n0::5]
    w1 = bind(av, v1, md.faces).means[0, n0::5]
    d0, d1 = torch.cdist(w0, w0), torch.cdist(w1, w1)
    far = d0 > 0.001
    assert ((d1 - d0).abs()[far] / d0[far]).max() < 0.01
    assert (d1 - d0).abs().max() < 2e-5  # metres, over the whole frame
    assert (w1 - w0).norm(dim=-1).min() > 0.05  # ... while they do move with the head
    # the jaw moved relative to the head: compare the chin to the glasses' own motion
    lip = model.vertex_region == model.region_names.index("lower_lip")
    R = torch.linalg.svd((w1 - w1.mean(0)).T @ (w0 - w0.mean(0)))  # best rigid fit of the glasses' motion
    rot = R.U @ R.Vh
    rigid_lip = (v0[0, lip] - w0.mean(0)) @ rot.T + w1.mean(0)
    assert (v1[0, lip] - rigid_lip).norm(dim=-1).mean() > 0.005
    # only rigid triangles of forehead/scalp/nose/ears carry glasses
    bound = torch.unique(av.binding[n0:])
    assert rigid_faces(model)[bound].all()
    regions = {model.region_names[r] for r in torch.unique(model.vertex_region[model.faces[bound]]).tolist()}
    assert regions <= {"skin", "scalp", "nose", "left_ear", "right_ear"}


def test_fitting_does_not_depend_on_the_rest_pose(model):
    """The same identity fitted in a turned, moved rest pose gives the same glasses, moved rigidly."""
    gen = torch.Generator().manual_seed(0)
    p = model.zero_params()
    p.shape[0] = 1.5 * torch.randn(model.n_shape, generator=gen)
    turned = p.replace(rotation=torch.tensor([[0.1, 0.4, -0.05]]), translation=torch.tensor([[0.02, -0.01, -0.4]]))
    a = glasses_splats(model, style="sunglasses", rest_params=p).means
    b = glasses_splats(model, style="sunglasses", rest_params=turned).means
    assert len(a) == len(b)
    assert (torch.cdist(a[::7], a[::7]) - torch.cdist(b[::7], b[::7])).abs().max() < 1e-6
    assert (a - b).norm(dim=-1).max() > 0.02  # it did move


def test_torso_sheet_and_models_without_mediapipe(model):
    """A head with a torso sheet binds the glasses to head triangles only; without the mediapipe
    embedding the pupils come from the eyeball joints and the glasses land within a few millimetres."""
    from dynavatar.flame.torso import torso_sheet

    neck = torch.nonzero(model.vertex_region == model.region_names.index("neck")).squeeze(-1)
    sv, sf = torso_sheet(model(model.zero_params(), landmark_set=None).vertices, neck)
    with_torso = model.with_torso(sv, sf)
    av = GaussianAvatar.init_on_mesh(with_torso.faces.shape[0], 1)
    out = add_glasses(av, with_torso, style="round")
    assert (out.binding[av.num_splats:] < model.n_head_faces).all()
    verts = with_torso(with_torso.zero_params(), landmark_set=None).vertices
    ref = glasses_splats(model, style="round").means
    assert (bind(out, verts, with_torso.faces).means[0, av.num_splats:].double() - ref).abs().max() < 1e-5
    bare = copy.copy(model)
    bare.landmark_sets = ("ibug68",)
    g, g_ref = glasses_splats(bare, style="round"), glasses_splats(model, style="round")
    for part in range(len(PART_NAMES)):  # each part's centre moves by millimetres at most
        a, b = g.means[g.part == part].mean(0), g_ref.means[g_ref.part == part].mean(0)
        assert (a - b).norm() < 0.004, PART_NAMES[part]


def _in_front_of_face(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per point [N, 3]: its height above the frontmost mesh surface along +z (inf where no triangle
    lies behind it), by brute force: barycentric coordinates in x-y against every triangle.  -> [N]"""
    tri = verts[faces]  # [F, 3, 3]
    near = ((tri[..., :2].max(1) >= points[:, :2].min(0)) & (tri[..., :2].min(1) <= points[:, :2].max(0))).all(-1)
    a, b, c = (tri[near, i] for i in range(3))
    m = np.stack([b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]], -1)  # [F, 2, 2]
    ok = np.abs(np.linalg.det(m)) > 1e-14
    a, b, c, inv = a[ok], b[ok], c[ok], np.linalg.inv(m[ok])
    lam = np.einsum("fij,nfj->nfi", inv, points[:, None, :2] - a[None, :, :2])  # [N, F, 2]
    inside = (lam >= 0).all(-1) & (lam.sum(-1) <= 1)
    z = a[None, :, 2] + lam[..., 0] * (b[:, 2] - a[:, 2]) + lam[..., 1] * (c[:, 2] - a[:, 2])  # [N, F]
    top = np.where(inside, z, -np.inf).max(-1)
    return points[:, 2] - top


@pytest.mark.parametrize("shape_seed", [None, 0])
def test_rims_surround_the_eyes_and_temples_reach_the_ears(model, shape_seed):
    """Default head (all styles) and a far-from-average identity (2 sigma on every shape component)."""
    rest = model.zero_params()
    styles = GLASSES_STYLES
    if shape_seed is not None:
        rest.shape[0] = 2.0 * torch.randn(model.n_shape, generator=torch.Generator().manual_seed(shape_seed))
        styles = ("round", "aviator")
    out = model(rest)
    lmk, verts = out.landmarks[0].double(), out.vertices[0].double().numpy()
    cam = _camera(0.0, 512)
    irises = {"right": lmk[468], "left": lmk[473]}
    ears = _ear_tops(model, verts)
    for style in styles:
        g = glasses_splats(model, style=style, rest_params=rest)
        for side, other in (("right", "left"), ("left", "right")):
            rim = _centre_curve(g, f"{side}_rim")
            uv, _ = project_points(torch.from_numpy(rim)[None], cam.viewmats.double(), cam.Ks.double())
            iris_uv, _ = project_points(torch.stack([irises[side], irises[other]])[None], cam.viewmats.double(),
                                        cam.Ks.double())
            assert _inside(iris_uv[0, 0].numpy(), uv[0].numpy()), (style, side)
            assert not _inside(iris_uv[0, 1].numpy(), uv[0].numpy()), (style, side)
            # in front of the eye at a plausible distance, never inside the face
            gap = rim[:, 2].min() - float(irises[side][2])
            assert 0.010 < gap < 0.045, (style, side, gap)
            assert _in_front_of_face(rim[::8], verts, model.faces.numpy()).min() > 0.001, (style, side)
            temple = _centre_curve(g, f"{side}_temple")
            assert np.linalg.norm(temple[-1] - ears[side]) < 0.015, (style, side)
            assert np.sign(temple[-1, 0]) == np.sign(ears[side][0])


# ------------------------------------------------------------------------------------ rendering
def _box(model: FlameModel, yaw: float) -> tuple[slice, slice]:
    """Image box of the eyes + brows + ears band, dilated by half an inter-pupil distance."""
    out = model(model.zero_params())
    lmk = out.landmarks[0]
    idx = [i for k in ("right_eye", "left_eye", "right_brow", "left_brow") for i in FACE_MESH_POLYGONS[k]] + [168]
    ears = torch.isin(model.vertex_region, torch.tensor([model.region_names.index("left_ear"),
                                                         model.region_names.index("right_ear")]))
    pts = torch.cat([lmk[idx], out.vertices[0, ears], lmk[[468, 473]]])
    cam = _camera(yaw)
    uv = project_points(pts[None], cam.viewmats, cam.Ks)[0][0]
    ipd = float(cam.Ks[0, 0, 0]) * 0.064 / 0.6  # pixels per inter-pupil distance at the head
    lo, hi = uv.amin(0) - ipd / 2, uv.amax(0) + ipd / 2
    return (slice(max(int(lo[1]), 0), int(hi[1]) + 1), slice(max(int(lo[0]), 0), int(hi[0]) + 1))


@pytest.mark.parametrize("yaw", [0.0, TURN])
def test_only_the_eye_band_changes_and_rims_show(renders, model, yaw):
    rows, cols = _box(model, yaw)
    before = renders[None, yaw]
    iris = model(model.zero_params()).landmarks[0, [468, 473]]
    cam = _camera(yaw)
    iris_uv = project_points(iris[None], cam.viewmats, cam.Ks)[0][0].numpy()
    for style in GLASSES_STYLES:
        after = renders[style, yaw]
        changed = np.abs(after - before).max(-1) > 0.03  # [H, W]
        outside = changed.copy()
        outside[rows, cols] = False
        assert outside.sum() < 0.005 * RES * RES, (style, yaw, outside.sum())
        assert changed[rows, cols].sum() > 100, style
        lum_b, lum_a = before.mean(-1), after.mean(-1)
        dark = (lum_a < lum_b - 0.15) & (lum_a < 0.35)  # frame pixels (dark colour) added
        vv, uu = np.mgrid[:RES, :RES]
        for u, v in iris_uv:  # around each eye, within ~ one lens width
            near = (np.abs(uu - u) < 0.45 * (iris_uv[1, 0] - iris_uv[0, 0]) + 2) & (np.abs(vv - v) < 12)
            assert (dark & near).sum() >= 12, (style, yaw, (dark & near).sum())


def test_turned_other_way(head, model):
    """The other turn (-0.5 rad), one style: the same band rule."""
    av = add_glasses(head, model, style="round", thickness=1.5)
    before, after = _render(head, model, -TURN), _render(av, model, -TURN)
    rows, cols = _box(model, -TURN)
    changed = np.abs(after - before).max(-1) > 0.03
    changed[rows, cols] = False
    assert changed.sum() < 0.005 * RES * RES
    assert (np.abs(after - before).max(-1) > 0.2).sum() > 50


def test_lens_opacity_is_what_was_asked(model):
    """The lenses alone, rendered flat on: their coverage in the lens middle matches lens_opacity."""
    for style, want in (("round", 0.12), ("sunglasses", 0.85), ("rectangular", 0.5)):
        g = glasses_splats(model, style=style, lens_opacity=want)
        lens = g.part == PART_NAMES.index("left_lens")
        centre = g.means[lens].mean(0).float()
        cam = Cameras.look_at(centre + torch.tensor([0.0, 0.0, 0.3]), centre, 48, 48, fov_y_deg=2.0)
        from dynavatar.geometry.rotations import matrix_to_quaternion
        world = WorldGaussians(g.means[lens].float()[None], matrix_to_quaternion(g.rotations[lens]).float()[None],
                               g.scales[lens].float()[None], g.opacity[lens].float(), g.rgb[lens].float())
        alpha = TorchRenderer().render(world, cam).alpha[0, ..., 0]
        assert abs(float(alpha[12:36, 12:36].mean()) - want) < 0.04, (style, float(alpha.mean()))


def test_picture_of_all_styles(renders, test_output_dir):
    """glasses_styles.png: columns = no glasses, then each style; rows = frontal, turned 0.5 rad."""
    rows = [np.concatenate([renders[s, yaw] for s in (None,) + GLASSES_STYLES], 1) for yaw in (0.0, TURN)]
    img = (np.concatenate(rows, 0) * 255).round().astype(np.uint8)
    iio.imwrite(test_output_dir / "glasses_styles.png", img)
    assert img.shape == (2 * RES, 6 * RES, 3)


# ------------------------------------------------------------------------------------ avatar, options
def test_input_untouched_labels_and_widths(head, worn, model):
    snapshot = {k: v.clone() for k, v in vars(head).items() if isinstance(v, torch.Tensor)}
    av = add_glasses(head, model, style="rectangular", colour=(0.8, 0.1, 0.1))
    for k, v in snapshot.items():
        assert torch.equal(getattr(head, k), v), k
    n0 = head.num_splats
    assert av.num_splats > n0 and torch.equal(av.means_local[:n0], head.means_local)
    assert av.means_local.data_ptr() != head.means_local.data_ptr()
    new = av.labels[n0:]
    assert (new.argmax(-1) == label_index("eyeglasses")).all() and torch.equal(new.sum(-1), torch.ones(len(new)))
    # frame splats carry the asked colour (shading varies it around that hue)
    rgb = 0.5 + 0.28209479177387814 * av.sh[n0:, 0]
    assert (rgb[:, 0] > rgb[:, 1] + 0.2).float().mean() > 0.5
    for width, degree in ((0, 0), (3, 1)):
        plain = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, num_labels=width, sh_degree=degree)
        out = add_glasses(plain, model, style="aviator")
        assert out.labels.shape[1] == width and out.sh_degree == degree
        assert not out.labels[plain.num_splats:].any() and not out.sh[plain.num_splats:, 1:].any()
    assert all(w.num_splats > n0 + 2000 for w in worn.values())


def test_bad_options_raise_one_line_errors(head, model):
    for kw in (dict(style="monocle"), dict(thickness=0), dict(colour=(1.2, 0, 0)), dict(colour="red"),
               dict(lens_tint=(0, 0)), dict(lens_opacity=1.5)):
        with pytest.raises(ConfigError) as err:
            add_glasses(head, model, **kw)
        assert "\n" not in str(err.value)
    small = GaussianAvatar.init_on_mesh(10, 1)
    small.binding[:] = model.faces.shape[0] + 5
    with pytest.raises(ConfigError, match="head model"):
        add_glasses(small, model)
    # spellings of a style
    a = glasses_splats(model, style="Cat Eye").means
    assert torch.equal(a, glasses_splats(model, style="cat-eye").means)


@pytest.mark.parametrize("text, style, colour, thickness, tint", [
    ("add round glasses", "round", (0.06, 0.06, 0.07), 1.0, None),
    ("thick black rectangular glasses", "rectangular", "black", 1.6, None),
    ("red cat-eye glasses", "cat-eye", "red", 1.0, None),
    ("give him gold aviator sunglasses", "aviator", "gold", 0.75, "dark"),
    ("add sunglasses", "sunglasses", (0.06, 0.06, 0.07), 1.0, "dark"),
    ("thin silver square glasses", "rectangular", "silver", 0.6, None),
    ("tortoiseshell glasses", "round", "brown", 1.0, None),
    ("glasses with blue lenses", "round", (0.06, 0.06, 0.07), 1.0, "blue"),
    ("red hair and round glasses", "round", (0.06, 0.06, 0.07), 1.0, None),
])
def test_glasses_request_reads_the_words(text, style, colour, thickness, tint):
    from dynavatar.edit.prompt.colour_names import COLOURS

    names = {**COLOURS, "brown": (0.36, 0.21, 0.10), "dark": (0.04, 0.04, 0.05)}
    for source in (text, RuleRefiner().refine(text)):
        req = glasses_request(source)
        assert req["style"] == style and req["thickness"] == thickness, (source, req)
        want = names[colour] if isinstance(colour, str) else colour
        assert np.allclose(req["colour"], want, atol=0.06), (source, req)
        if tint is None:
            assert req["lens_tint"] is None
        else:
            assert np.allclose(req["lens_tint"], names[tint], atol=0.06), (source, req)
        assert (req["lens_opacity"] == 0.85) == (tint == "dark")


def test_request_feeds_add_glasses(model):
    plan = EditPlan(prompt="make it chunky red sunglasses", kind="accessory", regions=["eyeglasses"],
                    instruction="add chunky red sunglasses")
    req = glasses_request(plan)
    assert req["style"] == "sunglasses" and req["thickness"] == 2.0
    g = glasses_splats(model, **req)
    lens = g.part == PART_NAMES.index("left_lens")
    assert float(g.rgb[lens].mean()) < 0.15 and float(g.rgb[~lens & (g.part <= 1), 0].mean()) > 0.5


def test_avatar_edit_builds_glasses_offline_and_keeps_the_original():
    """"add round glasses" through the public API: no weights, new splats labelled eyeglasses, the
    original avatar untouched, the record says the geometry editor ran."""
    from dynavatar.api import Avatar
    from dynavatar.errors import DynavatarError
    from dynavatar.gaussians.avatar import GaussianAvatar
    from dynavatar.geometry.cameras import Cameras
    from dynavatar.geometry.labels import NUM_LABELS

    head = FlameModel.load()
    g = GaussianAvatar.init_on_mesh(head.faces.shape[0], 1, init_scale=0.6, init_opacity=0.9,
                                    generator=torch.Generator().manual_seed(1))
    g.labels = torch.softmax(torch.randn(g.num_splats, NUM_LABELS, generator=torch.Generator().manual_seed(2)), 1)
    cams = Cameras.orbit(2, radius=0.6, azimuth_range_deg=(-20, 20), width=32, height=32, fov_y_deg=25.0)
    avatar = Avatar(g, head, head.zero_params(2), cams, {}, None)
    before = g.means_local.clone()
    with_glasses = avatar.edit("add round glasses", progress=False)
    added = with_glasses.gaussians.num_splats - g.num_splats
    assert added > 100 and torch.equal(avatar.gaussians.means_local, before)
    assert (with_glasses.gaussians.labels[-added:].argmax(1) == label_index("eyeglasses")).all()
    assert with_glasses.meta["edits"][-1]["editor"] == "geometry"
    with pytest.raises(DynavatarError, match="glasses only"):
        avatar.edit("red hair", editor="geometry", progress=False)
