"""Colour fields of the demo head: per-vertex albedo, occlusion and gloss, and the eyeballs' colour.

Why per vertex: the head's triangles are a few millimetres across, so colours that vary smoothly
over the surface and are interpolated to each splat look like skin instead of a patchwork of
flat facets. Everything is procedural (seeded smooth noise, soft blobs placed from the head's own
regions and eyeballs), so the head is the project's own and identical on every machine.

- skin: a warm base with low-frequency mottling, redder cheeks, nose and ears, a darker jaw and
  under-eye, a slightly lighter forehead, and the shadow of the chin on the neck;
- lips: darker towards the mouth, lighter at the border, blended into the skin;
- mouth bag: gums behind the lips, a tongue below, the palate above, a dark throat;
- occlusion: cavities (the mesh against a smoothed copy of itself) and downward-facing skin
  are darker, which gives eye sockets, nostrils, lip corners and ear folds their depth;
- eyeballs: pupil, a radially streaked iris with a darker limbal ring, and a faintly pink sclera,
  all by the angle from the eyeball's forward axis in the rest pose.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..geometry.mesh import vertex_adjacency
from .head_appearance import HeadGeometry

__all__ = ["SKIN", "HAIR_BROWN", "head_landmarks", "vertex_albedo", "vertex_occlusion", "vertex_gloss",
           "eye_albedo", "smooth_noise", "eye_rim_vertices"]

SKIN = np.array([0.87, 0.67, 0.56])
HAIR_BROWN = np.array([0.26, 0.17, 0.11])
LIP_UPPER = np.array([0.68, 0.30, 0.32])
LIP_LOWER = np.array([0.75, 0.36, 0.37])
TEETH = np.array([0.90, 0.87, 0.79])
TONGUE = np.array([0.70, 0.33, 0.33])
THROAT = np.array([0.16, 0.05, 0.05])
GUM = np.array([0.72, 0.38, 0.38])
PALATE = np.array([0.52, 0.24, 0.25])
SCLERA = np.array([0.93, 0.90, 0.88])
IRIS_INNER = np.array([0.52, 0.37, 0.18])
IRIS_OUTER = np.array([0.30, 0.22, 0.13])
PUPIL = np.array([0.03, 0.03, 0.035])
LASH_LINE = np.array([0.12, 0.08, 0.06])
WATERLINE = np.array([0.74, 0.50, 0.47])

#: Eyeball angles (radians from the forward axis): pupil, iris edge, limbal ring width.
PUPIL_ANGLE, IRIS_ANGLE, LIMBUS_WIDTH = 0.17, 0.45, 0.07


def smooth_noise(points: np.ndarray, seed: int, wavelength: tuple[float, float] = (0.015, 0.05),
                 waves: int = 12) -> np.ndarray:
    """Smooth pseudo-random field on 3D points: a sum of plane waves of random direction, phase and
    wavelength (m) in ``wavelength``.  points [P, 3] -> [P], roughly in [-1, 1]."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(waves, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelength, size=waves)
    phase = rng.uniform(0, 2 * np.pi, size=waves)
    return np.sin(points @ (d * k[:, None]).T + phase).sum(1) * np.sqrt(2.0 / waves)


