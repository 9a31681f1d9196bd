#!/usr/bin/env python
"""Deterministic generator of the dynavatar default head (a FLAME-format head model).

Everything here is written for dynavatar from scratch: the head is sculpted as an implicit
surface (smooth unions of ellipsoids/capsules + a height-field face), triangulated with a
spherical Delaunay (convex hull of ray directions) plus structured rings around the eyes and
the mouth, closed with an eye-socket cup per eye and a mouth bag, and completed with eyeballs,
skinning weights, a joint regressor, pose correctives, identity and expression blendshapes and
landmark embeddings (mediapipe 478 obtained by running mediapipe on renders of this head).

Run:  python assets/flame/build_default_head.py  [--out DIR] [--no-mediapipe]
Writes default_head.npz and default_head.png next to this file (or into --out).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import zipfile

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import nnls
from scipy.spatial import ConvexHull, cKDTree

HERE = os.path.dirname(os.path.abspath(__file__))

REGION_NAMES = ["skin", "scalp", "left_brow", "right_brow", "left_eye", "right_eye", "nose",
                "upper_lip", "lower_lip", "mouth_interior", "left_ear", "right_ear", "neck"]
R_ = {n: i for i, n in enumerate(REGION_NAMES)}

# ----------------------------------------------------------------------------------------------
# anatomical constants (metres; x = subject's left, y = up, z = forward)
# ----------------------------------------------------------------------------------------------
EYE_C = np.array([0.0320, 0.0180, 0.0660])   # left eyeball centre (right one mirrored in x)
EYE_R = 0.0120                                # eyeball radius
LID_R = EYE_R + 0.0020                        # lid skin sphere
CUP_R = EYE_R + 0.0008                        # eye socket cup sphere (behind the lids)
Y_M = -0.0535                                 # mouth slit height at the midline
MOUTH_A = 0.0250                              # half mouth width
C0 = np.array([0.0, -0.010, -0.008])          # centre for the radial triangulation


def smoothstep(a, b, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ----------------------------------------------------------------------------------------------
# implicit head
# ----------------------------------------------------------------------------------------------
def sd_ellipsoid(p, c, r):
    c = np.asarray(c, float)
    r = np.asarray(r, float)
    q = (p - c) / r
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / r, axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def sd_capsule(p, a, b, r):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    pa = p - a
    ba = b - a
    h = np.clip((pa @ ba) / (ba @ ba), 0, 1)
    return np.linalg.norm(pa - h[..., None] * ba, axis=-1) - r


def smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def smax(a, b, k):
    return -smin(-a, -b, k)


def _pchip(pts):
    pts = np.asarray(sorted(pts), float)
    return PchipInterpolator(pts[:, 0], pts[:, 1], extrapolate=True)


# midline profile of the face (y -> z), nose and lips added separately
PROFILE = _pchip([(-0.135, -0.06), (-0.118, 0.00), (-0.112, 0.040), (-0.106, 0.066), (-0.098, 0.084),
                  (-0.087, 0.092), (-0.075, 0.088), (-0.066, 0.093), (-0.053, 0.095), (-0.044, 0.096),
                  (-0.035, 0.093), (-0.020, 0.090), (0.005, 0.089), (0.025, 0.093), (0.040, 0.096),
                  (0.060, 0.092), (0.085, 0.081), (0.110, 0.062), (0.135, 0.030)])
HALFW = _pchip([(-0.135, 0.045), (-0.105, 0.050), (-0.090, 0.053), (-0.075, 0.056), (-0.050, 0.060),
                (-0.020, 0.066), (0.000, 0.068), (0.020, 0.066), (0.040, 0.062), (0.070, 0.055),
                (0.100, 0.048), (0.135, 0.040)])
WRAP = _pchip([(-0.135, 0.03), (-0.1, 0.03), (-0.05, 0.032), (0.0, 0.033), (0.05, 0.035), (0.135, 0.04)])
DORSUM = _pchip([(0.030, 0.088), (0.024, 0.093), (0.010, 0.098), (-0.005, 0.105), (-0.014, 0.111),
                 (-0.020, 0.1145), (-0.025, 0.115), (-0.029, 0.112), (-0.033, 0.104), (-0.037, 0.094)])
NOSEW = _pchip([(0.030, 0.009), (0.020, 0.0085), (0.005, 0.0085), (-0.010, 0.0095), (-0.020, 0.0115),
                (-0.028, 0.012), (-0.037, 0.010)])


def g2(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def nose_height(x, y):
    ax = np.abs(x)
    un = ax / NOSEW(y)
    return DORSUM(y) - 0.018 * (np.sqrt(un ** 2 + 0.15 ** 2) - 0.15)


def face_height(x, y, with_nose=True):
    ax = np.abs(x)
    P = PROFILE(y)
    W = HALFW(y)
    D = WRAP(y)
    u = ax / W
    z = P - D * u ** 2 - 0.045 * u ** 4
    z = z - 0.011 * g2(ax, y, 0.033, 0.016, 0.012, 0.008)          # eye sockets
    z = z + 0.003 * g2(ax, y, 0.030, 0.036, 0.018, 0.005)          # brow ridge
    z = z + 0.008 * g2(ax, y, 0.049, -0.004, 0.013, 0.012)         # cheekbones
    z = z + 0.003 * g2(ax, y, 0.030, -0.030, 0.012, 0.014)         # cheek fullness
    z = z - 0.0015 * g2(ax, y, 0.024, -0.040, 0.004, 0.012)        # nasolabial
    z = z + 0.004 * g2(ax, y, 0.0, -0.088, 0.013, 0.009)           # chin
    tl = np.clip(1 - (x / 0.026) ** 2, 0, 1)
    z = z + 0.0045 * g2(0, y, 0, -0.0490, 1, 0.0030) * tl ** 0.6 - 9.0 * x ** 2 * tl
    z = z + 0.0055 * g2(0, y, 0, -0.0590, 1, 0.0036) * tl ** 0.6
    z = z - 0.0025 * g2(0, y, 0, -0.0535, 1, 0.0009) * tl ** 0.3    # stomion groove
    z = z - 0.002 * g2(ax, y, 0.027, -0.054, 0.003, 0.004)          # mouth corners
    if with_nose:
        w = smoothstep(0.034, 0.028, y) * smoothstep(-0.042, -0.036, y)
        zn = nose_height(x, y)
        z = z + w * (smax(z, zn, 0.003) - z)
    return z


def face_sdf(p):
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    e = 2e-4
    F = face_height(x, y)
    Fx = (face_height(x + e, y) - face_height(x - e, y)) / (2 * e)
    Fy = (face_height(x, y + e) - face_height(x, y - e)) / (2 * e)
    return (z - F) / np.sqrt(1 + Fx ** 2 + Fy ** 2)


def head_sdf(p):
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    pm = np.stack([np.abs(x), y, z], -1)
    d = sd_ellipsoid(p, [0, 0.030, -0.014], [0.075, 0.099, 0.100])               # cranium
    fs = smax(face_sdf(p), sd_ellipsoid(p, [0, -0.01, 0.0], [0.09, 0.14, 0.13]), 0.01)
    fs = smax(fs, (-0.104 + 0.36 * (0.08 - z)) - y, 0.007)                      # jaw line
    fs = smax(fs, -0.004 - z, 0.02)
    d = smin(d, fs, 0.03)
    d = smin(d, sd_capsule(pm, [0.056, -0.010, 0.000], [0.050, -0.070, -0.006], 0.011), 0.02)
    d = smin(d, sd_capsule(pm, [0.050, -0.070, -0.006], [0.020, -0.096, 0.060], 0.009), 0.02)
    d = smin(d, np.linalg.norm(pm - EYE_C, axis=-1) - LID_R, 0.003)              # lids
    d = smin(d, sd_ellipsoid(p, [0, -0.0215, 0.1055], [0.0095, 0.0085, 0.0095]), 0.004)  # tip
    d = smin(d, sd_ellipsoid(pm, [0.0135, -0.0275, 0.0945], [0.0068, 0.006, 0.0078]), 0.004)  # alae
    ear = sd_ellipsoid(pm, [0.073, 0.004, -0.016], [0.012, 0.030, 0.018])
    ear = smax(ear, -sd_ellipsoid(pm, [0.086, 0.000, -0.012], [0.0075, 0.012, 0.008]), 0.003)
    d = smin(d, ear, 0.006)
    q = np.stack([x / 0.056, (z + 0.024) / 0.060], -1)
    dn = (np.linalg.norm(q, axis=-1) - 1) * 0.056
    dn = smax(dn, -(y + 0.21), 0.01)
    dn = smax(dn, y - 0.0, 0.01)
    d = smin(d, dn, 0.03)
    d = smin(d, sd_ellipsoid(p, [0, -0.128, 0.032], [0.009, 0.012, 0.006]), 0.008)   # larynx
    return d


def raycast(origins, dirs, t0, t1, step=0.0025, iters=14):
    """First crossing from outside (f>0) to inside (f<0) along o + t d, t in [t0, t1]."""
    n = len(origins)
    hit = np.full(n, np.nan)
    active = np.arange(n)
    for t in np.arange(t0, t1 + 1e-9, step):
        if len(active) == 0:
            break
        f = head_sdf(origins[active] + t * dirs[active])
        inside = f < 0
        hit[active[inside]] = t
        active = active[~inside]
    ok = ~np.isnan(hit)
    a = hit[ok] - step
    b = hit[ok].copy()
    o, d = origins[ok], dirs[ok]
    for _ in range(iters):
        m = 0.5 * (a + b)
        f = head_sdf(o + m[:, None] * d)
        a = np.where(f < 0, a, m)
        b = np.where(f < 0, m, b)
    out = np.full((n, 3), np.nan)
    out[ok] = o + (0.5 * (a + b))[:, None] * d
    return out


def cast_from_centre(dirs):
    o = np.repeat(C0[None], len(dirs), 0) + 0.33 * dirs
    return raycast(o, -dirs, 0.0, 0.33)


def cast_front(xy):
    o = np.stack([xy[:, 0], xy[:, 1], np.full(len(xy), 0.16)], -1)
    d = np.repeat(np.array([[0.0, 0.0, -1.0]]), len(xy), 0)
    return raycast(o, d, 0.0, 0.16, step=0.0015)


# ----------------------------------------------------------------------------------------------
# structured rings around eyes and mouth
# ----------------------------------------------------------------------------------------------
N_EYE = 28
EYE_OFFS = [0.0, 0.0013, 0.0032, 0.0058]
N_MOUTH = 44
M_OFFS_X = [0.0, 0.0015, 0.0035, 0.0062, 0.0098]
M_OFFS_UP = [0.0002, 0.0016, 0.0040, 0.0070, 0.0115]
M_OFFS_LO = [0.0002, 0.0017, 0.0044, 0.0080, 0.0125]


def eye_ring_xy(k, side):
    """Ring k around the left (side=+1) / right (side=-1) eye opening, front-projected (x, y)."""
    t = 2 * np.pi * np.arange(N_EYE) / N_EYE          # t=0: lateral corner, t=pi: medial corner
    o = EYE_OFFS[k]
    a = 0.0125 + o
    bu = 0.0050 + o * 1.1
    bl = 0.0042 + o
    s = np.sin(t)
    dy = np.where(s > 0, bu * s * (1 + 0.18 * np.cos(t + 0.5)), bl * s) + 0.0012 * np.cos(t) - 0.0004
    dx = a * np.cos(t)
    return np.stack([side * (EYE_C[0] + dx), EYE_C[1] + dy], -1), t


def mouth_line(x):
    return Y_M + 0.6 * x ** 2


def mouth_ring_xy(k):
    t = 2 * np.pi * np.arange(N_MOUTH) / N_MOUTH     # t=0: left corner (+x), t=pi: right corner
    x = (MOUTH_A + M_OFFS_X[k]) * np.cos(t)
    s = np.sin(t)
    b = np.where(s > 0, M_OFFS_UP[k], M_OFFS_LO[k])
    prof = np.abs(s) ** 0.75
    if k == 3:   # cupid's bow on the vermilion border
        prof = prof * (1 - np.where(s > 0, 0.12 * np.exp(-(x / 0.004) ** 2), 0))
    y = mouth_line(x) + np.sign(s) * b * prof
    return np.stack([x, y], -1), t


def lid_sphere_point(xy, side):
    c = EYE_C * np.array([side, 1, 1])
    dx = xy[:, 0] - c[0]
    dy = xy[:, 1] - c[1]
    dz = np.sqrt(np.maximum(LID_R ** 2 - dx ** 2 - dy ** 2, 0))
    return np.stack([xy[:, 0], xy[:, 1], c[2] + dz], -1)


# ----------------------------------------------------------------------------------------------
# mesh helpers
# ----------------------------------------------------------------------------------------------
def fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.cos(phi), np.sin(th) * np.sin(phi)], -1)


def point_in_poly(pts, poly):
    x, y = pts[:, 0], pts[:, 1]
    inside = np.zeros(len(pts), bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        cond = ((y1 > y) != (y2 > y))
        xin = (x2 - x1) * (y - y1) / np.where(y2 - y1 == 0, 1e-12, y2 - y1) + x1
        inside ^= cond & (x < xin)
    return inside


def edges_of(f):
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
    return e


def orient_consistently(f):
    """Flip faces so that every interior edge is traversed in opposite directions (BFS)."""
    f = f.copy()
    nf = len(f)
    emap = {}
    for fi in range(nf):
        for k in range(3):
            a, b = f[fi, k], f[fi, (k + 1) % 3]
            emap.setdefault((min(a, b), max(a, b)), []).append(fi)
    seen = np.zeros(nf, bool)
    for start in range(nf):
        if seen[start]:
            continue
        seen[start] = True
        stack = [start]
        while stack:
            fi = stack.pop()
            for k in range(3):
                a, b = f[fi, k], f[fi, (k + 1) % 3]
                for fj in emap[(min(a, b), max(a, b))]:
                    if fj == fi or seen[fj]:
                        continue
                    # neighbour must contain edge b->a
                    fjv = list(f[fj])
                    ok = any(fjv[m] == b and fjv[(m + 1) % 3] == a for m in range(3))
                    if not ok:
                        f[fj] = f[fj][::-1]
                    seen[fj] = True
                    stack.append(fj)
    return f


def signed_volume(v, f):
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0


def uv_sphere(centre, r, n_lat=12, n_lon=18):
    th = np.pi * np.arange(1, n_lat + 1) / (n_lat + 1)
    ph = 2 * np.pi * np.arange(n_lon) / n_lon
    v = [np.array([0, 0, r])]
    for t in th:
        for p in ph:
            v.append(np.array([r * np.sin(t) * np.cos(p), r * np.sin(t) * np.sin(p), r * np.cos(t)]))
    v.append(np.array([0, 0, -r]))
    v = np.array(v) + centre
    f = []
    for j in range(n_lon):
        f.append([0, 1 + j, 1 + (j + 1) % n_lon])
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a = 1 + i * n_lon + j
            b = 1 + i * n_lon + (j + 1) % n_lon
            c = a + n_lon
            d = b + n_lon
            f += [[a, c, d], [a, d, b]]
    last = len(v) - 1
    base = 1 + (n_lat - 1) * n_lon
    for j in range(n_lon):
        f.append([last, base + (j + 1) % n_lon, base + j])
    f = np.array(f)
    # make outward
    if signed_volume(v - centre, f) < 0:
        f = f[:, ::-1]
    return v, f


# ----------------------------------------------------------------------------------------------
# building the head surface
# ----------------------------------------------------------------------------------------------
def spacing(p):
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    wf = smoothstep(-0.005, 0.045, z) * (1 - smoothstep(0.06, 0.095, y)) * smoothstep(-0.125, -0.095, y)
    h = 0.0088 - (0.0088 - 0.0034) * wf
    wear = np.exp(-0.5 * ((np.abs(x) - 0.075) ** 2 / 0.012 ** 2 + (y - 0.004) ** 2 / 0.03 ** 2
                          + (z + 0.015) ** 2 / 0.025 ** 2))
    return np.minimum(h, 0.0088 - 0.0036 * wear)


def build_surface():
    """Return dict with vertices, faces and per-vertex bookkeeping for the head (+bag, cups)."""
    # -- structured bands ------------------------------------------------------------------
    bands = []   # each: dict(kind, side, ids[k][i])
    V = []
    info = []    # per vertex: (band_kind, side, ring, t)

    def add(pts, kind, side, ring, t):
        start = len(V)
        V.extend(list(pts))
        for i in range(len(pts)):
            info.append((kind, side, ring, t[i]))
        return np.arange(start, start + len(pts))

    for side in (1, -1):
        ids = []
        for k in range(len(EYE_OFFS)):
            xy, t = eye_ring_xy(k, side)
            if k <= 1:
                p = lid_sphere_point(xy, side)
                pf = cast_front(xy)
                p = np.where((pf[:, 2:3] > p[:, 2:3]) & (k == 1), pf, p)
            else:
                p = cast_front(xy)
            ids.append(add(p, 1, side, k, t))
        bands.append(dict(kind="eye", side=side, ids=ids))
    ids = []
    for k in range(len(M_OFFS_X)):
        xy, t = mouth_ring_xy(k)
        p = cast_front(xy)
        ids.append(add(p, 2, 0, k, t))
    bands.append(dict(kind="mouth", side=0, ids=ids))
    V = np.array(V)
    assert not np.isnan(V).any()

    # -- Poisson-disk sampling of the rest --------------------------------------------------
    d1 = fibonacci_sphere(14000)
    d2 = fibonacci_sphere(70000)
    d2 = d2[(d2[:, 2] > 0.25) & (d2[:, 1] < 0.75) & (d2[:, 1] > -0.8)]
    d3 = fibonacci_sphere(40000)
    d3 = d3[(np.abs(d3[:, 0]) > 0.8)]
    dirs = np.concatenate([d1, d2, d3], 0)
    cand = cast_from_centre(dirs)
    cand = cand[~np.isnan(cand).any(1)]
    # drop candidates inside / too close to the bands
    keep = np.ones(len(cand), bool)
    ring_pts = []
    ring_len = []
    for b in bands:
        outer = b["ids"][-1]
        poly = V[outer][:, :2]
        keep &= ~(point_in_poly(cand[:, :2], poly) & (cand[:, 2] > 0.03))
        for r in b["ids"]:
            ring_pts.append(V[r])
            el = np.linalg.norm(V[r] - V[np.roll(r, 1)], axis=1)
            ring_len.append(np.maximum(el, np.roll(el, -1)))
    ring_pts = np.concatenate(ring_pts, 0)
    ring_len = np.concatenate(ring_len, 0)
    dist, nn = cKDTree(ring_pts).query(cand)
    keep &= dist > np.maximum(0.75 * spacing(cand), 0.7 * ring_len[nn])
    cand = cand[keep]
    rng = np.random.default_rng(1234)
    order = rng.permutation(len(cand))
    cand = cand[order]
    h = spacing(cand)
    tree = cKDTree(cand)
    alive = np.ones(len(cand), bool)
    chosen = []
    for i in range(len(cand)):
        if not alive[i]:
            continue
        chosen.append(i)
        nb = tree.query_ball_point(cand[i], 0.92 * h[i])
        alive[nb] = False
    P = cand[np.array(chosen)]
    n_band = len(V)
    V = np.concatenate([V, P], 0)
    info += [(0, 0, -1, 0.0)] * len(P)

    # -- spherical Delaunay of outer rings + free points -----------------------------------
    outer_ids = np.concatenate([b["ids"][-1] for b in bands])
    hull_ids = np.concatenate([outer_ids, np.arange(n_band, len(V))])
    dirs = V[hull_ids] - C0
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hull = ConvexHull(dirs)
    F = hull_ids[hull.simplices]
    # outward orientation on the sphere
    c = dirs[hull.simplices].mean(1)
    nrm = np.cross(dirs[hull.simplices[:, 1]] - dirs[hull.simplices[:, 0]],
                   dirs[hull.simplices[:, 2]] - dirs[hull.simplices[:, 0]])
    flip = np.einsum("ij,ij->i", nrm, c) < 0
    F[flip] = F[flip][:, ::-1]
    # remove triangles that cover the band interiors
    drop = np.zeros(len(F), bool)
    for b in bands:
        outer = b["ids"][-1]
        s = set(outer.tolist())
        allin = np.array([all(int(v) in s for v in tri) for tri in F])
        cen = V[F].mean(1)[:, :2]
        drop |= allin & point_in_poly(cen, V[outer][:, :2])
    F = F[~drop]
    e = np.sort(edges_of(F), 1)
    ue, cnt = np.unique(e, axis=0, return_counts=True)
    bnd = {tuple(x) for x in ue[cnt == 1]}
    want = set()
    for b in bands:
        o = b["ids"][-1]
        want |= {tuple(sorted((int(o[i]), int(o[(i + 1) % len(o)])))) for i in range(len(o))}
    if bnd != want or (cnt > 2).any():
        raise RuntimeError("band outer rings are not respected by the triangulation")
    faces = [F]
    # band strips
    for b in bands:
        ids = b["ids"]
        for k in range(len(ids) - 1):
            a, c2 = ids[k], ids[k + 1]
            n = len(a)
            for i in range(n):
                j = (i + 1) % n
                faces.append(np.array([[a[i], a[j], c2[j]], [a[i], c2[j], c2[i]]]))
    F = np.concatenate(faces, 0)

    # -- eye cups ---------------------------------------------------------------------------
    V = list(V)
    cup_ids = {}
    for b in bands:
        if b["kind"] != "eye":
            continue
        side = b["side"]
        c = EYE_C * np.array([side, 1, 1])
        m = b["ids"][0]
        rel = np.array(V)[m] - c
        rel /= np.linalg.norm(rel, axis=1, keepdims=True)
        ang = np.arccos(np.clip(rel[:, 2], -1, 1))
        az = np.arctan2(rel[:, 1], rel[:, 0])
        prev = m
        rings = []
        for frac in (0.05, 0.33, 0.66):
            a2 = ang + (np.pi - ang) * frac
            p = c + CUP_R * np.stack([np.sin(a2) * np.cos(az), np.sin(a2) * np.sin(az), np.cos(a2)], -1)
            cur = add(p, 3, side, len(rings), az)
            V = V  # (add appends to V list)
            rings.append(cur)
            n = len(cur)
            for i in range(n):
                j = (i + 1) % n
                faces.append(np.array([[prev[i], prev[j], cur[j]], [prev[i], cur[j], cur[i]]]))
            prev = cur
        pole = add(np.array([c - np.array([0, 0, CUP_R])]), 3, side, 3, np.array([0.0]))[0]
        n = len(prev)
        for i in range(n):
            faces.append(np.array([[prev[i], prev[(i + 1) % n], pole]]))
        cup_ids[side] = np.concatenate(rings + [np.array([pole])])
    # -- mouth bag ---------------------------------------------------------------------------
    m = bands[-1]["ids"][0]
    t = 2 * np.pi * np.arange(N_MOUTH) / N_MOUTH
    prev = m
    bag = []
    for a_j, hu, hl, z_j in ((0.0225, 0.0018, 0.0018, 0.089), (0.0215, 0.0070, 0.0080, 0.080),
                             (0.0195, 0.0095, 0.0110, 0.066), (0.0130, 0.0070, 0.0080, 0.052)):
        x = a_j * np.cos(t)
        s = np.sin(t)
        y = Y_M + np.where(s > 0, hu, hl) * s
        z = z_j - 9.0 * x ** 2 * (1 - 0.5 * (z_j < 0.08))
        cur = add(np.stack([x, y, z], -1), 4, 0, len(bag), t)
        bag.append(cur)
        n = len(cur)
        for i in range(n):
            j = (i + 1) % n
            faces.append(np.array([[prev[i], prev[j], cur[j]], [prev[i], cur[j], cur[i]]]))
        prev = cur
    pole = add(np.array([[0.0, Y_M, 0.046]]), 4, 0, 4, np.array([0.0]))[0]
    n = len(prev)
    for i in range(n):
        faces.append(np.array([[prev[i], prev[(i + 1) % n], pole]]))
    bag.append(np.array([pole]))
    V = np.array(V)
    F = np.concatenate(faces, 0)
    # rebuild F with new faces (cups, bag) appended after the strips
    F = orient_consistently(F)
    if signed_volume(V, F) < 0:
        F = F[:, ::-1]
    info_arr = np.array([(a, b, c) for a, b, c, _ in info], dtype=np.int64)
    t_arr = np.array([d for *_, d in info], dtype=np.float64)
    return dict(v=V, f=F, kind=info_arr[:, 0], side=info_arr[:, 1], ring=info_arr[:, 2], t=t_arr,
                bands=bands, cups=cup_ids, bag=np.concatenate(bag))


# ----------------------------------------------------------------------------------------------
# a small z-buffer rasteriser (pinhole camera looking down -z from +z)
# ----------------------------------------------------------------------------------------------
class Camera:
    def __init__(self, size=512, dist=0.62, focal=1500.0, cy_world=-0.02):
        self.size, self.dist, self.focal, self.cyw = size, dist, focal, cy_world

    def project(self, v):
        depth = self.dist - v[:, 2]
        u = self.size / 2 + self.focal * v[:, 0] / depth
        w = self.size / 2 - self.focal * (v[:, 1] - self.cyw) / depth
        return np.stack([u, w, depth], -1)

    def ray(self, uv):
        """Ray (origin, unit direction) through pixel coordinates uv [N,2]."""
        x = (uv[:, 0] - self.size / 2) / self.focal
        y = -(uv[:, 1] - self.size / 2) / self.focal
        d = np.stack([x, y, -np.ones_like(x)], -1)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        o = np.repeat(np.array([[0.0, self.cyw, self.dist]]), len(uv), 0)
        return o, d


def rasterize(v, f, cam, cull=True):
    """Returns triangle id per pixel (-1 = background) and barycentrics [H,W,3]."""
    H = W = cam.size
    s = cam.project(v)
    zbuf = np.full((H, W), np.inf)
    tid = np.full((H, W), -1, np.int64)
    bary = np.zeros((H, W, 3))
    p0, p1, p2 = s[f[:, 0]], s[f[:, 1]], s[f[:, 2]]
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])
    # image y points down, so front faces (counter-clockwise in world) have negative area here
    vis = area < -1e-12 if cull else np.abs(area) > 1e-12
    lo = np.floor(np.minimum(np.minimum(p0, p1), p2)[:, :2]).astype(int)
    hi = np.ceil(np.maximum(np.maximum(p0, p1), p2)[:, :2]).astype(int)
    for i in np.nonzero(vis)[0]:
        x0, y0 = max(lo[i, 0], 0), max(lo[i, 1], 0)
        x1, y1 = min(hi[i, 0], W - 1), min(hi[i, 1], H - 1)
        if x1 < x0 or y1 < y0:
            continue
        xs = np.arange(x0, x1 + 1) + 0.5
        ys = np.arange(y0, y1 + 1) + 0.5
        X, Y = np.meshgrid(xs, ys)
        a, b, c = p0[i], p1[i], p2[i]
        w0 = ((b[0] - X) * (c[1] - Y) - (c[0] - X) * (b[1] - Y)) / area[i]
        w1 = ((c[0] - X) * (a[1] - Y) - (a[0] - X) * (c[1] - Y)) / area[i]
        w2 = 1 - w0 - w1
        m = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if not m.any():
            continue
        # perspective-correct depth via 1/z interpolation
        iz = w0 / a[2] + w1 / b[2] + w2 / c[2]
        z = 1 / iz
        sub = zbuf[y0:y1 + 1, x0:x1 + 1]
        m &= z < sub
        if not m.any():
            continue
        sub[m] = z[m]
        tid[y0:y1 + 1, x0:x1 + 1][m] = i
        bw = np.stack([w0 / a[2], w1 / b[2], w2 / c[2]], -1) / iz[..., None]
        bary[y0:y1 + 1, x0:x1 + 1][m] = bw[m]
    return tid, bary


def vertex_normals(v, f):
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], n)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def shade(v, f, tid, bary, albedo_fn, light=(0.25, 0.35, 1.0), bg=(0.42, 0.45, 0.5)):
    """albedo_fn(face_ids, bary) -> rgb for covered pixels."""
    H, W = tid.shape
    img = np.ones((H, W, 3)) * np.asarray(bg)
    m = tid >= 0
    fi = tid[m]
    b = bary[m]
    vn = vertex_normals(v, f)
    n = (vn[f[fi]] * b[..., None]).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    L = np.asarray(light, float)
    L /= np.linalg.norm(L)
    diff = np.clip(n @ L, 0, 1)
    fill = np.clip(n @ np.array([-0.6, 0.2, 0.5]) / np.linalg.norm([-0.6, 0.2, 0.5]), 0, 1)
    col = albedo_fn(fi, b)
    img[m] = col * (0.28 + 0.62 * diff[:, None] + 0.12 * fill[:, None])
    return np.clip(img, 0, 1)


def rot(axis_angle):
    aa = np.asarray(axis_angle, float)
    th = np.linalg.norm(aa)
    if th < 1e-12:
        return np.eye(3)
    k = aa / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


# ----------------------------------------------------------------------------------------------
# assembling the model
# ----------------------------------------------------------------------------------------------
def brow_centre(ax):
    t = np.clip((ax - 0.013) / 0.042, 0, 1)
    yc = 0.0335 + 0.0058 * np.sin(np.pi * t * 0.85) - 0.002 * t
    half = 0.0048 * (1 - 0.55 * t) + 0.0008
    return t, yc, half


def build_mesh():
    S = build_surface()
    vh, fh = S["v"], S["f"]
    nh = len(vh)
    eyes = {}
    v_all, f_all = [vh], [fh]
    off = nh
    for side in (1, -1):                       # left eyeball first, then right
        c = EYE_C * np.array([side, 1, 1])
        ve, fe = uv_sphere(c, EYE_R)
        eyes[side] = np.arange(off, off + len(ve))
        v_all.append(ve)
        f_all.append(fe + off)
        off += len(ve)
    v = np.concatenate(v_all, 0)
    f = np.concatenate(f_all, 0)
    n = len(v)
    kind = np.full(n, 5)                       # 5 = eyeball
    side = np.zeros(n, np.int64)
    ring = np.full(n, -1)
    tpar = np.zeros(n)
    kind[:nh], side[:nh], ring[:nh], tpar[:nh] = S["kind"], S["side"], S["ring"], S["t"]
    side[eyes[1]] = 1
    side[eyes[-1]] = -1
    M = dict(v=v, f=f, n_head=nh, kind=kind, side=side, ring=ring, t=tpar, eyes=eyes,
             bands=S["bands"], cups=S["cups"], bag=S["bag"], f_head=fh)
    # upper / lower side of the mouth for band + bag vertices (+1 upper, -1 lower, 0 corner)
    mside = np.zeros(n)
    mb = (kind == 2) | (kind == 4)
    st = np.sin(tpar)
    mside[mb] = np.where(np.abs(st[mb]) < 1e-9, 0.0, np.sign(st[mb]))
    M["mside"] = mside
    M["region"] = assign_regions(M)
    return M


def assign_regions(M):
    v, kind, side = M["v"], M["kind"], M["side"]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    n = len(v)
    reg = np.full(n, R_["skin"])
    th = np.arctan2(x, z)
    hair_y = 0.0225 + 0.0625 * np.cos(th)
    reg[(y > hair_y) & (z < 0.095)] = R_["scalp"]
    yb = np.where(z > 0.0, -0.118, -0.118 + (0.118 - 0.045) * np.clip(-z / 0.08, 0, 1))
    reg[y < yb] = R_["neck"]
    pm = np.stack([np.abs(x), y, z], -1)
    ear = sd_ellipsoid(pm, [0.073, 0.004, -0.016], [0.012, 0.030, 0.018]) < 0.0045
    reg[ear & (x > 0.05)] = R_["left_ear"]
    reg[ear & (x < -0.05)] = R_["right_ear"]
    t, yc, half = brow_centre(np.abs(x))
    inb = (np.abs(y - yc) < half + 0.0015) & (np.abs(x) > 0.011) & (np.abs(x) < 0.058) & (z > 0.045)
    reg[inb & (x > 0)] = R_["left_brow"]
    reg[inb & (x < 0)] = R_["right_brow"]
    nz = nose_height(x, y) - face_height(x, y, with_nose=False)
    alae = sd_ellipsoid(pm, [0.0135, -0.0275, 0.0945], [0.0068, 0.006, 0.0078]) < 0.0025
    tip = sd_ellipsoid(v, [0, -0.0215, 0.1055], [0.0095, 0.0085, 0.0095]) < 0.0025
    nose = ((nz > 0.0012) & (y < 0.026) & (y > -0.037) & (np.abs(x) < 0.02)) | alae | tip
    reg[nose & (kind == 0)] = R_["nose"]
    mb = kind == 2
    lip = mb & (M["ring"] <= 3)
    reg[lip & (M["mside"] >= 0)] = R_["upper_lip"]
    reg[lip & (M["mside"] < 0)] = R_["lower_lip"]
    reg[kind == 4] = R_["mouth_interior"]
    reg[((kind == 3) | (kind == 5)) & (side > 0)] = R_["left_eye"]
    reg[((kind == 3) | (kind == 5)) & (side < 0)] = R_["right_eye"]
    return reg


def skinning_weights(M):
    v = M["v"]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    n = len(v)
    ax = np.abs(x)
    ycorner = mouth_line(MOUTH_A)
    yline = np.where(ax <= MOUTH_A, mouth_line(x), ycorner + 1.15 * (ax - MOUTH_A))
    width = 0.0004 + 0.45 * np.maximum(ax - MOUTH_A, 0)
    d = y - yline
    mb = (M["kind"] == 2) | (M["kind"] == 4)
    d = np.where(mb, M["mside"] * 0.01, d)
    wj = 0.5 - 0.5 * np.tanh(d / width)
    # vertices of the face right at the mouth slit but outside the bands: keep their side
    wj *= smoothstep(-0.018, 0.018, z) * smoothstep(-0.14, -0.105, y) * (1 - smoothstep(-0.012, 0.008, y))
    wj = np.where(mb, 0.5 - 0.5 * M["mside"], wj)
    wr = 1 - smoothstep(-0.178, -0.132, y)
    wj = wj * (1 - wr)
    W = np.zeros((n, 5))
    W[:, 0] = wr
    W[:, 2] = wj
    W[:, 1] = 1 - wr - wj
    eb = M["kind"] == 5
    W[eb] = 0
    W[eb & (M["side"] > 0), 3] = 1
    W[eb & (M["side"] < 0), 4] = 1
    W = np.clip(W, 0, None)
    return W / W.sum(1, keepdims=True)


def joint_regressor(M):
    v = M["v"]
    n = len(v)
    nh = M["n_head"]
    Jr = np.zeros((5, n))

    def fit(cands, target):
        A = v[cands].T
        lam = 10.0
        mu = 0.02
        k = len(cands)
        A2 = np.concatenate([A, lam * np.ones((1, k)), mu * np.eye(k)], 0)
        b2 = np.concatenate([target, [lam], mu * np.ones(k) / k])
        w, _ = nnls(A2, b2, maxiter=50 * k)
        return w / w.sum()

    x, y, z = v[:nh, 0], v[:nh, 1], v[:nh, 2]
    head = np.arange(nh)
    c0 = head[(y > -0.16) & (y < -0.12) & (M["kind"][:nh] == 0)]
    Jr[0, c0] = fit(c0, np.array([0.0, -0.140, -0.022]))
    c1 = head[(y > -0.075) & (y < -0.03) & (z < 0.01) & (np.abs(x) < 0.07) & (M["kind"][:nh] == 0)]
    Jr[1, c1] = fit(c1, np.array([0.0, -0.045, -0.022]))
    c2 = head[(np.abs(x) > 0.04) & (y > -0.035) & (y < 0.005) & (z > -0.01) & (z < 0.035)
              & (M["kind"][:nh] == 0)]
    Jr[2, c2] = fit(c2, np.array([0.0, -0.012, 0.008]))
    for j, s in ((3, 1), (4, -1)):
        ids = M["eyes"][s]
        Jr[j, ids] = 1.0 / len(ids)
    return Jr


def lbs(v_shaped, Jr, W, kintree_parent, pose, posedirs=None, transl=None):
    """Tiny numpy LBS (FLAME convention). pose: [5,3] axis-angle."""
    J = Jr @ v_shaped
    Rs = np.stack([rot(p) for p in pose])
    vp = v_shaped.copy()
    if posedirs is not None:
        feat = (Rs[1:] - np.eye(3)).reshape(-1)
        vp = vp + posedirs @ feat
    G = np.zeros((5, 4, 4))
    for j in range(5):
        T = np.eye(4)
        T[:3, :3] = Rs[j]
        par = kintree_parent[j]
        T[:3, 3] = J[j] - (J[par] if par >= 0 else 0)
        G[j] = T if par < 0 else G[par] @ T
    Gs = G.copy()
    for j in range(5):
        Gs[j, :3, 3] -= G[j, :3, :3] @ J[j]
    T = np.einsum("vj,jab->vab", W, Gs)
    out = np.einsum("vab,vb->va", T[:, :3, :3], vp) + T[:, :3, 3]
    Jp = G[:, :3, 3]
    if transl is not None:
        out = out + transl
        Jp = Jp + transl
    return out, Jp


# ----------------------------------------------------------------------------------------------
# blendshapes
# ----------------------------------------------------------------------------------------------
def gauss3(v, c, s):
    s = np.broadcast_to(np.asarray(s, float), (3,))
    return np.exp(-0.5 * (((v - np.asarray(c, float)) / s) ** 2).sum(1))


def eye_rigidity(M):
    """1 on eyeballs, cups and lid margins; fades out around each eye."""
    v = M["v"]
    r = np.zeros(len(v))
    for s in (1, -1):
        c = EYE_C * np.array([s, 1, 1])
        d = np.linalg.norm(v - c, axis=1)
        r = np.maximum(r, 1 - smoothstep(0.0155, 0.024, d))
    r[(M["kind"] == 5) | (M["kind"] == 3)] = 1
    return r


def rigidify_eyes(M, D):
    """Eyeballs/cups/lid margins follow the displacement of their eye centre (no shearing of eyes)."""
    v = M["v"]
    rig = eye_rigidity(M)
    out = D.copy()
    for s in (1, -1):
        c = EYE_C * np.array([s, 1, 1])
        ids = M["eyes"][s]
        dc = D[ids].mean(0)
        near = (np.sign(v[:, 0]) == s)
        out[near] = (1 - rig[near, None]) * D[near] + rig[near, None] * dc
    return out


def identity_basis(M, n_random=34):
    v = M["v"]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    ax = np.abs(x)
    sx = np.sign(x)
    front = smoothstep(0.0, 0.05, z)
    face = front * smoothstep(-0.12, -0.09, y) * (1 - smoothstep(0.05, 0.08, y))
    lowface = face * (1 - smoothstep(-0.04, -0.01, y))
    ear = np.maximum(gauss3(v, [0.076, 0.004, -0.015], [0.012, 0.03, 0.02]) * (x > 0),
                     gauss3(v, [-0.076, 0.004, -0.015], [0.012, 0.03, 0.02]) * (x < 0))
    neck = 1 - smoothstep(-0.11, -0.07, y)
    nose = gauss3(v, [0, -0.01, 0.105], [0.012, 0.022, 0.02])
    tipm = gauss3(v, [0, -0.022, 0.112], [0.01, 0.008, 0.01])
    alar = gauss3(v, [0, -0.028, 0.095], [0.02, 0.006, 0.015])
    bridge = gauss3(v, [0, 0.01, 0.1], [0.007, 0.014, 0.02])
    chin = gauss3(v, [0, -0.09, 0.085], [0.018, 0.014, 0.03])
    lips = gauss3(v, [0, Y_M, 0.095], [0.022, 0.009, 0.02])
    zero = np.zeros_like(x)
    F = []

    def add(name, dx, dy, dz, mag):
        D = np.stack([dx + zero, dy + zero, dz + zero], -1)
        D = rigidify_eyes(M, D)
        D *= mag / np.abs(D).max()
        F.append((name, D))

    add("head_scale", x, y - 0.0, z + 0.01, 0.004)
    add("head_width", x, 0, 0, 0.004)
    add("head_height", 0, (y + 0.03) * smoothstep(-0.12, -0.06, y), 0, 0.004)
    add("head_depth", 0, 0, (z + 0.01) * (1 - neck), 0.004)
    add("face_width", x * face, 0, 0, 0.003)
    add("face_length", 0, -smoothstep(0.02, -0.1, y) * face, 0, 0.004)
    add("jaw_width", x * lowface * smoothstep(0.01, 0.04, ax), 0, 0, 0.003)
    add("chin_protrusion", 0, 0, chin, 0.003)
    add("chin_height", 0, -chin, 0, 0.003)
    add("nose_length", 0, -nose * smoothstep(0.02, -0.02, y), 0.3 * tipm, 0.003)
    add("nose_width", x * (nose + alar), 0, 0, 0.0025)
    add("nose_bridge", 0, 0, bridge, 0.002)
    add("nose_tip", 0, -0.3 * tipm, tipm, 0.003)
    add("cheekbones", sx * gauss3(np.c_[ax, y, z], [0.055, 0.0, 0.05], 0.015), 0,
        0.5 * gauss3(np.c_[ax, y, z], [0.055, 0.0, 0.05], 0.015), 0.003)
    eyer = gauss3(np.c_[ax, y, z], [0.032, 0.018, 0.07], [0.016, 0.014, 0.02])
    add("eye_spacing", sx * eyer, 0, 0, 0.002)
    add("eye_height", 0, eyer, 0, 0.002)
    add("eye_depth", 0, 0, eyer, 0.002)
    add("brow_ridge", 0, 0, gauss3(np.c_[ax, y, z], [0.028, 0.037, 0.09], [0.02, 0.007, 0.02]), 0.0025)
    add("forehead_slope", 0, 0, -smoothstep(0.035, 0.12, y) * front, 0.004)
    add("lip_fullness", 0, 0.3 * np.sign(y - Y_M) * lips, lips, 0.0015)
    add("mouth_width", x * lips, 0, 0, 0.002)
    add("upper_lip_height", 0, gauss3(v, [0, -0.045, 0.1], [0.02, 0.007, 0.02]) * 0.0 -
        gauss3(v, [0, -0.056, 0.1], [0.03, 0.05, 0.05]) * smoothstep(-0.03, -0.05, y) * face, 0, 0.0025)
    add("ear_size", (ax - 0.07) * sx * ear, (y - 0.004) * ear, (z + 0.015) * ear, 0.003)
    add("ear_protrusion", sx * ear * smoothstep(0.068, 0.08, ax), 0, 0, 0.003)
    add("skull_top", 0, smoothstep(0.04, 0.13, y), 0, 0.004)
    add("skull_back", 0, 0, -smoothstep(0.0, -0.1, z) * smoothstep(-0.06, 0.0, y), 0.004)
    add("neck_width", x * neck, 0, (z + 0.022) * neck, 0.003)
    add("cheek_fullness", sx * gauss3(np.c_[ax, y, z], [0.045, -0.04, 0.06], 0.016), 0,
        0.5 * gauss3(np.c_[ax, y, z], [0.045, -0.04, 0.06], 0.016), 0.003)
    add("midface_protrusion", 0, 0, gauss3(v, [0, -0.03, 0.09], [0.03, 0.025, 0.04]), 0.003)
    add("jaw_angle", sx * gauss3(np.c_[ax, y, z], [0.05, -0.07, 0.0], 0.015),
        -gauss3(np.c_[ax, y, z], [0.05, -0.07, 0.0], 0.015), 0, 0.003)
    add("temple_hollow", -sx * gauss3(np.c_[ax, y, z], [0.066, 0.035, 0.04], 0.015), 0, 0, 0.002)
    rng = np.random.default_rng(7)
    for k in range(n_random):
        D = np.zeros_like(v)
        for _ in range(5):
            c = v[rng.integers(M["n_head"])]
            s = rng.uniform(0.025, 0.05)
            g = gauss3(v, c, s)
            vec = rng.normal(size=3)
            if k % 2 == 0:   # symmetric field
                cm = c * np.array([-1, 1, 1])
                g2_ = gauss3(v, cm, s)
                D += g[:, None] * vec + g2_[:, None] * (vec * np.array([-1, 1, 1]))
            else:
                D += g[:, None] * vec
        D = rigidify_eyes(M, D)
        D *= 0.003 / np.abs(D).max()
        F.append((f"smooth_random_{k:02d}", D))
    return F


def lid_angles(M, s):
    """Per-vertex rotation angle (about the eye's x axis) that brings the upper margin onto the lower."""
    b = [bb for bb in M["bands"] if bb["kind"] == "eye" and bb["side"] == s][0]
    v = M["v"]
    c = EYE_C * np.array([s, 1, 1])
    m = b["ids"][0]
    ang = np.arctan2(v[m, 1] - c[1], v[m, 2] - c[2])
    N = len(m)
    alpha = np.zeros(N)
    for i in range(N):
        alpha[i] = ang[i] - ang[(N - i) % N]
    alpha = np.abs(alpha)            # same for upper (i) and lower (N-i)
    xs = v[m, 0]
    up = np.sin(M["t"][m]) > 0
    order = np.argsort(xs[up])
    return b, c, xs[up][order], alpha[up][order]


def lid_motion(M, s, upper_amount, lower_amount, skin=0.15):
    """Rotate the upper lid by upper_amount*alpha downwards and the lower lid by lower_amount*alpha
    upwards about the eyeball centre (alpha = angle between the margins at that x)."""
    v = M["v"]
    b, c, xs, al = lid_angles(M, s)
    D = np.zeros_like(v)
    a_at = np.interp(v[:, 0], xs, al) if s > 0 else np.interp(-v[:, 0], -xs[::-1], al[::-1])
    fall = np.zeros(len(v))
    upper = np.zeros(len(v), bool)
    ring_fall = [1.0, 0.95, 0.7, 0.35]
    for k, ids in enumerate(b["ids"]):
        fall[ids] = ring_fall[k]
        upper[ids] = np.sin(M["t"][ids]) > 0
    cup = (M["kind"] == 3) & (M["side"] == s)
    rel = v - c
    cup_ring = M["ring"]
    fall[cup] = np.array([1.0, 0.7, 0.35, 0.0])[np.clip(cup_ring[cup], 0, 3)]
    upper[cup] = rel[cup, 1] > 0
    free = (M["kind"] == 0) & (np.sign(v[:, 0]) == s)
    dist = np.linalg.norm(rel, axis=1)
    fall[free] = skin * (1 - smoothstep(0.018, 0.03, dist[free]))
    upper[free] = rel[free, 1] > -0.002
    ang = np.where(upper, upper_amount, -lower_amount) * a_at * fall
    cth, sth = np.cos(ang), np.sin(ang)
    ny = rel[:, 1] * cth - rel[:, 2] * sth
    nz = rel[:, 1] * sth + rel[:, 2] * cth
    D[:, 1] = ny - rel[:, 1]
    D[:, 2] = nz - rel[:, 2]
    D[M["kind"] == 5] = 0
    return D


def expression_basis(M):
    v = M["v"]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    head = M["kind"] != 5
    kind = M["kind"]
    mouthv = (kind == 2) | (kind == 4)
    upper = np.where(mouthv, M["mside"] > 0, y > mouth_line(x) + 0.0002)
    lower = np.where(mouthv, M["mside"] < 0, y < mouth_line(x) - 0.0002)
    corner_l = np.array([MOUTH_A, mouth_line(MOUTH_A), 0.088])
    corner_r = corner_l * np.array([-1, 1, 1])
    E = []

    def add(name, D, mask=None):
        D = np.asarray(D, float) * head[:, None]
        if mask is not None:
            D = D * mask[:, None]
        E.append((name, D))

    def vec(dx, dy, dz, g):
        return np.stack([dx * g, dy * g, dz * g], -1)

    for s, nm in ((1, "L"), (-1, "R")):
        m = np.array([s, 1, 1])
        cc = corner_l * m
        g = gauss3(v, cc, [0.012, 0.010, 0.02])
        gc = gauss3(v, np.array([0.036, -0.025, 0.07]) * m, 0.014)
        D = vec(s * 0.006, 0.0045, -0.0015, g) + vec(0, 0.0022, 0.0015, gc)
        add(f"smile_{nm}", D)
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, corner_l * np.array([s, 1, 1]), [0.012, 0.010, 0.02])
        add(f"mouth_stretch_{nm}", vec(s * 0.006, -0.0015, -0.001, g))
    lipsm = gauss3(v, [0, Y_M, 0.095], [0.016, 0.010, 0.02])
    add("pucker", np.stack([-x * 0.35 * lipsm, 0 * x, 0.006 * lipsm], -1))
    add("funnel", np.stack([-x * 0.15 * lipsm, np.where(upper, 0.0025, np.where(lower, -0.003, 0)) * lipsm,
                            0.005 * lipsm], -1))
    ring = M["ring"]
    rf = np.where(mouthv & (kind == 2), np.clip(ring / 2.0, 0, 1), 1.0)
    add("lip_press", np.stack([0 * x, np.where(upper, -0.002, 0.002) * lipsm * rf, -0.002 * lipsm], -1))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.011, -0.046, 0.1], [0.009, 0.008, 0.02]) * upper
        add(f"upper_lip_raise_{nm}", vec(0, 0.0045, 0.001, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.011, -0.062, 0.098], [0.009, 0.009, 0.02]) * lower
        add(f"lower_lip_depress_{nm}", vec(0, -0.0045, 0.001, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, corner_l * np.array([s, 1, 1]) + [0, -0.004, 0], [0.01, 0.012, 0.02])
        add(f"lip_corner_down_{nm}", vec(-s * 0.001, -0.0045, -0.0005, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.017, 0.036, 0.09], [0.012, 0.012, 0.03])
        add(f"brow_inner_up_{nm}", vec(0, 0.0045, 0.0005, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.046, 0.036, 0.075], [0.012, 0.012, 0.03])
        add(f"brow_outer_up_{nm}", vec(0, 0.0045, 0, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.028, 0.033, 0.09], [0.016, 0.009, 0.03])
        add(f"brow_down_{nm}", vec(-s * 0.0015, -0.004, 0.001, g))
    for s, nm in ((1, "L"), (-1, "R")):
        add(f"blink_{nm}", lid_motion(M, s, 0.8, 0.2, skin=0.15))
    for s, nm in ((1, "L"), (-1, "R")):
        D = lid_motion(M, s, 0.15, 0.35, skin=0.1)
        D += vec(0, 0.0015, 0.0005, gauss3(v, [s * 0.034, -0.005, 0.08], 0.012))
        add(f"squint_{nm}", D)
    for s, nm in ((1, "L"), (-1, "R")):
        add(f"eye_wide_{nm}", lid_motion(M, s, -0.3, 0.05, skin=0.2))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.04, -0.045, 0.07], [0.016, 0.016, 0.025])
        add(f"cheek_puff_{nm}", vec(s * 0.006, 0, 0.003, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.011, -0.005, 0.098], [0.007, 0.012, 0.02])
        add(f"nose_wrinkle_{nm}", vec(0, 0.003, 0.0005, g))
    lowm = gauss3(v, [0, -0.075, 0.09], [0.025, 0.02, 0.03]) * ~upper
    add("jaw_forward_lips", vec(0, 0, 0.0045, lowm))
    add("lower_lip_shift_L", vec(0.0045, 0, 0, lowm))
    add("lower_lip_shift_R", vec(-0.0045, 0, 0, lowm))
    mouthm = gauss3(v, [0, Y_M, 0.095], [0.022, 0.012, 0.025])
    add("mouth_left", vec(0.005, 0, 0, mouthm))
    add("mouth_right", vec(-0.005, 0, 0, mouthm))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.031, -0.056, 0.085], [0.005, 0.006, 0.02])
        add(f"dimple_{nm}", vec(s * 0.001, 0, -0.0025, g))
    upl = gauss3(v, [0, -0.049, 0.1], [0.018, 0.006, 0.02]) * upper
    lol = gauss3(v, [0, -0.06, 0.1], [0.018, 0.007, 0.02]) * lower
    add("lip_roll_upper", vec(0, -0.001, -0.003, upl))
    add("lip_roll_lower", vec(0, 0.001, -0.003, lol))
    add("lip_shrug_upper", vec(0, 0.0015, 0.003, upl))
    add("lip_shrug_lower", vec(0, 0.002, 0.003, lol))
    add("lips_part", np.stack([0 * x, np.where(upper, 0.002, np.where(lower, -0.0025, 0)) * lipsm, 0 * x], -1))
    for s, nm in ((1, "L"), (-1, "R")):
        D = lid_motion(M, s, 0.0, 0.25, skin=0.0)
        D += vec(0, 0.003, 0.001, gauss3(v, [s * 0.038, -0.01, 0.075], 0.013))
        add(f"cheek_squint_{nm}", D)
    alar = gauss3(np.c_[np.abs(x), y, z], [0.015, -0.028, 0.094], 0.006)
    add("nostril_flare", vec(np.sign(x) * 0.0035, 0.0005, 0, alar))
    chinm = gauss3(v, [0, -0.085, 0.09], [0.016, 0.014, 0.03]) * ~upper
    add("chin_raise", vec(0, 0.003, 0.002, chinm))
    add("upper_lip_up_center", vec(0, 0.003, 0.0005, gauss3(v, [0, -0.047, 0.1], [0.007, 0.008, 0.02]) * upper))
    add("lower_lip_down_center", vec(0, -0.003, 0.0005, gauss3(v, [0, -0.061, 0.1], [0.007, 0.009, 0.02]) * lower))
    brows = gauss3(np.c_[np.abs(x), y, z], [0.02, 0.033, 0.09], [0.012, 0.01, 0.03])
    add("brow_squeeze", vec(-np.sign(x) * 0.003, -0.0015, 0.0005, brows))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.026, -0.035, 0.088], [0.008, 0.012, 0.02])
        add(f"nasolabial_deepen_{nm}", vec(0, 0.0015, -0.002, g))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.054, -0.055, 0.02], [0.01, 0.015, 0.02])
        add(f"jaw_clench_{nm}", vec(s * 0.003, 0, 0, g))
    neckf = gauss3(v, [0, -0.14, 0.04], [0.03, 0.03, 0.03])
    add("neck_tense", vec(0, 0.001, 0.002, neckf) +
        vec(0, -0.002, 0, gauss3(np.c_[np.abs(x), y, z], corner_l, 0.01)))
    for s, nm in ((1, "L"), (-1, "R")):
        g = gauss3(v, [s * 0.022, -0.062, 0.092], [0.008, 0.008, 0.02]) * lower
        add(f"lower_lip_out_{nm}", vec(0, 0, 0.0035, g))
    return E


