"""The palette editor: colour and material edits of a labelled region, offline, in milliseconds.

Why a palette editor: recolouring ("red hair", "blue eyes", "platinum blonde", "metallic lips") is
the most common avatar edit, and it needs no diffusion model: moving the region's colour in a
perceptual space while keeping each pixel's shading and texture gives a faithful edit that is also
*consistent across views* (the same pixel colour maps to the same result in every keyframe), which
a diffusion editor is not. It is the offline default (DESIGN §4); text edits that change shape or
add things (a hat, a beard) need a diffusion editor (``diffusion.py``).

Colour maths happen in OKLab (Ottosson 2020), implemented here in torch (differentiable, any
device). OKLab is chosen over CIE Lab because its hue lines are straight: lightening a blue keeps
it blue (CIE Lab turns it purple), and scaling linear RGB by ``k`` (shading) scales ``(L, a, b)``
by ``cbrt(k)``, so "chroma proportional to lightness" is exactly how a shaded pigment behaves.

The recolour, per image, with region statistics taken under the (soft) region mask ``m``:

    lightness        L'  = L_t' + g (L - Lm)                    # detail kept around the new mean
    chroma           ab' = ab_t * L'/L_t' + k * proj_u(ab - ab_m)
    result           lab + s (lab' - lab)                       # s = plan.strength, 0 = unchanged

``g`` is 1 unless the source is very dark and is brightened a lot (black hair -> platinum): the
camera's toe has flattened the dark texture, so its spread is lifted towards ``min_detail`` (at
most 3x) so the strands stay visible. ``L_t'`` is the target lightness moved, if needed, far
enough from 0 and 1 that this detail fits within +-2.5 std (platinum is not paper white), and
``g`` is lowered when even that does not fit. ``ab_t * L'/L_t'`` gives shadows less and highlights
more chroma, as shading does; ``proj_u(ab - ab_m)`` keeps the source's saturation variation along
the target hue ``u`` (not its old hue), scaled by ``k = min(1, |ab_t| / |ab_m|)``.
Materials then reshape the lightness (``MATERIAL_STYLES``).
"""

from __future__ import annotations

import dataclasses
import time

import torch

from .masks import composite, feather_mask, support_box
from .plan import EditPlan, EditPlanError

__all__ = [
    "srgb_to_linear", "linear_to_srgb", "rgb_to_oklab", "oklab_to_rgb", "rgb_to_cielab", "cielab_to_rgb",
    "MaterialStyle", "MATERIAL_STYLES", "region_stats", "colour_affinity", "darker_part", "recolour_oklab",
    "is_palette_plan", "PaletteEditor",
]

# ----------------------------------------------------------------------------- colour spaces
# Constants: sRGB (IEC 61966-2-1), OKLab (Ottosson 2020, https://bottosson.github.io/posts/oklab/),
# CIE XYZ/Lab with the D65 white point (the matrix OpenCV documents for RGB2Lab).

_LIN_TO_LMS = torch.tensor([[0.4122214708, 0.5363325363, 0.0514459929],
                            [0.2119034982, 0.6806995451, 0.1073969566],
                            [0.0883024619, 0.2817188376, 0.6299787005]], dtype=torch.float64)
_LMS_TO_LAB = torch.tensor([[0.2104542553, 0.7936177850, -0.0040720468],
                            [1.9779984951, -2.4285922050, 0.4505937099],
                            [0.0259040371, 0.7827717662, -0.8086757660]], dtype=torch.float64)
_LAB_TO_LMS = torch.tensor([[1.0, 0.3963377774, 0.2158037573],
                            [1.0, -0.1055613458, -0.0638541728],
                            [1.0, -0.0894841775, -1.2914855480]], dtype=torch.float64)
_LMS_TO_LIN = torch.tensor([[4.0767416621, -3.3077115913, 0.2309699292],
                            [-1.2684380046, 2.6097574011, -0.3413193965],
                            [-0.0041960863, -0.7034186147, 1.7076147010]], dtype=torch.float64)
_LIN_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_D65 = (0.950456, 1.0, 1.088754)


def _mat(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply the 3x3 matrix ``m`` to the last axis of ``x`` [..., 3]."""
    return x @ m.to(device=x.device, dtype=x.dtype).T


def _cbrt(x: torch.Tensor) -> torch.Tensor:
    """Signed cube root with a finite gradient at 0 (pow(1/3) has an infinite one)."""
    return torch.sign(x) * x.abs().clamp_min(1e-12) ** (1.0 / 3.0)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in [0, 1] -> linear light (the sRGB transfer curve)."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055)


def rgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in [0, 1] -> OKLab [..., 3]: L in [0, 1], a and b roughly in [-0.4, 0.4]."""
    return _mat(_cbrt(_mat(srgb_to_linear(rgb), _LIN_TO_LMS)), _LMS_TO_LAB)


def oklab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """OKLab [..., 3] -> sRGB [..., 3], *not* clipped (out-of-gamut colours leave [0, 1])."""
    return linear_to_srgb(_mat(_mat(lab, _LAB_TO_LMS) ** 3, _LMS_TO_LIN))


def rgb_to_cielab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in [0, 1] -> CIE L*a*b* (D65) [..., 3], L in [0, 100] (as cv2 float RGB2Lab).

    Not used by the recolour itself (see the module docstring); here for colour-difference metrics
    (delta E) and for people who think in CIE Lab.
    """
    xyz = _mat(srgb_to_linear(rgb), _LIN_TO_XYZ) / xyz_white(rgb)
    eps = 216.0 / 24389.0
    f = torch.where(xyz > eps, _cbrt(xyz), (24389.0 / 27.0 * xyz + 16.0) / 116.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)


def cielab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* (D65) [..., 3] -> sRGB [..., 3], not clipped."""
    L, a, b = lab.unbind(-1)
    fy = (L + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, fy - b / 200.0], dim=-1)
    eps = 6.0 / 29.0
    xyz = torch.where(f > eps, f ** 3, (116.0 * f - 16.0) * 27.0 / 24389.0) * xyz_white(lab)
    return linear_to_srgb(_mat(xyz, torch.linalg.inv(_LIN_TO_XYZ)))


