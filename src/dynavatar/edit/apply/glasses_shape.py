"""The shape of a pair of glasses, fitted to one head: lens outlines, rims, bridge and temples as curves.

Pure geometry (float64 tensors, metres), in the HEAD FRAME of the rest pose: origin between the
eyeball centres, x towards the person's left, y up, z forward (out of the face); ``glasses.py`` turns
the curves into splats bound to the head. Everything is sized from the head itself, so the same style
fits a narrow and a wide face:

* lens outlines are closed curves in (u, v) = (outwards from the nose, up) in units of the
  inter-pupil distance (IPD): a round lens is 0.70 IPD across (45 mm on a 64 mm IPD), which is what
  opticians fit;
* the front of the frame is one smooth surface ``z = z0 - wrap x^2 + tilt (y - y_c)``: a slight
  face-form wrap (the outer rims sit further back) and a pantoscopic tilt (the lens bottoms lean
  towards the cheeks). ``z0`` puts the rims a vertex distance (13 mm) in front of the corneas, then
  pushes the whole front forwards until the bridge and the upper rims clear the face (the frame is
  rigid: on a high nose root real glasses sit further out, they do not bend round it; the default
  head's deep-set eyes put them ~21 mm out). Lower rims that would sink into the nose first get a
  small symmetric nasal cut, as real lenses do, and only what that cannot clear pushes further;
* temples leave the rim's outer top corner, run back to just above where the ear joins the head,
  bowed outwards only as much as the side of the head needs (the least concave majorant of the
  clearance, so the arm stays straight where it can), then bend down over the ear root into the
  crease where the ear meets the head, ending at the attachment (the ear hides the tip).

Surface clearances are ray casts against the rest mesh along the head's axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import ConfigError
from ...flame import FlameModel, FlameParams
from ...geometry.rotations import axis_angle_to_matrix

__all__ = ["GLASSES_STYLES", "StyleSpec", "STYLE_SPECS", "HeadFit", "GlassesCurves", "lens_outline",
           "resample_closed", "resample_open", "surface_height", "fit_glasses_curves", "points_in_polygon",
           "fit_head"]

GLASSES_STYLES = ("round", "rectangular", "cat-eye", "aviator", "sunglasses")


@dataclass(frozen=True)
class StyleSpec:
    """Sizes of one style, in units of the inter-pupil distance unless said otherwise."""

    half_width: float  # lens half-width (u)
    half_height: float  # lens half-height (v)
    centre_out: float  # lens centre's shift outwards from the pupil
    centre_up: float  # lens centre's shift up from the pupil (negative: the pupil sits above centre)
    band: float  # rim face width across the curve at thickness 1, metres
    wrap: float  # face-form wrap, 1/m: the front recedes by wrap * x^2
    bridge_v: float  # where the bridge meets the rim's inner edge, in units of the half-height
    tinted: bool  # dark lenses by default (sunglasses)


STYLE_SPECS: dict[str, StyleSpec] = {
    "round": StyleSpec(0.35, 0.35, 0.0, -0.02, 0.0013, 1.4, 0.15, False),
    "rectangular": StyleSpec(0.41, 0.25, 0.03, -0.02, 0.0020, 1.6, 0.35, False),
    "cat-eye": StyleSpec(0.41, 0.25, 0.03, -0.01, 0.0022, 1.6, 0.40, False),
    "aviator": StyleSpec(0.42, 0.40, 0.02, -0.10, 0.0011, 1.8, 0.55, False),
    "sunglasses": StyleSpec(0.43, 0.28, 0.03, -0.02, 0.0026, 2.2, 0.40, True),
}

_VERTEX_DISTANCE = 0.013  # cornea apex -> rim centre line, metres (opticians fit 12-14 mm)
_TILT = math.tan(math.radians(7.0))  # pantoscopic tilt
_FRONT_CLEARANCE = 0.0015  # rims and bridge stay this far (plus half their width) in front of the face
_SIDE_CLEARANCE = 0.002  # temples stay this far off the side of the head
_ENDPIECE = 0.004  # the hinge block sticks out this far beyond the rim's outer corner


def _superellipse(t: Tensor, n: float) -> tuple[Tensor, Tensor]:
    """Points of |u|^n + |v|^n = 1 at angles t: n = 2 a circle, n -> inf a square."""
    c, s = torch.cos(t), torch.sin(t)
    return c.sign() * c.abs() ** (2.0 / n), s.sign() * s.abs() ** (2.0 / n)


# Control polygons (u outwards, v up; clockwise, reversed on use) of the styles a superellipse cannot
# draw: the cat-eye's pointed, upswept outer top corner (the doubled point keeps it sharp) and the
# aviator's teardrop, flat on top with its deepest point on the nose side.
_CONTROL_POLYGONS = {
    "cat-eye": [(-0.95, 0.75), (-0.1, 0.9), (0.7, 1.02), (1.08, 1.22), (1.08, 1.22), (1.0, 0.35), (0.7, -0.75),
                (0.0, -1.0), (-0.75, -0.85), (-1.0, -0.2)],
    "aviator": [(-0.9, 1.0), (0.2, 1.02), (0.85, 0.95), (1.02, 0.55), (0.9, -0.1), (0.55, -0.75), (-0.05, -1.0),
                (-0.55, -0.95), (-0.92, -0.55), (-1.02, 0.2), (-1.0, 0.8)],
}


def _corner_cut(p: Tensor, rounds: int) -> Tensor:
    """Closed Chaikin corner cutting (converges to a quadratic B-spline).  [P, 2] -> [P * 2^rounds, 2]"""
    for _ in range(rounds):
        q = p.roll(-1, 0)
        p = torch.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], 1).reshape(-1, 2)
    return p


def _chaikin(points: Tensor, n: int) -> Tensor:
    """A control polygon rounded into at least ``n`` points, made counter-clockwise.  [P, 2] -> [>= n, 2]"""
    return _corner_cut(points.flip(0), max(0, math.ceil(math.log2(n / len(points)))))


def lens_outline(style: str, n: int = 512) -> Tensor:
    """Closed lens outline, counter-clockwise, ``[n, 2]`` in (u outwards, v up), roughly within the
    unit box (scaled by the style's half sizes later). Each style is a base curve plus a warp that
    gives it its character."""
    t = torch.linspace(0.0, 2.0 * math.pi, n + 1, dtype=torch.float64)[:-1]
    if style == "round":
        u, v = torch.cos(t), torch.sin(t)
    elif style == "rectangular":  # rounded rectangle, a little narrower at the bottom
        u, v = _superellipse(t, 5.0)
        u = u * (1.0 - 0.05 * (1.0 - v) / 2.0)
    elif style in _CONTROL_POLYGONS:  # cat-eye, aviator: a corner-cut control polygon
        return _chaikin(torch.tensor(_CONTROL_POLYGONS[style], dtype=torch.float64), n)
    elif style == "sunglasses":  # wayfarer-like: wide top with lifted outer corner, narrower bottom
        u, v = _superellipse(t, 4.0)
        u = u * (1.0 + 0.07 * v)
        v = v + 0.10 * u.clamp_min(0) * v.clamp_min(0)
    else:
        raise ValueError(f"unknown glasses style {style!r}; choose one of {', '.join(GLASSES_STYLES)}")
    return torch.stack([u, v], -1)


def _arc_lengths(points: Tensor, closed: bool) -> Tensor:
    """Cumulative length at each point (and the total at the end when closed).  [N, D] -> [N or N+1]"""
    pts = torch.cat([points, points[:1]]) if closed else points
    seg = (pts[1:] - pts[:-1]).norm(dim=-1)
    return torch.cat([seg.new_zeros(1), seg.cumsum(0)])


def _interp_polyline(points: Tensor, s: Tensor, closed: bool) -> Tensor:
    """Points at arc lengths ``s`` along a polyline.  points [N, D], s [M] -> [M, D]"""
    pts = torch.cat([points, points[:1]]) if closed else points
    cum = _arc_lengths(points, closed)
    i = torch.searchsorted(cum, s.clamp(0, float(cum[-1])), right=True).clamp(1, len(cum) - 1) - 1
    w = ((s - cum[i]) / (cum[i + 1] - cum[i]).clamp_min(1e-15)).clamp(0, 1)[:, None]
    return pts[i] * (1 - w) + pts[i + 1] * w


def resample_closed(points: Tensor, spacing: float) -> Tensor:
    """A closed curve resampled at (nearly) equal arc length ``spacing``.  [N, D] -> [M, D]"""
    total = float(_arc_lengths(points, True)[-1])
    m = max(8, round(total / spacing))
    return _interp_polyline(points, torch.arange(m, dtype=points.dtype) * (total / m), True)


def resample_open(points: Tensor, spacing: float) -> Tensor:
    """An open curve resampled at equal arc length, both ends kept.  [N, D] -> [M, D]"""
    total = float(_arc_lengths(points, False)[-1])
    m = max(2, round(total / spacing) + 1)
    return _interp_polyline(points, torch.linspace(0, total, m, dtype=points.dtype), False)


def points_in_polygon(q: Tensor, poly: Tensor) -> Tensor:
    """Even-odd test of points ``q [Q, 2]`` against a closed polygon ``poly [P, 2]`` -> bool [Q]."""
    a, b = poly, poly.roll(-1, 0)  # edges a -> b  [P, 2]
    qy, qx = q[:, None, 1], q[:, None, 0]
    crosses = (a[None, :, 1] > qy) != (b[None, :, 1] > qy)  # [Q, P]
    t = (qy - a[None, :, 1]) / (b[None, :, 1] - a[None, :, 1]).where(crosses, torch.ones_like(qy))
    xs = a[None, :, 0] + t * (b[None, :, 0] - a[None, :, 0])
    return ((crosses & (qx < xs)).sum(-1) % 2) == 1


def surface_height(vertices: Tensor, faces: Tensor, query: Tensor, axis: int, sign: float,
                   chunk: int = 64) -> Tensor:
    """Outermost point of the mesh along a ray: for each query (the two other coordinates, in
    increasing axis order), the largest ``sign * coordinate[axis]`` over the triangles whose
    projection contains it; ``-inf`` where the ray misses the mesh.

    vertices [V, 3], faces [F, 3], query [Q, 2] -> [Q]. A vectorised point-in-triangle test per
    chunk of queries (a few thousand rays against ten thousand triangles: milliseconds)."""
    others = [a for a in range(3) if a != axis]
    tri = vertices[faces]  # [F, 3, 3]
    p, h = tri[..., others], sign * tri[..., axis]  # [F, 3, 2], [F, 3]
    p_lo, p_hi = p.amin(1), p.amax(1)  # [F, 2] projected bounding boxes
    out = []
    for s in range(0, len(query), chunk):
        q = query[s:s + chunk]  # [q, 2]; consecutive curve points, so a small box
        near = ((p_hi >= q.amin(0)) & (p_lo <= q.amax(0))).all(-1)  # faces that can contain any of them
        pf, hf = p[near], h[near]
        e1, e2 = pf[:, 1] - pf[:, 0], pf[:, 2] - pf[:, 0]  # [f, 2]
        den = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]  # [f]
        ok = den.abs() > 1e-14
        den = torch.where(ok, den, torch.ones_like(den))
        d = q[:, None, :] - pf[None, :, 0]  # [q, f, 2]
        l1 = (d[..., 0] * e2[:, 1] - e2[:, 0] * d[..., 1]) / den
        l2 = (e1[:, 0] * d[..., 1] - d[..., 0] * e1[:, 1]) / den
        l0 = 1 - l1 - l2
        inside = ok & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        z = l0 * hf[:, 0] + l1 * hf[:, 1] + l2 * hf[:, 2]  # [q, f]
        z = torch.where(inside, z, torch.full_like(z, -math.inf))
        out.append(z.amax(-1) if z.shape[1] else q.new_full((len(q),), -math.inf))
    return torch.cat(out)


@dataclass
class HeadFit:
    """What the glasses are fitted to, in the head frame of the rest pose (metres)."""

    vertices: Tensor  # [V, 3] rest vertices of the head (torso sheet excluded)
    faces: Tensor  # [F, 3] the head's faces
    pupils: Tensor  # [2, 3] corneal centres of the right, then left eye
    ear_tops: Tensor  # [2, 3] top of the right, then left ear's attachment to the head

    @property
    def ipd(self) -> float:
        return float((self.pupils[1] - self.pupils[0]).norm())


@dataclass
class GlassesCurves:
    """The frame as curves plus the lens fill, head frame, metres. Curves are polylines densely
    sampled; ``front_normal`` gives the frame front's normal at any (x, y)."""

    rims: list[Tensor]  # right, left: closed [N, 3]
    bridges: list[Tensor]  # open [N, 3] each (the nose bridge; aviators add a top bar)
    temples: list[Tensor]  # right, left: open [N, 3], hinge first, ear last
    lenses: list[Tensor]  # right, left: [L, 3] fill points on the front surface
    lens_v: list[Tensor]  # right, left: [L] height in the lens, -1 bottom .. 1 top (for shading)
    lens_spacing: float  # grid step of the lens fill, metres
    band: float  # rim face width, metres
    wrap: float  # the front surface z = z0 - wrap (x - x_m)^2 + tilt (y - y_c)
    z0: float
    x_m: float
    y_c: float

    def front_normal(self, p: Tensor) -> Tensor:
        """Unit normal of the front surface at points [N, 3] -> [N, 3] (pointing forwards)."""
        dx = 2 * self.wrap * (p[:, 0] - self.x_m)
        n = torch.stack([dx, torch.full_like(dx, -_TILT), torch.ones_like(dx)], -1)
        return n / n.norm(dim=-1, keepdim=True)


def _front_offset(x: Tensor, y: Tensor, wrap: float, y_c: float) -> Tensor:
    """The front surface's depth relative to z0: wrap and tilt only.  -> same shape as x"""
    return -wrap * x * x + _TILT * (y - y_c)


def _lens_points_2d(outline: Tensor, inset: float, spacing: float) -> Tensor:
    """Hexagonal grid points inside a lens outline [N, 2] (metres), at least ``inset`` from the rim."""
    lo, hi = outline.amin(0), outline.amax(0)
    ys = torch.arange(float(lo[1]), float(hi[1]), spacing * math.sqrt(3) / 2, dtype=outline.dtype)
    rows = []
    for j, y in enumerate(ys):
        xs = torch.arange(float(lo[0]) + (spacing / 2 if j % 2 else 0.0), float(hi[0]), spacing, dtype=outline.dtype)
        rows.append(torch.stack([xs, torch.full_like(xs, float(y))], -1))
    q = torch.cat(rows)
    inside = points_in_polygon(q, outline)
    dist = torch.cdist(q, outline).amin(-1)  # outline is dense, so vertex distance ~ edge distance
    return q[inside & (dist >= inset)]


def _bridge_2d(rims: list[Tensor], centres: list[Tensor], half_h: float, v_frac: float,
               arch: float) -> Tensor:
    """The nose bridge in (x, y): from the right rim's inner edge at height ``v_frac`` of the
    half-height to the left rim's, arching up by ``arch``.  -> [M, 2]"""
    ends = []
    for rim, c in zip(rims, centres):
        inner = rim[:, 0].abs() < c[0].abs()  # the half of the rim on the nose side
        y_target = c[1] + v_frac * half_h
        cand = rim[inner]
        ends.append(cand[(cand[:, 1] - y_target).abs().argmin()])
    a, b = ends
    mid = torch.stack([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + arch])
    t = torch.linspace(0, 1, 64, dtype=a.dtype)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * mid + t ** 2 * b  # quadratic Bezier


def _top_bar_2d(rims: list[Tensor], centres: list[Tensor]) -> Tensor:
    """Aviators' brow bar in (x, y): straight across between the rims' inner top shoulders.  -> [M, 2]"""
    ends = []
    for rim, c in zip(rims, centres):
        inner = (rim[:, 0].abs() < c[0].abs() - 0.25 * (rim[:, 0] - c[0]).abs().amax())
        cand = rim[inner]
        ends.append(cand[cand[:, 1].argmax()])
    t = torch.linspace(0, 1, 64, dtype=ends[0].dtype)[:, None]
    line = (1 - t) * ends[0] + t * ends[1]
    line[:, 1] += 0.0015 * torch.sin(math.pi * t[:, 0])  # a slight arch
    return line


def _hinge_2d(rim: Tensor, centre: Tensor, side: float, half_w: float, half_h: float) -> Tensor:
    """The rim's outer top corner (x, y): the point furthest along outwards + 0.6 up."""
    u = side * (rim[:, 0] - centre[0]) / half_w
    v = (rim[:, 1] - centre[1]) / half_h
    return rim[(u + 0.6 * v).argmax()]


def _concave_majorant(z: Tensor, x: Tensor) -> Tensor:
    """Least concave function of z above the points (z, x) (z strictly decreasing): the shape a
    straight, stiff temple takes when pushed out by the side of the head.  -> [N] at the same z"""
    order = torch.argsort(z)
    zs, xs = z[order], x[order]
    hull: list[int] = []
    for i in range(len(zs)):  # upper hull, monotone chain
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            cross = (zs[i1] - zs[i0]) * (xs[i] - xs[i0]) - (xs[i1] - xs[i0]) * (zs[i] - zs[i0])
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    hz, hx = zs[hull], xs[hull]
    j = torch.searchsorted(hz, zs, right=True).clamp(1, len(hz) - 1) - 1
    w = ((zs - hz[j]) / (hz[j + 1] - hz[j]).clamp_min(1e-15)).clamp(0, 1)
    out = torch.empty_like(x)
    out[order] = hx[j] * (1 - w) + hx[j + 1] * w
    return out


def _temple(fit: HeadFit, hinge: Tensor, ear_top: Tensor, side: float, spacing: float) -> Tensor:
    """One temple arm from the hinge ``[3]`` to behind the ear, clear of the head.  -> [N, 3]"""
    above = ear_top + hinge.new_tensor([0.0, 0.003, 0.0])
    n = max(8, int(float((above - hinge).norm()) / spacing))
    t = torch.linspace(0, 1, n, dtype=hinge.dtype)[:, None]
    arm = hinge * (1 - t) + above * t  # straight in side view  [n, 3]
    side_x = surface_height(fit.vertices, fit.faces, arm[:, 1:], 0, side)  # [n], side * x of the skin
    need = torch.maximum(side * arm[:, 0], side_x + _SIDE_CLEARANCE)
    arm[:, 0] = side * _concave_majorant(arm[:, 2], need)
    # the ear piece: over the top of the ear root, then down and back into the crease where the ear
    # meets the head, ending at the attachment (inside the silhouette, so the ear hides its tip)
    end = ear_top + hinge.new_tensor([0.0, -0.003, -0.006])
    ctrl = arm[-1] + hinge.new_tensor([0.0, 0.0, -0.005])
    s = torch.linspace(0, 1, 16, dtype=hinge.dtype)[1:, None]
    drop = (1 - s) ** 2 * arm[-1] + 2 * (1 - s) * s * ctrl + s ** 2 * end
    return resample_open(torch.cat([arm, drop]), spacing)


def _z0_needed(fit: HeadFit, p2: Tensor, band: float, wrap: float, x_m: float, y_c: float) -> Tensor:
    """The smallest z0 at which the front surface clears the face at each point (x, y) [N, 2] -> [N]
    (-inf where no face lies behind the point)."""
    face_z = surface_height(fit.vertices, fit.faces, p2, 2, 1.0)
    return face_z + _FRONT_CLEARANCE + 0.5 * band - _front_offset(p2[:, 0] - x_m, p2[:, 1], wrap, y_c)


def _nasal_reach(rim: Tensor, centre: Tensor, x_m: float) -> tuple[Tensor, Tensor]:
    """(how far each rim point [N, 2] lies towards the lower nasal corner [N], that direction [2])."""
    side = math.copysign(1.0, float(centre[0]) - x_m)
    normal = rim.new_tensor([-side, -1.0]) / math.sqrt(2.0)  # towards the nose and down, 45 degrees
    return (rim - centre) @ normal, normal


def _clip_corner(rim: Tensor, centre: Tensor, x_m: float, frac: float, spacing: float) -> Tensor:
    """The rim with its lower nasal corner cut straight at ``frac`` of the corner's reach (1 = no cut):
    points beyond the line are projected onto it, the cut's corners rounded over ~2 mm."""
    if frac >= 1.0:
        return rim
    reach, normal = _nasal_reach(rim, centre, x_m)
    cut = rim - (reach - frac * reach.max()).clamp_min(0)[:, None] * normal
    return resample_closed(_corner_cut(resample_closed(cut, 0.002), 3), spacing)


def _nasal_cut(rims: list[Tensor], centres: list[Tensor], x_m: float, z0: float, need, spacing: float,
               step: float = 0.01, keep: float = 0.85) -> list[Tensor]:
    """Both rims [N, 2] with the same nasal cut, the shallowest that keeps their lower nasal corners
    out of the nose at depth ``z0`` (never deeper than ``keep`` of the corner's reach). Real lenses
    carry such a cut; the same on both sides because a frame is symmetric though faces are not."""
    frac = 1.0
    for rim, c in zip(rims, centres):
        r_max = float(_nasal_reach(rim, c, x_m)[0].max())
        f = 1.0
        while f > keep:
            cut = _clip_corner(rim, c, x_m, f, spacing)
            corner = _nasal_reach(cut, c, x_m)[0] > 0.5 * r_max  # only collisions a cut can cure count
            if not bool((need(cut[corner]) > z0).any()):
                break
            f -= step
        frac = min(frac, max(f, keep))
    return [_clip_corner(r, c, x_m, frac, spacing) for r, c in zip(rims, centres)]


def fit_glasses_curves(fit: HeadFit, style: str, thickness: float = 1.0, spacing: float = 0.0005) -> GlassesCurves:
    """All curves of one pair of glasses of ``style`` fitted to ``fit`` (see the module docstring)."""
    spec = STYLE_SPECS[style]
    ipd = fit.ipd
    band = spec.band * thickness
    hw, hh = spec.half_width * ipd, spec.half_height * ipd
    x_m = float(fit.pupils[:, 0].mean())
    y_c = float(fit.pupils[:, 1].mean()) + spec.centre_up * ipd
    half_gap = float(fit.pupils[1, 0] - fit.pupils[0, 0]) / 2 + spec.centre_out * ipd
    outline = lens_outline(style)  # [n, 2] in (u, v)
    centres, rims2d = [], []
    for side in (-1.0, 1.0):  # right eye (x < 0), then left
        c = torch.tensor([x_m + side * half_gap, y_c], dtype=torch.float64)
        pts = torch.stack([c[0] + side * outline[:, 0] * hw, c[1] + outline[:, 1] * hh], -1)
        if side < 0:  # keep both rims counter-clockwise in (x, y)
            pts = pts.flip(0)
        centres.append(c)
        rims2d.append(resample_closed(pts, spacing))
    bridges2d = [_bridge_2d(rims2d, centres, hh, spec.bridge_v, 0.08 * ipd * (0.6 if style == "aviator" else 1.0))]
    if style == "aviator":
        bridges2d.append(_top_bar_2d(rims2d, centres))
    bridges2d = [resample_open(b, spacing) for b in bridges2d]
    # z0: a vertex distance in front of the corneas, further where the bridge or the upper rims
    # would touch the nose root or brows; a lower rim that would sink into the nose gets a nasal cut
    wrap = spec.wrap
    need = lambda p2: _z0_needed(fit, p2, band, wrap, x_m, y_c)  # noqa: E731
    upper = [r[r[:, 1] >= c[1]] for r, c in zip(rims2d, centres)]
    z0 = max(float(fit.pupils[:, 2].max()) + _VERTEX_DISTANCE, float(need(torch.cat(upper + bridges2d)).amax()))
    rims2d = _nasal_cut(rims2d, centres, x_m, z0, need, spacing)
    z0 = max(z0, float(need(torch.cat(rims2d)).amax()))  # what the cut could not clear

    def lift(p2: Tensor) -> Tensor:  # (x, y) on the front surface -> [N, 3]
        return torch.cat([p2, (z0 + _front_offset(p2[:, 0] - x_m, p2[:, 1], wrap, y_c))[:, None]], -1)

    rims = [lift(r) for r in rims2d]
    lens_step = 0.0018
    lenses, lens_v = [], []
    for r2, c in zip(rims2d, centres):
        q = _lens_points_2d(r2, 0.45 * band, lens_step)
        lenses.append(lift(q))
        lens_v.append(((q[:, 1] - c[1]) / hh).clamp(-1, 1))
    temples = []
    for i, side in enumerate((-1.0, 1.0)):
        h2 = _hinge_2d(rims2d[i], centres[i], side, hw, hh)
        hinge = lift(h2[None])[0] + torch.tensor([side * _ENDPIECE, 0.0, -0.002], dtype=torch.float64)
        temples.append(_temple(fit, hinge, fit.ear_tops[i], side, spacing))
    return GlassesCurves(rims=rims, bridges=[lift(b) for b in bridges2d], temples=temples, lenses=lenses,
                         lens_v=lens_v, lens_spacing=lens_step, band=band, wrap=wrap, z0=z0, x_m=x_m, y_c=y_c)


# ---------------------------------------------------------------------------------------- the head
def _head_frame(model: FlameModel, rest: FlameParams) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Rest pose -> (origin [3], R [3, 3] head-to-world, vertices [V_all, 3], joints [5, 3],
    landmarks [L, 3] | None), world, float64.

    The head's axes are the global rotation composed with the neck's (FLAME's skull follows both);
    the origin is the midpoint of the eyeball joints."""
    lmk_set = "mediapipe" if "mediapipe" in model.landmark_sets else None
    with torch.no_grad():
        out = model(rest, landmark_set=lmk_set)
    R = (axis_angle_to_matrix(rest.rotation[0].double().cpu()) @ axis_angle_to_matrix(rest.neck[0].double().cpu()))
    joints = out.joints[0].double().cpu()
    lmk = None if out.landmarks is None else out.landmarks[0].double().cpu()
    return (joints[3] + joints[4]) / 2, R, out.vertices[0].double().cpu(), joints, lmk


def _ear_tops(model: FlameModel, verts_h: Tensor) -> Tensor:
    """Top of each ear's attachment (right, left): the highest ear vertex on the border with the head.  -> [2, 3]"""
    names = model.region_names or []
    if model.vertex_region is None or "left_ear" not in names or "right_ear" not in names:
        raise ConfigError("this head model has no ear regions, so glasses cannot be fitted; "
                          "load it with FlameModel.load(embed=True)")
    region = model.vertex_region[:model.n_vertices].cpu()
    faces = model.faces[:model.n_head_faces].cpu()
    tops = []
    for name in ("right_ear", "left_ear"):
        ear = region == names.index(name)
        on = ear[faces]  # [F, 3]
        border = torch.unique(faces[on.any(1) & ~on.all(1)])
        border = border[ear[border]]
        tops.append(verts_h[border[verts_h[border, 1].argmax()]])
    return torch.stack(tops)


def fit_head(model: FlameModel, rest_params: FlameParams | None = None) -> tuple[HeadFit, Tensor, Tensor, Tensor]:
    """What the glasses are fitted to -> (HeadFit in the head frame, origin [3], R [3, 3], rest vertices
    [V_all, 3] in world space), float64 on the CPU. Pupils are mediapipe's iris centres (468 right,
    473 left) when the model embeds them, else 11 mm in front of the eyeball joints."""
    rest = model.zero_params() if rest_params is None else rest_params[0:1].to(model.v_template.device)
    origin, R, verts_w, joints, lmk = _head_frame(model, rest)
    to_head = lambda p: (p - origin) @ R  # noqa: E731  world [.., 3] -> head frame
    verts_h = to_head(verts_w[:model.n_vertices])
    if lmk is not None:
        pupils = to_head(lmk[[468, 473]])
    else:  # FLAME's joints 3, 4 are the left and right eyeballs
        pupils = to_head(joints[[4, 3]]) + torch.tensor([0.0, 0.0, 0.011], dtype=torch.float64)
    fit = HeadFit(vertices=verts_h, faces=model.faces[:model.n_head_faces].cpu(), pupils=pupils,
                  ear_tops=_ear_tops(model, verts_h))
    return fit, origin, R, verts_w
