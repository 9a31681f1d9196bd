"""Densification keeps the binding, the labels, >= 1 splat per triangle and Adam's state."""

import math

import torch

from dynavatar.gaussians.avatar import GaussianAvatar
from dynavatar.gaussians.binding import bind
from dynavatar.gaussians.densify import (BindingStrategy, DensifyState, densify_step, duplicate,
                                         prune, reset_opacity, split)
from dynavatar.geometry.rotations import quaternion_to_matrix


def make(n_faces=6, per_face=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    av = GaussianAvatar.init_on_mesh(n_faces, per_face, num_labels=2)
    n = av.num_splats
    av = av.replace(
        means_local=torch.randn(n, 3, generator=g) * 0.1,
        quats_local=torch.randn(n, 4, generator=g),
        log_scales_local=torch.randn(n, 3, generator=g) * 0.3 - 1,
        opacity_logits=torch.randn(n, generator=g) * 2,
        # label column 0 encodes the triangle, column 1 the splat id: lets us track travel
        labels=torch.stack([av.binding.float(), torch.arange(n).float()], -1),
    ).requires_grad_()
    opt = torch.optim.Adam([{"params": [p], "lr": 1e-3, "name": k}
                            for k, p in av.parameters_dict().items()])
    # one real step so Adam has non-zero moments
    loss = sum((p ** 2).sum() for p in av.parameters_dict().values())
    loss.backward()
    opt.step()
    opt.zero_grad()
    return av, opt


def assert_optimizer_consistent(av, opt):
    params = av.parameters_dict()
    opt_params = [g["params"][0] for g in opt.param_groups]
    assert all(any(p is q for q in opt_params) for p in params.values())
    for p in params.values():
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape


def test_aggressive_prune_keeps_most_opaque_per_triangle():
    av, opt = make()
    logits = av.opacity_logits.detach().clone()
    out = prune(av, opt, torch.ones(av.num_splats, dtype=torch.bool))
    assert out.num_splats == 6 and sorted(out.binding.tolist()) == list(range(6))
    for t in range(6):
        best = logits[av.binding == t].max()
        assert out.opacity_logits[out.binding == t].item() == best.item()
    assert_optimizer_consistent(out, opt)


def test_prune_drops_only_masked_when_triangles_keep_others():
    av, opt = make()
    old_state = opt.state[av.means_local]["exp_avg"].clone()
    mask = torch.zeros(av.num_splats, dtype=torch.bool)
    mask[::4] = True  # one splat of every triangle
    out = prune(av, opt, mask)
    assert out.num_splats == av.num_splats - 6
    kept = (~mask).nonzero().squeeze(-1)
    assert torch.equal(out.labels[:, 1], kept.float())
    assert torch.equal(opt.state[out.means_local]["exp_avg"], old_state[kept])


def test_clone_and_split_carry_binding_labels_and_zero_state():
    av, opt = make()
    n = av.num_splats
    old_avg = opt.state[av.sh]["exp_avg"].clone()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[[1, 5, 9]] = True
    c = duplicate(av, opt, mask)
    assert c.num_splats == n + 3
    assert torch.equal(c.binding[n:], av.binding[[1, 5, 9]])
    assert torch.equal(c.labels[n:], av.labels[[1, 5, 9]])
    st = opt.state[c.sh]
    assert torch.equal(st["exp_avg"][:n], old_avg) and (st["exp_avg"][n:] == 0).all()
    assert (st["exp_avg_sq"][n:] == 0).all()
    assert_optimizer_consistent(c, opt)

    smask = torch.zeros(c.num_splats, dtype=torch.bool)
    smask[[0, n + 1]] = True
    s = split(c, opt, smask, generator=torch.Generator().manual_seed(0))
    assert s.num_splats == c.num_splats + 2
    parents = torch.tensor([0, n + 1])
    assert torch.equal(s.binding[-4:], c.binding[parents].repeat(2))
    assert torch.equal(s.labels[-4:], c.labels[parents].repeat(2, 1))
    assert torch.allclose(s.log_scales_local[-4:], c.log_scales_local[parents].repeat(2, 1) - math.log(1.6))
    for name in ("means_local", "opacity_logits", "quats_local"):
        st = opt.state[getattr(s, name)]
        assert (st["exp_avg"][-4:] == 0).all() and (st["exp_avg_sq"][-4:] == 0).all()
    assert_optimizer_consistent(s, opt)
    # labels.row1 is the original splat id: the parents are gone
    assert 0.0 not in s.labels[:-4, 1].tolist()


def test_split_samples_from_the_local_gaussian():
    """Splitting 20k copies of one splat: children's mean ~ parent mean, covariance ~ parent's."""
    av = GaussianAvatar.init_on_mesh(1, 20_000).replace(
        means_local=torch.tensor([0.3, -0.2, 0.1]).repeat(20_000, 1),
        quats_local=torch.tensor([0.9, 0.3, -0.2, 0.1]).repeat(20_000, 1),
        log_scales_local=torch.tensor([0.5, 0.2, 0.05]).log().repeat(20_000, 1),
    )
    out = split(av, None, torch.ones(20_000, dtype=torch.bool), generator=torch.Generator().manual_seed(1))
    x = out.means_local.double()
    mean = x.mean(0)
    R = quaternion_to_matrix(av.quats_local[0].double())
    cov = R @ torch.diag(torch.tensor([0.5, 0.2, 0.05]).double() ** 2) @ R.T
    se = (torch.diagonal(cov) / x.shape[0]).sqrt()
    assert ((mean - torch.tensor([0.3, -0.2, 0.1]).double()).abs() < 4 * se).all()
    assert torch.allclose(torch.cov(x.T), cov, atol=4e-3)


def test_reset_opacity_caps_and_zeroes_state():
    av, opt = make()
    out = reset_opacity(av, opt, 0.01)
    assert (torch.sigmoid(out.opacity_logits) <= 0.01 + 1e-6).all()
    assert (opt.state[out.opacity_logits]["exp_avg"] == 0).all()
    assert_optimizer_consistent(out, opt)


def test_step_with_torch_renderer_end_to_end():
    from dynavatar.render import Cameras, TorchRenderer

    verts = torch.tensor([[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]])
    faces = torch.tensor([[0, 1, 2], [0, 1, 3], [1, 2, 3], [0, 2, 3]])
    av = GaussianAvatar.init_on_mesh(4, 5, jitter=0.2, init_opacity=0.5,
                                     generator=torch.Generator().manual_seed(0)).requires_grad_()
    opt = torch.optim.Adam([{"params": [p], "lr": 1e-3} for p in av.parameters_dict().values()])
    strat = BindingStrategy(grad_threshold=0.0, refine_start=1, refine_every=1, reset_every=0)
    state = DensifyState.zeros(av.num_splats)
    cams = Cameras.look_at(torch.tensor([0.0, 0.0, 0.6]), width=32, height=32)
    out = TorchRenderer().render(bind(av, verts, faces), cams)
    out.means2d.retain_grad()
    (out.rgb - 1).abs().mean().backward()
    opt.step()
    n0 = av.num_splats
    av, state, info = densify_step(strat, state, av, opt, out, step=1, width=32, height=32)
    assert info["cloned"] + info["split"] > 0 and av.num_splats > n0
    assert state.grad2d.shape == (av.num_splats,)
    assert_optimizer_consistent(av, opt)
    assert set(av.binding.tolist()) == {0, 1, 2, 3}
    opt.zero_grad()
    out = TorchRenderer().render(bind(av, verts, faces), cams)
    out.rgb.mean().backward()
    opt.step()  # the optimizer works on the rebuilt tensors