def pose_correctives(M, W):
    v = M["v"]
    n = len(v)
    P = np.zeros((n, 3, 36))
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    wj = W[:, 2]
    # jaw (block 1, element R[2,1] ~ sin(angle) for opening about x): round the lower lip forward,
    # hollow the cheeks slightly, pull the mouth bag sides inwards.
    k = 9 + 7
    low_lip = gauss3(v, [0, -0.06, 0.1], [0.018, 0.008, 0.02]) * (M["mside"] <= 0) * (y < Y_M + 0.001)
    P[:, 2, k] += 0.004 * low_lip
    P[:, 1, k] += 0.002 * low_lip
    cheek = 4 * wj * (1 - wj) * gauss3(np.c_[np.abs(x), y, z], [0.045, -0.05, 0.05], 0.02)
    P[:, 0, k] += -np.sign(x) * 0.003 * cheek
    bag = M["kind"] == 4
    P[bag, 0, k] += -0.3 * x[bag]
    # neck (block 0, element R[2,1] ~ sin(pitch)): bulge/soften the throat crease
    k = 7
    throat = gauss3(v, [0, -0.115, 0.045], [0.03, 0.015, 0.03]) * (M["kind"] == 0)
    P[:, 2, k] += 0.005 * throat
    return P


# ----------------------------------------------------------------------------------------------
# painting (for renders that mediapipe and people look at)
# ----------------------------------------------------------------------------------------------
def vertex_albedo(M):
    v = M["v"]
    reg = M["region"]
    n = len(v)
    col = np.tile(np.array([0.86, 0.66, 0.55]), (n, 1))
    col[reg == R_["scalp"]] = [0.17, 0.12, 0.09]
    col[(reg == R_["left_brow"]) | (reg == R_["right_brow"])] = [0.24, 0.16, 0.11]
    col[(reg == R_["upper_lip"]) | (reg == R_["lower_lip"])] = [0.74, 0.40, 0.40]
    col[(M["kind"] == 2) & (M["ring"] == 0)] = [0.40, 0.17, 0.17]
    col[reg == R_["mouth_interior"]] = [0.22, 0.05, 0.06]
    col[M["kind"] == 3] = [0.45, 0.22, 0.22]
    col[(reg == R_["left_ear"]) | (reg == R_["right_ear"])] = [0.84, 0.60, 0.52]
    eye_up = (M["kind"] == 1) & (M["ring"] <= 0) & (np.sin(M["t"]) > 0)
    col[eye_up] = [0.18, 0.12, 0.10]
    return col


