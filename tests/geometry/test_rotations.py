"""Rotation conversions against independent references (scipy) and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dynavatar.geometry import (axis_angle_to_matrix, axis_angle_to_quaternion, matrix_to_axis_angle,
                                matrix_to_quaternion, quaternion_multiply, quaternion_to_matrix)


@pytest.fixture()
def rotvecs():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(500, 3, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(500, 1, generator=g, dtype=torch.float64) * (np.pi - 1e-3)
    return torch.cat([v, torch.zeros(1, 3, dtype=torch.float64), torch.full((1, 3), 1e-9, dtype=torch.float64)])


def test_axis_angle_matches_scipy(rotvecs):
    ref = torch.from_numpy(Rotation.from_rotvec(rotvecs.numpy()).as_matrix())
    assert torch.allclose(axis_angle_to_matrix(rotvecs), ref, atol=1e-12)


def test_quaternion_matches_scipy_wxyz(rotvecs):
    xyzw = Rotation.from_rotvec(rotvecs.numpy()).as_quat()
    ref = torch.from_numpy(np.concatenate([xyzw[:, 3:], xyzw[:, :3]], 1))
    ref = torch.where(ref[:, :1] < 0, -ref, ref)
    assert torch.allclose(axis_angle_to_quaternion(rotvecs), ref, atol=1e-12)
    assert torch.allclose(matrix_to_quaternion(axis_angle_to_matrix(rotvecs)), ref, atol=1e-10)


def test_round_trips_and_composition(rotvecs):
    R = axis_angle_to_matrix(rotvecs)
    assert torch.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-10)
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-10)
    q = axis_angle_to_quaternion(rotvecs)
    qa, qb = q[:250], q[250:500]
    assert torch.allclose(quaternion_to_matrix(quaternion_multiply(qa, qb)),
                          quaternion_to_matrix(qa) @ quaternion_to_matrix(qb), atol=1e-12)


def test_half_turns_are_stable():
    R = axis_angle_to_matrix(torch.tensor([[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi]], dtype=torch.float64))
    assert torch.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)


def test_gradients_vs_finite_differences():
    v = torch.tensor([[0.3, -0.2, 0.5], [1e-10, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (v,))
    assert torch.autograd.gradcheck(axis_angle_to_quaternion, (v,))
    q = torch.tensor([[0.9, 0.1, -0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (q,))
    R = axis_angle_to_matrix(torch.tensor([[0.4, 0.1, -0.7]], dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(matrix_to_quaternion, (R,))
