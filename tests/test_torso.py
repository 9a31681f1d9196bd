"""The torso sheet: geometry, how it moves with FLAME, labels, fitting and save/load."""

import dataclasses

import numpy as np
import pytest
import torch

from dynavatar.flame import FlameModel
from dynavatar.flame.torso import torso_sheet
from dynavatar.perceive.labels import label_index


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
    from dynavatar.reconstruct import fit_avatar, preset
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer

    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=6, resolution=32)
    cfg = dataclasses.replace(preset("tiny"), steps=2, resolution=32, log_every=1)
    assert fit_avatar(data, model, renderer, cfg, progress=False).model.torso_vertices is None  # a bare head
    data.parsing[:, -4:] = label_index("clothes")  # a shirt along the bottom edge
    fit = fit_avatar(data, model, renderer, cfg, progress=False)
    assert fit.model.torso_vertices is not None
    assert int(fit.avatar.binding.max()) >= model.faces.shape[0]  # splats live on the sheet
    a = Avatar(fit.avatar, fit.model, fit.params, data.cameras, {}, data)
    a.save(tmp_path / "a")
    back = Avatar.load(tmp_path / "a", head=model)
    assert back.model.torso_vertices is not None
    np.testing.assert_array_equal(back.render(frame=1), a.render(frame=1))
    with pytest.raises(Exception, match="triangles"):
        bad = tmp_path / "a"
        import json
        from safetensors.torch import load_file, save_file

        t = load_file(str(bad / "avatar.safetensors"))
        del t["extra.torso.vertices"], t["extra.torso.faces"]
        save_file(t, str(bad / "avatar.safetensors"))
        json.loads((bad / "avatar.json").read_text())
        Avatar.load(bad, head=model)