def make_albedo_fn(M, v_rest):
    col = vertex_albedo(M)
    f = M["f"]
    kind = M["kind"]

    def fn(fi, b):
        c = (col[f[fi]] * b[..., None]).sum(1)
        eb = kind[f[fi, 0]] == 5
        if eb.any():
            p = (v_rest[f[fi[eb]]] * b[eb][..., None]).sum(1)
            s = np.where(p[:, 0] > 0, 1, -1)
            cen = EYE_C * np.stack([s, np.ones_like(s), np.ones_like(s)], -1)
            d = p - cen
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            a = np.arccos(np.clip(d[:, 2], -1, 1))
            ce = np.tile(np.array([0.94, 0.92, 0.89]), (len(a), 1))
            iris = a < 0.50
            ce[iris] = np.array([0.36, 0.24, 0.14]) * (0.75 + 0.5 * (a[iris] / 0.5))[:, None]
            ce[(a > 0.45) & (a < 0.52)] = [0.15, 0.10, 0.07]
            ce[a < 0.19] = [0.03, 0.03, 0.03]
            c[eb] = ce
        return c
    return fn


def render(M, v_posed, cam, view_R=None, v_rest=None, faces=None):
    v = v_posed if view_R is None else (v_posed - np.array([0, -0.01, 0])) @ view_R.T + np.array([0, -0.01, 0])
    f = M["f"] if faces is None else faces
    tid, bary = rasterize(v, f, cam)
    img = shade(v, f, tid, bary, make_albedo_fn(M, M["v"] if v_rest is None else v_rest))
    return img, tid, bary, v


