"""Tests of the embedded default head (assets/flame/default_head.npz), through the public FLAME API."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynavatar.flame import FlameModel, FlameParams

ROOT = Path(__file__).resolve().parents[2]
ASSET = ROOT / "assets" / "flame" / "default_head.npz"
SCRIPT = ROOT / "assets" / "flame" / "build_default_head.py"
EYE_R = 0.012


@pytest.fixture(scope="module")
def model() -> FlameModel:
    return FlameModel.load(None)


@pytest.fixture(scope="module")
def raw() -> dict:
    with np.load(ASSET, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _builder():
    spec = importlib.util.spec_from_file_location("build_default_head", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_default_head"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(model, **fields):
    p = FlameParams.zeros(1, model.n_shape, model.n_expr)
    p = p.replace(**{k: torch.as_tensor(np.asarray(v, np.float32))[None] for k, v in fields.items()})
    with torch.no_grad():
        out = model(p)
    return out.vertices[0].numpy().astype(np.float64), out.landmarks[0].numpy().astype(np.float64)


def _expr(model, **coeffs):
    e = np.zeros(model.n_expr, np.float32)
    for k, c in coeffs.items():
        e[model.expr_names.index(k)] = c
    return e


def _components(f, n):
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for a, b, c in f:
        for u, w in ((a, b), (b, c)):
            ru, rw = find(u), find(w)
            if ru != rw:
                parent[ru] = rw
    roots = np.array([find(i) for i in range(n)])
    return roots


def test_loads_with_expected_content(model, raw):
    assert ASSET.stat().st_size < 10e6
    V = model.n_vertices
    assert 4000 <= V <= 6000
    assert raw["v_template"].dtype == np.float32 and raw["v_template"].shape == (V, 3)
    assert raw["f"].dtype == np.int64 and raw["f"].shape[1] == 3
    S, E = int(raw["n_shape_total"]), int(raw["n_expr_total"])
    assert S >= 50 and E >= 50
    assert raw["shapedirs"].shape == (V, 3, S + E)
    assert raw["posedirs"].shape == (V, 3, 36)
    assert raw["J_regressor"].shape == (5, V) and raw["weights"].shape == (V, 5)
    assert raw["kintree_table"].dtype == np.int64
    assert raw["kintree_table"][1].tolist() == [0, 1, 2, 3, 4]
    assert raw["kintree_table"][0, 1:].tolist() == [0, 1, 1, 1]
    assert raw["lmk_mediapipe_faces"].shape == (478,) and raw["lmk_mediapipe_bary"].shape == (478, 3)
    assert raw["lmk_ibug68_faces"].shape == (68,) and raw["lmk_ibug68_bary"].shape == (68, 3)
    for k, a in raw.items():
        if a.dtype.kind == "f":
            assert np.isfinite(a).all(), k
    np.testing.assert_allclose(raw["weights"].sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(raw["J_regressor"].sum(1), 1, atol=1e-5)
    assert (raw["weights"] >= 0).all() and (raw["J_regressor"] >= 0).all()
    assert model.region_names == ["skin", "scalp", "left_brow", "right_brow", "left_eye", "right_eye", "nose",
                                  "upper_lip", "lower_lip", "mouth_interior", "left_ear", "right_ear", "neck"]
    assert model.vertex_region.shape == (V,) and int(model.vertex_region.max()) == 12
    assert len(model.expr_names) == E
    assert model.faces.dtype == torch.long
    import json
    meta = json.loads(str(raw["meta"]))
    assert meta["name"] == "dynavatar-default-head" and meta["units"] == "m"
    assert meta["axes"] == "x-left y-up z-forward" and len(meta["generator_sha256"]) == 64
    out = model(FlameParams.zeros(2, model.n_shape, model.n_expr))
    assert out.vertices.shape == (2, V, 3) and out.joints.shape == (2, 5, 3)
    assert out.landmarks.shape == (2, 478, 3)
    assert model(FlameParams.zeros(1, model.n_shape, model.n_expr), landmark_set="ibug68").landmarks.shape == (1, 68, 3)


def test_proportions_and_joints(raw):
    v = raw["v_template"].astype(np.float64)
    reg = raw["vertex_region"]
    head = v[reg != 12]
    width = np.ptp(v[(v[:, 1] > -0.02) & (v[:, 1] < 0.01) & (v[:, 2] > 0.0), 0])
    assert 0.13 < width < 0.16
    chin = v[:, 1][(v[:, 2] > 0.06)].min()
    assert 0.21 < v[:, 1].max() - chin < 0.25
    assert chin - v[:, 1].min() > 0.09             # neck reaches ~0.1 m below the chin
    J = raw["J_regressor"] @ v
    assert J[3, 0] > 0.02 and J[4, 0] < -0.02       # left eye on +x
    assert abs(J[1, 0]) < 1e-3 and abs(J[2, 0]) < 1e-3
    assert J[2, 1] < J[3, 1] and J[2, 2] < J[3, 2]    # jaw hinge below and behind the eyes
    assert J[1, 1] < J[2, 1] and J[0, 1] < J[1, 1]
    assert head[:, 2].max() > 0.1                      # nose tip in front


def test_watertight_components(raw):
    v, f = raw["v_template"].astype(np.float64), raw["f"]
    roots = _components(f, len(v))
    comps = np.unique(roots)
    assert len(comps) == 3
    sizes = sorted((int((roots == r).sum()), r) for r in comps)
    for _, r in sizes:
        fc = f[roots[f[:, 0]] == r]
        e = np.concatenate([fc[:, [0, 1]], fc[:, [1, 2]], fc[:, [2, 0]]])
        # consistent orientation: each directed edge once, and its reverse present
        d = {tuple(x) for x in e.tolist()}
        assert len(d) == len(e)
        assert all((b, a) in d for a, b in d)
        und = np.unique(np.sort(e, 1), axis=0)
        nv = len(np.unique(fc))
        assert nv - len(und) + len(fc) == 2            # sphere topology
        a, b, c = v[fc[:, 0]], v[fc[:, 1]], v[fc[:, 2]]
        vol = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
        assert vol > 0
    # the two small components are the eyeballs, all in the eye regions
    for _, r in sizes[:2]:
        regs = np.unique(raw["vertex_region"][roots == r])
        assert len(regs) == 1 and regs[0] in (4, 5)


def test_jaw_opens_mouth(model, raw):
    reg = raw["vertex_region"]
    v0, l0 = _run(model)
    v1, l1 = _run(model, jaw=[0.3, 0, 0])
    d = np.linalg.norm(v1 - v0, axis=1)
    assert np.median(d[reg == 8]) > 0.008                       # lower lip moves
    assert d[reg == 1].max() < 1e-4 and d[(reg == 4) | (reg == 5)].max() < 1e-4
    assert np.median(d[reg == 7]) < 2e-3                        # upper lip still (corners are shared)
    gap0 = np.linalg.norm(l0[13] - l0[14])
    gap1 = np.linalg.norm(l1[13] - l1[14])
    assert gap0 < 0.003 and gap1 > 0.015


def test_eye_and_neck_rotation(model, raw):
    reg = raw["vertex_region"]
    kind_eye = (reg == 4) | (reg == 5)
    v0, _ = _run(model)
    v1, _ = _run(model, eyes=[0.2, 0.3, 0, 0.2, 0.3, 0])
    d = np.linalg.norm(v1 - v0, axis=1)
    moved = d > 1e-6
    assert moved.sum() > 100 and kind_eye[moved].all()
    v2, _ = _run(model, neck=[0.3, 0, 0])
    d2 = np.linalg.norm(v2 - v0, axis=1)
    assert d2[reg == 1].min() > 0.01                             # whole scalp moves
    base = v0[:, 1] < v0[:, 1].min() + 0.02
    assert d2[base].max() < 1e-4                                  # neck base stays


def test_blink_and_smile(model):
    _, l0 = _run(model)
    _, lb = _run(model, expr=_expr(model, blink_L=1.0, blink_R=1.0))
    for up, lo in ((386, 374), (159, 145), (385, 380), (160, 144), (387, 373), (158, 153)):
        assert np.linalg.norm(l0[up] - l0[lo]) > 0.004
        assert abs(lb[up, 1] - lb[lo, 1]) < 8e-4 and abs(lb[up, 2] - lb[lo, 2]) < 1.5e-3   # lids meet
    _, ls = _run(model, expr=_expr(model, smile_L=1.0, smile_R=1.0))
    for idx, sx in ((291, 1), (61, -1)):
        d = ls[idx] - l0[idx]
        assert d[1] > 0.002 and d[0] * sx > 0.002


def test_expressions_local_and_natural(raw):
    S, E = int(raw["n_shape_total"]), int(raw["n_expr_total"])
    sd = raw["shapedirs"][..., S:S + E].astype(np.float64)
    names = list(raw["expr_names"])
    required = ["smile_L", "smile_R", "mouth_stretch_L", "pucker", "funnel", "lip_press", "blink_L", "blink_R",
                "brow_inner_up_L", "brow_outer_up_R", "brow_down_L", "squint_L", "cheek_puff_L",
                "nose_wrinkle_L", "lip_corner_down_L", "mouth_left", "mouth_right", "dimple_L"]
    assert set(required) <= set(names)
    V = sd.shape[0]
    for k in range(E):
        m = np.linalg.norm(sd[..., k], axis=1)
        assert 0.002 <= m.max() <= 0.02, names[k]
        e = np.sort(m ** 2)[::-1]
        n90 = int(np.searchsorted(np.cumsum(e), 0.9 * e.sum())) + 1
        assert n90 < 0.2 * V, names[k]
    ident = raw["shapedirs"][..., :S].astype(np.float64)
    mx = np.linalg.norm(ident, axis=1).max(0)
    assert (mx > 0.001).all() and (mx < 0.01).all()


def test_landmarks_sensible(model, raw):
    v0, lm = _run(model)
    p = FlameParams.zeros(1, model.n_shape, model.n_expr)
    with torch.no_grad():
        ib = model(p, landmark_set="ibug68").landmarks[0].numpy()
    for k in ("lmk_mediapipe_bary", "lmk_ibug68_bary"):
        b = raw[k]
        assert (b >= -1e-6).all() and np.allclose(b.sum(1), 1, atol=1e-5)
    face = lm[:468]
    assert lm[1, 2] >= np.percentile(face[:, 2], 98) and lm[4, 2] >= np.percentile(face[:, 2], 95)
    eye_y = 0.5 * (lm[468, 1] + lm[473, 1])
    mouth_y = 0.5 * (lm[13, 1] + lm[14, 1])
    assert eye_y > lm[1, 1] > mouth_y > lm[152, 1]
    for i in (263, 362, 386, 374, 473, 291, 454):
        assert lm[i, 0] > 0.005, i
    for i in (33, 133, 159, 145, 468, 61, 234):
        assert lm[i, 0] < -0.005, i
    J = raw["J_regressor"] @ raw["v_template"].astype(np.float64)
    for c, j in ((468, 4), (473, 3)):
        assert abs(np.linalg.norm(lm[c] - J[j]) - EYE_R) < 5e-4
        assert lm[c, 2] > J[j, 2] + 0.01                       # on the front of the eyeball
    # iBUG-68 ordering
    assert ib[0, 0] < ib[8, 0] < ib[16, 0] and ib[8, 1] == ib[:17, 1].min()
    assert (ib[17:22, 0] < 0).all() and (ib[22:27, 0] > 0).all()
    assert ib[36, 0] < ib[39, 0] < 0 < ib[42, 0] < ib[45, 0]
    assert ib[30, 2] == ib[27:36, 2].max() and ib[27, 1] > ib[30, 1] > ib[33, 1]
    assert ib[48, 0] < ib[51, 0] < ib[54, 0] and ib[51, 1] > ib[62, 1] >= ib[66, 1] > ib[57, 1]
    assert ib[37, 1] > ib[41, 1] and ib[44, 1] > ib[46, 1]
    assert np.all(np.diff(ib[17:22, 0]) > 0) and np.all(np.diff(ib[22:27, 0]) > 0)


def test_numpy_reference_lbs_matches_model(model, raw):
    mod = _builder()
    rng = np.random.default_rng(0)
    S, E = model.n_shape, model.n_expr
    shape = rng.normal(size=S) * 0.5
    expr = rng.normal(size=E) * 0.3
    pose = rng.normal(size=(5, 3)) * 0.1
    ref, Jref = mod.posed_vertices(raw, shape=shape, expr=expr, pose=pose)
    p = FlameParams.zeros(1, S, E).replace(
        shape=torch.tensor(shape, dtype=torch.float32)[None], expr=torch.tensor(expr, dtype=torch.float32)[None],
        rotation=torch.tensor(pose[0], dtype=torch.float32)[None], neck=torch.tensor(pose[1], dtype=torch.float32)[None],
        jaw=torch.tensor(pose[2], dtype=torch.float32)[None],
        eyes=torch.tensor(pose[3:].reshape(-1), dtype=torch.float32)[None])
    with torch.no_grad():
        out = model(p)
    np.testing.assert_allclose(out.vertices[0].numpy(), ref, atol=2e-5)
    np.testing.assert_allclose(out.joints[0].numpy(), Jref, atol=2e-5)


def test_writes_picture(model, raw, test_output_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mod = _builder()
    M = dict(f=raw["f"], kind=np.zeros(len(raw["v_template"]), int))
    reg = raw["vertex_region"]
    M["kind"][(reg == 4) | (reg == 5)] = 0
    cols = np.array(plt.cm.tab20(np.arange(13))[:, :3])
    f = raw["f"]
    cam = mod.Camera(size=300, dist=0.62, focal=560.0, cy_world=-0.035)
    cases = [("neutral", {}), ("jaw 0.3", dict(jaw=[0.3, 0, 0])),
             ("blink L+R", dict(expr=_expr(model, blink_L=1, blink_R=1))),
             ("smile L+R + eyes", dict(expr=_expr(model, smile_L=1, smile_R=1), eyes=[0, 0.3, 0, 0, 0.3, 0]))]
    fig, axes = plt.subplots(1, len(cases), figsize=(4 * len(cases), 4.4))
    for ax, (label, kw) in zip(axes, cases):
        v, lm = _run(model, **kw)
        R = mod.rot([0, 0.35, 0])
        vv, ll = v @ R.T, lm @ R.T
        tid, bary = mod.rasterize(vv, f, cam)
        img = mod.shade(vv, f, tid, bary, lambda fi, b: (cols[reg[f[fi]]] * b[..., None]).sum(1), bg=(1, 1, 1))
        ax.imshow(img)
        uv = cam.project(ll)
        ax.scatter(uv[:, 0], uv[:, 1], s=1.5, c="k")
        ax.set_title(label)
        ax.axis("off")
    fig.suptitle("default head: regions + mediapipe landmarks under expressions/poses")
    out = test_output_dir / "default_head_test.png"
    fig.savefig(out, dpi=70)
    plt.close(fig)
    assert out.stat().st_size > 10000


@pytest.mark.slow  # 20-40 s on 2 cores: CI runs it with `pytest -m slow`
def test_rebuild_is_deterministic(raw, tmp_path):
    """Rebuilding from the script gives the same arrays and the same metadata.

    Not the same bytes: the metadata records mediapipe's detection residuals on the rendered head,
    floats whose last digits depend on the CPU's SIMD path and thread count, so a byte comparison
    fails on another machine although every array matches."""
    mod = _builder()
    arrays = mod.build(tmp_path, make_png=False, log=lambda *a: None)
    for k, a in raw.items():
        if k == "meta":
            continue
        np.testing.assert_array_equal(np.asarray(arrays[k]), a, err_msg=k)
    with np.load(tmp_path / "default_head.npz", allow_pickle=False) as rebuilt:
        assert sorted(rebuilt.files) == sorted(raw)
        meta = json.loads(str(rebuilt["meta"]))
    _assert_meta_close(meta, json.loads(str(raw["meta"])))


def _assert_meta_close(got, want, path="meta"):
    """JSON trees equal, with numbers compared to 1e-3 px / relative (the mediapipe residuals)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), path
        for k in want:
            _assert_meta_close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_meta_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-3, abs=1e-3), path
    else:
        assert got == want, path
