"""The GaussianAvatars/VHAP export importer on a synthetic export folder."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from dynavatar.errors import DynavatarError
from dynavatar.track import TrackingResult
from dynavatar.track.importers import import_vhap, opengl_c2w_to_viewmat


def _export(tmp_path, n=3, w=60, h=80):
    root = tmp_path / "export"
    for d in ("images", "fg_masks", "flame_param"):
        (root / d).mkdir(parents=True)
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, 1.0]  # OpenGL camera 1 m in front of the head, looking down -z
    frames = []
    for t in range(n):
        iio.imwrite(root / f"images/{t:05d}_00.png", np.full((h, w, 3), 40 * t, np.uint8))
        iio.imwrite(root / f"fg_masks/{t:05d}_00.png", np.full((h, w), 255, np.uint8))
        np.savez(root / f"flame_param/{t:05d}.npz", translation=np.array([[0, 0, t * 0.01]]), rotation=np.zeros((1, 3)),
                 neck_pose=np.zeros((1, 3)), jaw_pose=np.array([[0.1 * t, 0, 0]]), eyes_pose=np.zeros((1, 6)),
                 shape=np.arange(300) * 1e-3, expr=np.ones((1, 100)) * t, static_offset=np.zeros((1, 5023, 3)))
        frames.append({"timestep_index": t, "camera_index": 0, "file_path": f"images/{t:05d}_00.png",
                       "fg_mask_path": f"fg_masks/{t:05d}_00.png", "flame_param_path": f"flame_param/{t:05d}.npz",
                       "transform_matrix": c2w.tolist()})
    (root / "transforms.json").write_text(json.dumps({"fl_x": 100.0, "fl_y": 100.0, "cx": 30.0, "cy": 40.0, "w": w,
                                                      "h": h, "frames": frames}))
    return root


def test_import_vhap(tmp_path):
    ds, result = import_vhap(_export(tmp_path), tmp_path / "out", resolution=40)
    assert len(ds) == 3 and ds.image(0).shape == (40, 40, 3)
    assert torch.allclose(result.params.jaw[:, 0], torch.tensor([0.0, 0.1, 0.2]))
    assert result.params.shape.shape == (3, 300) and result.params.expr.shape == (3, 100)
    # 60x80 padded to 80x80 then scaled by 0.5: principal point (30+10, 40) * 0.5.
    assert torch.allclose(result.cameras.Ks[0], torch.tensor([[50.0, 0, 20], [0, 50, 20], [0, 0, 1]]))
    # The head origin is 1 m in front of the OpenCV camera.
    p = result.cameras.viewmats[0] @ torch.tensor([0, 0, 0, 1.0])
    assert torch.allclose(p[:3], torch.tensor([0, 0, 1.0]))
    back = TrackingResult.load(tmp_path / "out" / "tracking")
    assert torch.equal(back.params.expr, result.params.expr)


def test_opengl_conversion_is_a_rigid_inverse():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, rng.normal(size=3)
    v = opengl_c2w_to_viewmat(c2w)
    assert np.allclose(v[:3, :3] @ v[:3, :3].T, np.eye(3)) and np.isclose(np.linalg.det(v[:3, :3]), 1)
    centre = -v[:3, :3].T @ v[:3, 3]
    assert np.allclose(centre, c2w[:3, 3])


def test_bad_export_folders(tmp_path):
    with pytest.raises(DynavatarError, match="transforms.json"):
        import_vhap(tmp_path, tmp_path / "o")
    root = _export(tmp_path)
    with pytest.raises(DynavatarError, match="camera 5"):
        import_vhap(root, tmp_path / "o", camera=5)