# ----------------------------------------------------------------------------------------------
# landmarks
# ----------------------------------------------------------------------------------------------
def closest_on_triangles(p, A, B, C):
    """Closest points from one point p to many triangles; returns (dist2, bary[T,3])."""
    ab, ac, ap = B - A, C - A, p - A
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = p - B
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = p - C
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    T = len(A)
    bary = np.zeros((T, 3))
    den = np.where(np.abs(va + vb + vc) < 1e-30, 1e-30, va + vb + vc)
    v_ = vb / den
    w_ = vc / den
    bary[:] = np.stack([1 - v_ - w_, v_, w_], -1)
    # edge / vertex regions
    with np.errstate(divide="ignore", invalid="ignore"):
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        t = d1 / (d1 - d3)
        bary[m] = np.stack([1 - t[m], t[m], 0 * t[m]], -1)
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        t = d2 / (d2 - d6)
        bary[m] = np.stack([1 - t[m], 0 * t[m], t[m]], -1)
        m = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        bary[m] = np.stack([0 * t[m], 1 - t[m], t[m]], -1)
    bary[(d1 <= 0) & (d2 <= 0)] = [1, 0, 0]
    bary[(d3 >= 0) & (d4 <= d3)] = [0, 1, 0]
    bary[(d6 >= 0) & (d5 <= d6)] = [0, 0, 1]
    bary = np.nan_to_num(bary)
    q = bary[:, :1] * A + bary[:, 1:2] * B + bary[:, 2:] * C
    return ((q - p) ** 2).sum(1), bary


