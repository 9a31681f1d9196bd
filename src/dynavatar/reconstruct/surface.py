"""Keep every splat near its own triangle's surface, so a turned head shows the same skin.

A monocular clip sees the face from the front only. A splat can then sit anywhere along its pixel's
ray: behind the skin, several millimetres in front of it, or slid centimetres across the surface
from its triangle (a scalp splat drawing the forehead). The frontal views add up the same either way;
turn the head by 30 degrees and the layers separate into patches of dark hair and skin. GaussianAvatars'
soft position loss (``w_position``) does not stop that with one view: its gradient is tiny beside the
photometric one.

So after every optimiser step the splats' positions are projected into a box around their triangle
(``project_to_surface_``), in units of the triangle's size k (~4 mm on the face, ~1 cm on the scalp):

- the face (brows, eyes, nose, lips, mouth, and the skin in front of the ears): on the skin, within
  ``face_normal`` along the normal and ``face_plane`` across it;
- nowhere deeper than ``inside`` below the surface (the inside of the head is never seen);
- elsewhere (scalp, ears, neck, the rest of the skin): hair and clothes stand off the head, so up to
  ``outside_normal`` out and ``outside_plane`` across;
- the torso sheet, a rough stand-in for the shoulders, ``torso_normal`` / ``torso_plane``.

A projection, not a penalty: it holds exactly whatever the photometric gradient says, and it costs
one clamp per step.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..errors import ConfigError
from ..flame import FlameModel
from ..flame.torso import TORSO_REGION
from ..geometry.triangles import triangle_frames

__all__ = ["SurfaceBox", "surface_bounds", "face_triangles", "triangle_regions", "project_to_surface_", "FACE_REGIONS"]

#: regions that are always face (the skin is split by where it sits: ``surface_bounds``)
FACE_REGIONS = ("left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip", "lower_lip",
                "mouth_interior")


@dataclasses.dataclass(frozen=True)
class SurfaceBox:
    """How far a splat may sit from its triangle, in units of the triangle's size k."""

    face_normal: tuple[float, float] = (-0.3, 0.6)
    face_plane: float = 1.2
    inside: float = 0.3
    outside_normal: float = 5.0
    outside_plane: float = 3.0
    torso_normal: tuple[float, float] = (-1.0, 1.5)
    torso_plane: float = 2.0
    face_ahead_of_ears: float = 0.02  # metres: skin this far in front of the ears counts as face
    near_metres: tuple[float, float] = (0.0, 0.0)  # > 0: the neck, the ears and the skin behind the face (not the
    # scalp, not the face, not the torso) stay within this many metres out / across, whatever their size k
    # (the neck's triangles are ~11 mm: 5 k out reaches in front of the chin)

    def __post_init__(self) -> None:
        for name in ("face_normal", "torso_normal"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"surface.{name}={lo},{hi}: give the lowest offset first (e.g. -0.3,0.6)")
        for name in ("face_plane", "inside", "outside_normal", "outside_plane", "torso_plane"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"surface.{name}={getattr(self, name)}: it cannot be negative")
        if not all(m >= 0 for m in self.near_metres):
            raise ConfigError(f"surface.near_metres={self.near_metres}: it cannot be negative (0 turns the cap off)")


def triangle_regions(model: FlameModel) -> Tensor | None:
    """[F] long: each triangle's region (the most common of its three vertices'); None without regions."""
    if model.vertex_region is None or not model.region_names:
        return None
    faces = model.faces.long()
    return torch.as_tensor(model.vertex_region, device=faces.device).long()[faces].mode(dim=1).values


def _neutral_frames(model: FlameModel):
    """``triangle_frames`` of the neutral head (zero shape, expression and pose)."""
    return triangle_frames(model(model.zero_params(1), landmark_set=None).vertices[0], model.faces.long())


def _face_mask(model: FlameModel, region: Tensor | None, ahead_of_ears: float, neutral=None) -> Tensor:
    faces = model.faces.long()
    face = torch.zeros(faces.shape[0], dtype=torch.bool, device=faces.device)
    if region is None:
        return face
    names = model.region_names
    for name in FACE_REGIONS:
        if name in names:
            face |= region == names.index(name)
    ears = [names.index(n) for n in ("left_ear", "right_ear") if n in names]
    if "skin" in names and ears:
        centre_z = (neutral if neutral is not None else _neutral_frames(model)).centroids[:, 2]  # [F] forward (FLAME: +z out of the face)
        ear_front = centre_z[torch.isin(region, torch.tensor(ears, device=faces.device))].max()
        face |= (region == names.index("skin")) & (centre_z > ear_front + ahead_of_ears)
    return face


@torch.no_grad()
def face_triangles(model: FlameModel, ahead_of_ears: float = 0.02) -> Tensor:
    """[F] bool: the face's triangles (``FACE_REGIONS``, and the skin more than ``ahead_of_ears`` metres
    in front of the ears on the neutral head). All False for a model without regions."""
    return _face_mask(model, triangle_regions(model), ahead_of_ears)


@torch.no_grad()
def surface_bounds(model: FlameModel, box: SurfaceBox | None = None) -> Tensor:
    """Per triangle ``[F, 3]``: (lowest, highest) offset along the normal and the largest offset across
    it, in units of k. A model without regions gets the loose rule (``outside_*``) everywhere but the
    inside limit."""
    box = box or SurfaceBox()
    dev = model.faces.device
    bounds = torch.tensor([-box.inside, box.outside_normal, box.outside_plane], device=dev).repeat(len(model.faces), 1)
    region = triangle_regions(model)
    if region is None:
        return bounds
    names = model.region_names
    neutral = _neutral_frames(model)
    face = _face_mask(model, region, box.face_ahead_of_ears, neutral)
    torso = region == names.index(TORSO_REGION) if TORSO_REGION in names else torch.zeros_like(face)
    bounds[face] = torch.tensor([*box.face_normal, box.face_plane], device=dev)
    bounds[torso] = torch.tensor([*box.torso_normal, box.torso_plane], device=dev)
    if box.near_metres[0] > 0:  # the neck, ears and skin behind the face: capped in metres too
        near = ~face & ~torso & (region != names.index("scalp") if "scalp" in names else True)
        k = neutral.scales  # [F] metres
        bounds[near, 1] = torch.minimum(bounds[near, 1], box.near_metres[0] / k[near])
        bounds[near, 2] = torch.minimum(bounds[near, 2], box.near_metres[1] / k[near])
    return bounds


@torch.no_grad()
def project_to_surface_(means_local: Tensor, binding: Tensor, bounds: Tensor) -> None:
    """Clamp triangle-local positions ``[N, 3]`` (columns: along the edge, the normal, across; units of k)
    into their triangle's ``bounds`` row (``surface_bounds``), in place."""
    b = bounds[binding.long()]  # [N, 3]
    means_local[:, 1] = torch.maximum(torch.minimum(means_local[:, 1], b[:, 1]), b[:, 0])
    plane = means_local[:, [0, 2]]  # [N, 2]
    shrink = (b[:, 2] / plane.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)  # [N]
    means_local[:, 0] *= shrink
    means_local[:, 2] *= shrink
