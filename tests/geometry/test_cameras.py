"""Cameras at another image size: the same ray lands on the scaled pixel."""

from __future__ import annotations

import torch

from dynavatar.geometry.cameras import Cameras, project_points


def test_scaled_cameras_move_each_point_to_its_scaled_pixel():
    cams = Cameras.look_at(torch.tensor([[0.1, 0.2, 2.0], [-0.3, 0.0, 1.5]]), width=512, height=384)
    pts = torch.tensor([[[0.05, -0.02, 0.1], [0.0, 0.1, -0.05]]]).expand(2, 2, 3)  # [C, P, 3]
    small = cams.scaled(0.25)
    assert (small.width, small.height) == (128, 96)
    px, z = project_points(pts, cams.viewmats, cams.Ks)  # [C, P, 2], [C, P]
    px_small, z_small = project_points(pts, small.viewmats, small.Ks)
    assert torch.allclose(px_small, px * 0.25, atol=1e-4) and torch.equal(z_small, z)
    assert cams.scaled(1.0) is cams and cams.scaled(2.0) is cams
    assert torch.equal(cams.Ks, Cameras.look_at(torch.tensor([[0.1, 0.2, 2.0], [-0.3, 0.0, 1.5]]),
                                                width=512, height=384).Ks)  # not changed in place