def embed_points(v, f, pts, allowed):
    fi = np.nonzero(allowed)[0]
    A, B, C = v[f[fi, 0]], v[f[fi, 1]], v[f[fi, 2]]
    out_f = np.zeros(len(pts), np.int64)
    out_b = np.zeros((len(pts), 3))
    for i, p in enumerate(pts):
        d2, bary = closest_on_triangles(p, A, B, C)
        j = int(np.argmin(d2))
        out_f[i] = fi[j]
        out_b[i] = bary[j]
    return out_f, out_b


def chain_loop(edges):
    adj = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    loops = []
    seen = set()
    for s in sorted(adj):
        if s in seen:
            continue
        cur, prev, loop = s, None, [s]
        seen.add(s)
        while True:
            nb = [u for u in sorted(adj[cur]) if u != prev]
            if not nb:
                break
            nxt = nb[0]
            if nxt == s or nxt in seen:
                break
            loop.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        loops.append(loop)
    return loops


def split_contour(loop, xy):
    """Split a closed contour at its extreme-x points into (upper, lower) lists (image y down)."""
    loop = list(loop)
    xs = np.array([xy[i][0] for i in loop])
    i0, i1 = int(np.argmin(xs)), int(np.argmax(xs))
    n = len(loop)
    a = [loop[(i0 + k) % n] for k in range((i1 - i0) % n + 1)]
    b = [loop[(i1 + k) % n] for k in range((i0 - i1) % n + 1)]
    ya = np.mean([xy[i][1] for i in a[1:-1]]) if len(a) > 2 else 0
    yb = np.mean([xy[i][1] for i in b[1:-1]]) if len(b) > 2 else 0
    return (a, b) if ya < yb else (b, a)


