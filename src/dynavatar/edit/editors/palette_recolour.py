"""The palette recolour's functional core: move a region's colour in OKLab, keep its shading and texture.

Per image, with region statistics taken under the (soft) region mask ``m``:

    lightness        L'  = L_t' + g (L - Lm)                    # detail kept around the new mean
    chroma           ab' = ab_t * L'/L_t' + k * proj_u(ab - ab_m)
    result           lab + s (lab' - lab)                       # s = plan.strength, 0 = unchanged

``g`` is 1 unless the source is very dark and is brightened a lot (black hair -> platinum): the
camera's toe has flattened the dark texture, so its spread is lifted towards ``min_detail`` (at
most 3x) so the strands stay visible. ``L_t'`` is the target lightness moved, if needed, far
enough from 0 and 1 that this detail fits within +-2.5 std (platinum is not paper white), and
``g`` is lowered when even that does not fit. ``ab_t * L'/L_t'`` gives shadows less and highlights
more chroma, as shading does (OKLab scales with ``cbrt`` of the light: ``colour_space.py``);
``proj_u(ab - ab_m)`` keeps the source's saturation variation along the target hue ``u`` (not its old
hue), scaled by ``k = min(1, |ab_t| / |ab_m|)``. Materials then reshape the lightness
(``MATERIAL_STYLES``).

Nothing here needs pixels: the palette editor applies it to keyframe images, and
``apply/splat_recolour.py`` to the splats' own colours.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["MaterialStyle", "MATERIAL_STYLES", "EYE_REGIONS", "region_stats", "colour_affinity", "darker_part",
           "recolour_oklab", "ColourTarget", "RegionFit", "fit_region", "colourist_oklab", "iris_membership",
           "target_from_plan", "plan_family", "into_gamut", "weighted_quantiles", "smoothstep", "lightness_gain"]


@dataclasses.dataclass(frozen=True)
class MaterialStyle:
    """How a material reshapes a region's lightness around its mean (OKLab), at strength 1."""

    contrast: float = 1.0  # gain on lightness deviations from the region mean
    specular: float = 0.0  # pull of highlight pixels towards white (0..1)
    highlight_desaturation: float = 0.0  # chroma removed in highlights (specular light is whiter)
    highlight_compression: float = 0.0  # fraction of above-mean lightness removed (matte: no sheen)
    chroma: float = 1.0  # gain on chroma
    lightness_offset: float = 0.0  # shift of the region mean


MATERIAL_STYLES: dict[str, MaterialStyle] = {
    # Metal: hard contrast, bright near-white specular highlights, slightly greyer body colour.
    "metallic": MaterialStyle(contrast=1.4, specular=0.35, highlight_desaturation=0.3, chroma=0.95),
    # Gloss: a clear specular sheen on an otherwise unchanged body.
    "glossy": MaterialStyle(contrast=1.15, specular=0.25, highlight_desaturation=0.25, chroma=1.05),
    # Matte: highlights flattened, a little less contrast.
    "matte": MaterialStyle(contrast=0.85, highlight_compression=0.5, chroma=0.95),
    # Velvet: soft, slightly darker pile with rich colour.
    "velvet": MaterialStyle(contrast=0.8, highlight_compression=0.4, chroma=1.15, lightness_offset=-0.04),
}


