"""Pictures of a tracking result for people: mesh wireframe and landmarks drawn on the frames."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..flame import FlameModel
from ..perceive.dataset import FrameDataset
from .result import TrackingResult
from .tracker import project

__all__ = ["overlay_frames", "draw_overlay"]


def _front_edges(verts_2d: np.ndarray, verts_cam_z: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Edges of triangles that face the camera (counter-clockwise on screen in y-down pixels)."""
    tri = verts_2d[faces]  # [F, 3, 2]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    facing = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) < 0
    f = faces[facing]
    return np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])


def draw_overlay(image: np.ndarray, verts_2d: np.ndarray, faces: np.ndarray, detected: np.ndarray | None,
                 fitted: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """Wireframe (white, translucent), detected landmarks (green) and fitted landmarks (red)."""
    import cv2

    img = image.copy()
    wire = img.copy()
    edges = _front_edges(verts_2d, z, faces)
    pts = (verts_2d * 4).round().astype(np.int32)  # 2 bits of sub-pixel precision
    lines = np.stack([pts[edges[:, 0]], pts[edges[:, 1]]], 1)
    cv2.polylines(wire, list(lines), False, (255, 255, 255), 1, cv2.LINE_AA, shift=2)
    img = cv2.addWeighted(wire, 0.35, img, 0.65, 0)
    for pts_, colour in ((detected, (0, 255, 0)), (fitted, (255, 40, 40))):
        if pts_ is None:
            continue
        for x, y in (pts_ * 4).round().astype(np.int32):
            cv2.circle(img, (int(x), int(y)), 4, colour, -1, cv2.LINE_AA, shift=2)
    return img


def overlay_frames(dataset: FrameDataset, result: TrackingResult, model: FlameModel,
                   frames: list[int] | None = None) -> Iterator[np.ndarray]:
    """Yield overlay images for the chosen dataset entries (all by default)."""
    faces = model.faces.cpu().numpy()
    res = result.resolution
    for i in frames if frames is not None else range(len(result)):
        p = result.params[i]
        if p.shape.shape[1] != model.n_shape or p.expr.shape[1] != model.n_expr:
            raise ValueError("the model's component counts differ from the tracking's; load it with n_shape/n_expr")
        with torch.no_grad():
            verts = model(p, landmark_set=None).vertices
            v2d = project(verts, result.cameras.Ks[i, 0, 0], res)[0].numpy()
        det = dataset.lmk_crop[i, :, :2] if dataset.detected[i] else None
        yield draw_overlay(dataset.image(i), v2d, faces, det, result.landmarks_2d[i])
