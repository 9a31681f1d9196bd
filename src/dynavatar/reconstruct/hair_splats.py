"""Hair, eyebrows and eyelashes of the demo head: elongated splats along combed strands.

A painted cap reads as a bald head; hair reads as hair when it has volume, a silhouette of its own
and strands that catch the light. So the hairstyle is a set of *extra* splats: strands rooted on
the scalp, combed from a side parting down and back, standing off the scalp by a few millimetres
to a couple of centimetres (the hair's volume), then falling straight once they leave the head,
to a chin-length bob. Each strand is a chain of thin, elongated splats along its direction, with
its own shade of brown (some lighter, as highlights), darker near the roots and in the inner
layers. Every splat of a strand is bound to a rigid triangle of the scalp next to its root (moved by
the head joint alone, not by any expression), so the whole hairstyle turns with the head and never
stretches with the face.

Eyebrows are short dark hairs lying on the brow, pointing up at the inner end and outwards along
the rest; lashes are short, curved dark hairs on the upper lid margins, bound to the lid so they
follow every blink.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from ..geometry.labels import label_index
from .head_appearance import HeadGeometry, SplatSet
from .head_colours import eye_rim_vertices, head_landmarks

__all__ = ["HairStyle", "hair_part", "brow_part", "lash_part"]


@dataclasses.dataclass
class HairStyle:
    """A chin-length bob with a side parting (lengths in metres, colours sRGB)."""

    roots: int = 900  # strands
    step: float = 0.02  # length of one splat along its strand
    parting: float = 0.022  # x of the side parting (the subject's left)
    volume: float = 0.016  # the outer layer stands this far off the scalp
    below_chin: float = -0.012  # the strands end this far above (+) / below (-) the chin
    base: tuple[float, float, float] = (0.27, 0.17, 0.10)
    highlight: tuple[float, float, float] = (0.55, 0.39, 0.24)
    highlights: float = 0.18  # fraction of strands that are lighter
    width: float = 0.0014  # standard deviation across a strand
    seed: int = 0


def _sample_triangles(geo: HeadGeometry, tris: np.ndarray, n: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly over the triangles ``tris`` (stratified by area).  -> (tri [n], point [n, 3])"""
    cv = geo.verts[geo.faces[tris]]
    area = 0.5 * np.linalg.norm(np.cross(cv[:, 1] - cv[:, 0], cv[:, 2] - cv[:, 0]), axis=1)
    cdf = np.cumsum(area) / area.sum()
    pick = np.searchsorted(cdf, (np.arange(n) + rng.random(n)) / n).clip(0, len(tris) - 1)
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u, w = np.where(flip, 1 - u, u), np.where(flip, 1 - w, w)
    c = cv[pick]
    return tris[pick], c[:, 0] + u[:, None] * (c[:, 1] - c[:, 0]) + w[:, None] * (c[:, 2] - c[:, 0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _frames(direction: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Orthonormal frames [N, 3, 3] with columns (direction, the normal made perpendicular to it, their cross)."""
    d = _unit(direction)
    n = _unit(normal - (normal * d).sum(-1, keepdims=True) * d)
    return np.stack([d, n, np.cross(d, n)], -1)


class _Surface:
    """Nearest-vertex queries on the head surface (eyes and mouth left out): height above it and its normal."""

    def __init__(self, geo: HeadGeometry) -> None:
        keep = geo.head & ~geo.in_region("mouth_interior", "left_eye", "right_eye")
        self.verts, self.normals = geo.verts[keep], geo.normals[keep]
        self.tree = cKDTree(self.verts)

    def height(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed height of ``p`` [N, 3] above the surface and the normal there.  -> ([N], [N, 3])"""
        _, i = self.tree.query(p)
        n = self.normals[i]
        return ((p - self.verts[i]) * n).sum(1), n


def _comb(p: np.ndarray, style: HairStyle, marks: dict) -> np.ndarray:
    """Direction the hair is combed at ``p`` [N, 3] (before it is laid on the surface): away from
    the parting on the front half of the head, radially from the crown behind it, always down,
    and back, away from the face, in front.  -> [N, 3]"""
    crown_z = marks["eye_l"][2] - 0.13
    side = np.tanh((p[:, 0] - style.parting) / 0.006)
    radial = _unit(np.stack([p[:, 0], np.zeros(len(p)), p[:, 2] - crown_z], -1))
    behind = np.clip((crown_z + 0.05 - p[:, 2]) / 0.05, 0, 1)[:, None]
    spread = np.stack([side, np.zeros(len(p)), np.zeros(len(p))], -1) * (1 - behind) + radial * behind
    back = 0.5 * np.clip((p[:, 2] - marks["eye_l"][2] + 0.07) / 0.06, 0, 1)
    return 0.9 * spread + np.array([0.0, -1.0, 0.0]) + back[:, None] * np.array([0.0, 0.0, -1.0])


def _grow(geo: HeadGeometry, roots: np.ndarray, style: HairStyle, marks: dict, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integrate the strands from their roots. -> (points [R, S+1, 3], normals [R, S, 3], alive [R, S]
    (segment s exists), layer [R] in [0, 1])"""
    surf = _Surface(geo)
    n_roots = len(roots)
    layer = rng.random(n_roots) ** 0.7
    end_y = marks["chin"][1] - style.below_chin + rng.normal(0, 0.004, n_roots)
    brow_y = marks["eye_l"][1] + 0.028
    face_x = 0.75 * float(marks["width"]) / 2
    ears = geo.in_region("left_ear", "right_ear")
    ear_z = float(geo.verts[ears, 2].max()) if ears.any() else marks["eye_l"][2] - 0.06
    max_steps = int(np.ceil((roots[:, 1].max() - end_y.min()) * 1.6 / style.step)) + 2
    pts, nrm, alive = [roots], [], []
    p = roots.copy()
    live = np.ones(n_roots, dtype=bool)
    for j in range(max_steps):
        h, n = surf.height(p)
        target = 0.0015 + (0.003 + style.volume * layer) * min(1.0, (j + 1) / 3)
        c = _comb(p, style, marks)
        near = (h < target + 0.008)[:, None]
        # off the head the hair falls, drawn back where it would hang in front of the face
        forward = np.clip((p[:, 2] - ear_z) / 0.04, 0, 1)
        fall = 0.2 * c + np.array([0.0, -1.0, 0.0]) + 0.7 * forward[:, None] * np.array([0.0, 0.0, -1.0])
        d = _unit(np.where(near, c - (c * n).sum(1, keepdims=True) * n, fall))
        # keep the fringe off the eyes: in front, below the brow line, sweep sideways and back instead
        front = (p[:, 2] > marks["eye_l"][2] - 0.035) & (p[:, 1] < brow_y + 0.035) & (np.abs(p[:, 0]) < face_x + 0.02)
        d[front] = _unit(np.stack([0.6 * np.sign(p[front, 0] - style.parting + 1e-9), -0.3 * np.ones(front.sum()),
                                   -0.8 * np.ones(front.sum())], -1))
        q = p + style.step * d
        h2, n2 = surf.height(q)
        q = q + np.maximum(target - h2, 0)[:, None] * n2
        live = live & (p[:, 1] > end_y)
        alive.append(live.copy())
        nrm.append(n)
        p = np.where(live[:, None], q, p)
        pts.append(p.copy())
        if not live.any():
            break
    return np.stack(pts, 1), np.stack(nrm, 1), np.stack(alive, 1), layer


def _rigid_binding(geo: HeadGeometry, points: np.ndarray) -> np.ndarray:
    """The nearest triangle moved by the head joint alone (no expression) to each point.  -> [N]"""
    rigid = np.flatnonzero(geo.rigid[geo.faces].all(1))
    if not len(rigid):
        rigid = np.flatnonzero(geo.head[geo.faces].all(1))
    cen = geo.verts[geo.faces[rigid]].mean(1)
    return rigid[cKDTree(cen).query(points)[1]]


def hair_part(geo: HeadGeometry, style: HairStyle | None = None) -> SplatSet:
    """The hairstyle's splats (label "hair"); empty for a head without a scalp region."""
    style = style or HairStyle()
    scalp_tris = np.flatnonzero(geo.in_region("scalp")[geo.faces].sum(1) >= 2)
    if not len(scalp_tris):
        return SplatSet.cat([])
    rng = np.random.default_rng(style.seed)
    marks = head_landmarks(geo)
    _, roots = _sample_triangles(geo, scalp_tris, 2 * style.roots, rng)
    # fewer strands at the back, which the camera rarely sees (the scalp below is hair-coloured)
    _, rn = _Surface(geo).height(roots)
    keep = rng.random(len(roots)) < 0.35 + 0.65 * np.clip(rn[:, 2] + 0.8 * np.abs(rn[:, 0]) + 0.4, 0, 1)
    roots = roots[keep][: style.roots]
    pts, nrm, alive, layer = _grow(geo, roots, style, marks, rng)
    r_idx, s_idx = np.nonzero(alive)  # one splat per living segment
    a, b = pts[r_idx, s_idx], pts[r_idx, s_idx + 1]
    seg = b - a
    keep = np.linalg.norm(seg, axis=1) > 1e-5
    r_idx, s_idx, a, b, seg = r_idx[keep], s_idx[keep], a[keep], b[keep], seg[keep]
    n = len(a)
    count = alive.sum(1)
    along = s_idx / np.maximum(count[r_idx] - 1, 1)  # 0 at the root, 1 at the tip
    frame = _frames(seg, nrm[r_idx, s_idx])
    length = np.linalg.norm(seg, axis=1)
    taper = 1 - 0.5 * np.clip((along - 0.8) / 0.2, 0, 1)
    scale = np.stack([0.62 * length, 0.45 * style.width * taper, style.width * taper], -1)
    # colour: one shade of brown per strand, lighter strands as highlights, darker roots and inner layers
    shade = np.exp(rng.normal(0, 0.13, len(roots)))
    light = (rng.random(len(roots)) < style.highlights) * rng.uniform(0.3, 0.7, len(roots))
    base = np.array(style.base) * shade[:, None]
    base = base * (1 - light[:, None]) + np.array(style.highlight) * light[:, None]
    albedo = base[r_idx] * (0.78 + 0.27 * np.clip(along * 3, 0, 1))[:, None]
    occlusion = 0.55 + 0.45 * layer[r_idx] ** 0.8
    opacity = 0.92 * (1 - 0.4 * np.clip((along - 0.85) / 0.15, 0, 1))
    return SplatSet(_rigid_binding(geo, roots[r_idx]), (a + b) / 2, frame, scale, opacity, albedo.clip(0, 1),
                    nrm[r_idx, s_idx], frame[..., 0], occlusion, np.full(n, 0.32), np.full(n, label_index("hair")))


def brow_part(geo: HeadGeometry, per_brow: int = 420, seed: int = 1) -> SplatSet:
    """Short dark hairs lying on each brow, densest along its centre line and thinning towards the
    tail: up at the inner end, outwards and slightly down along the rest (labels "left_brow" /
    "right_brow")."""
    rng = np.random.default_rng(seed)
    parts = []
    for name in ("left_brow", "right_brow"):
        region = geo.in_region(name)
        tris = np.flatnonzero(region[geo.faces].sum(1) >= 2)
        if not len(tris):
            continue
        tri, p = _sample_triangles(geo, tris, per_brow, rng)
        x = np.abs(p[:, 0])
        u = (x - x.min()) / max(np.ptp(x), 1e-6)  # 0 at the inner end, 1 at the tail
        rv = geo.verts[region]
        centre_y = np.polyval(np.polyfit(np.abs(rv[:, 0]), rv[:, 1], 2), x)
        half = 0.5 * np.ptp(rv[:, 1]) * (0.9 - 0.45 * u)
        keep = np.abs(p[:, 1] - centre_y) < half * (0.6 + 0.4 * rng.random(len(p)))
        tri, p, u = tri[keep], p[keep], u[keep]
        side = np.sign(p[:, 0].mean())
        d = np.stack([side * (0.35 + 0.9 * u), 1.0 - 1.2 * u, np.zeros_like(u)], -1)
        r = rng.random((len(tri), 3))
        n = _unit((geo.normals[geo.faces[tri]] * (r / r.sum(1, keepdims=True))[..., None]).sum(1))
        d = d - (d * n).sum(1, keepdims=True) * n
        frame = _frames(d, n)
        m = len(tri)
        length = rng.uniform(0.003, 0.0048, m) * (1 - 0.3 * u)
        pos = p + 0.0003 * n + 0.5 * length[:, None] * frame[..., 0]
        col = np.array([0.13, 0.085, 0.06]) * np.exp(rng.normal(0, 0.1, m))[:, None]
        scale = np.stack([0.42 * length, np.full(m, 0.0001), np.full(m, 0.00022)], -1)
        parts.append(SplatSet(tri, pos, frame, scale, np.full(m, 0.9) * (1 - 0.25 * u), col, n, frame[..., 0],
                              np.full(m, 0.85), np.full(m, 0.08), np.full(m, label_index(name))))
    return SplatSet.cat(parts)


def lash_part(geo: HeadGeometry, per_eye: int = 36) -> SplatSet:
    """Curved dark lashes along each upper lid margin, bound to the lid's triangles so they close
    with it (label "skin": neither an eye-colour nor a hair-colour edit should touch them)."""
    parts = []
    for (centre, radius, _), (cup, rim) in zip(geo.eyes, eye_rim_vertices(geo)):
        upper = rim & (geo.verts[:, 1] > centre[1])
        if upper.sum() < 3:
            continue
        rv = geo.verts[upper]
        rv = rv[np.argsort(rv[:, 0])]
        t = np.linspace(0, 1, len(rv))
        s = np.linspace(0.04, 0.96, per_eye)
        root = np.stack([np.interp(s, t, rv[:, k]) for k in range(3)], -1)
        out = _unit(root - centre)
        tris = np.flatnonzero((upper[geo.faces] | cup[geo.faces]).any(1) & ~cup[geo.faces].all(1))
        cen = geo.verts[geo.faces[tris]].mean(1)
        tri = tris[cKDTree(cen).query(root)[1]]
        segs = []
        for k, (lift, ln) in enumerate(((0.45, 0.0022), (1.1, 0.0022))):
            d = _unit(out * 0.8 + np.array([0.0, lift, 0.35]))
            base = root if k == 0 else root + 0.0022 * _unit(out * 0.8 + np.array([0.0, 0.45, 0.35]))
            frame = _frames(d, out)
            m = len(root)
            segs.append(SplatSet(tri, base + 0.5 * ln * d, frame, np.tile([0.5 * ln, 0.00008, 0.00016], (m, 1)),
                                 np.full(m, 0.9), np.tile([0.05, 0.04, 0.035], (m, 1)), out, d, np.full(m, 0.8),
                                 np.full(m, 0.1), np.full(m, label_index("skin"))))
        parts.extend(segs)
    return SplatSet.cat(parts)
