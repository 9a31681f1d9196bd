"""Glasses as geometry: a pair of glasses built from splats and bound to the head, offline.

Why geometry and not an image editor: glasses are a rigid object with sharp, thin edges that must
stay the same from every side. A 2D editor (InstructPix2Pix) draws them per keyframe and the splats
average those drawings into ghosts; built here as curves fitted to the avatar's own head and sampled
with small elongated splats, they are 3D-consistent by construction and need no weights.

``add_glasses(avatar, model, style="round")`` returns a new avatar = the input's splats + the glasses':

* the frame is fitted in the rest pose (``glasses_shape``): rims in front of the eyes, sized from the
  inter-pupil distance, a bridge over the nose, temples back to the ears;
* every glasses splat is bound to the nearest triangle that moves RIGIDLY with the head (skinned to
  the head joint alone, untouched by expression and pose-corrective blendshapes: forehead, scalp,
  ears), with local coordinates that make ``bind()`` reproduce the fitted position and orientation at
  rest. Glasses therefore follow every head pose and expression and never bend with the jaw or blinks;
* they carry the one-hot "eyeglasses" label, so later edits ("make the glasses red") find them;
* where a temple runs under the avatar's hair (hair-labelled splats outside it, at rest), it fades out
  and stops, as a real temple vanishes into the hair above the ear: splat renderers sort by splat
  centre, so a long hair strand in front of the temple would otherwise be drawn behind it in turned views.

``glasses_request(plan_or_text)`` reads style, colour, thickness and lens tint from an edit's words, so
``add_glasses(avatar, model, **glasses_request(plan))`` carries out "add thick black cat-eye glasses".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import ConfigError
from ...flame import FlameModel, FlameParams
from ...gaussians.avatar import GaussianAvatar, rgb_to_sh
from ...geometry.labels import NUM_LABELS, label_index
from ...geometry.rotations import matrix_to_quaternion
from ...geometry.triangles import triangle_frames
from .glasses_shape import GLASSES_STYLES, STYLE_SPECS, GlassesCurves, fit_glasses_curves, fit_head

__all__ = ["GLASSES_STYLES", "PART_NAMES", "GlassesSplats", "add_glasses", "glasses_splats", "glasses_request",
           "fit_head", "rigid_faces"]

#: What each glasses splat belongs to (``GlassesSplats.part`` indexes this).
PART_NAMES = ("right_rim", "left_rim", "bridge", "right_temple", "left_temple", "right_lens", "left_lens")

DEFAULT_COLOUR = (0.06, 0.06, 0.07)
_SUN_TINT = (0.04, 0.04, 0.05)
_SPACING = 0.0005  # splat spacing along every curve, metres
_FRAME_OPACITY = 0.97
_RIGID_TOL = 1e-7  # metres of motion per unit of expression/pose-corrective coefficient
_LIGHT = (0.25, 0.55, 0.80)  # baked key light in the head frame (upper front)
_TORTOISESHELL = (0.36, 0.21, 0.10)
_HAIR_TUBE = 0.004  # hair centres within this of a temple's outward line cover it (metres)
_HAIR_COVER = 3  # ... when there are at least this many
_HAIR_FADE = 0.004  # a temple fades out over its first 4 mm under the hair


@dataclass
class GlassesSplats:
    """Glasses splats in world space at the rest pose, before binding."""

    means: Tensor  # [M, 3]
    rotations: Tensor  # [M, 3, 3] columns: along the curve, across it, out of the surface
    scales: Tensor  # [M, 3] linear, world units, per column of ``rotations``
    rgb: Tensor  # [M, 3]
    opacity: Tensor  # [M]
    part: Tensor  # [M] long, index into PART_NAMES
    order: Tensor  # [M] long, position along its curve (rims: counter-clockwise in the head's x-y)


# ---------------------------------------------------------------------------------------- the head
def rigid_faces(model: FlameModel) -> Tensor:
    """Faces that move rigidly with the head -> bool [F_all].

    A vertex is rigid when it is skinned to the head joint (the parent of the jaw and eyes) alone and
    no expression or pose-corrective blendshape moves it; a face when its three vertices are. Models
    whose every vertex moves a little (a real FLAME) fall back to the 5 % least mobile faces."""
    head = model.parents[3]  # the eyes' parent: FLAME's "neck" joint, which carries the skull
    expr = model.shapedirs[..., model.n_shape:].double().cpu()  # [V, 3, E]
    motion = expr.pow(2).sum((1, 2)).sqrt()  # [V] metres per unit coefficient
    motion = motion + model.posedirs.double().cpu().reshape(model.posedirs.shape[0], -1, 3).pow(2).sum((0, 2)).sqrt()
    motion = motion + 0.1 * (1.0 - model.lbs_weights[:, head].double().cpu())  # 10 cm lever on other joints
    faces = model.faces[:model.n_head_faces].cpu()
    face_motion = motion[faces].amax(-1)  # [F_head]
    if model.vertex_region is not None and model.region_names:  # never the eyes, brows, lips or mouth
        keep = [i for i, n in enumerate(model.region_names) if n in ("skin", "scalp", "nose", "left_ear", "right_ear")]
        allowed = torch.isin(model.vertex_region[:model.n_vertices].cpu()[faces], torch.tensor(keep)).all(-1)
        face_motion = torch.where(allowed, face_motion, torch.full_like(face_motion, math.inf))
    tol = max(_RIGID_TOL, float(torch.quantile(face_motion[torch.isfinite(face_motion)], 0.05)))
    out = torch.zeros(model.faces.shape[0], dtype=torch.bool)
    out[:model.n_head_faces] = face_motion <= tol
    return out


# ---------------------------------------------------------------------------------------- the splats
def _orthonormal(t: Tensor, n: Tensor) -> Tensor:
    """Rotation [N, 3, 3] with columns (t, b = n x t, n'), n' = n made orthogonal to t."""
    t = t / t.norm(dim=-1, keepdim=True)
    n = n - (n * t).sum(-1, keepdim=True) * t
    n = n / n.norm(dim=-1, keepdim=True)
    return torch.stack([t, torch.cross(n, t, dim=-1), n], -1)


def _tangents(p: Tensor, closed: bool) -> Tensor:
    """Unit tangents of a polyline by central differences.  [N, 3] -> [N, 3]"""
    if closed:
        d = p.roll(-1, 0) - p.roll(1, 0)
    else:
        d = torch.cat([p[1:2] - p[:1], p[2:] - p[:-2], p[-1:] - p[-2:-1]])
    return d / d.norm(dim=-1, keepdim=True)


def _curve_splats(p: Tensor, normals: Tensor, closed: bool, band: float, colour: Tensor) -> tuple[Tensor, ...]:
    """A rim-like band along a curve: rows of elongated splats side by side across ``band``.

    p, normals [N, 3] (head frame) -> means [R*N, 3], rotations [R*N, 3, 3], scales [R*N, 3], rgb [R*N, 3],
    order [R*N]. Each row is shaded with a baked key light and a glossy highlight on the row's own
    normal (the band's cross-section is rounded), so the frame reads as a solid, not a drawn line."""
    rot = _orthonormal(_tangents(p, closed), normals)  # [N, 3, 3]
    rows = max(1, math.ceil(band / 0.0008))
    h = band / rows
    offsets = (torch.arange(rows, dtype=p.dtype) + 0.5) * h - band / 2  # [R]
    b, n = rot[..., 1], rot[..., 2]
    means = (p[None] + offsets[:, None, None] * b[None]).reshape(-1, 3)
    bulge = offsets / max(band / 2, 1e-9)  # -1 .. 1 across the band
    surf = n[None] + 1.2 * bulge[:, None, None] * b[None]  # [R, N, 3] the profile's normal
    surf = surf / surf.norm(dim=-1, keepdim=True)
    light = p.new_tensor(_LIGHT) / p.new_tensor(_LIGHT).norm()
    half = light + p.new_tensor([0.0, 0.0, 1.0])
    half = half / half.norm()
    lambert = (surf @ light).clamp_min(0)  # [R, N]
    gloss = (surf @ half).clamp_min(0) ** 24
    rgb = colour * (0.7 + 0.4 * lambert[..., None]) + 0.35 * gloss[..., None]
    scales = p.new_tensor([_SPACING, 0.55 * h, 0.5 * band]).expand(rows * len(p), 3)
    order = torch.arange(len(p)).repeat(rows)
    return means, rot.repeat(rows, 1, 1), scales, rgb.reshape(-1, 3).clamp(0, 1), order


def _fill_opacity(target: float, sigma_over_h: float) -> float:
    """Per-splat opacity of a hexagonal lattice of round splats (spacing h, std ``sigma``) whose
    composited alpha averages ``target``: solved by bisection on the exact front-to-back product."""
    if target <= 0:
        return 0.0
    i, j = torch.meshgrid(torch.arange(-5, 6, dtype=torch.float64), torch.arange(-5, 6, dtype=torch.float64),
                          indexing="ij")
    lattice = torch.stack([i + 0.5 * (j % 2), j * math.sqrt(3) / 2], -1).reshape(-1, 2)
    probes = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, math.sqrt(3) / 6]], dtype=torch.float64)
    g = torch.exp(-torch.cdist(probes, lattice) ** 2 / (2 * sigma_over_h ** 2))  # [3, L]
    lo, hi = 0.0, 0.99
    for _ in range(50):
        o = (lo + hi) / 2
        alpha = 1 - torch.prod(1 - o * g, -1).mean()
        lo, hi = (o, hi) if alpha < target else (lo, o)
    return (lo + hi) / 2


