"""A square pinhole camera for the small synthetic scenes of the rendering and edit tests."""

from __future__ import annotations

import torch

from dynavatar.geometry.cameras import Cameras


def square_camera(res: int) -> Cameras:
    """At the origin looking along +z, ``res`` x ``res`` px, focal length ``res`` px, centred: a splat
    0.1 apart at z = 2 lands 2 px from its neighbour."""
    K = torch.tensor([[res, 0.0, res / 2], [0.0, res, res / 2], [0.0, 0.0, 1.0]])
    return Cameras(torch.eye(4), K, res, res)
