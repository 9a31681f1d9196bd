"""Colour-space maths for edits, in torch: sRGB <-> linear light <-> OKLab, and CIE L*a*b* (D65).

Every colour edit and colour metric of the edit stage converts through here, so one set of
constants and one cube root (finite gradient at 0) serve the palette editor, the splat-space
recolour and the metrics. Functions take ``[..., 3]`` tensors on any device and are differentiable.

OKLab (Ottosson 2020) is the space edits work in, chosen over CIE Lab because its hue lines are
straight: lightening a blue keeps it blue (CIE Lab turns it purple), and scaling linear RGB by ``k``
(shading) scales ``(L, a, b)`` by ``cbrt(k)``, so "chroma proportional to lightness" is exactly how a
shaded pigment behaves. CIE Lab is here for colour-difference metrics (delta E) and for people who
think in it.
"""

from __future__ import annotations

import torch

__all__ = ["srgb_to_linear", "linear_to_srgb", "rgb_to_oklab", "oklab_to_rgb", "rgb_to_cielab", "cielab_to_rgb",
           "xyz_white"]

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
    """Linear light [..., 3] -> sRGB (the inverse transfer curve), not clipped."""
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055)


def rgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in [0, 1] -> OKLab [..., 3]: L in [0, 1], a and b roughly in [-0.4, 0.4]."""
    return _mat(_cbrt(_mat(srgb_to_linear(rgb), _LIN_TO_LMS)), _LMS_TO_LAB)


def oklab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """OKLab [..., 3] -> sRGB [..., 3], *not* clipped (out-of-gamut colours leave [0, 1])."""
    return linear_to_srgb(_mat(_mat(lab, _LAB_TO_LMS) ** 3, _LMS_TO_LIN))


def rgb_to_cielab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in [0, 1] -> CIE L*a*b* (D65) [..., 3], L in [0, 100] (as cv2 float RGB2Lab).

    Not used by the recolours (see the module docstring); here for colour-difference metrics.
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
    """The D65 white point in XYZ [3], on ``like``'s device and dtype."""
    return torch.tensor(_D65, device=like.device, dtype=like.dtype)