def _lens_splats(curves: GlassesCurves, tint: Tensor | None, opacity: float) -> tuple[Tensor, ...]:
    """Flat round splats filling both lenses -> means, rotations, scales, rgb, opacity, part, order."""
    sigma = 0.75 * curves.lens_spacing
    o = _fill_opacity(opacity, 0.75)
    out = {k: [] for k in ("means", "rot", "scales", "rgb", "part", "order")}
    for i, (pts, v) in enumerate(zip(curves.lenses, curves.lens_v)):
        n = curves.front_normal(pts)
        rot = _orthonormal(torch.linalg.cross(pts.new_tensor([0.0, 1.0, 0.0]).expand_as(n), n), n)
        top = ((v + 1) / 2)[:, None]  # 0 at the bottom, 1 at the top
        if tint is None:  # clear glass: a faint sky reflection, lighter towards the top
            rgb = pts.new_tensor([0.80, 0.85, 0.90]) * (0.75 + 0.35 * top)
        else:
            rgb = tint * (0.8 + 0.25 * top) + 0.06 * top
        out["means"].append(pts)
        out["rot"].append(rot)
        out["scales"].append(pts.new_tensor([sigma, sigma, 0.00005]).expand(len(pts), 3))
        out["rgb"].append(rgb.clamp(0, 1))
        out["part"].append(torch.full((len(pts),), PART_NAMES.index(("right_lens", "left_lens")[i])))
        out["order"].append(torch.arange(len(pts)))
    cat = {k: torch.cat(v) for k, v in out.items()}
    return (cat["means"], cat["rot"], cat["scales"], cat["rgb"], torch.full((len(cat["means"]),), o,
            dtype=torch.float64), cat["part"], cat["order"])


