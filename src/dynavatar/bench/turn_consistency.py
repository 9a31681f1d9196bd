"""Does the face stick to the head when it turns? A figure and a picture for turned heads.

A clip shows the head from the front, so held-out PSNR cannot see an avatar whose splats sit in
layers in front of and behind the skin: the layers add up right from the front and come apart into
patches when the head turns. There is no photograph of the turned head to compare with, but there is
an invariant: a point of the face seen in both views must have the same colour in both (the avatar
has no view-dependent colour at ``sh_degree`` 0, and the light is baked in).

``turn_consistency`` renders a frame as it is and with the head turned by +-``yaw``, takes the face's
mesh vertices that both views see (facing the camera, not hidden behind nearer vertices), samples both
renders where each vertex projects, and reports the PSNR of the one against the other. Splats that sit
on the skin give a high figure; splats that drift off it give a low one, wherever the turn moves them.

A second figure counts what a person sees first on a turned head: flecks, small bright or dark
spots on the skin (splats standing across the surface, seen edge-on from the front). ``flecks`` is the
share of the skin's vertices (the face without eyes, brows and lips, whose edges are meant to be sharp)
where the render differs from its own ``FLECK_SIZE`` median by more than ``FLECK_STEP``; smooth skin
gives ~0, and the tracked view's share (``flecks_front``) is its reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["turn_consistency", "save_turned_heads", "visible_vertices", "fleck_map", "FLECK_STEP", "FLECK_SIZE"]

#: a pixel this far (0..1, any channel) from the median of its FLECK_SIZE x FLECK_SIZE neighbourhood is on
#: a fleck: ~25/255, more than skin's texture at a render's resolution, less than a white or dark splat on
#: skin; 7 px catches the 1-3 px spots of a 512-px render (a 3 px median passes over all but single pixels)
FLECK_STEP = 0.1
FLECK_SIZE = 7
#: the face's regions whose vertices count for flecks: skin, where any sharp spot is a fault
_SMOOTH_REGIONS = ("skin", "nose")


def visible_vertices(points: torch.Tensor, normals: torch.Tensor, camera, min_facing: float = 0.3,
                     cell: float = 6.0, tolerance: float = 0.006) -> tuple[torch.Tensor, torch.Tensor]:
    """Which vertices a camera sees, and where.

    points, normals: [V, 3] world; camera: ``Cameras`` with one view. A vertex is seen when its normal
    faces the camera by ``min_facing`` (cosine) and no vertex in its ``cell``-pixel cell is nearer by more
    than ``tolerance`` metres plus what a slope of ``1 / min_facing`` climbs across the cell (a point
    z-buffer: on the safe side, it may drop a visible vertex on a steep slope, not keep a hidden one
    behind a nearer surface). -> (seen [V] bool, pixels [V, 2])."""
    from ..geometry.cameras import project_points

    view, K = camera.viewmats[0].to(points), camera.Ks[0].to(points)
    pix, z = project_points(points, view, K)  # [V, 2], [V]
    centre = camera.centers[0].to(points)
    to_camera = torch.nn.functional.normalize(centre - points, dim=-1)
    facing = (normals * to_camera).sum(-1) > min_facing
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < camera.width) & (pix[:, 1] >= 0) & (pix[:, 1] < camera.height) & (z > 0)
    cols = int(np.ceil(camera.width / cell))
    key = (pix[:, 1].clamp(0, camera.height - 1) // cell).long() * cols + (pix[:, 0].clamp(0, camera.width - 1) // cell).long()
    nearest = torch.full((cols * int(np.ceil(camera.height / cell)),), float("inf"), dtype=z.dtype)
    front = inside & facing  # only surfaces facing the camera can hide others
    nearest.scatter_reduce_(0, key[front], z[front], reduce="amin")
    climb = cell * z / K[0, 0] * (1.0 - min_facing**2) ** 0.5 / min_facing  # [V] metres across one cell
    return inside & facing & (z <= nearest[key] + tolerance + climb), pix


def fleck_map(image: np.ndarray) -> np.ndarray:
    """[H, W] float 0..1: each pixel's largest channel distance from its ``FLECK_SIZE`` median (uint8 [H, W, 3] in)."""
    import cv2

    median = cv2.medianBlur(np.ascontiguousarray(image), FLECK_SIZE)
    return np.abs(image.astype(np.float32) - median.astype(np.float32)).max(-1) / 255.0


def _fleck_share(image: np.ndarray, pix: torch.Tensor) -> float:
    """Share of the points ``pix`` [P, 2] that sit on a fleck (``fleck_map`` > ``FLECK_STEP``, nearest pixel)."""
    flecks = fleck_map(image) > FLECK_STEP
    h, w = flecks.shape
    x = pix[:, 0].long().clamp(0, w - 1).numpy()
    y = pix[:, 1].long().clamp(0, h - 1).numpy()
    return float(flecks[y, x].mean()) if len(x) else float("nan")


