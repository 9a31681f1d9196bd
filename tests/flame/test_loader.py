"""Safe loading of FLAME-format files: official-style pickles without chumpy, clean .npz,
malicious and corrupt files, and head-model resolution."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from dynavatar.errors import FlameFileError, InvalidParametersError
from dynavatar.flame import FlameModel, FlameParams, read_flame_file, write_flame_npz
from dynavatar.flame.resolve import resolve_head_path
from flame_fixtures import synthetic_flame_arrays, write_chumpy_pickle, write_plain_pickle


@pytest.fixture()
def arrays():
    return synthetic_flame_arrays()


@pytest.fixture()
def plain_pkl(tmp_path, arrays):
    return write_plain_pickle(tmp_path / "generic_model.pkl", arrays)


def test_chumpy_pickle_reads_without_chumpy(tmp_path, arrays):
    path = write_chumpy_pickle(tmp_path / "flame.pkl", arrays)
    assert b"chumpy.ch" in path.read_bytes()
    data = read_flame_file(path)
    np.testing.assert_array_equal(data.v_template, arrays["v_template"])
    np.testing.assert_array_equal(data.shapedirs, arrays["shapedirs"])
    np.testing.assert_allclose(data.J_regressor, arrays["J_regressor"].toarray())  # sparse densified
    assert data.parents.tolist() == [-1, 0, 1, 1, 1]
    assert (data.n_shape_total, data.n_expr_total) == (300, 100)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/dynavatar_pwned",))


@pytest.mark.parametrize("payload", [
    _Evil(),
    {"v_template": _Evil()},
])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, payload):
    marker = "/tmp/dynavatar_pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(FlameFileError, match=r"refusing to unpickle global '(posix|os)\.system'"):
        read_flame_file(path)
    assert not os.path.exists(marker)


def test_eval_and_import_globals_are_refused(tmp_path):
    # Hand-written pickle: GLOBAL builtins.eval, then call it.
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x0b\x00\x00\x00print('hi')\x85R.")
    with pytest.raises(FlameFileError, match="builtins.eval"):
        read_flame_file(path)
    path.write_bytes(b"\x80\x02cbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R.")
    with pytest.raises(FlameFileError, match="__import__"):
        read_flame_file(path)


def test_truncated_pickle(tmp_path, plain_pkl):
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(plain_pkl.read_bytes()[: plain_pkl.stat().st_size // 2])
    with pytest.raises(FlameFileError, match="truncated or corrupt"):
        read_flame_file(cut)


def test_missing_file_says_where_to_get_flame(tmp_path):
    with pytest.raises(FlameFileError, match="not found.*flame.is.tue.mpg.de"):
        read_flame_file(tmp_path / "nope.pkl")


def test_not_a_model(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(b"hello world")
    with pytest.raises(FlameFileError):
        read_flame_file(p)
    p.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(FlameFileError, match="expected a dict"):
        read_flame_file(p)


@pytest.mark.parametrize("key,value,match", [
    ("v_template", np.zeros((64, 2)), r"v_template must be \[V,3\]"),
    ("shapedirs", np.zeros((63, 3, 400)), "shapedirs must be"),
    ("posedirs", np.zeros((64, 3, 35)), "posedirs must be"),
    ("weights", np.zeros((64, 4)), "weights must be"),
    ("J_regressor", np.zeros((4, 64)), "J_regressor must be"),
    ("f", np.array([[0, 1, 999]]), "face indices outside"),
    ("kintree_table", np.array([[7, 0, 1, 1, 1], [0, 1, 2, 3, 4]]), None),
    ("shapedirs", np.zeros((64, 3, 123)), "cannot tell identity from expression"),
])
def test_wrongly_shaped_files(tmp_path, arrays, key, value, match):
    arrays[key] = value
    p = write_plain_pickle(tmp_path / "bad.pkl", arrays)
    if key == "kintree_table":
        data = read_flame_file(p)  # root's parent entry is ignored (stored as uint32 -1)
        assert data.parents[0] == -1
        return
    with pytest.raises(FlameFileError, match=match):
        read_flame_file(p)


def test_missing_key_and_nan(tmp_path, arrays):
    broken = dict(arrays)
    del broken["posedirs"]
    with pytest.raises(FlameFileError, match="missing 'posedirs'"):
        read_flame_file(write_plain_pickle(tmp_path / "a.pkl", broken))
    arrays["v_template"] = arrays["v_template"].copy()
    arrays["v_template"][3, 1] = np.nan
    with pytest.raises(FlameFileError, match="v_template contains NaN"):
        read_flame_file(write_plain_pickle(tmp_path / "b.pkl", arrays))


def test_npz_roundtrip_and_integrity(tmp_path, plain_pkl):
    data = read_flame_file(plain_pkl)
    out = write_flame_npz(data, tmp_path / "model.npz", source=plain_pkl)
    meta = json.loads(str(np.load(out)["meta"]))
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(plain_pkl.read_bytes()).hexdigest()
    again = read_flame_file(out)
    np.testing.assert_allclose(again.shapedirs, data.shapedirs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(again.J_regressor, data.J_regressor, rtol=1e-6)
    p = FlameParams.zeros(2, 300, 100)
    p.expr.normal_()
    m1, m2 = FlameModel(data), FlameModel.load(out)
    assert torch.allclose(m1(p).vertices, m2(p).vertices, atol=1e-6)

    # Tamper with one array: the recorded sha256 no longer matches.
    with np.load(out) as z:
        tampered = {k: z[k] for k in z.files}
    tampered["v_template"] = tampered["v_template"] + 1e-3
    np.savez(tmp_path / "tampered.npz", **tampered)
    with pytest.raises(FlameFileError, match="sha256"):
        read_flame_file(tmp_path / "tampered.npz")


def test_npz_with_pickled_objects_is_refused(tmp_path, arrays):
    arrays = {k: (v.toarray() if hasattr(v, "toarray") else v) for k, v in arrays.items()}
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(FlameFileError, match="pickled objects"):
        read_flame_file(tmp_path / "obj.npz")


def test_truncated_npz(tmp_path, plain_pkl):
    out = write_flame_npz(read_flame_file(plain_pkl), tmp_path / "m.npz")
    (tmp_path / "cut.npz").write_bytes(out.read_bytes()[:500])
    with pytest.raises(FlameFileError):
        read_flame_file(tmp_path / "cut.npz")


def test_component_counts_are_checked(plain_pkl):
    with pytest.raises(FlameFileError, match="n_shape=301"):
        FlameModel.load(plain_pkl, n_shape=301)
    m = FlameModel.load(plain_pkl, n_shape=100, n_expr=50)
    assert (m.n_shape, m.n_expr) == (100, 50)
    assert m.shapedirs.shape[-1] == 150
    assert m.landmarks(m.v_template[None]) is None  # an official file has no mediapipe embedding


def test_params_are_validated(plain_pkl):
    m = FlameModel.load(plain_pkl, n_shape=10, n_expr=5)
    p = FlameParams.zeros(2, 10, 5)
    p.jaw[1, 0] = float("nan")
    with pytest.raises(InvalidParametersError, match="jaw contains NaN"):
        m(p)
    with pytest.raises(InvalidParametersError, match="shape has 11"):
        m(FlameParams.zeros(1, 11, 5))
    bad = FlameParams.zeros(1, 10, 5).replace(eyes=torch.zeros(1, 3))
    with pytest.raises(InvalidParametersError, match=r"eyes must be \[B, 6\]"):
        m(bad)


def test_resolution_order(tmp_path, plain_pkl, monkeypatch):
    monkeypatch.setenv("DYNAVATAR_FLAME", str(plain_pkl))
    r = resolve_head_path()
    assert (r.path, r.source) == (plain_pkl, "DYNAVATAR_FLAME")
    assert resolve_head_path(tmp_path / "x.pkl").source == "argument"
    monkeypatch.setenv("DYNAVATAR_FLAME", str(tmp_path / "missing.pkl"))
    with pytest.raises(FlameFileError, match="DYNAVATAR_FLAME"):
        resolve_head_path()


def test_assets_folder_then_default(tmp_path, plain_pkl, monkeypatch):
    import dynavatar.flame.resolve as resolve

    monkeypatch.delenv("DYNAVATAR_FLAME", raising=False)
    assets = tmp_path / "assets" / "flame"
    assets.mkdir(parents=True)
    monkeypatch.setattr(resolve, "assets_dir", lambda: assets)
    monkeypatch.setattr(resolve, "default_head_path", lambda: tmp_path / "default_head.npz")
    assert resolve.resolve_head_path().source == "default"
    (assets / "generic_model.pkl").write_bytes(plain_pkl.read_bytes())
    (assets / "flame2023.pkl").write_bytes(plain_pkl.read_bytes())
    r = resolve.resolve_head_path()
    assert (r.path.name, r.source) == ("flame2023.pkl", "assets")


def test_with_components_equals_loading_fewer(plain_pkl):
    full = FlameModel.load(plain_pkl)
    few = FlameModel.load(plain_pkl, n_shape=30, n_expr=12)
    cut = full.with_components(30, 12)
    assert full.with_components(full.n_shape, full.n_expr) is full
    assert torch.equal(cut.shapedirs, few.shapedirs) and full.shapedirs.shape[-1] == 400
    p = FlameParams.zeros(2, 30, 12)
    p.expr.normal_()
    assert torch.allclose(cut(p).vertices, few(p).vertices)
    with pytest.raises(FlameFileError, match="cannot use 301"):
        full.with_components(301, 10)