def glasses_splats(model: FlameModel, *, style: str = "round", colour=DEFAULT_COLOUR, thickness: float = 1.0,
                   lens_tint: tuple[float, float, float] | None = None, lens_opacity: float | None = None,
                   rest_params: FlameParams | None = None) -> GlassesSplats:
    """The glasses of ``add_glasses`` in world space at the rest pose (float64, CPU), unbound."""
    return _fitted_splats(model, style, colour, thickness, lens_tint, lens_opacity, rest_params)[0]


def _fitted_splats(model: FlameModel, style, colour, thickness, lens_tint, lens_opacity,
                   rest_params) -> tuple[GlassesSplats, Tensor, Tensor, Tensor]:
    """(the glasses splats, the rest vertices [V_all, 3] they were fitted to, the head frame's origin [3]
    and axes R [3, 3]), world, float64."""
    style, colour, lens_tint, lens_opacity = _check_options(style, colour, thickness, lens_tint, lens_opacity)
    fit, origin, R, verts_w = fit_head(model, rest_params)
    curves = fit_glasses_curves(fit, style, thickness, _SPACING)
    col = torch.tensor(colour, dtype=torch.float64)
    parts = []  # (means, rot, scales, rgb, opacity, part, order) in the head frame
    front = [(c, True, PART_NAMES.index(name)) for c, name in zip(curves.rims, ("right_rim", "left_rim"))]
    front += [(c, False, PART_NAMES.index("bridge")) for c in curves.bridges]
    for pts, closed, part in front:
        m, r, s, rgb, order = _curve_splats(pts, curves.front_normal(pts), closed, curves.band, col)
        parts.append((m, r, s, rgb, torch.full((len(m),), _FRAME_OPACITY, dtype=torch.float64),
                      torch.full((len(m),), part), order))
    for pts, side, name in zip(curves.temples, (-1.0, 1.0), ("right_temple", "left_temple")):
        out = pts.new_tensor([side, 0.0, 0.0]).expand_as(pts)
        m, r, s, rgb, order = _curve_splats(pts, out, False, 0.8 * curves.band, col)
        parts.append((m, r, s, rgb, torch.full((len(m),), _FRAME_OPACITY, dtype=torch.float64),
                      torch.full((len(m),), PART_NAMES.index(name)), order))
    tint = None if lens_tint is None else torch.tensor(lens_tint, dtype=torch.float64)
    parts.append(_lens_splats(curves, tint, lens_opacity))
    m, r, s, rgb, o, part, order = (torch.cat(x) for x in zip(*parts))
    return GlassesSplats(means=origin + m @ R.T, rotations=R @ r, scales=s, rgb=rgb, opacity=o, part=part,
                         order=order), verts_w, origin, R