def _blob(points: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    return np.exp(-((points - centre) ** 2).sum(1) / (2 * radius ** 2))


def head_landmarks(geo: HeadGeometry) -> dict[str, np.ndarray]:
    """Rest-pose positions the colour blobs are placed from: eye centres, nose tip, mouth centre,
    chin, and the head's width (from the regions and eyeballs; a bounding-box guess without them)."""
    v = geo.verts[geo.head]
    lo, hi = v.min(0), v.max(0)
    width = float(hi[0] - lo[0])
    if geo.eyes:
        eye_l, eye_r = geo.eyes[0][0], geo.eyes[1][0]
    else:
        eye_l = np.array([0.2 * width, lo[1] + 0.62 * (hi[1] - lo[1]), hi[2] - 0.3 * width])
        eye_r = eye_l * [-1, 1, 1]
    nose = geo.in_region("nose")
    nose_tip = geo.verts[nose][np.argmax(geo.verts[nose][:, 2])] if nose.any() else \
        np.array([0.0, (eye_l[1] + lo[1]) / 2, hi[2]])
    lips = geo.in_region("upper_lip", "lower_lip")
    mouth = geo.verts[lips].mean(0) if lips.any() else np.array([0.0, nose_tip[1] - 0.35 * width, hi[2] - 0.1 * width])
    face = geo.head & (geo.verts[:, 2] > mouth[2] - 0.3 * width) & ~geo.in_region("neck")
    chin = geo.verts[face][np.argmin(geo.verts[face][:, 1])] if face.any() else mouth - [0, 0.3 * width, 0]
    return {"eye_l": eye_l, "eye_r": eye_r, "nose_tip": nose_tip, "mouth": mouth, "chin": chin,
            "width": np.array(width)}


def smooth_field(geo: HeadGeometry, field: np.ndarray, mask: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Average ``field`` [V, ...] with its neighbours ``iterations`` times over the vertices of
    ``mask`` [V] (others neither change nor contribute): soft region borders without bleeding
    into the eyes or the mouth."""
    adj = vertex_adjacency(geo.faces, len(geo.verts)).multiply(mask[None, :].astype(float)).tocsr()
    adj = (adj + sp.diags(mask.astype(float))).tocsr()
    deg = np.asarray(adj.sum(1)).ravel()
    out = field.copy()
    for _ in range(iterations):
        avg = (adj @ out) / np.maximum(deg, 1)[:, None] if out.ndim == 2 else (adj @ out) / np.maximum(deg, 1)
        out = np.where(mask[:, None] if out.ndim == 2 else mask, avg, out)
    return out


def _mouth_bag(geo: HeadGeometry, albedo: np.ndarray) -> None:
    """The inside of the mouth (in place): the bag runs from the lip margins back into the head; gums
    just behind the margins, the tongue on its lower (jaw) side, the palate above, a dark throat at
    the back. (The teeth are splats of their own: ``demo_head.teeth_part``.)"""
    bag = geo.in_region("mouth_interior")
    if not bag.any():
        return
    v = geo.verts[bag]
    z_front, z_back = v[:, 2].max(), v[:, 2].min()
    depth = (z_front - v[:, 2]) / max(z_front - z_back, 1e-6)  # 0 at the lips, 1 at the throat
    lower = geo.jaw_weight[bag] > 0.5
    col = np.where(lower[:, None], TONGUE, PALATE)
    col = np.where((depth < 0.15)[:, None], GUM, col)
    back = np.clip((depth - 0.55) / 0.3, 0, 1)[:, None]
    albedo[bag] = col * (1 - back) + THROAT * back


def vertex_albedo(geo: HeadGeometry, seed: int = 0) -> np.ndarray:
    """Per-vertex sRGB albedo of skin, lips, brows, ears, neck and mouth bag.  -> [V, 3]"""
    v = geo.verts
    marks = head_landmarks(geo)
    albedo = np.tile(SKIN, (len(v), 1))
    mottle = smooth_noise(v, seed)
    fine = smooth_noise(v, seed + 1, (0.008, 0.02))
    albedo *= (1 + 0.035 * mottle + 0.012 * fine)[:, None]
    albedo[:, 0] *= 1 + 0.015 * smooth_noise(v, seed + 2)  # a little redness varies too
    red = np.array([1.06, 0.90, 0.89])
    for side in (1, -1):
        eye = marks["eye_l"] if side == 1 else marks["eye_r"]
        cheek = eye + [side * 0.012, -0.034, 0.004]
        albedo *= 1 + (red - 1) * 0.55 * _blob(v, cheek, 0.018)[:, None]
        under = eye + [0.0, -0.014, 0.008]
        albedo *= 1 - np.array([0.08, 0.09, 0.05]) * _blob(v, under, 0.006)[:, None]
        lid = eye + [0.0, 0.012, 0.006]  # upper lids a touch darker and cooler
        albedo *= 1 - np.array([0.05, 0.06, 0.03]) * _blob(v, lid, 0.007)[:, None]
    albedo *= 1 + (red - 1) * 0.8 * _blob(v, marks["nose_tip"], 0.011)[:, None]
    albedo *= 1 + (red - 1) * 0.5 * geo.in_region("left_ear", "right_ear")[:, None]
    jaw = np.clip((marks["mouth"][1] - 0.01 - v[:, 1]) / 0.04, 0, 1) * (v[:, 2] > marks["chin"][2] - 0.09)
    albedo *= (1 - 0.05 * jaw)[:, None]
    forehead = np.clip((v[:, 1] - marks["eye_l"][1] - 0.03) / 0.04, 0, 1)
    albedo *= (1 + 0.03 * forehead)[:, None]
    # the chin's shadow on the top of the neck, and the neck a little lighter and cooler below it
    neck = geo.in_region("neck")
    below_chin = np.clip((marks["chin"][1] + 0.005 - v[:, 1]) / 0.05, 0, 1)
    albedo[neck] *= (0.88 + 0.12 * below_chin[neck])[:, None] * [1.0, 1.0, 1.02]
    brows = geo.in_region("left_brow", "right_brow")
    albedo[brows] = 0.62 * albedo[brows] + 0.38 * HAIR_BROWN
    scalp = geo.in_region("scalp")
    albedo[scalp] = HAIR_BROWN * (1 + 0.1 * fine[scalp])[:, None]
    _lips(geo, marks, albedo)
    soft = geo.head & ~geo.in_region("mouth_interior", "left_eye", "right_eye")
    albedo = smooth_field(geo, albedo, soft, 2)
    _eye_rims(geo, albedo)
    _mouth_bag(geo, albedo)
    return albedo.clip(0, 1)


def _lips(geo: HeadGeometry, marks: dict, albedo: np.ndarray) -> None:
    """Lip colours (in place): darker and redder towards the mouth slit, lighter at the border."""
    for name, base in (("upper_lip", LIP_UPPER), ("lower_lip", LIP_LOWER)):
        m = geo.in_region(name)
        if not m.any():
            continue
        v = geo.verts[m]
        to_slit = np.abs(v[:, 1] - marks["mouth"][1]) / max(np.ptp(v[:, 1]), 1e-6)  # 0 at the slit, ~1 at the border
        shade = 0.88 + 0.16 * to_slit.clip(0, 1)
        lines = 1 - 0.04 * (np.sin(v[:, 0] * 2 * np.pi / 0.0025) > 0.7)  # faint vertical lip lines
        albedo[m] = base * (shade * lines)[:, None]


def eye_rim_vertices(geo: HeadGeometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per eyeball: (cup [V] bool, rim [V] bool). The cup closes the eye opening just outside the
    eyeball (it would hide it: the appearance leaves it out); the rim is the lid margin, a little
    further out, whose triangles down to the cup form the lids' inner edge."""
    out = []
    for centre, radius, _ in geo.eyes:
        d = np.linalg.norm(geo.verts - centre, axis=1)
        out.append((geo.head & (d < radius + 0.0012), geo.head & (d >= radius + 0.0012) & (d < radius + 0.0025)))
    return out


def _eye_rims(geo: HeadGeometry, albedo: np.ndarray) -> None:
    """The lid margins (in place): a dark lash line along the upper lid, a pink waterline along
    the lower one."""
    for (centre, radius, _), (cup, rim) in zip(geo.eyes, eye_rim_vertices(geo)):
        m = cup | rim
        upper = geo.verts[:, 1] > centre[1] - 0.15 * radius
        albedo[m & upper] = LASH_LINE
        albedo[m & ~upper] = WATERLINE


def vertex_occlusion(geo: HeadGeometry) -> np.ndarray:
    """Ambient occlusion per vertex in [0.35, 1]: cavities and downward-facing surfaces are darker.

    Cavities: how far a smoothed copy of the mesh lies outside the mesh along the normal, at two
    scales (creases of a few mm: lid folds, nostrils, lip corners; hollows of a cm: eye sockets,
    the ear's bowl). The mouth bag darkens with depth. -> [V]"""
    lap = vertex_adjacency(geo.faces, len(geo.verts))
    deg = np.maximum(np.asarray(lap.sum(1)).ravel(), 1)
    cavity = np.zeros(len(geo.verts))
    smooth = geo.verts.copy()
    for it in range(1, 13):
        smooth = (lap @ smooth) / deg[:, None]
        if it in (3, 12):
            depth = ((smooth - geo.verts) * geo.normals).sum(1)  # > 0: the surface is sunken here
            cavity += np.clip(depth / (0.004 if it == 3 else 0.02), 0, None)
    cavity = smooth_field(geo, cavity, geo.head, 3)
    occ = np.exp(-0.6 * cavity)
    occ *= 0.86 + 0.14 * (0.5 + 0.5 * geo.normals[:, 1])
    ears = geo.in_region("left_ear", "right_ear")
    occ[ears] = 0.75 + 0.25 * occ[ears]  # thin flaps, lit from both sides
    bag = geo.in_region("mouth_interior")
    if bag.any():
        z = geo.verts[bag, 2]
        occ[bag] = 0.35 + 0.5 * ((z - z.min()) / max(np.ptp(z), 1e-6)) ** 1.5
    return occ.clip(0.35, 1.0)


def vertex_gloss(geo: HeadGeometry) -> np.ndarray:
    """Specular strength per vertex: skin a little (more on the nose and forehead), lips and the
    mouth's wet surfaces more.  -> [V]"""
    marks = head_landmarks(geo)
    v = geo.verts
    gloss = np.full(len(v), 0.06)
    gloss += 0.08 * np.exp(-((v - marks["nose_tip"]) ** 2).sum(1) / (2 * 0.015 ** 2))
    gloss += 0.04 * np.clip((v[:, 1] - marks["eye_l"][1] - 0.02) / 0.03, 0, 1) * (v[:, 2] > 0.03)
    gloss[geo.in_region("upper_lip", "lower_lip")] = 0.22
    gloss[geo.in_region("mouth_interior")] = 0.25
    gloss[geo.in_region("scalp")] = 0.02
    return gloss


def eye_albedo(angle: np.ndarray, azimuth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Eyeball colour by the angle (radians) from its forward axis and the azimuth around it.

    pupil < PUPIL_ANGLE; iris up to IRIS_ANGLE, lighter near the pupil (the collarette), streaked
    radially, with a darker limbal ring at its edge; sclera white with a faint pink tint that grows
    towards the corners.  angle, azimuth [M] -> [M, 3]"""
    rng = np.random.default_rng(seed)
    r = ((angle - PUPIL_ANGLE) / (IRIS_ANGLE - PUPIL_ANGLE)).clip(0, 1)  # 0 at the pupil, 1 at the limbus
    streaks = sum(np.sin(k * azimuth + rng.uniform(0, 2 * np.pi)) * a
                  for k, a in ((9, 0.35), (17, 0.3), (31, 0.25), (53, 0.2)))
    iris = IRIS_INNER + (IRIS_OUTER - IRIS_INNER) * np.clip(r * 1.6 - 0.2, 0, 1)[:, None]
    iris = iris * (1 + 0.12 * streaks * (0.4 + 0.6 * r))[:, None]
    limbus = np.clip((angle - (IRIS_ANGLE - LIMBUS_WIDTH)) / LIMBUS_WIDTH, 0, 1)
    iris = iris * (1 - 0.55 * limbus)[:, None]
    pink = np.clip((angle - 0.7) / 0.8, 0, 1)
    sclera = SCLERA * (1 - 0.05 * pink)[:, None] + np.array([0.0, -0.04, -0.04]) * pink[:, None]
    edge = np.clip((angle - IRIS_ANGLE) / 0.03, 0, 1)[:, None]  # the limbus blends into the sclera
    out = iris * (1 - edge) + sclera * edge
    pupil = np.clip((PUPIL_ANGLE - angle) / 0.02 + 0.5, 0, 1)[:, None]
    return (out * (1 - pupil) + PUPIL * pupil).clip(0, 1)