def region_stats(lab: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-image mean and std of ``lab`` [B, H, W, 3] under ``weight`` [B, H, W].

    Returns (mean [B, 3], std [B, 3]); an empty mask gives mean 0, std 0 (never NaN).
    """
    w = weight[..., None]  # [B, H, W, 1]
    total = w.sum(dim=(1, 2)).clamp_min(1e-8)  # [B, 1]
    mean = (lab * w).sum(dim=(1, 2)) / total  # [B, 3]
    var = (((lab - mean[:, None, None]) ** 2) * w).sum(dim=(1, 2)) / total
    return mean, var.clamp_min(0.0).sqrt()


def colour_affinity(lab: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    floor: tuple[float, float, float] = (0.04, 0.015, 0.015), slack: float = 1.5) -> torch.Tensor:
    """How much each pixel [B, H, W] looks like the region (1 within ``slack`` std, then a Gaussian fall-off).

    Used to gate the dilated/feathered ring: strands the parser missed take the new colour, the
    wall behind them does not.
    """
    s = torch.maximum(std, torch.tensor(floor, device=std.device, dtype=std.dtype))  # [B, 3]
    z = ((lab - mean[:, None, None]) / s[:, None, None]).pow(2).sum(-1).sqrt()  # [B, H, W]
    return torch.exp(-0.5 * (z - slack).clamp_min(0.0) ** 2)


def darker_part(lab: torch.Tensor, weight: torch.Tensor, min_spread: float = 0.2,
                softness: float = 0.03) -> torch.Tensor:
    """``weight`` [B, H, W] restricted (softly) to the region's darker mode in OKLab lightness.

    Why: an eye label covers the sclera too, and "green eyes" means the iris. Iris (and pupil,
    lashes) are far darker than the sclera, so pixels below the midpoint of the region's 10th and
    90th lightness percentiles are kept. Images whose region has no such split (spread below
    ``min_spread``, e.g. an iris-only mask) keep their weight unchanged.
    """
    out = weight.clone()
    L = lab[..., 0]
    for b in range(len(lab)):
        vals = L[b][weight[b] > 0.5]
        if vals.numel() < 8:
            continue
        lo, hi = torch.quantile(vals, 0.1), torch.quantile(vals, 0.9)
        if float(hi - lo) < min_spread:
            continue
        out[b] = weight[b] * torch.sigmoid(((lo + hi) / 2 - L[b]) / softness)
    return out


# Plans on these regions only are eye-colour edits: the iris moves, nothing else of the eye.
EYE_REGIONS = frozenset({"left_eye", "right_eye", "iris"})


def _as_batch(x: torch.Tensor | float, b: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x, device=like.device, dtype=like.dtype)
    return t.expand(b) if t.ndim == 0 else t


def recolour_oklab(lab: torch.Tensor, weight: torch.Tensor, target: torch.Tensor | None,
                   strength: torch.Tensor | float = 1.0, material: str | None = None,
                   min_detail: float = 0.05, max_detail_gain: float = 3.0,
                   stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Recolour every pixel of ``lab`` [B, H, W, 3] (OKLab) with the region statistics under ``weight``.

    target: OKLab [3] or [B, 3], or None to keep the colour (material-only edits).
    strength: scalar or [B]; 0 returns ``lab`` unchanged. Returns OKLab [B, H, W, 3] for *all*
    pixels; the caller composites it with a region alpha. See the module docstring for the maths.
    stats: ``region_stats(lab, weight)`` when the caller has them already.
    """
    B = lab.shape[0]
    mean, std = region_stats(lab, weight) if stats is None else stats  # [B, 3] each
    L, ab = lab[..., 0], lab[..., 1:]  # [B, H, W], [B, H, W, 2]
    Lm, sL = mean[:, 0, None, None], std[:, 0, None, None]  # [B, 1, 1]
    abm = mean[:, None, None, 1:]  # [B, 1, 1, 2]

    if target is None:
        Lt, abt = Lm, None
    else:
        t = target.to(lab).expand(B, 3) if target.ndim == 1 else target.to(lab)  # [B, 3]
        Lt, abt = t[:, 0, None, None], t[:, None, None, 1:]

    style = MATERIAL_STYLES.get(material) if material else None
    if style is not None:
        Lt = Lt + style.lightness_offset

    # Detail gain: lift a dark source's flattened texture when it is brightened a lot ...
    lift = ((min_detail / sL.clamp_min(1e-4)).clamp(1.0, max_detail_gain) - 1.0)
    g = 1.0 + lift * ((Lt - Lm) / 0.3).clamp(0.0, 1.0)  # [B, 1, 1]
    if style is not None:
        g = g * style.contrast
    # ... a very bright or very dark target leaves no room for texture: move the target lightness
    # far enough from 0 and 1 that at least min(detail, min_detail) fits within +-2.5 std ...
    keep = torch.minimum(g * sL, torch.full_like(sL, min_detail))
    Lt = torch.minimum(torch.maximum(Lt, 0.01 + 2.5 * keep), 0.99 - 2.5 * keep)
    Lm_new = Lt  # [B, 1, 1]
    # ... and never push +-2.5 std out of [0, 1].
    headroom = torch.minimum(Lm_new - 0.01, 0.99 - Lm_new).clamp_min(0.0) / (2.5 * sL).clamp_min(1e-4)
    g = torch.minimum(g, headroom.clamp_min(0.25))
    dev = L - Lm  # [B, H, W]
    L_new = Lm_new + g * dev

    if abt is None:
        ab_new = ab
    else:
        shade = (L_new / Lm_new.clamp_min(1e-3)).clamp(0.0, 1.6)[..., None]  # [B, H, W, 1]
        # The source's chroma variation along the target hue, scaled by the chroma ratio: the
        # strands keep their saturation texture but not their old hue (auburn strands must not
        # leave cyan streaks in platinum hair).
        ct, cm = abt.norm(dim=-1, keepdim=True), abm.norm(dim=-1, keepdim=True)  # [B, 1, 1, 1]
        u = abt / ct.clamp_min(1e-6)  # target hue direction
        k = (ct / cm.clamp_min(1e-6)).clamp(max=1.0)
        dev_ab = ((ab - abm) * u).sum(-1, keepdim=True) * u  # [B, H, W, 2]
        ab_new = abt * shade + k * dev_ab

    if style is not None:
        sig = (g * sL).clamp_min(1e-3)  # spread of the new lightness
        high = torch.sigmoid((L_new - Lm_new - sig) / (0.5 * sig))  # [B, H, W] highlight membership
        up = (L_new - Lm_new).clamp_min(0.0)
        L_new = L_new - style.highlight_compression * up
        L_new = L_new + style.specular * high * (1.0 - L_new).clamp_min(0.0)
        chroma_gain = style.chroma * (1.0 - style.highlight_desaturation * high)
        ab_new = ab_new * chroma_gain[..., None]

    full = torch.cat([L_new.clamp(0.0, 1.0)[..., None], ab_new], dim=-1)  # [B, H, W, 3]
    s = _as_batch(strength, B, lab)[:, None, None, None]  # [B, 1, 1, 1]
    return lab + s * (full - lab)


# ---------------------------------------------------------------------------------------------
# The colourist's recolour (what both editors use): a region's colour *distribution* moved onto a
# target shade's, its lightness structure kept by a monotone map.
#
#   rank     t_i  = F(L_i)                    # the region's own lightness CDF (weighted quantiles),
#                                              # linear between the 5th..95th percentiles, extended
#                                              # past them with the same slope (highlights stay)
#   lightness L'_i = L_dark + t_i (L_light - L_dark)
#            (no segment of the map stretches lightness more than 3x: a flat region stays flat,
#            on the shade's middle, instead of having its noise blown up to the whole range)
#   colour   hue and chroma of the shade at t_i (dark strands take the dark end's hue and chroma,
#            light ones the light end's; past the light end chroma does not rise: sheen is
#            whiter), chroma times the strand's relative chroma ^ 0.35 and hue plus 0.35 x its
#            hue deviation, both measured against the source's own chroma/hue at that rank (so
#            shading is not counted twice): texture, not a flat fill
#
# A region that already has the target's distribution maps onto itself (the keyframe loop's
# re-edits of recoloured renders are then no-ops). Eyes are different (``iris_membership``): only
# the iris's mid tones move, half-way in lightness; the pupil, the dark limbal ring, the sclera and
# the specular glint keep their colour.

@dataclasses.dataclass(frozen=True)
class ColourTarget:
    """A recolour target as a distribution: OKLab colours at lightness ranks 0.05 and 0.95."""

    dark: torch.Tensor  # OKLab [3]
    light: torch.Tensor  # OKLab [3]
    eye: bool = False  # iris mode (see ``iris_membership``)
    qualifiers: tuple[str, ...] = ()  # "dark roots", "highlights", "ombre" (colour_names.QUALIFIERS)
    second: "ColourTarget | None" = None  # two-tone: this shade at the ends (or the roots)
    second_at: str = "ends"
    max_gain: float = 3.0  # the steepest the lightness map may be (``lightness_gain`` of the plan's regions)


@dataclasses.dataclass
class RegionFit:
    """What the colourist measures on the source region (under the statistics weights)."""

    quantiles: torch.Tensor  # [Q] lightness at ranks _RANKS, strictly increasing
    chroma_median: torch.Tensor  # []
    hue_median: torch.Tensor  # [] radians
    lightness_median: torch.Tensor  # []
    chroma_curve: torch.Tensor | None = None  # [K] mean chroma per lightness-rank bin (_BINS)
    hue_curve: torch.Tensor | None = None  # [K] mean hue (radians) per bin


_RANKS = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
_BINS = 6  # lightness-rank bins of the source's own chroma/hue curve (``fit_region``)


def weighted_quantiles(x: torch.Tensor, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Quantiles ``q`` [Q] of ``x`` [P] under weights ``w`` [P] (linear between samples).  -> [Q]

    Samples of zero weight are dropped first: they would tie the cumulative weight with their
    neighbours and could be picked, so the pixels around a mask (or a batch's larger crop) would
    move the region's quantiles."""
    keep = w > 0
    if bool(keep.any()) and not bool(keep.all()):
        x, w = x[keep], w[keep]
    order = torch.argsort(x)
    xs, ws = x[order], w[order].clamp_min(0)
    cw = torch.cumsum(ws, 0) - 0.5 * ws
    cw = cw / ws.sum().clamp_min(1e-12)
    return _interp(q.to(x), cw, xs)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for torch (``xp`` increasing; clamped at the ends)."""
    i = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return f0 + t * (f1 - f0)


def fit_region(lab: torch.Tensor, weight: torch.Tensor) -> RegionFit:
    """lab [P, 3], weight [P] -> the region's ``RegionFit``."""
    w = weight.to(lab).clamp_min(0)
    if float(w.sum()) <= 1e-12:
        w = torch.ones_like(w)
    q = weighted_quantiles(lab[:, 0], w, _RANKS)
    q = torch.cummax(q + torch.arange(len(q), dtype=q.dtype, device=q.device) * 1e-4, 0).values
    c = lab[:, 1:].norm(dim=-1)
    half = torch.tensor([0.5], dtype=lab.dtype, device=lab.device)
    ab_m = (lab[:, 1:] * w[:, None]).sum(0) / w.sum()
    chroma_curve, hue_curve = _shade_curve(lab, w, _ranks_of(lab[:, 0], q))
    return RegionFit(q, weighted_quantiles(c, w, half)[0], torch.atan2(ab_m[1], ab_m[0]),
                     weighted_quantiles(lab[:, 0], w, half)[0], chroma_curve, hue_curve)


def _shade_curve(lab: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's own shade: mean chroma and hue [K] of the elements in each of ``_BINS`` bins of
    lightness rank ``t`` [P] (a bin with no weight takes its neighbours' values).

    Why: dark strands of real hair are less saturated and often warmer than light ones (shading
    and pigment), and the target shade already says how its dark and light strands look. The
    texture the recolour keeps is each element's deviation from *this* curve at its rank, so
    shading is not counted twice and a region that already has the target's shade maps onto
    itself."""
    k = (t.clamp(0, 1) * _BINS).long().clamp(max=_BINS - 1)  # [P]
    ab = torch.zeros(_BINS, 2, dtype=lab.dtype, device=lab.device).index_add_(0, k, lab[:, 1:] * w[:, None])
    cw = torch.zeros(_BINS, dtype=lab.dtype, device=lab.device).index_add_(0, k, lab[:, 1:].norm(dim=-1) * w)
    tot = torch.zeros(_BINS, dtype=lab.dtype, device=lab.device).index_add_(0, k, w)
    has = tot > 1e-9 * tot.sum().clamp_min(1e-30)
    if not bool(has.any()):
        return torch.zeros(_BINS, dtype=lab.dtype), torch.zeros(_BINS, dtype=lab.dtype)
    centres = (torch.arange(_BINS, dtype=lab.dtype, device=lab.device) + 0.5) / _BINS
    chroma = _interp(centres, centres[has], cw[has] / tot[has])
    hue = torch.atan2(ab[:, 1], ab[:, 0])
    hue_u = _interp(centres, centres[has], _unwrap(hue[has]))
    return chroma, hue_u


def _unwrap(h: torch.Tensor) -> torch.Tensor:
    """Angles [K] made continuous (no 2 pi jumps between neighbours)."""
    return h[:1] + torch.cat([torch.zeros_like(h[:1]), torch.cumsum(_angle(h[1:] - h[:-1]), 0)])


def _ranks_of(L: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Lightness ``L`` [P] -> rank-map position t [P] through quantiles ``q`` [Q] (0 at the 5th
    percentile, 1 at the 95th), extended past them with the outer slope, clamped to [-0.4, 1.4]."""
    ranks = _RANKS.to(L)
    slope = 0.9 / (q[-1] - q[0]).clamp_min(0.03)
    t = _interp(L, q, (ranks - 0.05) / 0.9)
    t = torch.where(L < q[0], (L - q[0]) * slope, torch.where(L > q[-1], 1 + (L - q[-1]) * slope, t))
    return t.clamp(-0.4, 1.4)


def _curve_at(curve: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A per-bin curve [K] read at ranks ``t`` [P] (linear between bin centres, flat past them)."""
    centres = (torch.arange(len(curve), dtype=t.dtype, device=t.device) + 0.5) / len(curve)
    return _interp(t, centres, curve.to(t))


def _angle(d: torch.Tensor) -> torch.Tensor:
    return torch.atan2(torch.sin(d), torch.cos(d))


def smoothstep(a: float, b: float, x: torch.Tensor) -> torch.Tensor:
    """0 below ``a``, 1 above ``b``, a cubic with flat ends between (a gate with no tail)."""
    t = ((x - a) / (b - a)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def iris_membership(lab: torch.Tensor, weight: torch.Tensor, min_spread: float = 0.15,
                    pupil: torch.Tensor | None = None, dark_iris: float = 0.25,
                    pupil_share: float = 0.15) -> torch.Tensor:
    """How much each element [P] of an eye region is iris that a new eye colour should move.

    Out: the sclera (light and nearly grey: above the midpoint of the region's 10th-90th lightness
    percentiles when they span ``min_spread``, which an eye opening does), the glint (much lighter
    than the rest and grey) and the pupil (darker than half the iris's median lightness, fading in
    up to 0.7 of it). The limbal ring is darker than the iris but lighter than that, so it moves
    with the iris, and keeps its relative darkness (lightness is mapped, not replaced).
    ``pupil`` [P] (1 pupil, 0 not, NaN unknown; ``splat_recolour.geometric_pupil``) replaces the
    colour rule where known: in a dark brown iris the iris itself is darker than that rule's cut
    (splat colours of 0 in the tiny avatars of four of the eight shared clips), and was left out.
    Those elements (labelled iris) are never sclera either: a light grey iris is as light as the
    whites, and the lightness split took it for them. Without geometry (pixels of a keyframe), an
    iris darker than ``dark_iris`` (median OKLab L) loses its darkest ``pupil_share`` as pupil: the
    pupil covers 10-20 % of a visible iris, and in a dark brown eye no colour cut finds it (the
    full edit of aoc's tiny avatar painted its pupils blue)."""
    L, C = lab[:, 0], lab[:, 1:].norm(dim=-1)
    w = weight.to(lab).clamp_min(0)
    # Gates are smoothsteps, not sigmoids: a clear sclera or glint is out *exactly* (a sigmoid's
    # tail let 3-15 % of an eye edit leak into a slightly tinted white).
    grey = 1 - smoothstep(0.04, 0.08, C)
    white = torch.zeros_like(L)
    if float(w.sum()) > 0:
        lo, hi = weighted_quantiles(L, w, torch.tensor([0.1, 0.9], dtype=torch.float64))
        if float(hi - lo) >= min_spread:
            mid = float((lo + hi) / 2)
            white = smoothstep(mid - 0.04, mid + 0.04, L) * grey
    rest = w * (1 - white)
    if pupil is not None:  # an element with a known place in the iris disc is iris, not sclera (a light
        known = ~torch.isnan(pupil)  # grey iris), and the glint is lighter than that iris, not the lids
        white = torch.where(known, torch.zeros_like(white), white)
        iris = w * known * (1 - pupil.nan_to_num(0.0).to(w))
        rest = iris if float(iris.sum()) > 0 else w * (1 - white)
    med, q = weighted_quantiles(L, rest if float(rest.sum()) > 0 else torch.ones_like(L),
                                torch.tensor([0.5, pupil_share], dtype=torch.float64))
    glint = smoothstep(float(med) + 0.25, float(med) + 0.35, L) * grey
    dark = 1 - ((L - 0.5 * med) / (0.2 * med).clamp_min(1e-3)).clamp(0, 1)
    if float(med) < dark_iris:  # a dark iris's pupil is hardly darker than it: the darkest share is the pupil
        dark = torch.maximum(dark, 1 - smoothstep(float(q) - 0.02, float(q), L))
    if pupil is not None:  # where the eye's geometry says (not NaN), it decides, not the colour
        dark = torch.where(torch.isnan(pupil), dark, pupil.to(dark))
    return (1 - torch.maximum(white, glint)) * (1 - dark)


def _shade_at(target: ColourTarget, t: torch.Tensor, L_new: torch.Tensor) -> torch.Tensor:
    """The shade's (a, b) at rank ``t`` [P] for lightness ``L_new`` [P] -> [P, 2]: hue and chroma
    interpolated between the ends; past them chroma follows the lightness (shading)."""
    d, l = target.dark.to(L_new), target.light.to(L_new)
    tc = t.clamp(0, 1)
    cd, cl = d[1:].norm(), l[1:].norm()
    hd, hl = torch.atan2(d[2], d[1]), torch.atan2(l[2], l[1])
    hue = hd + tc * _angle(hl - hd)
    L_end = d[0] + tc * (l[0] - d[0])
    # Past the dark end chroma falls with the light (shadow); past the light end it does not rise:
    # highlights on hair and lips are sheen, whiter not more saturated (a 1.5x rise read as neon).
    chroma = (cd + tc * (cl - cd)) * (L_new / L_end.clamp_min(1e-3)).clamp(0.3, 1.0)
    return torch.stack([chroma * torch.cos(hue), chroma * torch.sin(hue)], -1)


def _map_to(lab: torch.Tensor, fit: RegionFit, target: ColourTarget, t: torch.Tensor) -> torch.Tensor:
    """The element colours [P, 3] mapped onto ``target`` at ranks ``t`` [P] (texture kept)."""
    L, ab = lab[:, 0], lab[:, 1:]
    d, l = target.dark.to(lab), target.light.to(lab)
    if target.eye:  # half-way in lightness, the iris's own structure kept exactly; the new median
        # inside the shade's range: half-way from a near-black iris to blue is still near-black
        med = fit.lightness_median
        L_new = L + (0.5 * (0.5 * (d[0] + l[0]) - med)).clamp(d[0] - med, l[0] - med)
    else:
        L_new = d[0] + t * (l[0] - d[0])
    L_new = L_new.clamp(0.02, 0.99)
    ab_t = _shade_at(target, t, L_new)
    C = ab.norm(dim=-1)
    if float(fit.chroma_median.detach()) > 0.015:  # the source's own saturation and hue texture
        c_ref, h_ref = fit.chroma_median, fit.hue_median
        if fit.chroma_curve is not None:  # relative to the source's own shade at this rank
            c_ref, h_ref = _curve_at(fit.chroma_curve, t), _curve_at(fit.hue_curve, t)
        rel = ((C + 0.01) / (c_ref + 0.01)).pow(0.35).clamp(0.75, 1.3)
        conf = torch.sigmoid((C - 0.02) / 0.01)
        dh = (0.35 * _angle(torch.atan2(ab[:, 1], ab[:, 0]) - h_ref)).clamp(-0.25, 0.25) * conf
        c, s = torch.cos(dh), torch.sin(dh)
        ab_t = torch.stack([c * ab_t[:, 0] - s * ab_t[:, 1], s * ab_t[:, 0] + c * ab_t[:, 1]], -1) * rel[:, None]
    return torch.cat([L_new[:, None], ab_t], -1)


def _capped_quantiles(q: torch.Tensor, span: float, max_gain: float) -> torch.Tensor:
    """Quantiles [Q] pushed apart from the median outwards until no segment of the rank map
    stretches lightness by more than ``max_gain`` onto a target range of ``span``.

    Why: a rank map equalises the histogram, so a nearly flat region (a lip, a dyed patch, a
    rendered test colour) would have its noise blown up to the target's whole dark-to-light range.
    A colourist keeps the structure there is: flat stays flat (it lands on the shade's middle), a
    dark head's compressed strands are lifted at most ``max_gain`` times."""
    gap = 0.9 / (len(q) - 1) * abs(span) / max(max_gain, 1e-6)  # L per segment at the gain cap
    mid = len(q) // 2
    up, down = [q[mid]], [q[mid]]  # built as lists: no in-place writes (the map stays differentiable)
    for i in range(mid + 1, len(q)):
        up.append(torch.maximum(q[i], up[-1] + gap))
    for i in range(mid - 1, -1, -1):
        down.append(torch.minimum(q[i], down[-1] - gap))
    return torch.stack(down[:0:-1] + up)


#: Regions whose lightness is shading on a smooth surface, not strands: their recolour may steepen it less
SMOOTH_REGIONS = frozenset({"upper_lip", "lower_lip", "skin", "nose", "neck"})


def lightness_gain(regions) -> float:
    """The ``max_gain`` of ``colourist_oklab`` for a plan's ``regions``: 3 for hair, brows and eyes
    (a dark head's compressed strands must be lifted to show as strands), 1.5 when every region is a
    smooth surface (``SMOOTH_REGIONS``). Why: a lip's lightness is shading, stubble at its border and
    the lip line; stretched three times onto a lipstick's range it became dark blotches on a real
    avatar (docs/benchmarks.md, "Edits on d0's 512-px H100 avatar")."""
    return 1.5 if regions and set(regions) <= SMOOTH_REGIONS else 3.0


def colourist_oklab(lab: torch.Tensor, fit: RegionFit, target: ColourTarget, strength: float = 1.0,
                    material: str | None = None, heights: torch.Tensor | None = None,
                    max_gain: float | None = None) -> torch.Tensor:
    """Element colours ``lab`` [P, 3] (OKLab) recoloured onto ``target`` with the region's ``fit``
    (``fit_region``); ``heights`` [P] in [0, 1] (0 at the top of the region along the head's up
    axis) for the positional qualifiers (dark roots, ombre, two-tone). -> OKLab [P, 3] for every
    element; the caller blends with the region weight. ``max_gain``: the steepest the lightness
    map may be (``_capped_quantiles``; None: the target's). See the section comment above."""
    gain = target.max_gain if max_gain is None else max_gain
    q = _capped_quantiles(fit.quantiles.to(lab), float(target.light[0] - target.dark[0]), gain)
    t = _ranks_of(lab[:, 0], q)
    new = _map_to(lab, fit, target, t)
    quals = set(target.qualifiers)
    if "highlights" in quals:  # the lightest strands lifted, a little paler
        lift = smoothstep(0.6, 0.92, t)
        new = torch.cat([(new[:, :1] + 0.12 * lift[:, None] * (1 - new[:, :1])), new[:, 1:] * (1 - 0.2 * lift)[:, None]], -1)
    if heights is not None:
        h = heights.to(lab)
        if target.second is not None:
            other = _map_to(lab, fit, target.second, t)
            k = smoothstep(0.35, 0.7, h) if target.second_at == "ends" else 1 - smoothstep(0.3, 0.65, h)
            new = new + k[:, None] * (other - new)
        if "dark roots" in quals:
            r = 1 - smoothstep(0.12, 0.4, h)
            new = torch.cat([new[:, :1] * (1 - 0.45 * r)[:, None], new[:, 1:] * (1 - 0.4 * r)[:, None]], -1)
        if "ombre" in quals:
            top = 1 - smoothstep(0.25, 0.75, h)
            new = new + top[:, None] * (lab - new)
    style = MATERIAL_STYLES.get(material) if material else None
    if style is not None:
        ends = _map_to(torch.stack([q[0], q[len(q) // 2], q[-1]])[:, None].expand(3, 3) * torch.tensor(
            [1.0, 0.0, 0.0], dtype=lab.dtype, device=lab.device), fit, target, torch.tensor(
            [0.0, 0.5, 1.0], dtype=lab.dtype, device=lab.device))[:, 0]  # the region's new 5th/50th/95th L
        new = _material(new, style, ends[1], ((ends[2] - ends[0]) / 3.29).clamp_min(1e-3))
    new = into_gamut(new)
    return lab + float(strength) * (new - lab)


def _material(lab: torch.Tensor, style: MaterialStyle, med: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """A material's reshaping of the new lightness around the region's new median ``med`` with
    spread ``sig`` (``MATERIAL_STYLES``). Both come from the region's fit, not from the elements
    passed in, so pixels and splats (and any subset of them) get the same map."""
    L = lab[:, 0]
    L = med + style.contrast * (L - med) + style.lightness_offset
    high = torch.sigmoid((L - med - sig) / (0.5 * sig))
    L = L - style.highlight_compression * (L - med).clamp_min(0)
    L = L + style.specular * high * (1 - L).clamp_min(0)
    ab = lab[:, 1:] * (style.chroma * (1 - style.highlight_desaturation * high))[:, None]
    return torch.cat([L.clamp(0, 1)[:, None], ab], -1)


def into_gamut(lab: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """OKLab [P, 3] with the chroma of out-of-sRGB colours reduced (hue and lightness kept) until
    they fit: a clipped channel would shift the hue (a vivid red clipped turns orange)."""
    from ..colour_space import oklab_to_rgb

    lab = torch.cat([lab[:, :1].clamp(0, 1), lab[:, 1:]], -1)
    rgb = oklab_to_rgb(lab)
    bad = ((rgb < -1e-4) | (rgb > 1 + 1e-4)).any(-1)
    if not bool(bad.any()):
        return lab
    sub = lab[bad]
    lo, hi = torch.zeros(len(sub), dtype=lab.dtype, device=lab.device), torch.ones(len(sub), dtype=lab.dtype,
                                                                                     device=lab.device)
    for _ in range(steps):
        mid = (lo + hi) / 2
        c = oklab_to_rgb(torch.cat([sub[:, :1], sub[:, 1:] * mid[:, None]], -1))
        ok = ((c >= -1e-4) & (c <= 1 + 1e-4)).all(-1)
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    out = lab.clone()
    out[bad] = torch.cat([sub[:, :1], sub[:, 1:] * lo[:, None]], -1)
    return out


_FAMILY_OF = {"hair": "hair", "left_brow": "brows", "right_brow": "brows", "iris": "eyes", "left_eye": "eyes",
              "right_eye": "eyes", "upper_lip": "lips", "lower_lip": "lips"}


def plan_family(regions) -> str | None:
    """The shade family ("hair", "brows", "eyes", "lips") of a plan's regions, or None (skin, clothes)."""
    fams = {_FAMILY_OF.get(r) for r in regions}
    return fams.pop() if len(fams) == 1 else ("hair" if "hair" in regions else None)


def target_from_plan(plan, like: torch.Tensor) -> ColourTarget | None:
    """The plan's colour as a ``ColourTarget``: the named shade of its family (``colour_names.SHADES``)
    moved by what modifiers did to the named colour ("light brown", "pastel pink"), or, for a colour
    without a shade, a range built around it; qualifiers from ``colour_name``. None: no colour."""
    from ..colour_space import rgb_to_oklab
    from ..prompt.colour_names import COLOURS, find_colour, shade_colours, split_qualifiers

    if plan.colour is None:
        return None
    ok = lambda rgb: rgb_to_oklab(torch.tensor(rgb, dtype=torch.float64)).to(like)  # noqa: E731
    family = plan_family(plan.regions)
    name, quals = split_qualifiers(plan.colour_name or "")
    match = find_colour(name) if name else None
    colour = ok(plan.colour)
    pair = shade_colours(match.base, family) if (match is not None and family) else None
    if pair is not None:
        dark, light = ok(pair[0]), ok(pair[1])
        nominal = ok(COLOURS.get(match.base, plan.colour))
        dL = colour[0] - nominal[0]
        cn, cc = nominal[1:].norm(), colour[1:].norm()
        k = (cc / cn).clamp(0.2, 2.0) if float(cn) > 0.02 else torch.ones((), dtype=like.dtype)
        dark = torch.cat([(dark[:1] + dL).clamp(0.03, 0.97), dark[1:] * k])
        light = torch.cat([(light[:1] + dL).clamp(0.05, 0.98), light[1:] * k])
    else:
        dark = torch.cat([colour[:1] * 0.55, colour[1:] * 0.6])
        light = torch.cat([(colour[:1] * 1.15).clamp(max=0.96), colour[1:] * 1.05])
    second, at, keep = None, "ends", []
    for qual in quals:
        if qual in ("dark roots", "highlights", "ombre"):
            keep.append(qual)
            continue
        col = find_colour(qual.rsplit(" ", 1)[0])
        if col is None:
            continue
        other = dataclasses.replace(plan, colour=col.rgb, colour_name=col.name)
        second, at = target_from_plan(other, like), qual.rsplit(" ", 1)[1]
    return ColourTarget(dark, light, eye=family == "eyes", qualifiers=tuple(keep), second=second, second_at=at,
                        max_gain=lightness_gain(plan.regions))