# ---------------------------------------------------------------------------------------- binding
def _bind_local(g: GlassesSplats, verts: Tensor, faces: Tensor, face_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of ``bind()`` at the rest pose: triangle-local mean, quaternion and log-scale of each
    splat on triangle ``face_ids`` such that bind(rest vertices) gives back ``g``.  -> [M,3], [M,4], [M,3]"""
    Rt, k, T = triangle_frames(verts, faces)  # [F, 3, 3], [F], [F, 3]
    Rt, k, T = Rt[face_ids], k[face_ids], T[face_ids]
    means = (Rt.transpose(-1, -2) @ (g.means - T)[..., None])[..., 0] / k[:, None]
    quats = matrix_to_quaternion(Rt.transpose(-1, -2) @ g.rotations)
    return means, quats, torch.log(g.scales / k[:, None])


def add_glasses(gaussians: GaussianAvatar, model: FlameModel, *, style: str = "round", colour=DEFAULT_COLOUR,
                thickness: float = 1.0, lens_tint: tuple[float, float, float] | None = None,
                lens_opacity: float | None = None, rest_params: FlameParams | None = None) -> GaussianAvatar:
    """A NEW avatar: ``gaussians``' splats (untouched) followed by a pair of glasses bound to the head.

    style: one of GLASSES_STYLES ("round", "rectangular", "cat-eye", "aviator", "sunglasses").
    colour: frame sRGB in [0, 1]. thickness: rim width multiplier (0.5 wire .. 2 chunky acetate).
    lens_tint: lens sRGB, None = clear glass (sunglasses: near black). lens_opacity: None = the
    style's default (clear 0.12, coloured tint 0.5, sunglasses 0.85). rest_params: the pose the
    glasses are fitted in (batch 1; default: the neutral head, which is what ``model`` was fitted
    around). ``model`` must be the head model the avatar is bound to."""
    if gaussians.num_splats and int(gaussians.binding.max()) >= model.faces.shape[0]:
        raise ConfigError(f"the avatar is bound to triangle {int(gaussians.binding.max())} but the head model has "
                          f"{model.faces.shape[0]}; pass the head model the avatar was built with")
    g, verts_w, origin, R = _fitted_splats(model, style, colour, thickness, lens_tint, lens_opacity, rest_params)
    g = _under_hair_removed(g, _hair_means(gaussians, model, verts_w), origin, R)
    faces = model.faces.cpu()
    rigid = torch.nonzero(rigid_faces(model))[:, 0]
    centroids = verts_w[faces[rigid]].mean(1)  # [Fr, 3]
    face_ids = rigid[torch.cdist(g.means, centroids).argmin(-1)]
    means, quats, log_scales = _bind_local(g, verts_w, faces, face_ids)
    return _append(gaussians, means, quats, log_scales, g, face_ids)


def _hair_means(gaussians: GaussianAvatar, model: FlameModel, verts_w: Tensor) -> Tensor:
    """Rest-pose world centres [H, 3] of the avatar's hair splats (none without semantic labels)."""
    from ...gaussians.binding import bind

    if gaussians.num_splats == 0 or gaussians.labels.shape[1] != NUM_LABELS:
        return verts_w.new_zeros(0, 3)
    lab = gaussians.labels.detach().cpu()
    hair = (lab.argmax(1) == label_index("hair")) & (lab.amax(1) > 0.5)
    if not bool(hair.any()):
        return verts_w.new_zeros(0, 3)
    sub = GaussianAvatar(means_local=gaussians.means_local.detach().cpu()[hair],
                         quats_local=gaussians.quats_local.detach().cpu()[hair],
                         log_scales_local=gaussians.log_scales_local.detach().cpu()[hair],
                         opacity_logits=gaussians.opacity_logits.detach().cpu()[hair],
                         sh=gaussians.sh.detach().cpu()[hair], binding=gaussians.binding.cpu()[hair],
                         labels=lab[hair], sh_degree=gaussians.sh_degree)
    return bind(sub, verts_w[None].to(sub.means_local), model.faces.cpu()).means[0].double()


def _runs_filled(mask: Tensor, gap: int) -> Tensor:
    """``mask`` [N] (bool along a curve) with gaps and runs shorter than ``gap`` samples closed/dropped,
    so a temple does not flicker in and out of the hair."""
    m = mask.clone()
    for want in (True, False):  # fill short False gaps, then drop short True runs
        i = 0
        while i < len(m):
            j = i
            while j < len(m) and bool(m[j]) == bool(m[i]):
                j += 1
            if bool(m[i]) != want and j - i < gap and i > 0 and j < len(m):
                m[i:j] = want
            i = j
    return m


def _distance_under(covered: Tensor, step: float) -> Tensor:
    """Along a curve sampled every ``step`` (hinge first), how far each covered point lies from the
    nearer edge of its covered run; a run that reaches the curve's end (behind the ear) fades in
    from its start only.  covered [N] bool -> [N]"""
    n = len(covered)
    out = torch.zeros(n, dtype=torch.float64)
    i = 0
    while i < n:
        j = i
        while j < n and bool(covered[j]) == bool(covered[i]):
            j += 1
        if bool(covered[i]):
            k = torch.arange(j - i, dtype=torch.float64)
            from_start = (k + 1) * step
            out[i:j] = from_start if j == n else torch.minimum(from_start, (j - i - k) * step)
        i = j
    return out


def _under_hair_removed(g: GlassesSplats, hair: Tensor, origin: Tensor, R: Tensor) -> GlassesSplats:
    """``g`` without the temple splats that run under the avatar's hair (rest-pose world centres
    ``hair`` [H, 3]; the head frame ``origin`` [3], ``R`` [3, 3]).

    Why: a temple goes into the hair above the ear, and a person sees it vanish there. Splat renderers
    composite in the order of splat CENTRES, and a hair strand is a long splat whose centre may lie
    behind the thin temple even where the strand passes in front of it, so the temple would be drawn
    over the hair in turned views. Where hair lies outside the temple (at least ``_HAIR_COVER`` hair
    centres in a tube of radius ``_HAIR_TUBE`` along the temple's outward direction, at rest), the
    temple is hidden in every view that sees that side of the head, so it is left out, with its first
    ``_HAIR_FADE`` metres under the hair faded out instead of cut."""
    temples = [PART_NAMES.index("right_temple"), PART_NAMES.index("left_temple")]
    if len(hair) == 0:
        return g
    hair_h = (hair - origin) @ R  # head frame: x to the subject's left
    keep = torch.ones(len(g.means), dtype=torch.bool)
    opacity = g.opacity.clone()
    for part, side in zip(temples, (-1.0, 1.0)):
        sel = torch.nonzero(g.part == part)[:, 0]
        if len(sel) == 0:
            continue
        n = int(g.order[sel].max()) + 1
        centre = torch.zeros(n, 3, dtype=g.means.dtype).index_add_(0, g.order[sel], g.means[sel])
        centre = (centre / torch.bincount(g.order[sel], minlength=n)[:, None].clamp_min(1) - origin) @ R  # [n, 3]
        lo, hi = centre.amin(0) - _HAIR_TUBE, centre.amax(0) + _HAIR_TUBE
        box = ((hair_h[:, 1:] >= lo[1:]) & (hair_h[:, 1:] <= hi[1:])).all(-1) & (side * hair_h[:, 0] > 0)
        h = hair_h[box]  # [h, 3] the hair near this temple
        out = side * (h[None, :, 0] - centre[:, None, 0])  # [n, h] how far outside the temple
        across = (h[None, :, 1:] - centre[:, None, 1:]).norm(dim=-1)  # [n, h]
        covered = ((out > 0.001) & (out < 0.04) & (across < _HAIR_TUBE)).sum(1) >= _HAIR_COVER
        covered = _runs_filled(covered, max(2, round(0.003 / _SPACING)))
        under = _distance_under(covered, _SPACING)  # [n] how far under the hair, 0 at its edge
        fade = (1 - under / _HAIR_FADE).clamp(0, 1)  # [n] 1 at the edge, 0 deeper in
        f = torch.where(covered, fade, torch.ones_like(fade))[g.order[sel]]
        opacity[sel] = opacity[sel] * f
        keep[sel] = f > 0.02
    if bool(keep.all()):
        return g
    return GlassesSplats(means=g.means[keep], rotations=g.rotations[keep], scales=g.scales[keep], rgb=g.rgb[keep],
                         opacity=opacity[keep], part=g.part[keep], order=g.order[keep])


def _append(a: GaussianAvatar, means: Tensor, quats: Tensor, log_scales: Tensor, g: GlassesSplats,
            face_ids: Tensor) -> GaussianAvatar:
    """``a`` followed by the glasses splats, in ``a``'s dtype and device (new tensors throughout)."""
    kw = dict(dtype=a.means_local.dtype, device=a.means_local.device)
    m = len(means)
    sh = torch.zeros(m, a.sh.shape[1], 3, dtype=a.sh.dtype, device=a.sh.device)
    sh[:, 0] = rgb_to_sh(g.rgb).to(sh)
    labels = torch.zeros(m, a.labels.shape[1], dtype=a.labels.dtype, device=a.labels.device)
    if a.labels.shape[1] == NUM_LABELS:
        labels[:, label_index("eyeglasses")] = 1
    logits = torch.logit(g.opacity.clamp(1e-4, 1 - 1e-4))
    return GaussianAvatar(
        means_local=torch.cat([a.means_local.detach(), means.to(**kw)]),
        quats_local=torch.cat([a.quats_local.detach(), quats.to(**kw)]),
        log_scales_local=torch.cat([a.log_scales_local.detach(), log_scales.to(**kw)]),
        opacity_logits=torch.cat([a.opacity_logits.detach(), logits.to(a.opacity_logits)]),
        sh=torch.cat([a.sh.detach(), sh]),
        binding=torch.cat([a.binding, face_ids.to(a.binding)]),
        labels=torch.cat([a.labels.detach(), labels]),
        sh_degree=a.sh_degree,
    )


# ---------------------------------------------------------------------------------------- options
def _rgb(value, what: str) -> tuple[float, float, float]:
    try:
        rgb = tuple(float(c) for c in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise ConfigError(f"glasses {what} must be three numbers in [0, 1] (sRGB), got {value!r}")
    return rgb  # type: ignore[return-value]


def _check_options(style, colour, thickness, lens_tint, lens_opacity):
    """Validated (style, colour, lens_tint, lens_opacity) with the style's defaults filled in."""
    key = re.sub(r"[\s_]+", "-", str(style).strip().lower()).replace("cateye", "cat-eye")
    if key not in GLASSES_STYLES:
        raise ConfigError(f"unknown glasses style {style!r}; choose one of: {', '.join(GLASSES_STYLES)}")
    if not (isinstance(thickness, (int, float)) and 0.2 <= float(thickness) <= 4.0):
        raise ConfigError(f"glasses thickness must be a number in [0.2, 4] (1 = normal), got {thickness!r}")
    colour = _rgb(colour, "colour")
    tinted = STYLE_SPECS[key].tinted
    lens_tint = _rgb(lens_tint, "lens tint") if lens_tint is not None else (_SUN_TINT if tinted else None)
    if lens_opacity is None:
        lens_opacity = 0.85 if tinted else (0.5 if lens_tint is not None else 0.12)
    if not (isinstance(lens_opacity, (int, float)) and 0.0 <= float(lens_opacity) <= 0.98):
        raise ConfigError(f"lens opacity must be a number in [0, 0.98], got {lens_opacity!r}")
    return key, colour, lens_tint, float(lens_opacity)


# ---------------------------------------------------------------------------------------- words
# Shape words -> style, most specific first; "sunglasses" alone is the wayfarer-like style, with a
# shape word it only tints the lenses ("round sunglasses", "aviator sunglasses").
_SHAPE_WORDS = (
    ("aviator", r"\baviators?\b|\bpilot\b|\bteardrop\b"),
    ("cat-eye", r"\bcat ?eyed?\b|\bcat ?eyes\b|\bcateye\b"),
    ("rectangular", r"\brectangular\b|\brectangle\b|\bsquare\b|\bwayfarers?\b|\bboxy\b"),
    ("round", r"\bround\b|\bcircular\b|\boval\b|\blennon\b"),
)
_SUN_WORDS = r"\bsun ?glasses\b|\bshades\b|\bsunnies\b"
_THICK = ((2.0, r"\bvery thick\b|\bchunky\b|\bheavy\b|\boversized\b"), (1.6, r"\bthick\b|\bbold\b"),
          (0.6, r"\bthin\b|\bwire\b|\bslim\b|\bdelicate\b|\bmetal\b"))
_LENS_AFTER = re.compile(r"^\s*(tinted\s+)?(lens|lenses|lensed|tint|tinted|tints)\b")
_TORTOISE = re.compile(r"\btortoise ?shell\b|\btortoise\b|\bhavana\b")


def _plan_texts(plan_or_text) -> tuple[list[str], tuple[float, float, float] | None]:
    """The words to read (prompt first, then the refined instruction) and a plan's own colour."""
    if isinstance(plan_or_text, str):
        return [plan_or_text], None
    texts = [getattr(plan_or_text, "prompt", "") or "", getattr(plan_or_text, "instruction", "") or ""]
    colour = getattr(plan_or_text, "colour", None)  # trusted only when the plan is about the glasses
    if colour is None or "eyeglasses" not in (getattr(plan_or_text, "regions", None) or []):
        return texts, None
    return texts, tuple(float(c) for c in colour)


_GLASSES_NOUNS = re.compile(r"\b(eye ?glasses|glasses|sun ?glasses|spectacles|specs|shades|sunnies|frames?|"
                            r"lens|lenses|aviators?|wayfarers?)\b")


def _glasses_clauses(norm: str) -> str:
    """The clauses of normalised text that speak of the glasses ("red hair and round glasses" ->
    "round glasses"), so a colour meant for something else is not read as the frame's; all of the
    text when no clause names them."""
    clauses = [c for c in re.split(r"[,;]|\band\b|\bbut\b|\bplus\b", norm) if _GLASSES_NOUNS.search(c)]
    return " , ".join(c.strip() for c in clauses) if clauses else norm


def _colours(text: str) -> tuple[tuple[float, float, float] | None, tuple[float, float, float] | None]:
    """(frame colour, lens tint) named in normalised ``text``: a colour followed by "lens(es)" or
    "tinted" tints the lenses, the first other one colours the frame."""
    from ..prompt.colour_names import find_colour
    from ..prompt.text import blank_span

    frame = lens = None
    while (m := find_colour(text)) is not None:
        if _LENS_AFTER.match(text[m.end:]):
            lens = lens or m.rgb
        else:
            frame = frame or m.rgb
        text = blank_span(text, m.start, m.end)
    return frame, lens


def glasses_request(plan_or_text) -> dict:
    """Glasses options from an edit's words -> dict(style, colour, thickness, lens_tint, lens_opacity),
    ready for ``add_glasses(avatar, model, **glasses_request(plan))``.

    ``plan_or_text``: an EditPlan (its prompt, then its instruction, are read) or a string. Shapes:
    round/circular/oval, rectangular/square/wayfarer, cat-eye, aviator; "sunglasses"/"shades" tint the
    lenses dark (alone they pick the wayfarer-like "sunglasses" style). "thick"/"chunky" and
    "thin"/"wire" set the thickness (metal colours default to thin). Colours come from the project's
    colour vocabulary ("gold", "dark red", "tortoiseshell"); "blue lenses"/"blue tinted" tints the
    lenses instead of the frame. Unnamed options keep add_glasses' defaults."""
    from ..prompt.colour_names import METAL_NAMES, find_colour
    from ..prompt.text import normalise

    texts, plan_colour = _plan_texts(plan_or_text)
    norm = [normalise(t) for t in texts if t]
    about = [t for t in norm if _GLASSES_NOUNS.search(t)]  # a refined instruction may be about the hair
    norm = [_glasses_clauses(t) for t in (about or norm)]
    joined = " , ".join(norm)
    shape = next((s for s, pat in _SHAPE_WORDS if any(re.search(pat, t) for t in norm)), None)
    sun = re.search(_SUN_WORDS, joined) is not None
    style = shape or ("sunglasses" if sun else "round")
    frame, lens = None, None
    for t in norm:  # the prompt's own words win over the refined instruction's
        f, ln = _colours(t)
        frame, lens = frame or f, lens or ln
    if frame is None and _TORTOISE.search(joined):
        frame = _TORTOISESHELL
    if frame is None and lens is None and plan_colour is not None:
        frame = plan_colour
    thickness = next((v for v, pat in _THICK if re.search(pat, joined)), None)
    if thickness is None:
        m = find_colour(joined)
        thickness = 0.75 if (m is not None and m.base in METAL_NAMES and frame is not None) else 1.0
    lens_tint = lens if lens is not None else (_SUN_TINT if sun else None)
    return dict(style=style, colour=tuple(frame) if frame is not None else DEFAULT_COLOUR, thickness=thickness,
                lens_tint=lens_tint, lens_opacity=0.85 if sun else None)


def is_glasses_plan(plan) -> bool:
    """An "add ... glasses / sunglasses" plan: the one accessory the geometry editor builds offline."""
    return plan.kind == "accessory" and "eyeglasses" in plan.regions


def glasses_edit(gaussians: GaussianAvatar, model: FlameModel, params: FlameParams, plan) -> GaussianAvatar:
    """``plan``'s glasses added to ``gaussians``, fitted to the avatar's own face (its identity ``shape``
    in the neutral pose) and bound to triangles that move rigidly with the head."""
    rest = model.zero_params()
    rest = rest.replace(shape=params.shape[:1].to(rest.shape.device, rest.shape.dtype))
    return add_glasses(gaussians, model, rest_params=rest, **glasses_request(plan))
