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
           "recolour_oklab"]


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


EYE_REGIONS = frozenset({"left_eye", "right_eye"})


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