def margin_embedding(M, ring_ids, outward_ids, pts):
    """Snap points onto the polyline ring_ids (closed); faces chosen on the side of outward_ids."""
    v, f = M["v"], M["f"]
    emap = {}
    for fi, tri in enumerate(f):
        for k in range(3):
            a, b = int(tri[k]), int(tri[(k + 1) % 3])
            emap.setdefault((min(a, b), max(a, b)), []).append(fi)
    outs = set(int(i) for i in outward_ids)
    n = len(ring_ids)
    P0 = v[ring_ids]
    P1 = v[np.roll(ring_ids, -1)]
    res_f, res_b = [], []
    for p in pts:
        d = P1 - P0
        t = np.clip(((p - P0) * d).sum(1) / np.maximum((d * d).sum(1), 1e-20), 0, 1)
        q = P0 + t[:, None] * d
        i = int(np.argmin(((q - p) ** 2).sum(1)))
        a, b = int(ring_ids[i]), int(ring_ids[(i + 1) % n])
        cand = [fi for fi in emap[(min(a, b), max(a, b))] if any(int(u) in outs for u in f[fi])]
        fi = cand[0]
        bary = np.zeros(3)
        tri = list(f[fi])
        bary[tri.index(a)] = 1 - t[i]
        bary[tri.index(b)] = t[i]
        res_f.append(fi)
        res_b.append(bary)
    return np.array(res_f), np.array(res_b)


