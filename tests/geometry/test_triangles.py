"""triangle_frames: the frame definition of DESIGN.md §3, its invariances and derivatives."""


import pytest
import torch

from dynavatar.geometry.rotations import axis_angle_to_matrix
from dynavatar.geometry.triangles import triangle_frames


def random_mesh(V=30, F=40, B=(), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    verts = torch.randn(*B, V, 3, generator=g, dtype=dtype)
    faces = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(F)])
    return verts, faces


def test_definition_on_a_known_triangle():
    v = torch.tensor([[0.0, 0, 0], [2.0, 0, 0], [0.5, 1.0, 0]], dtype=torch.float64)
    R, k, T = triangle_frames(v, torch.tensor([[0, 1, 2]]))
    # e = +x, n = e x (v2 - v0) = +z, b = e x n = -y
    expected = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=torch.float64).T  # columns
    assert torch.allclose(R[0], expected)
    assert torch.allclose(k, torch.tensor([(2.0 + 1.0) / 2], dtype=torch.float64))
    assert torch.allclose(T[0], v.mean(0))


def test_proper_rotations_batched():
    verts, faces = random_mesh(B=(2, 3))
    R, k, T = triangle_frames(verts, faces)
    assert R.shape == (2, 3, 40, 3, 3) and k.shape == (2, 3, 40) and T.shape == (2, 3, 40, 3)
    I = torch.eye(3, dtype=verts.dtype)
    assert torch.allclose(R.transpose(-1, -2) @ R, I.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones_like(k), atol=1e-12)
    assert (k > 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_similarity_equivariance(seed):
    verts, faces = random_mesh(seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    Q = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64) * 2)
    t = torch.randn(3, generator=g, dtype=torch.float64)
    s = 0.3 + 2 * torch.rand((), generator=g, dtype=torch.float64)
    R, k, T = triangle_frames(verts, faces)
    R2, k2, T2 = triangle_frames(s * verts @ Q.T + t, faces)
    assert torch.allclose(R2, Q @ R, atol=1e-12)
    assert torch.allclose(k2, s * k, atol=1e-12)
    assert torch.allclose(T2, s * T @ Q.T + t, atol=1e-12)


def test_gradcheck_float64():
    verts, faces = random_mesh(V=8, F=6, seed=3)
    verts.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: tuple(triangle_frames(v, faces)), (verts,))


def test_degenerate_triangles_have_finite_gradients():
    v = torch.tensor(
        [[0.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0],  # zero-length first edge
         [0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0],  # collinear: zero area
         [1.0, 1, 1], [1.0, 1, 1], [1.0, 1, 1]],  # a point
        dtype=torch.float32, requires_grad=True)
    faces = torch.arange(9).reshape(3, 3)
    R, k, T = triangle_frames(v, faces)
    assert torch.isfinite(R).all() and torch.isfinite(k).all() and torch.isfinite(T).all()
    (R.sum() + k.sum() + T.sum()).backward()
    assert torch.isfinite(v.grad).all()
