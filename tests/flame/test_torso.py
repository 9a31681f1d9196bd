"""The torso sheet: geometry, how it moves with FLAME, labels, fitting and save/load."""

import dataclasses

import numpy as np
import pytest
import torch

from dynavatar.flame import FlameModel
from dynavatar.flame.torso import torso_sheet
from dynavatar.geometry.labels import label_index


@pytest.fixture(scope="module")
def model():
    return FlameModel.load()


def _neck(model):
    return torch.nonzero(model.vertex_region == model.region_names.index("neck")).squeeze(-1)


def test_sheet_is_a_flat_grid_below_the_neck(model):
    verts = model(model.zero_params(), landmark_set=None).vertices
    v, f = torso_sheet(verts, _neck(model), cols=6, rows=4)
    assert v.shape == (35, 3) and f.shape == (48, 3) and int(f.max()) == 34
    assert torch.allclose(v[:, 2], v[0, 2])  # one depth
    # every cell is covered exactly once: total area = width * height
    a = 0.5 * torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]).norm(dim=-1)
    w, h = v[:, 0].max() - v[:, 0].min(), v[:, 1].max() - v[:, 1].min()
    assert torch.allclose(a.sum(), w * h, rtol=1e-5)
    normals = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (normals[:, 2] > 0).all()  # facing the camera side (+z)
    neck_low = verts[0, _neck(model), 1].min()
    assert v[:, 1].min() < neck_low - 0.2 and v[:, 1].max() > neck_low  # reaches well below the neck


def test_sheet_follows_translation_not_rotation(model):
    verts = model(model.zero_params(), landmark_set=None).vertices
    sv, sf = torso_sheet(verts, _neck(model))
    m = model.with_torso(sv, sf)
    V, T = model.n_vertices, sv.shape[0]
    p = model.zero_params(2)
    p = p.replace(rotation=torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.4, 0.1]]),
                  translation=torch.tensor([[0.0, 0.0, 0.0], [0.02, -0.01, 0.05]]))
    out, plain = m(p), model(p)
    assert out.vertices.shape == (2, V + T, 3) and m.faces.shape[0] == model.faces.shape[0] + sf.shape[0]
    assert torch.equal(out.vertices[:, :V], plain.vertices) and torch.equal(out.landmarks, plain.landmarks)
    assert torch.allclose(out.vertices[0, V:], sv) and torch.allclose(out.vertices[1, V:], sv + p.translation[1])
    # the torso region maps to the "clothes" label; removing the sheet gives the head back
    from dynavatar.semantics import region_prior

    prior = region_prior(torch.arange(m.faces.shape[0]), m)
    assert (prior[model.faces.shape[0]:, label_index("clothes")] == 1).all()
    assert (prior[:model.faces.shape[0], label_index("clothes")] == 0).all()
    back = m.without_torso()
    assert torch.equal(back.faces, model.faces) and back.region_names == model.region_names
    assert torch.equal(m.torso_faces, sf) and m.with_torso(sv, sf).faces.shape == m.faces.shape


def test_auto_torso_needs_clothes_in_the_frames_and_survives_save_load(model, tmp_path):
    from dynavatar.api import Avatar
    from dynavatar.reconstruct import ReconstructConfig, fit_avatar
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.reconstruct.trainer import _wants_torso
    from dynavatar.render.torch_renderer import TorchRenderer

    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=6, resolution=32)
    cfg = ReconstructConfig.preset("tiny", steps=2, resolution=32, log_every=1)
    matte = data.mattes.clone()
    data.mattes[:, -4:] = 0  # a floating head: neither the matte nor the parser reaches the frame's bottom
    assert fit_avatar(data, model, renderer, cfg, progress=False).model.torso_vertices is None  # a bare head
    data.mattes[:] = matte  # the person continues below the frame (the synthetic head's neck): the matte says so
    assert _wants_torso("auto", data)
    data.mattes[:, -4:] = 0
    data.parsing[:, -4:] = label_index("clothes")  # a shirt along the bottom edge: the parser says so
    fit = fit_avatar(data, model, renderer, cfg, progress=False)
    assert fit.model.torso_vertices is not None
    assert int(fit.avatar.binding.max()) >= model.faces.shape[0]  # splats live on the sheet
    a = Avatar(fit.avatar, fit.model, fit.params, data.cameras, {}, data)
    a.save(tmp_path / "a")
    back = Avatar.load(tmp_path / "a", head=model)
    assert back.model.torso_vertices is not None
    np.testing.assert_array_equal(back.render(frame=1), a.render(frame=1))
    assert back.model.torso_motion is not None  # the fitted head-motion -> torso map came back too
    p = fit.params[1].replace(torso=None)
    np.testing.assert_array_equal(back.render(params=p), a.render(params=p))
    with pytest.raises(Exception, match="triangles"):
        bad = tmp_path / "a"
        import json
        from safetensors.torch import load_file, save_file

        t = load_file(str(bad / "avatar.safetensors"))
        del t["extra.torso.vertices"], t["extra.torso.faces"]
        save_file(t, str(bad / "avatar.safetensors"))
        json.loads((bad / "avatar.json").read_text())
        Avatar.load(bad, head=model)