def _vertices_of(faces: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """[n] bool: the vertices of the triangles ``faces[keep]`` ([F, 3] long, [F] bool)."""
    out = torch.zeros(n, dtype=torch.bool)
    out[faces[keep].flatten()] = True
    return out


def _smooth_triangles(model, face: torch.Tensor) -> torch.Tensor:
    """[F] bool: the skin triangles (``_SMOOTH_REGIONS``) among ``face`` ([F] bool); all of ``face`` for a
    model without those regions."""
    from ..reconstruct.surface import triangle_regions

    region, names = triangle_regions(model), model.region_names or []
    keep = face.clone()
    smooth = [names.index(r) for r in _SMOOTH_REGIONS if r in names]
    if region is not None and smooth:
        keep &= torch.isin(region.cpu(), torch.tensor(smooth))
    return keep


def _sample(image: np.ndarray, pix: torch.Tensor) -> np.ndarray:
    """Bilinear colours [P, 3] in 0..1 of a uint8 image [H, W, 3] at pixel positions [P, 2] (centres at +0.5)."""
    img = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0
    h, w = image.shape[:2]
    grid = torch.stack([pix[:, 0] / w * 2 - 1, pix[:, 1] / h * 2 - 1], -1).float()[None, None]  # [1, 1, P, 2]
    return torch.nn.functional.grid_sample(img, grid, align_corners=False)[0, :, 0].T.numpy()


@torch.no_grad()
def turn_consistency(avatar, frame: int, yaw: float = 0.5) -> dict:
    """PSNR [dB] between the frame's render and the render with the head turned by -``yaw`` and +``yaw``,
    over the face's vertices both see. -> {"psnr": mean over the two turns, "psnr_left", "psnr_right",
    "points": vertices compared (the smaller turn's count), "flecks": share of the skin's vertices each
    turned view sees that sit on a fleck, mean over the two turns, "flecks_front": the same share in the
    tracked view, "images": the renders turned -``yaw``, as tracked, turned +``yaw`` (uint8 [H, W, 3] each)}."""
    from ..flame.pose import rotate_head
    from ..geometry.mesh import vertex_normals
    from ..reconstruct.surface import face_triangles

    model = avatar.model
    faces = model.faces.long().cpu()
    n = int(faces.max()) + 1  # vertices, with the torso sheet's if any
    face = face_triangles(model).cpu()
    face = face if face.any() else torch.ones_like(face)  # a head without regions: all of it
    face_vertices = _vertices_of(faces, face, n)  # [V]
    skin_vertices = _vertices_of(faces, _smooth_triangles(model, face), n)  # [V]
    camera = avatar.cameras[frame]

    def seen(params):
        v = model.to(avatar.device)(params.to(avatar.device), landmark_set=None).vertices[0].cpu().double()
        n = torch.from_numpy(vertex_normals(v.numpy(), faces.numpy())[0])
        ok, pix = visible_vertices(v, n, camera.to("cpu", torch.float64))
        return ok, pix, avatar.render(params=params, camera=camera)

    ok0, pix0, image0 = seen(avatar.params[frame])
    out, points, turned, flecks = {}, [], [], []
    out["flecks_front"] = _fleck_share(image0, pix0[ok0 & skin_vertices])
    for side, sign in (("left", -1.0), ("right", 1.0)):
        ok1, pix1, image1 = seen(rotate_head(avatar.params[frame], sign * yaw))
        turned.append(image1)
        flecks.append(_fleck_share(image1, pix1[ok1 & skin_vertices]))
        both = ok0 & ok1 & face_vertices
        points.append(int(both.sum()))
        if not both.any():
            out[f"psnr_{side}"] = float("nan")
            continue
        mse = float(((_sample(image0, pix0[both]) - _sample(image1, pix1[both])) ** 2).mean())
        out[f"psnr_{side}"] = 10 * np.log10(1.0 / max(mse, 1e-10))
    out["psnr"] = float(np.mean([out["psnr_left"], out["psnr_right"]]))
    out["points"] = min(points)
    out["flecks"] = float(np.mean(flecks))
    out["images"] = (turned[0], image0, turned[1])
    return out


def save_turned_heads(avatar, frames: list[int], path: Path, yaw: float = 0.5) -> list[dict]:
    """Per frame a row of one PNG: the head turned by -``yaw``, as tracked, turned by +``yaw``.
    -> each frame's ``turn_consistency`` (from the same renders)."""
    import imageio.v3 as iio

    figures = [turn_consistency(avatar, f, yaw) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.concatenate([np.concatenate(r["images"], 1) for r in figures], 0))
    return figures