def mediapipe_embedding(M, log):
    import mediapipe as mp
    fm = mp.solutions.face_mesh
    conn = mp.solutions.face_mesh_connections
    v, f = M["v"], M["f"]
    kind = M["kind"]
    cam = Camera(size=512, dist=0.62, focal=1500.0, cy_world=-0.005)
    views = [(0.0, 0.0), (0.22, 0.0), (-0.22, 0.0), (0.0, 0.14), (0.0, -0.12), (0.14, 0.08), (-0.14, -0.08)]
    skin_faces = np.all(np.isin(kind[f], [0, 1, 2]), axis=1)
    head_faces = kind[f[:, 0]] != 5
    eyeball_faces = {s: (kind[f[:, 0]] == 5) & (M["side"][f[:, 0]] == s) for s in (1, -1)}
    iris_idx = {1: list(range(473, 478)), -1: list(range(468, 473))}   # mediapipe: 473.. = left iris
    hits = [[] for _ in range(478)]
    dets = []
    with fm.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1,
                     min_detection_confidence=0.3) as det:
        for yaw, pitch in views:
            R = rot([pitch, 0, 0]) @ rot([0, yaw, 0])
            img, _, _, vv = render(M, v, cam, R)
            res = det.process((img * 255).round().astype(np.uint8))
            if not res.multi_face_landmarks:
                log(f"  view yaw={yaw:+.2f} pitch={pitch:+.2f}: NO FACE")
                dets.append(None)
                continue
            lm = res.multi_face_landmarks[0].landmark
            uv = np.array([[p.x * cam.size, p.y * cam.size] for p in lm])
            dets.append((R, uv))
            log(f"  view yaw={yaw:+.2f} pitch={pitch:+.2f}: face detected, {len(uv)} landmarks")
            o, d = cam.ray(uv)
            for sel, allowed in (("head", head_faces), ("eye1", eyeball_faces[1]), ("eye-1", eyeball_faces[-1])):
                if sel == "head":
                    idx = [i for i in range(468)]
                else:
                    idx = iris_idx[int(sel[3:])]
                fi = np.nonzero(allowed)[0]
                A, B, C = vv[f[fi, 0]], vv[f[fi, 1]], vv[f[fi, 2]]
                e1, e2 = B - A, C - A
                for i in idx:
                    pv = np.cross(d[i], e2)
                    det_ = (e1 * pv).sum(1)
                    ok = np.abs(det_) > 1e-14
                    inv = 1 / np.where(ok, det_, 1)
                    tv = o[i] - A
                    uu = (tv * pv).sum(1) * inv
                    qv = np.cross(tv, e1)
                    vv_ = (d[i] * qv).sum(1) * inv
                    tt = (e2 * qv).sum(1) * inv
                    m = ok & (uu >= 0) & (vv_ >= 0) & (uu + vv_ <= 1) & (tt > 0)
                    if m.any():
                        j = np.nonzero(m)[0][np.argmin(tt[m])]
                        b = np.array([1 - uu[j] - vv_[j], uu[j], vv_[j]])
                    else:
                        # silhouette: closest point of the (rotated) mesh to the ray
                        w = A + e1 / 3 + e2 / 3 - o[i]
                        dist = np.linalg.norm(w - (w @ d[i])[:, None] * d[i], axis=1)
                        j = int(np.argmin(dist))
                        b = np.array([1 / 3, 1 / 3, 1 / 3])
                    hits[i].append((v[f[fi[j]]] * b[:, None]).sum(0))
    n_det = sum(d is not None for d in dets)
    if n_det == 0:
        raise RuntimeError("mediapipe did not detect the rendered head in any view")
    pts = np.zeros((478, 3))
    for i in range(478):
        h = np.array(hits[i])
        med = np.median(h, 0)
        if len(h) >= 3:
            dd = np.linalg.norm(h - med, axis=1)
            keep = dd <= max(np.median(dd) * 2.5, 1e-4)
            med = h[keep].mean(0)
        pts[i] = med
    lf, lb = np.zeros(478, np.int64), np.zeros((478, 3))
    lf[:468], lb[:468] = embed_points(v, f, pts[:468], skin_faces)
    for s in (1, -1):
        ii = iris_idx[s]
        c = EYE_C * np.array([s, 1, 1])
        q = pts[ii] - c
        q = c + EYE_R * q / np.linalg.norm(q, axis=1, keepdims=True)
        lf[ii], lb[ii] = embed_points(v, f, q, eyeball_faces[s])
    # eye contours -> lid margins, inner lip contour -> lip margins: each contour point keeps its
    # relative arc-length position between the two corners (median over the views)
    ref_uv = [d for d in dets if d is not None][0][1]
    all_uv = [d[1] for d in dets if d is not None]

    def place(chain, ids, outward):
        fr = []
        for uv in all_uv:
            P = uv[chain]
            sl = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(P, axis=0), axis=1))])
            fr.append(sl / max(sl[-1], 1e-9))
        fr = np.median(np.array(fr), 0)
        Q = v[ids]
        sm = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(Q, axis=0), axis=1))])
        sm /= sm[-1]
        ff, bb_ = [], []
        for a in fr:
            i = int(np.clip(np.searchsorted(sm, a, side="right") - 1, 0, len(ids) - 2))
            t = float(np.clip((a - sm[i]) / max(sm[i + 1] - sm[i], 1e-12), 0, 1))
            fi, b = edge_point(M, int(ids[i]), int(ids[i + 1]), t, outward)
            ff.append(fi)
            bb_.append(b)
        lf[chain], lb[chain] = np.array(ff), np.array(bb_)

    def by_x(chain):
        return chain if ref_uv[chain[0], 0] < ref_uv[chain[-1], 0] else chain[::-1]

    for s, cset in ((1, conn.FACEMESH_LEFT_EYE), (-1, conn.FACEMESH_RIGHT_EYE)):
        loop = chain_loop(sorted(cset))[0]
        up, lo = split_contour(loop, ref_uv)
        b = [bb for bb in M["bands"] if bb["kind"] == "eye" and bb["side"] == s][0]
        r0, r1 = b["ids"][0], b["ids"][1]
        st = np.sin(M["t"][r0])
        for lst, sel in ((up, st >= -1e-9), (lo, st <= 1e-9)):
            ids = r0[sel]
            place(by_x(list(lst)), ids[np.argsort(v[ids, 0])], r1)
    loops = chain_loop(sorted(conn.FACEMESH_LIPS))
    areas = []
    for lp in loops:
        P = ref_uv[lp]
        areas.append(0.5 * abs(np.dot(P[:, 0], np.roll(P[:, 1], 1)) - np.dot(P[:, 1], np.roll(P[:, 0], 1))))
    inner = loops[int(np.argmin(areas))]
    up, lo = split_contour(inner, ref_uv)
    b = [bb for bb in M["bands"] if bb["kind"] == "mouth"][0]
    r0, r1 = b["ids"][0], b["ids"][1]
    st = np.sin(M["t"][r0])
    for lst, sel in ((up, st >= -1e-9), (lo, st <= 1e-9)):
        ids = r0[sel]
        place(by_x(list(lst)), ids[np.argsort(v[ids, 0])], r1)
    # residuals
    P3 = (v[f[lf]] * lb[..., None]).sum(1)
    stats = []
    for (yaw, pitch), dd in zip(views, dets):
        if dd is None:
            continue
        R, uv = dd
        pp = (P3 - np.array([0, -0.01, 0])) @ R.T + np.array([0, -0.01, 0])
        pr = cam.project(pp)[:, :2]
        err = np.linalg.norm(pr - uv, axis=1)
        stats.append((yaw, pitch, float(np.mean(err)), float(np.median(err)), float(np.max(err)),
                      float(np.mean(err[468:]))))
        log(f"  reprojection yaw={yaw:+.2f} pitch={pitch:+.2f}: mean {np.mean(err):.2f}px "
            f"median {np.median(err):.2f}px max {np.max(err):.2f}px (iris mean {np.mean(err[468:]):.2f}px)")
    return lf, lb.astype(np.float32), dict(n_views=len(views), n_detected=n_det, residuals=stats), ref_uv


def margin_embedding_open(M, ids, outward, pts):
    """Like margin_embedding but for an open polyline (sorted by x)."""
    v, f = M["v"], M["f"]
    if not hasattr(margin_embedding_open, "_emap") or margin_embedding_open._n != len(f):
        emap = {}
        for fi, tri in enumerate(f):
            for k in range(3):
                a, b = int(tri[k]), int(tri[(k + 1) % 3])
                emap.setdefault((min(a, b), max(a, b)), []).append(fi)
        margin_embedding_open._emap = emap
        margin_embedding_open._n = len(f)
    emap = margin_embedding_open._emap
    outs = set(int(i) for i in outward)
    P0, P1 = v[ids[:-1]], v[ids[1:]]
    res_f, res_b = [], []
    for p in pts:
        d = P1 - P0
        t = np.clip(((p - P0) * d).sum(1) / np.maximum((d * d).sum(1), 1e-20), 0, 1)
        q = P0 + t[:, None] * d
        i = int(np.argmin(((q - p) ** 2).sum(1)))
        a, b = int(ids[i]), int(ids[i + 1])
        cand = [fi for fi in emap[(min(a, b), max(a, b))] if any(int(u) in outs for u in f[fi])]
        fi = cand[0]
        bary = np.zeros(3)
        tri = [int(u) for u in f[fi]]
        bary[tri.index(a)] = 1 - t[i]
        bary[tri.index(b)] = t[i]
        res_f.append(fi)
        res_b.append(bary)
    return np.array(res_f), np.array(res_b)


def edge_point(M, a, b, t, outward):
    v, f = M["v"], M["f"]
    outs = set(int(i) for i in outward)
    for fi in np.nonzero(np.any(f == a, axis=1) & np.any(f == b, axis=1))[0]:
        tri = [int(u) for u in f[fi]]
        if any(u in outs for u in tri):
            bary = np.zeros(3)
            bary[tri.index(a)] = 1 - t
            bary[tri.index(b)] = t
            return int(fi), bary
    raise RuntimeError("edge face not found")


def ring_point(M, band, k, tval):
    ids = band["ids"][k]
    N = len(ids)
    s = (tval % (2 * np.pi)) / (2 * np.pi) * N
    i = int(np.floor(s + 1e-9)) % N
    fr = s - np.floor(s + 1e-9)
    return edge_point(M, int(ids[i]), int(ids[(i + 1) % N]), fr, band["ids"][k + 1])


