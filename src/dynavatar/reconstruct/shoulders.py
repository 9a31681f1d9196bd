"""Shoulders in a dark top for the demo head: a rounded trunk carried as the model's torso sheet.

A head on a bare neck tube looks like a mannequin's; a neck that goes into shoulders and a collar
looks like a person. ``FlameModel.with_torso`` appends any sheet of triangles that follows the
head's translation but not its rotation (the shoulders stay while the head turns and nods), and the
saved avatar carries it (``extra.torso.*``), so the demo builds its own: a tube around the neck's
base whose radius flares out and down into the slope of the trapezius and the round of the
shoulders, then runs straight down as the chest and upper arms. Only its front two thirds are
built (the camera never sees its back). The top is a dark crew-neck shirt: a ribbed collar band
around the neck, soft folds, and shade under the neck.
"""

from __future__ import annotations

import numpy as np
import torch

from ..flame import FlameModel
from ..geometry.labels import label_index
from .head_appearance import HeadGeometry, SplatSet, surface_splats
from .head_colours import smooth_noise

__all__ = ["SHIRT", "shoulder_mesh", "with_shoulders", "shoulder_part"]

SHIRT = np.array([0.16, 0.18, 0.24])  # a dark navy top


def _neck_ring(geo: HeadGeometry) -> tuple[float, float, float, float, float]:
    """Centre (z), half-width, half-depth and the lowest y of the neck, from its region (or the
    lowest tenth of the head).  -> (z_centre, half_x, half_z, y_bottom, x_centre)"""
    neck = geo.in_region("neck")
    if not neck.any():
        y = geo.verts[geo.head, 1]
        neck = geo.head & (geo.verts[:, 1] <= np.quantile(y, 0.1))
    v = geo.verts[neck]
    low = v[v[:, 1] <= np.quantile(v[:, 1], 0.35)]
    return (float((low[:, 2].max() + low[:, 2].min()) / 2), float(np.ptp(low[:, 0]) / 2), float(np.ptp(low[:, 2]) / 2),
            float(v[:, 1].min()), float(low[:, 0].mean()))


def _profile(t: np.ndarray, drop: float) -> tuple[np.ndarray, np.ndarray]:
    """Ring ``t`` in [0, 1] of the trunk -> (flare in [0, 1] from the collar's size to the
    shoulders', height below the collar (m)). The top slopes out and down (the trapezius), turns
    over the shoulder (the flare stops growing as the height keeps falling) and runs straight down."""
    s = np.minimum(t / 0.5, 1.0)
    flare = 1 - (1 - s) ** 1.8
    u = np.clip((t - 0.5) / 0.5, 0, 1)
    below = drop * (1.0 * s ** 1.2 + 0.4 * np.sin(u * np.pi / 2) + 3.0 * u ** 1.5)
    return flare, below


def shoulder_mesh(geo: HeadGeometry, rings: int = 22, around: int = 40, width: float = 0.18,
                  depth: float = 0.105, drop: float = 0.07) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trunk's vertices [T, 3] (FLAME rest coordinates), faces [Ft, 3] (indexing them, facing
    out) and each vertex's ring parameter in [0, 1] (0: the collar) [T]."""
    zc, hx, hz, y_bottom, xc = _neck_ring(geo)
    gap = 0.007
    y0 = y_bottom + 0.062  # the collar sits this far above the neck's cut end
    t = np.linspace(0, 1, rings)
    flare, below = _profile(t, drop)
    sx = hx + gap + (width - hx - gap) * flare
    sz = hz + gap + (depth - hz - gap) * flare
    theta = np.linspace(-0.62 * np.pi, 0.62 * np.pi, around)  # 0 faces the camera
    c, s = np.cos(theta), np.sin(theta)
    p = 2.6  # a superellipse: the chest is flatter than a cylinder
    fx = np.sign(s) * np.abs(s) ** (2 / p)
    fz = np.sign(c) * np.abs(c) ** (2 / p)
    verts = np.stack([xc + sx[:, None] * fx[None], np.repeat((y0 - below)[:, None], around, 1),
                      zc + sz[:, None] * fz[None]], -1).reshape(-1, 3)
    r, a = np.meshgrid(np.arange(rings - 1), np.arange(around - 1), indexing="ij")
    v00 = (r * around + a).ravel()
    v01, v10 = v00 + 1, v00 + around
    v11 = v10 + 1
    faces = np.concatenate([np.stack([v00, v01, v10], 1), np.stack([v01, v11, v10], 1)])
    # face the outside: the normals should point away from the trunk's axis
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = tri.mean(1) - np.array([xc, 0.0, zc])
    out[:, 1] = 0
    if (n * out).sum(1).mean() < 0:
        faces = faces[:, [0, 2, 1]]
    return verts, faces, np.repeat(t, around)


def with_shoulders(model: FlameModel, geo: HeadGeometry) -> tuple[FlameModel, np.ndarray]:
    """``model`` with the trunk as its torso sheet, and each sheet vertex's ring parameter [T]."""
    verts, faces, t = shoulder_mesh(geo)
    return model.with_torso(torch.as_tensor(verts, dtype=torch.float32),
                            torch.as_tensor(faces, dtype=torch.long)), t


def shoulder_part(geo: HeadGeometry, ring: np.ndarray, seed: int = 3) -> SplatSet:
    """Discs over the trunk (``geo`` of the model *with* the sheet; ``ring`` [T] from
    ``with_shoulders``): the shirt with a ribbed collar band, folds and the neck's shade."""
    n_head = len(geo.verts) - len(ring)
    sheet = np.zeros(len(geo.verts), dtype=bool)
    sheet[n_head:] = True
    tris = np.flatnonzero(sheet[geo.faces].all(1))
    v = geo.verts
    t = np.zeros(len(v))
    t[n_head:] = ring
    albedo = np.tile(SHIRT, (len(v), 1))
    albedo *= (1 + 0.08 * smooth_noise(v, seed, (0.03, 0.09)))[:, None]
    collar = np.clip(1 - t / 0.06, 0, 1)
    albedo *= (1 - 0.18 * collar * (np.sin(np.arctan2(v[:, 0], v[:, 2] + 0.03) * 60) > 0))[:, None]
    occ = 0.55 + 0.45 * np.clip(t / 0.35, 0, 1) ** 0.7  # the neck and chin shade the collar
    gloss = np.full(len(v), 0.03)
    return surface_splats(geo, tris, np.ones(len(tris), dtype=np.int64), albedo, occ, gloss,
                          np.full(len(tris), label_index("clothes")), spread=2.2)
