"""Assemble the demo head's appearance (``head_appearance``) from its parts.

``demo_head_appearance(model)`` is what ``dynavatar demo`` draws and saves: the skin surface,
the eyeballs, the hair, brows and lashes, and the shoulders, all splats bound to the model's
triangles (the shoulders to a torso sheet appended to it). A head without regions or eyeballs (a
FLAME file, a test head) still gets a shaded, uniformly skin-coloured surface: the parts that need
to know where the scalp or the eyes are are left out.
"""

from __future__ import annotations

import numpy as np

from ..flame import FlameModel
from ..geometry.labels import REGION_TO_LABEL, label_index
from .head_appearance import HeadAppearance, HeadGeometry, SplatSet, fibonacci_directions, sphere_splats, \
    surface_splats
from .hair_splats import brow_part, hair_part, lash_part
from .head_colours import GUM, IRIS_ANGLE, TEETH, eye_albedo, eye_rim_vertices, vertex_albedo, vertex_gloss, vertex_occlusion
from .shoulders import shoulder_part, with_shoulders

__all__ = ["demo_head_appearance", "surface_part", "eye_part"]


def _triangle_labels(geo: HeadGeometry) -> np.ndarray:
    """[F] label index of each triangle from its majority region ("skin" without regions)."""
    fr = geo.face_region()
    lut = np.array([label_index(REGION_TO_LABEL.get(n, "skin")) for n in geo.names] + [label_index("skin")])
    return lut[fr]  # fr == -1 picks the trailing "skin"


def surface_part(geo: HeadGeometry, seed: int = 0) -> SplatSet:
    """Discs on every head triangle except the eyeballs (drawn by ``eye_part``) and the socket
    cups in front of them; finer discs where colour changes within a triangle (lips, lid rims)."""
    faces = geo.faces
    skip = geo.in_region("torso")[faces].any(1)  # the shoulders are ``shoulders.shoulder_part``'s
    rim_any = np.zeros(len(geo.verts), dtype=bool)
    for (_, _, ids), (cup, rim) in zip(geo.eyes, eye_rim_vertices(geo)):
        skip |= np.isin(faces, ids).any(1) | cup[faces].all(1)
        rim_any |= rim | cup
    tris = np.flatnonzero(~skip)
    level = np.ones(len(tris), dtype=np.int64)
    fine = geo.in_region("upper_lip", "lower_lip") | rim_any
    level[fine[faces[tris]].any(1)] = 2
    albedo = vertex_albedo(geo, seed) if geo.region is not None else \
        np.tile([0.80, 0.62, 0.52], (len(geo.verts), 1))
    labels = _triangle_labels(geo)
    labels[rim_any[faces].any(1)] = label_index("skin")  # the lids' rims: an eye-colour edit leaves them alone
    # Lips are the triangles inside the lip line: the long radial skin triangles fanning out from it
    # have two corners on it, so a majority vote called them lips, and lipstick painted them as red needles
    lip_vertex = geo.in_region("upper_lip", "lower_lip")
    lip_label = np.isin(labels, [label_index("upper_lip"), label_index("lower_lip")])
    labels[lip_label & ~lip_vertex[faces].all(1)] = label_index("skin")
    return surface_splats(geo, tris, level, albedo, vertex_occlusion(geo), vertex_gloss(geo), labels[tris])


def eye_part(geo: HeadGeometry, seed: int = 0, n_front: int = 900, n_back: int = 500) -> SplatSet:
    """Dense discs over the front of each eyeball, coloured by the angle from its forward axis
    (+z in the rest pose): the pupil and iris are where the eye joint points them."""
    parts = []
    iris, sclera = label_index("iris"), label_index("sclera")  # the pupil belongs to the iris (an eye edit's region)
    for i, (centre, radius, ids) in enumerate(geo.eyes):
        front = fibonacci_directions(n_front, 0.75, power=1.0)
        back = fibonacci_directions(n_back, 1.6)
        back = back[np.arccos(back[:, 2]) > 0.75]
        dirs = np.concatenate([front, back])
        cap = lambda n, a: np.sqrt(2 * np.pi * (1 - np.cos(a)) / n) * radius  # noqa: E731
        spacing = np.r_[np.full(len(front), cap(n_front, 0.75)), np.full(len(back), cap(n_back, 1.6))]
        s, angle = sphere_splats(geo, centre, radius, ids, dirs, spacing, np.array([0.0, 0.0, 1.0]))
        azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
        s.albedo = eye_albedo(angle, azimuth, seed + i)
        s.gloss = np.full(len(s), 0.9)
        s.occlusion = np.clip(1.0 - 0.25 * (angle / 1.2) ** 2, 0.6, 1.0)
        s.label = np.where(angle < IRIS_ANGLE, iris, sclera)
        parts.append(s)
    return SplatSet.cat(parts)


