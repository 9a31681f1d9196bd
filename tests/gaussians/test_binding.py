"""bind(): splats follow their triangles; covariance identity; derivatives vs finite differences."""


import pytest
import torch

from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.gaussians.binding import bind, bind_transform_torch
from dynavatar.geometry.rotations import axis_angle_to_matrix, quaternion_to_matrix


def mesh(V=20, F=25, B=(), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    verts = torch.randn(*B, V, 3, generator=g, dtype=dtype)
    faces = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(F)])
    return verts, faces


def random_avatar(n_faces, per_face=3, seed=0, dtype=torch.float64, sh_degree=0):
    g = torch.Generator().manual_seed(seed)
    av = GaussianAvatar.init_on_mesh(n_faces, per_face, sh_degree=sh_degree, dtype=dtype)
    n = av.num_splats
    return av.replace(
        means_local=torch.randn(n, 3, generator=g, dtype=dtype) * 0.3,
        quats_local=torch.randn(n, 4, generator=g, dtype=dtype),
        log_scales_local=torch.randn(n, 3, generator=g, dtype=dtype) * 0.5 - 1,
        opacity_logits=torch.randn(n, generator=g, dtype=dtype),
    )


def test_init_on_mesh_shapes():
    av = GaussianAvatar.init_on_mesh(10, splats_per_face=2, sh_degree=2, num_labels=4)
    assert av.num_splats == 20
    assert av.sh.shape == (20, 9, 3) and av.labels.shape == (20, 4)
    assert av.binding.tolist() == [i // 2 for i in range(20)]
    assert set(av.parameters_dict()) == {"means_local", "quats_local", "log_scales_local",
                                         "opacity_logits", "sh"}
    assert torch.allclose(av.sh[:, 0] * 0.28209479177387814 + 0.5, torch.full((20, 3), 0.5))


def test_centroid_init_lands_on_centroids():
    verts, faces = mesh()
    av = GaussianAvatar.init_on_mesh(faces.shape[0], dtype=torch.float64)
    wg = bind(av, verts, faces)
    assert torch.allclose(wg.means[0], verts[faces].mean(1))


@pytest.mark.parametrize("seed", [0, 1])
def test_splats_move_with_similarity_transform(seed):
    verts, faces = mesh(seed=seed)
    av = random_avatar(faces.shape[0], seed=seed)
    g = torch.Generator().manual_seed(50 + seed)
    Q = axis_angle_to_matrix(torch.randn(3, generator=g, dtype=torch.float64))
    t = torch.randn(3, generator=g, dtype=torch.float64)
    s = 1.7
    a = bind(av, verts, faces)
    b = bind(av, s * verts @ Q.T + t, faces)
    assert torch.allclose(b.means, s * a.means @ Q.T + t, atol=1e-12)
    assert torch.allclose(b.scales, s * a.scales, atol=1e-12)
    Ra, Rb = quaternion_to_matrix(a.quats), quaternion_to_matrix(b.quats)
    assert torch.allclose(Rb, Q @ Ra, atol=1e-12)


def test_world_covariance_matches_independent_formula():
    verts, faces = mesh(B=(3,))
    av = random_avatar(faces.shape[0])
    wg = bind(av, verts, faces)
    # independent: build the frame directly from the corners, no shared helpers
    v0, v1, v2 = (verts[:, faces[av.binding, i]] for i in range(3))  # [B, N, 3]
    e = (v1 - v0) / (v1 - v0).norm(dim=-1, keepdim=True)
    nrm = torch.linalg.cross(e, v2 - v0)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True)
    bb = torch.linalg.cross(e, nrm)
    R = torch.stack([e, nrm, bb], -1)
    k = 0.5 * ((v1 - v0).norm(dim=-1) + (bb * (v2 - v0)).sum(-1).abs())
    ql = av.quats_local / av.quats_local.norm(dim=-1, keepdim=True)
    w, x, y, z = ql.unbind(-1)
    Rl = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    S2 = torch.diag_embed(torch.exp(2 * av.log_scales_local))
    expected = k[..., None, None] ** 2 * R @ Rl @ S2 @ Rl.transpose(-1, -2) @ R.transpose(-1, -2)
    Rw = quaternion_to_matrix(wg.quats)
    got = Rw @ torch.diag_embed(wg.scales ** 2) @ Rw.transpose(-1, -2)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(wg.means, k[..., None] * (R @ av.means_local[..., None])[..., 0]
                          + (v0 + v1 + v2) / 3, atol=1e-12)


def test_unbatched_vertices_give_batch_of_one():
    verts, faces = mesh()
    wg = bind(random_avatar(faces.shape[0]), verts, faces)
    assert wg.means.shape == (1, faces.shape[0] * 3, 3) and wg.opacities.dim() == 1


def test_gradcheck_float64():
    verts, faces = mesh(V=7, F=4, B=(2,))
    av = random_avatar(4, per_face=2)
    binding = av.binding
    inputs = tuple(t.clone().requires_grad_() for t in (verts, av.means_local, av.quats_local,
                                                       av.log_scales_local))
    f = lambda v, m, q, s: bind_transform_torch(v, faces, binding, m, q, s)
    assert torch.autograd.gradcheck(f, inputs)
