"""Our FLAME skinning against an independent implementation (smplx.FLAME, test-only) on a
synthetic FLAME-format file, to float32 precision, values and gradients."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dynavatar.flame import FlameModel, FlameParams
from flame_fixtures import synthetic_flame_arrays, write_chumpy_pickle, write_plain_pickle

smplx = pytest.importorskip("smplx")


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flame")
    arrays = synthetic_flame_arrays()
    write_plain_pickle(d / "FLAME_NEUTRAL.pkl", arrays)
    write_chumpy_pickle(d / "official_like.pkl", arrays)
    # smplx insists on a static landmark embedding next to the model.
    emb = {"lmk_face_idx": np.arange(5, dtype=np.int64), "lmk_b_coords": np.full((5, 3), 1 / 3)}
    (d / "flame_static_embedding.pkl").write_bytes(pickle.dumps(emb))
    return d


def _reference(flame_dir, n_shape, n_expr, dtype):
    return smplx.FLAME(model_path=str(flame_dir), gender="neutral", num_betas=n_shape,
                       num_expression_coeffs=n_expr, use_face_contour=False, batch_size=1,
                       dtype=dtype)


def _random_params(batch, n_shape, n_expr, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(dtype)  # noqa: E731
    return FlameParams(shape=r(batch, n_shape), expr=r(batch, n_expr), rotation=r(batch, 3, scale=0.6),
                       neck=r(batch, 3, scale=0.3), jaw=r(batch, 3, scale=0.3), eyes=r(batch, 6, scale=0.3),
                       translation=r(batch, 3, scale=0.1))


def _run_reference(ref, p: FlameParams):
    out = ref(betas=p.shape, expression=p.expr, global_orient=p.rotation, neck_pose=p.neck, jaw_pose=p.jaw,
              leye_pose=p.eyes[:, :3], reye_pose=p.eyes[:, 3:], transl=p.translation)
    return out.vertices, out.joints[:, :5]


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("file_name", ["FLAME_NEUTRAL.pkl", "official_like.pkl"])
def test_vertices_and_joints_match_smplx(flame_dir, batch, file_name):
    n_shape, n_expr = 300, 100
    ours = FlameModel.load(flame_dir / file_name, n_shape=n_shape, n_expr=n_expr)
    ref = _reference(flame_dir, n_shape, n_expr, torch.float32)
    for seed in range(3):
        p = _random_params(batch, n_shape, n_expr, seed)
        out = ours(p)
        ref_v, ref_j = _run_reference(ref, p)
        scale = ref_v.abs().max().item()
        assert torch.allclose(out.vertices, ref_v, atol=2e-6 * max(scale, 1), rtol=0), \
            (out.vertices - ref_v).abs().max()
        assert torch.allclose(out.joints, ref_j, atol=2e-6 * max(scale, 1), rtol=0)


def test_fewer_components_select_the_right_blendshapes(flame_dir):
    ours = FlameModel.load(flame_dir / "FLAME_NEUTRAL.pkl", n_shape=20, n_expr=10)
    ref = _reference(flame_dir, 20, 10, torch.float32)
    p = _random_params(3, 20, 10, seed=11)
    assert torch.allclose(ours(p).vertices, _run_reference(ref, p)[0], atol=2e-6)


def test_gradients_match_smplx_for_every_parameter(flame_dir):
    n_shape, n_expr = 50, 20
    ours = FlameModel.load(flame_dir / "FLAME_NEUTRAL.pkl", n_shape=n_shape, n_expr=n_expr).double()
    ref = _reference(flame_dir, n_shape, n_expr, torch.float64)
    p0 = _random_params(4, n_shape, n_expr, seed=5, dtype=torch.float64)
    weights = torch.randn(4, ours.n_vertices, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(run):
        p = p0.map(lambda t: t.clone().requires_grad_(True))
        (run(p) * weights).sum().backward()
        return {name: t.grad for name, t in p.fields()}

    g_ours = grads(lambda p: ours(p).vertices)
    g_ref = grads(lambda p: _run_reference(ref, p)[0])
    for name in g_ours:
        assert g_ours[name] is not None and torch.isfinite(g_ours[name]).all(), name
        assert torch.allclose(g_ours[name], g_ref[name], rtol=1e-6, atol=1e-7), name  # smplx adds 1e-8 to angles


def test_gradients_finite_at_rest_pose(flame_dir):
    """Axis-angle of exactly zero (FLAME's rest pose) must not give NaN gradients."""
    ours = FlameModel.load(flame_dir / "FLAME_NEUTRAL.pkl", n_shape=10, n_expr=10)
    p = FlameParams.zeros(2, 10, 10).map(lambda t: t.requires_grad_(True))
    ours(p).vertices.square().sum().backward()
    for name, t in p.fields():
        assert torch.isfinite(t.grad).all(), name