def ibug68_embedding(M, lf, lb, conn_oval):
    v, f = M["v"], M["f"]
    kind = M["kind"]
    skin_faces = np.all(np.isin(kind[f], [0, 1, 2]), axis=1)
    P3 = (v[f[lf]] * lb[..., None]).sum(1)
    out_f = np.zeros(68, np.int64)
    out_b = np.zeros((68, 3))
    # jaw 0..16 from mediapipe's face oval (lower part), resampled by arc length
    loop = chain_loop(sorted(conn_oval))[0]
    Q = P3[loop]
    n = len(loop)
    ic = int(np.argmin(Q[:, 1]))
    ylim = EYE_C[1] - 0.014
    arcs = []
    for step in (1, -1):
        pts = [Q[ic]]
        k = ic
        while True:
            k = (k + step) % n
            pts.append(Q[k])
            if Q[k, 1] > ylim or len(pts) > n:
                break
        arcs.append(np.array(pts))
    a0, a1 = arcs
    if a0[-1, 0] > 0:
        a0, a1 = a1, a0           # a0 goes to the subject's right (x<0)
    arc = np.concatenate([a0[::-1], a1[1:]], 0)
    seg = np.linalg.norm(np.diff(arc, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    tq = np.linspace(0, s[-1], 17)
    jaw = np.stack([np.interp(tq, s, arc[:, k]) for k in range(3)], -1)
    out_f[:17], out_b[:17] = embed_points(v, f, jaw, skin_faces)
    # brows 17..26 (right brow outer->inner, left brow inner->outer)
    ts = np.linspace(0.97, 0.03, 5)
    bx = 0.013 + 0.042 * ts
    _, yc, half = brow_centre(bx)
    xy = np.concatenate([np.stack([-bx, yc + 0.3 * half], -1), np.stack([bx[::-1], (yc + 0.3 * half)[::-1]], -1)])
    out_f[17:27], out_b[17:27] = embed_points(v, f, cast_front(xy), skin_faces)
    # nose bridge 27..30 and nose base 31..35
    ys = np.linspace(EYE_C[1] + 0.002, -0.0235, 4)
    out_f[27:31], out_b[27:31] = embed_points(v, f, cast_front(np.stack([0 * ys, ys], -1)), skin_faces)
    base = np.array([[-0.0105, -0.0315, 0.098], [-0.0052, -0.0335, 0.101], [0, -0.0345, 0.1015],
                     [0.0052, -0.0335, 0.101], [0.0105, -0.0315, 0.098]])
    out_f[31:36], out_b[31:36] = embed_points(v, f, base, skin_faces)
    # eyes 36..47 on the lid margins
    eb = {bb["side"]: bb for bb in M["bands"] if bb["kind"] == "eye"}
    tr = [0, np.pi / 3, 2 * np.pi / 3, np.pi, 4 * np.pi / 3, 5 * np.pi / 3]
    for j, tv in enumerate(tr):
        out_f[36 + j], out_b[36 + j] = ring_point(M, eb[-1], 0, tv)
    tl = [np.pi, 2 * np.pi / 3, np.pi / 3, 0, 5 * np.pi / 3, 4 * np.pi / 3]
    for j, tv in enumerate(tl):
        out_f[42 + j], out_b[42 + j] = ring_point(M, eb[1], 0, tv)
    # lips: outer 48..59 on the vermilion border ring, inner 60..67 on the margin
    mb = [bb for bb in M["bands"] if bb["kind"] == "mouth"][0]
    out_f[48], out_b[48] = ring_point(M, mb, 1, np.pi)
    for j, tv in enumerate(np.pi * np.array([5, 4, 3, 2, 1]) / 6):
        out_f[49 + j], out_b[49 + j] = ring_point(M, mb, 3, tv)
    out_f[54], out_b[54] = ring_point(M, mb, 1, 0.0)
    for j, tv in enumerate(2 * np.pi - np.pi * np.array([1, 2, 3, 4, 5]) / 6):
        out_f[55 + j], out_b[55 + j] = ring_point(M, mb, 3, tv)
    inner_t = [np.pi - 0.12, 3 * np.pi / 4, np.pi / 2, np.pi / 4, 0.12, 2 * np.pi - np.pi / 4,
               3 * np.pi / 2, 2 * np.pi - 3 * np.pi / 4]
    for j, tv in enumerate(inner_t):
        out_f[60 + j], out_b[60 + j] = ring_point(M, mb, 0, tv)
    return out_f, out_b.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------
def save_npz_deterministic(path, arrays):
    """Same format as np.savez_compressed, but with fixed zip timestamps (byte-identical rebuilds)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, a in arrays.items():
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asanyarray(a), allow_pickle=False)
            zf.writestr(info, b.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())


def source_sha256():
    with open(os.path.abspath(__file__), "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


KINTREE_PARENT = [-1, 0, 1, 1, 1]


def build(out_dir=None, use_mediapipe=True, make_png=True, log=print):
    t_start = time.time()
    out_dir = HERE if out_dir is None else out_dir
    os.makedirs(out_dir, exist_ok=True)
    M = build_mesh()
    v, f = M["v"], M["f"]
    log(f"mesh: {len(v)} vertices, {len(f)} faces ({time.time() - t_start:.1f}s)")
    W = skinning_weights(M)
    Jr = joint_regressor(M)
    ident = identity_basis(M)
    expr = expression_basis(M)
    posedirs = pose_correctives(M, W)
    S, E = len(ident), len(expr)
    shapedirs = np.concatenate([np.stack([d for _, d in ident], -1), np.stack([d for _, d in expr], -1)], -1)
    log(f"blendshapes: {S} identity, {E} expression ({time.time() - t_start:.1f}s)")
    from mediapipe.python.solutions import face_mesh_connections as conn
    lf, lb, mp_stats, _ = mediapipe_embedding(M, log)
    log(f"mediapipe embedding done ({time.time() - t_start:.1f}s)")
    if0, ib0 = ibug68_embedding(M, lf, lb, conn.FACEMESH_FACE_OVAL)
    meta = dict(name="dynavatar-default-head", version="1", units="m", axes="x-left y-up z-forward",
                n_vertices=int(len(v)), n_faces=int(len(f)), n_head_vertices=int(M["n_head"]),
                n_shape=S, n_expr=E, n_joints=5,
                joints=["root", "neck", "jaw", "left_eye", "right_eye"],
                components={"head": int(M["n_head"]), "left_eyeball": int(len(M["eyes"][1])),
                            "right_eyeball": int(len(M["eyes"][-1]))},
                posedirs="(R_j - I) row-major for joints 1..4 -> 36 features",
                mediapipe=mp_stats, generator="assets/flame/build_default_head.py",
                generator_sha256=source_sha256(), licence="same as dynavatar; generated, no FLAME data")
    arrays = dict(
        v_template=v.astype(np.float32),
        f=f.astype(np.int64),
        shapedirs=shapedirs.astype(np.float32),
        posedirs=posedirs.astype(np.float32),
        J_regressor=Jr.astype(np.float32),
        weights=W.astype(np.float32),
        kintree_table=np.array([KINTREE_PARENT, [0, 1, 2, 3, 4]], np.int64),
        n_shape_total=np.array(S, np.int64),
        n_expr_total=np.array(E, np.int64),
        shape_names=np.array([n for n, _ in ident]),
        expr_names=np.array([n for n, _ in expr]),
        lmk_mediapipe_faces=lf.astype(np.int64),
        lmk_mediapipe_bary=lb.astype(np.float32),
        lmk_ibug68_faces=if0.astype(np.int64),
        lmk_ibug68_bary=ib0.astype(np.float32),
        vertex_region=M["region"].astype(np.int64),
        region_names=np.array(REGION_NAMES),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    npz = os.path.join(out_dir, "default_head.npz")
    save_npz_deterministic(npz, arrays)
    log(f"wrote {npz} ({os.path.getsize(npz) / 1e6:.2f} MB, {time.time() - t_start:.1f}s)")
    if make_png:
        png = os.path.join(out_dir, "default_head.png")
        make_figure(M, arrays, png)
        log(f"wrote {png} ({time.time() - t_start:.1f}s)")
    return arrays


def posed_vertices(arrays, shape=None, expr=None, pose=None, M=None):
    v = arrays["v_template"].astype(np.float64)
    sd = arrays["shapedirs"].astype(np.float64)
    S = int(arrays["n_shape_total"])
    if shape is not None:
        v = v + sd[..., :S] @ shape
    if expr is not None:
        v = v + sd[..., S:] @ expr
    pose = np.zeros((5, 3)) if pose is None else pose
    out, J = lbs(v, arrays["J_regressor"].astype(np.float64), arrays["weights"].astype(np.float64),
                 KINTREE_PARENT, pose, arrays["posedirs"].astype(np.float64))
    return out, J


def make_figure(M, arrays, path, title="dynavatar default head (generated, FLAME-format)"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    f = arrays["f"]
    v0 = arrays["v_template"].astype(np.float64)
    cam = Camera(size=360, dist=0.62, focal=640.0, cy_world=-0.035)
    cols = np.array(plt.cm.tab20(np.arange(13))[:, :3])
    reg = arrays["vertex_region"]
    names = list(arrays["expr_names"])
    fig, axes = plt.subplots(2, 5, figsize=(17, 7.6))
    lmf, lmb = arrays["lmk_mediapipe_faces"], arrays["lmk_mediapipe_bary"]
    ibf, ibb = arrays["lmk_ibug68_faces"], arrays["lmk_ibug68_bary"]
    for ax_, yaw, label in zip(axes[0, :3], (0.0, 0.75, 1.5708), ("front", "3/4", "side")):
        R = rot([0, yaw, 0])
        vv = v0 @ R.T
        tid, bary = rasterize(vv, f, cam)
        img = shade(vv, f, tid, bary, lambda fi, b: (cols[reg[f[fi]]] * b[..., None]).sum(1), bg=(1, 1, 1))
        ax_.imshow(img)
        visible = set(np.unique(tid).tolist())
        for ff, bb, c, s in ((lmf, lmb, "k", 2), (ibf, ibb, "r", 6)):
            P = (vv[f[ff]] * bb[..., None]).sum(1)
            uv = cam.project(P)
            vis = np.array([int(x) in visible for x in ff])
            ax_.scatter(uv[vis, 0], uv[vis, 1], s=s, c=c, linewidths=0)
        ax_.set_title(f"{label}: regions + mediapipe (black) / iBUG-68 (red)", fontsize=8)
    ax_ = axes[0, 3]
    for i, n in enumerate(REGION_NAMES):
        ax_.add_patch(plt.Rectangle((0, 12 - i), 0.8, 0.8, color=cols[i]))
        ax_.text(1.1, 12 - i + 0.4, n, va="center", fontsize=9)
    ax_.set_xlim(0, 6)
    ax_.set_ylim(0, 13.5)
    ax_.set_title("vertex regions", fontsize=9)
    # weights
    W = arrays["weights"]
    R = rot([0, 1.5708, 0])
    vv = v0 @ R.T
    tid, bary = rasterize(vv, f, cam)
    wc = np.stack([W[:, 2] + W[:, 3] + W[:, 4], W[:, 1], W[:, 0]], -1)
    axes[0, 4].imshow(shade(vv, f, tid, bary, lambda fi, b: (wc[f[fi]] * b[..., None]).sum(1), bg=(1, 1, 1)))
    axes[0, 4].set_title("skinning: jaw/eyes (red), neck (green), root (blue)", fontsize=8)
    E = int(arrays["n_expr_total"])

    def ex(*nm):
        e = np.zeros(E)
        for k in nm:
            e[names.index(k)] = 1.0
        return e
    cases = [("neutral", None, None), ("jaw open 0.35 rad", None, 0.35),
             ("smile L+R", ex("smile_L", "smile_R"), None), ("blink L+R", ex("blink_L", "blink_R"), None),
             ("brow raise", ex("brow_inner_up_L", "brow_inner_up_R", "brow_outer_up_L", "brow_outer_up_R"), None)]
    cam2 = Camera(size=360, dist=0.62, focal=1000.0, cy_world=-0.01)
    for ax_, (label, e, jaw) in zip(axes[1], cases):
        pose = np.zeros((5, 3))
        if jaw:
            pose[2, 0] = jaw
        vp, _ = posed_vertices(arrays, expr=e, pose=pose)
        Rv = rot([0, 0.3, 0])
        img, _, _, _ = render(M, vp, cam2, Rv, v_rest=v0)
        ax_.imshow(img)
        ax_.set_title(label, fontsize=9)
    for a in axes.ravel():
        a.axis("off")
    fig.suptitle(title + f" — {len(v0)} vertices, {len(f)} faces", fontsize=11)
    plt.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--no-png", action="store_true")
    a = ap.parse_args(argv)
    build(a.out, make_png=not a.no_png)


if __name__ == "__main__":
    main()