def test_per_frame_torso_shift_moves_only_the_sheet(model):
    from dynavatar.flame import FlameParams

    verts = model(model.zero_params(), landmark_set=None).vertices
    sv, sf = torso_sheet(verts, _neck(model))
    m = model.with_torso(sv, sf)
    V = model.n_vertices
    p = model.zero_params(2).replace(translation=torch.tensor([[0.0, 0.0, 0.0], [0.02, 0.0, 0.0]]))
    shift = torch.tensor([[0.0, 0.01, 0.0], [-0.03, 0.0, 0.002]])
    moved, still = m(p.replace(torso=shift)), m(p)
    assert torch.equal(moved.vertices[:, :V], still.vertices[:, :V])  # the head does not move
    assert torch.allclose(moved.vertices[:, V:], still.vertices[:, V:] + shift[:, None], atol=1e-7)
    # an optional field: absent is zeros; cat fills it, dicts round-trip with or without it
    assert torch.equal(p.with_torso().torso, torch.zeros(2, 3)) and p.torso is None and "torso" not in p.to_dict()
    both = FlameParams.cat([p, p.replace(torso=shift)])
    assert torch.equal(both.torso, torch.cat([torch.zeros(2, 3), shift])) and both[1:3].torso.shape == (2, 3)
    assert FlameParams.from_dict(p.to_dict()).torso is None
    assert torch.equal(FlameParams.from_dict(p.replace(torso=shift).to_dict()).torso, shift)
    with pytest.raises(Exception, match="torso"):
        p.replace(torso=torch.zeros(2, 2)).validate()


def test_centring_the_torso_shifts_keeps_every_trained_frame_in_place(model):
    """The trainer moves the sheet to the training frames' mean shift, so a zero shift (held-out
    frames, another clip's parameters) means the average shoulders; the trained frames' vertices,
    hence their renders, must not change."""
    from dynavatar.reconstruct.trainer import _centre_torso

    verts = model(model.zero_params(), landmark_set=None).vertices
    m = model.with_torso(*torso_sheet(verts, _neck(model)))
    g = torch.Generator().manual_seed(0)
    p = model.zero_params(5).replace(translation=0.01 * torch.randn(5, 3, generator=g))
    shift = 0.01 * torch.randn(5, 3, generator=g)
    train = torch.tensor([0, 1, 3])
    m2, s2 = _centre_torso(m, shift, train)
    assert torch.allclose(s2[train].mean(0), torch.zeros(3), atol=1e-8) and (s2[[2, 4]] == 0).all()
    before = m(p.replace(torso=shift), landmark_set=None).vertices[train]
    after = m2(p.replace(torso=s2), landmark_set=None).vertices[train]
    assert torch.allclose(before, after, atol=1e-7)


def test_fit_learns_per_frame_torso_shifts_centred_on_the_training_frames(model):
    from dynavatar.reconstruct import ReconstructConfig, fit_avatar
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer

    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=6, resolution=32)
    data.parsing[:, -4:] = label_index("clothes")
    cfg = ReconstructConfig.preset("tiny", steps=6, resolution=32, log_every=1)
    cfg.lr.torso = 1e-2  # so the shifts visibly move in a few steps
    fit = fit_avatar(data, model, renderer, cfg, progress=False)
    tr = data.train_idx
    assert fit.params.torso is not None and fit.params.torso[tr].abs().max() > 1e-4
    assert torch.allclose(fit.params.torso[tr].mean(0), torch.zeros(3), atol=1e-6)
    # held-out frames: the shift their head motion predicts (the fitted map), not a learned one
    ev = data.eval_idx
    assert fit.model.torso_motion is not None
    assert torch.allclose(fit.params.torso[ev], fit.model.predict_torso(fit.params[ev]), atol=1e-7)
    assert fit.params.neck.shape == (len(data.frame_index), 3)


def test_training_keeps_the_neck_offsets_at_zero_mean(model):
    """The tracker never fits the neck; its learned per-frame offsets must not drift into a rest
    pose that frames with tracked (neck 0) parameters lack."""
    from dynavatar.reconstruct import ReconstructConfig, fit_avatar
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer

    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=6, resolution=32)
    cfg = ReconstructConfig.preset("tiny", steps=6, resolution=32, log_every=1)
    cfg.lr.pose = 1e-2
    fit = fit_avatar(data, model, renderer, cfg, progress=False)
    neck = fit.params.neck[data.train_idx]
    assert neck.abs().max() > 1e-3 and torch.allclose(neck.mean(0), torch.zeros(3), atol=1e-6)
    off = fit_avatar(data, model, renderer, dataclasses.replace(cfg, train_neck=False), progress=False)
    assert (off.params.neck == 0).all()


def test_torso_motion_fit_recovers_a_linear_map_and_drives_frames_without_a_shift(model):
    from dynavatar.flame.torso import fit_torso_motion

    g = torch.Generator().manual_seed(1)
    t, r = 0.02 * torch.randn(50, 3, generator=g), 0.2 * torch.randn(50, 3, generator=g)
    w_true = torch.randn(6, 3, generator=g) * 0.3
    x = torch.cat([t, r], -1)
    shift = (x - x.mean(0)) @ w_true
    ref, w = fit_torso_motion(t, r, shift, ridge=1e-9)
    assert torch.allclose(ref, x.mean(0), atol=1e-7) and torch.allclose(w, w_true, atol=1e-4)

    verts = model(model.zero_params(), landmark_set=None).vertices
    sv, sf = torso_sheet(verts, _neck(model))
    m = model.with_torso(sv, sf, motion=(ref, w))
    p = model.zero_params(3).replace(translation=t[:3], rotation=r[:3])
    V = model.n_vertices
    assert torch.allclose(m.predict_torso(p), shift[:3], atol=1e-5)
    # no torso of their own: the prediction; an explicit one wins; without the map: 0
    assert torch.allclose(m(p).vertices[:, V:], m(p.replace(torso=shift[:3])).vertices[:, V:], atol=1e-6)
    assert torch.allclose(m(p.replace(torso=torch.zeros(3, 3))).vertices[:, V:], model.with_torso(sv, sf)(p).vertices[:, V:])
    assert m.without_torso().torso_motion is None and m.torso_motion is not None
    assert model.with_torso(sv, sf).predict_torso(p).abs().max() == 0