def teeth_part(geo: HeadGeometry, spacing: float = 0.0006) -> SplatSet:
    """Two rows of teeth along an arch just behind the lips, facing forward: the upper row bound to
    the mouth bag's upper (head) triangles, the lower row to its jaw triangles, so the mouth shows
    teeth when it opens. Seams between teeth are darker, the sides are in the mouth's shadow."""
    bag = geo.in_region("mouth_interior")
    if not bag.any():
        return SplatSet.cat([])
    vb = geo.verts[bag]
    front = vb[:, 2] > vb[:, 2].max() - 0.002
    slit_y, front_z = float(vb[front, 1].mean()), float(vb[:, 2].max())
    half = 0.55 * float(np.ptp(vb[:, 0]))
    xs = np.arange(-half, half + 1e-9, spacing)
    parts = []
    for lower in (False, True):
        hs = np.arange(0.0, 0.007, spacing)
        x, h = np.meshgrid(xs, hs, indexing="ij")
        x, h = x.ravel(), h.ravel()
        y = slit_y - 0.0015 - h if lower else slit_y - 0.0012 + h
        z = front_z - 0.0035 - 40.0 * x ** 2
        pos = np.stack([x, y, z], -1)
        n = np.stack([80.0 * x, np.zeros_like(x), np.ones_like(x)], -1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        up = np.tile([0.0, 1.0, 0.0], (len(x), 1))
        frame = np.stack([up, n, np.cross(up, n)], -1)
        sig = 0.7 * spacing
        side = geo.jaw_weight[geo.faces].mean(1) > 0.5
        tris = np.flatnonzero(bag[geo.faces].all(1) & (side if lower else ~side))
        cen = geo.verts[geo.faces[tris]].mean(1)
        tri = tris[np.argmin(((pos[:, None] - cen[None]) ** 2).sum(-1), 1)]
        edges = (np.array([0.0, 5.5, 11.0, 16.5, 22.0]) if lower else np.array([0.0, 8.5, 15.0, 21.5, 28.0])) / 1000
        seam = np.exp(-(np.abs(np.abs(x)[:, None] - edges).min(1) / 0.0005) ** 2)
        gumline = np.clip((h - 0.0055) / 0.0015, 0, 1)  # the teeth meet the gums
        albedo = TEETH * (1 - 0.3 * seam)[:, None]
        albedo = albedo * (1 - gumline)[:, None] + GUM * gumline[:, None]
        occ = 0.85 - 0.45 * np.clip(np.abs(x) / half, 0, 1) ** 1.5
        m = len(x)
        parts.append(SplatSet(tri, pos, frame, np.tile([sig, 0.15 * sig, sig], (m, 1)), np.full(m, 0.98), albedo,
                              n, np.zeros((m, 3)), occ, np.full(m, 0.3), np.full(m, label_index("teeth"))))
    return SplatSet.cat(parts)


def demo_head_appearance(model: FlameModel, shape=None, seed: int = 0, hair: bool = True, shoulders: bool = True
                         ) -> HeadAppearance:
    """The demo head's splats for identity ``shape`` [n_shape] (default zero), bound to ``model``
    (returned with it: with shoulders, a copy of the model carrying them as its torso sheet)."""
    model = model.without_torso()
    ring = None
    if shoulders:
        model, ring = with_shoulders(model, HeadGeometry.of(model, shape))
    geo = HeadGeometry.of(model, shape)
    parts = [surface_part(geo, seed)]
    if ring is not None:
        parts.append(shoulder_part(geo, ring))
    if geo.eyes:
        parts.append(eye_part(geo, seed))
    parts.append(teeth_part(geo))
    if hair:
        parts += [hair_part(geo), brow_part(geo), lash_part(geo)]
    splats = SplatSet.cat(parts)
    return HeadAppearance.from_splats(splats, model, geo, shape)
