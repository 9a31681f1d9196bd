"""Carrying the default head's landmark embeddings and vertex regions onto other head models:
exact closest points, registration onto a remeshed and deformed copy of the default head (where the
right answer is known), and the embedding cache that ``FlameModel.load`` uses."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from dynavatar.cli import main
from dynavatar.flame import FlameModel, FlameParams, read_flame_file, write_flame_npz
from dynavatar.flame import transfer as T
from dynavatar.geometry.closest_point import closest_point_on_mesh, closest_point_on_triangles
from dynavatar.geometry.mesh import face_normals
from dynavatar.geometry.registration import register_mesh
from dynavatar.flame.resolve import default_head_path
from flame_fixtures import ellipsoid_head, synthetic_flame_arrays, write_plain_pickle


# ============================================================================ closest points
def _reference_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Independent brute force over all triangles: the projection onto the plane when it falls
    inside the triangle, else the nearest of the three clamped segment projections."""
    a, b, c = (verts[faces[:, k]] for k in range(3))  # [F, 3] each
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    out = np.empty(len(points))
    for i, x in enumerate(points):
        proj = x - ((x - a) * n).sum(1, keepdims=True) * n
        inside = np.ones(len(a), dtype=bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= (np.cross(v - u, proj - u) * n).sum(1) >= 0
        best = np.where(inside, np.linalg.norm(proj - x, axis=1), np.inf)
        for u, v in ((a, b), (b, c), (c, a)):
            t = np.clip(((x - u) * (v - u)).sum(1) / ((v - u) ** 2).sum(1), 0, 1)
            best = np.minimum(best, np.linalg.norm(u + t[:, None] * (v - u) - x, axis=1))
        out[i] = best.min()
    return out


def _points_in_every_region(tri: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """For each triangle [T,3,3]: one query point in each of its 7 Voronoi regions (off the plane),
    and the barycentrics of its closest point on that triangle [T*7, 3]."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    n = unit(np.cross(b - a, c - a))
    h = rng.uniform(-0.02, 0.02, size=(len(tri), 1)) * n
    pts, bary = [], []
    w = rng.dirichlet(np.ones(3), len(tri))
    pts.append((w[:, :, None] * tri).sum(1) + h)
    bary.append(w)  # face region
    verts = (a, b, c)
    for k in range(3):  # vertex regions: out along the bisector of the two edges
        p, q, r = verts[k], verts[(k + 1) % 3], verts[(k + 2) % 3]
        pts.append(p - 0.01 * unit(unit(q - p) + unit(r - p)) + h)
        bary.append(np.eye(3)[[k] * len(tri)])
    for k in range(3):  # edge regions: out of the midpoint, perpendicular to the edge, in the plane
        p, q, r = verts[k], verts[(k + 1) % 3], verts[(k + 2) % 3]
        out = unit(np.cross(q - p, n))
        out *= np.sign(((out * (p - r)).sum(1)))[:, None]  # away from the third vertex
        pts.append(0.5 * (p + q) + 0.01 * out + h)
        e = np.zeros((len(tri), 3))
        e[:, k], e[:, (k + 1) % 3] = 0.5, 0.5
        bary.append(e)
    return np.concatenate(pts), np.concatenate(bary)


def test_point_triangle_regions_are_exact():
    rng = np.random.default_rng(0)
    tri = rng.normal(size=(300, 3, 3))
    tri = tri[np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) > 0.5]
    pts, expected = _points_in_every_region(tri, rng)
    tri7 = np.concatenate([tri] * 7)
    bary = closest_point_on_triangles(pts, tri7[:, 0], tri7[:, 1], tri7[:, 2])
    np.testing.assert_allclose(bary, expected, atol=1e-9)  # face, 3 vertex and 3 edge regions
    got = (bary[:, :, None] * tri7).sum(1)
    ref = np.array([_reference_distance(p[None], t, np.array([[0, 1, 2]]))[0] for p, t in zip(pts, tri7)])
    np.testing.assert_allclose(np.linalg.norm(got - pts, axis=1), ref, atol=1e-12)
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1)


@pytest.mark.parametrize("mesh", ["default_head", "random_soup"])
def test_closest_point_on_mesh_matches_brute_force(mesh):
    rng = np.random.default_rng(1)
    if mesh == "default_head":
        z = np.load(default_head_path())
        verts, faces = z["v_template"].astype(np.float64), z["f"]
        pts = verts[rng.choice(len(verts), 300)] + rng.normal(scale=0.006, size=(300, 3))
        sub = faces[rng.choice(len(faces), 60, replace=False)]  # plus points in every region of some triangles
        pts = np.concatenate([pts, _points_in_every_region(verts[sub], rng)[0]])
    else:  # triangle soup with wildly different sizes (the large-triangle path), far points too
        verts = rng.normal(size=(150, 3)) * rng.choice([0.05, 1.0], size=(150, 1))
        faces = np.stack([rng.choice(150, 3, replace=False) for _ in range(120)])
        pts = rng.normal(size=(400, 3)) * 1.5
    face_idx, bary = closest_point_on_mesh(pts, verts, faces)
    assert face_idx.dtype == np.int64 and (face_idx >= 0).all()
    assert (bary >= 0).all() and np.allclose(bary.sum(1), 1)
    got = np.linalg.norm((verts[faces[face_idx]] * bary[:, :, None]).sum(1) - pts, axis=1)
    np.testing.assert_allclose(got, _reference_distance(pts, verts, faces), atol=1e-12)


def test_closest_point_options_and_torch():
    rng = np.random.default_rng(2)
    z = np.load(default_head_path())
    verts, faces = z["v_template"].astype(np.float64), z["f"]
    pts = verts[rng.choice(len(verts), 200)] + rng.normal(scale=0.003, size=(200, 3))
    allowed = np.zeros(len(faces), dtype=bool)
    allowed[: len(faces) // 2] = True
    f, b = closest_point_on_mesh(pts, verts, faces, allowed_faces=allowed)
    assert allowed[f].all()
    np.testing.assert_allclose(np.linalg.norm((verts[faces[f]] * b[:, :, None]).sum(1) - pts, axis=1),
                               _reference_distance(pts, verts, faces[allowed]), atol=1e-12)
    f, b = closest_point_on_mesh(pts, verts, faces, max_distance=1e-4)
    d = _reference_distance(pts, verts, faces)
    assert ((f < 0) == (d > 1e-4)).all() and np.isnan(b[f < 0]).all()
    up = np.tile([0.0, 1.0, 0.0], (len(pts), 1))
    f, b = closest_point_on_mesh(pts, verts, faces, normals=up, min_cos=0.5)
    fn, _ = face_normals(verts, faces)
    assert (fn[f] @ np.array([0.0, 1.0, 0.0]) >= 0.5).all()
    ft, bt = closest_point_on_mesh(torch.tensor(pts, dtype=torch.float32), torch.tensor(verts), torch.tensor(faces))
    assert ft.dtype == torch.long and bt.dtype == torch.float32 and bt.shape == (200, 3)


# ============================================================================ registration
def _smooth_deformation(x: np.ndarray, chin: np.ndarray) -> np.ndarray:
    """A wider skull, a 4 mm bulge at the jaw, then x1.1, a 5 degree rotation and a translation."""
    out = x.copy()
    out[:, 0] *= 1 + 0.06 / (1 + np.exp(-(x[:, 1] - 0.03) / 0.02))
    bump = 0.004 * np.exp(-((x - chin) ** 2).sum(1) / (2 * 0.025**2))
    out += bump[:, None] * x / np.linalg.norm(x, axis=1, keepdims=True)
    rot = Rotation.from_euler("xyz", [4, -3, 2], degrees=True).as_matrix()
    return 1.1 * out @ rot.T + np.array([0.01, -0.02, 0.015])


def _remesh(v: np.ndarray, f: np.ndarray, drop: np.ndarray, rng, frac: float = 0.15):
    """Another topology for the same surface: drop some faces, split 15 % of the rest at their
    centroid (1 -> 3), drop unused vertices, permute vertices and faces. Returns vertices, faces,
    and for each new vertex the original vertices it lies between (for ground-truth regions)."""
    f = f[~drop]
    split = rng.random(len(f)) < frac
    new_ids = len(v) + np.arange(split.sum())
    a, b, c = f[split].T
    faces = np.concatenate([f[~split], np.stack([a, b, new_ids], 1), np.stack([b, c, new_ids], 1),
                            np.stack([c, a, new_ids], 1)])
    verts = np.concatenate([v, v[f[split]].mean(1)])
    origin = [np.array([i]) for i in range(len(v))] + list(f[split])
    old = np.unique(faces)[rng.permutation(len(np.unique(faces)))]  # new index -> old index
    inv = np.full(len(verts), -1)
    inv[old] = np.arange(len(old))
    return verts[old], inv[faces][rng.permutation(len(faces))], [origin[o] for o in old]


@pytest.fixture(scope="module")
def default_data():
    return read_flame_file(default_head_path())


def test_transfer_onto_remeshed_deformed_default_head(default_data):
    """The user model is the default head, remeshed (other vertex count, order and triangles),
    without its mouth bag (FLAME has none), deformed smoothly: the transferred landmarks must land
    on the analytically deformed ones, and regions must match."""
    ref = default_data
    v, f = ref.v_template, ref.faces
    lf, lb = ref.landmarks["ibug68"]
    chin = (v[f[lf[8]]] * lb[8][:, None]).sum(0)
    mouth = ref.region_names.index("mouth_interior")
    uv, uf, origin = _remesh(v, f, (ref.vertex_region[f] == mouth).all(1), np.random.default_rng(0))
    uv = _smooth_deformation(uv, chin)
    user = dataclasses.replace(ref, v_template=uv, faces=uf, landmarks={}, vertex_region=None, region_names=None,
                               shapedirs=np.zeros((len(uv), 3, 1)), posedirs=np.zeros((len(uv), 3, 36)),
                               J_regressor=np.full((5, len(uv)), 1 / len(uv)), weights=np.ones((len(uv), 5)) / 5,
                               n_shape_total=1, n_expr_total=0)
    assert len(uv) != len(v)
    t0 = time.perf_counter()
    emb = T.transfer_embedding(ref, user)
    seconds = time.perf_counter() - t0
    for name, (lf0, lb0) in ref.landmarks.items():
        truth = _smooth_deformation((v[f[lf0]] * lb0[:, :, None]).sum(1), chin)
        lf1, lb1 = emb["landmarks"][name]
        assert lf1.shape == lf0.shape and (lb1 >= 0).all() and np.allclose(lb1.sum(1), 1)
        err = 1e3 * np.linalg.norm((uv[uf[lf1]] * lb1[:, :, None]).sum(1) - truth, axis=1)
        print(f"{name}: landmark error {err.mean():.2f} mm mean, {err.max():.2f} mm max ({seconds:.1f}s)")
        assert err.mean() < 2.0 and err.max() < 6.0, (name, err.mean(), err.max())
    ok = np.array([emb["vertex_region"][i] in set(ref.vertex_region[o]) for i, o in enumerate(origin)])
    print(f"regions agree on {100 * ok.mean():.2f} % of vertices; diagnostics {emb['diagnostics']}")
    assert ok.mean() > 0.95 and emb["region_names"] == ref.region_names
    d = emb["diagnostics"]
    assert d["registration_mean_mm"] < 0.5 and abs(d["similarity_scale"] - 1.1) < 0.02


def test_register_mesh_with_landmarks_from_a_quarter_turn():
    """Landmark pairs start the similarity where ICP from the identity could not (90 degrees)."""
    head = ellipsoid_head(n_lat=30, n_lon=36)
    v, f = head.v_template, head.faces
    rot = Rotation.from_euler("y", 90, degrees=True).as_matrix()
    bulge = v + 0.005 * np.exp(-((v - v[100]) ** 2).sum(1) / (2 * 0.03**2))[:, None] * v / np.linalg.norm(v, axis=1,
                                                                                                        keepdims=True)
    target = 1.2 * bulge @ rot.T + np.array([0.05, 0.0, -0.02])
    ids = np.random.default_rng(3).choice(len(v), 16, replace=False)
    reg = register_mesh(torch.tensor(v), torch.tensor(f), target, f, landmarks_src=ids, landmarks_dst=target[ids])
    err = 1e3 * np.linalg.norm(reg - target, axis=1)
    print(f"quarter turn with landmarks: vertex error {err.mean():.2f} mm mean, {err.max():.2f} mm max")
    assert reg.shape == v.shape and err.mean() < 1.0


# ============================================================================ cache and loading
def _user_like(n_lat: int = 36, n_lon: int = 40):
    """A FLAME-format head (1440 vertices) without our landmarks or regions, like a user's file."""
    return dataclasses.replace(ellipsoid_head(n_lat=n_lat, n_lon=n_lon), landmarks={})


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    """A converted user model and its embedding, computed once for real (the other tests fake it)."""
    d = tmp_path_factory.mktemp("user")
    path = write_flame_npz(_user_like(), d / "user_flame.npz")
    data = T.ensure_embedding(path)
    return path, data


def _fake_transfer(data, calls: list):
    """A stand-in for transfer_embedding that returns ``data``'s (valid) embedding and counts calls."""
    def fake(reference, user, **_):
        calls.append(1)
        return {"landmarks": dict(data.landmarks), "vertex_region": data.vertex_region,
                "region_names": list(data.region_names), "diagnostics": dict(data.meta["embedding"]["diagnostics"])}
    return fake


def test_embedding_is_cached_then_reused(user_file, monkeypatch, caplog):
    path, data = user_file
    cache = T.embedding_cache_path(path)
    assert cache.name == "user_flame.dynavatar-embedding.npz" and cache.is_file()
    assert data.meta["embedding"]["source"] == "computed" and data.meta["embedding"]["cache"] == str(cache)
    assert "mediapipe" in data.landmarks and "ibug68" in data.landmarks and len(data.region_names) == 13
    monkeypatch.setattr(T, "transfer_embedding", lambda *a, **k: pytest.fail("recomputed despite a valid cache"))
    with caplog.at_level(logging.INFO, logger="dynavatar.flame"):
        again = T.ensure_embedding(path)
    assert again.meta["embedding"]["source"] == "cache" and "loaded from" in caplog.text
    for name, (lf, lb) in data.landmarks.items():
        np.testing.assert_array_equal(again.landmarks[name][0], lf)
        np.testing.assert_allclose(again.landmarks[name][1], lb)
    np.testing.assert_array_equal(again.vertex_region, data.vertex_region)


def _tamper(cache, kind: str) -> None:
    if kind == "garbage":
        cache.write_bytes(b"PK\x03\x04 not really a zip")
        return
    with np.load(cache) as z:
        raw = {k: z[k] for k in z.files}
    if kind == "key":
        raw["key"] = np.array("0" * 64)
    elif kind == "nan":
        raw["lmk_mediapipe_bary"][5, 1] = np.nan
    elif kind == "face_index":
        raw["lmk_mediapipe_faces"][7] = 10**6
    elif kind == "region":
        raw["vertex_region"][3] = 99
    np.savez(cache, **raw)


@pytest.mark.parametrize("kind", ["key", "nan", "face_index", "region", "garbage"])
def test_bad_cache_is_ignored_and_recomputed(user_file, tmp_path, monkeypatch, caplog, kind):
    path, data = user_file
    for p in (path, T.embedding_cache_path(path)):
        shutil.copy(p, tmp_path / p.name)
    cache = T.embedding_cache_path(tmp_path / path.name)
    _tamper(cache, kind)
    calls: list = []
    monkeypatch.setattr(T, "transfer_embedding", _fake_transfer(data, calls))
    with caplog.at_level(logging.WARNING, logger="dynavatar.flame"):
        out = T.ensure_embedding(tmp_path / path.name)
    assert calls == [1] and "ignoring embedding cache" in caplog.text
    assert out.meta["embedding"]["source"] == "computed"
    fresh = T._load_cache(cache, T.embedding_key(out, T._default_reference()), out, T._default_reference())
    np.testing.assert_array_equal(fresh["vertex_region"], data.vertex_region)


def test_unwritable_folder_keeps_embedding_in_memory(user_file, tmp_path, monkeypatch, caplog):
    path, data = user_file
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    calls: list = []
    monkeypatch.setattr(T, "transfer_embedding", _fake_transfer(data, calls))
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):  # running as root: permissions do not stop us, so simulate them
            import dynavatar.io.atomic as atomic

            def refuse(*_a, **_k):
                raise PermissionError(13, "Permission denied", str(folder))
            monkeypatch.setattr(atomic, "atomic_path", refuse)
        with caplog.at_level(logging.WARNING, logger="dynavatar.flame"):
            out = T.ensure_embedding(folder / path.name)
    finally:
        os.chmod(folder, 0o755)
    assert calls == [1] and "cannot write the embedding cache" in caplog.text
    assert "mediapipe" in out.landmarks and out.meta["embedding"]["cache"] is None
    assert not T.embedding_cache_path(folder / path.name).exists()
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary files left behind


def test_flame_model_load_gets_mediapipe_landmarks_and_regions(user_file):
    path, data = user_file
    model = FlameModel.load(path)
    assert "mediapipe" in model.landmark_sets and "ibug68" in model.landmark_sets
    assert model.region_names == data.region_names and model.vertex_region.shape == (data.n_vertices,)
    assert model.meta["embedding"]["source"] == "cache"
    out = model(FlameParams.zeros(2, model.n_shape, model.n_expr))
    assert out.landmarks.shape == (2, 478, 3) and torch.isfinite(out.landmarks).all()
    assert model(model.zero_params(), landmark_set="ibug68").landmarks.shape == (1, 68, 3)
    plain = FlameModel.load(path, embed=False)
    assert plain.landmark_sets == () and plain.region_names is None


def test_own_landmarks_win_and_small_models_are_left_alone(user_file, tmp_path, monkeypatch):
    path, data = user_file
    calls: list = []
    monkeypatch.setattr(T, "transfer_embedding", _fake_transfer(data, calls))
    own = ellipsoid_head(n_lat=36, n_lon=40)  # has its own mediapipe embedding, no regions
    out = T.ensure_embedding(own, path=tmp_path / "own.npz")
    np.testing.assert_array_equal(out.landmarks["mediapipe"][0], own.landmarks["mediapipe"][0])
    assert out.vertex_region is not None and "ibug68" in out.landmarks and calls == [1]
    small = write_plain_pickle(tmp_path / "generic_model.pkl", synthetic_flame_arrays())  # 64 vertices
    model = FlameModel.load(small)
    assert model.landmark_sets == () and calls == [1]
    assert not T.embedding_cache_path(small).exists()


def test_cli_convert_computes_and_caches_the_embedding(user_file, tmp_path, monkeypatch):
    path, data = user_file
    calls: list = []
    monkeypatch.setattr(T, "transfer_embedding", _fake_transfer(data, calls))
    head = _user_like()
    n = head.n_vertices
    pkl = write_plain_pickle(tmp_path / "flame2023.pkl", {
        "v_template": head.v_template, "f": head.faces.astype(np.uint32),
        "shapedirs": np.concatenate([head.shapedirs, np.zeros((n, 3, 400 - head.shapedirs.shape[2]))], 2),
        "posedirs": head.posedirs, "J_regressor": head.J_regressor, "weights": head.weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])})
    result = CliRunner().invoke(main, ["flame", "convert", str(pkl), str(tmp_path / "user.npz")])
    assert result.exit_code == 0, result.output
    assert "landmark embedding + regions" in result.output and "mm mean" in result.output
    assert calls == [1] and T.embedding_cache_path(tmp_path / "user.npz").is_file()
    model = FlameModel.load(tmp_path / "user.npz")  # the .pkl's float64 and the .npz's float32 share the key
    assert calls == [1] and model.meta["embedding"]["source"] == "cache"