def xyz_white(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_D65, device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------- materials
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


# ----------------------------------------------------------------------------- functional core
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


def darker_part(lab: torch.Tensor, weight: torch.Tensor, min_spread: float = 0.2, softness: float = 0.03) -> torch.Tensor:
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


# ----------------------------------------------------------------------------- the editor
def is_palette_plan(plan: EditPlan) -> bool:
    """True when ``plan`` is a colour and/or material change of its regions (no new shapes)."""
    return plan.kind in ("colour", "appearance") and (plan.colour is not None or plan.material is not None)


class PaletteEditor:
    """Colour/material edits of masked regions in OKLab; see the module docstring.

    Mask handling (``masks.feather_mask``): the region mask grows by ``plan.mask_dilation`` and is
    feathered with a Gaussian of sigma ``feather`` (both pixels at 512x512). With ``edge_aware``
    the grown ring is further weighted by ``colour_affinity`` (similar colour -> recoloured), which
    only ever lowers alpha: pixels outside the feathered mask are returned bit-identical.

    With ``iris_only``, a plan whose regions are only eyes recolours the iris, not the sclera the
    eye label also covers (``darker_part``).

    ``last_timing_s`` holds the wall time of the last ``edit`` call (for reports, not a benchmark).
    """

    name = "palette"

    def __init__(self, feather: float = 3.0, edge_aware: bool = True, min_detail: float = 0.05,
                 iris_only: bool = True) -> None:
        self.feather = feather
        self.edge_aware = edge_aware
        self.min_detail = min_detail
        self.iris_only = iris_only
        self.last_timing_s: float | None = None

    def check(self, plan: EditPlan) -> None:
        if not is_palette_plan(plan):
            raise EditPlanError(
                f"the palette editor does colour and material edits; for {plan.prompt!r} (a {plan.kind!r} "
                "edit) use editor='ip2p' with the InstructPix2Pix weights "
                "(hf download timbrooks/instruct-pix2pix; older huggingface_hub: "
                "huggingface-cli download timbrooks/instruct-pix2pix)")

    def edit(self, images: torch.Tensor, masks: torch.Tensor, plan: EditPlan, seed: int | None = None) -> torch.Tensor:
        """images [B, H, W, 3] in [0, 1], masks [B, H, W] in [0, 1] -> edited images [B, H, W, 3].

        ``seed`` is accepted for the ImageEditor protocol; the palette edit is deterministic.
        """
        self.check(plan)
        _check_inputs(images, masks)
        t0 = time.perf_counter()
        if plan.strength == 0.0:
            return images.clone()
        m = masks.to(device=images.device, dtype=torch.float32).clamp(0.0, 1.0)
        if self.iris_only and set(plan.regions) <= EYE_REGIONS:
            m = darker_part(rgb_to_oklab(images.float()), m)
        alpha = feather_mask(m, plan.mask_dilation, self.feather)  # [B, H, W]
        box = support_box(alpha)
        if box is None:  # nothing to edit in any image
            return images.clone()
        y0, y1, x0, x1 = box  # colour maths only where some alpha is non-zero (the union over the batch)
        work = images[:, y0:y1, x0:x1].float()  # [B, h, w, 3]
        m, alpha = m[:, y0:y1, x0:x1], alpha[:, y0:y1, x0:x1]
        lab = rgb_to_oklab(work)  # [B, h, w, 3]
        target = None if plan.colour is None else rgb_to_oklab(torch.tensor(plan.colour, dtype=work.dtype,
                                                                            device=work.device))
        stats = region_stats(lab, m)
        new_lab = recolour_oklab(lab, m, target, plan.strength, plan.material, min_detail=self.min_detail,
                                 stats=stats)
        if self.edge_aware:
            alpha = torch.maximum(m, alpha * colour_affinity(lab, *stats))
        edited = oklab_to_rgb(new_lab).clamp(0.0, 1.0)
        out = images.clone()
        out[:, y0:y1, x0:x1] = composite(images[:, y0:y1, x0:x1], edited.to(images.dtype), alpha)
        self.last_timing_s = time.perf_counter() - t0
        return out


def _check_inputs(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be [B, H, W] = {tuple(images.shape[:3])}, got {tuple(masks.shape)}")
