"""Colour statistics for the landmark parser: robust full-covariance Gaussians in CIE Lab.

The offline parser tells skin, hair, clothes and background apart by colour models fitted to each image
(``landmark_parser``).  Lab because distances there are roughly perceptual and lightness, which shading
changes most, is its own axis.  The fit is trimmed so that specular spots, stubble or stray strands do
not widen a model, and it can add spread along the shading ray (a shadowed neck is darker skin, not
another colour).  Everything is plain numpy on 3-vectors, written out where a general routine would
cost more in overhead than the arithmetic.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["ColourGaussian", "fit_gaussian", "inv3", "to_lab"]


def to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 CIE Lab [H, W, 3] (L in [0, 100]): distances there are
    roughly perceptual, and lightness (which shading changes most) is its own axis."""
    import cv2

    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


@dataclasses.dataclass
class ColourGaussian:
    """A colour model: a full-covariance Gaussian in Lab."""

    mean: np.ndarray  # [3]
    inv_cov: np.ndarray  # [3, 3]
    log_det: float
    n: int  # samples it was fitted on

    def mahal2(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of colours x [..., 3] -> float32 [...]. Written out per
        channel in float32, which is much faster than einsum on a whole image."""
        a = self.inv_cov.astype(np.float32)
        d0, d1, d2 = (x[..., c].astype(np.float32, copy=False) - np.float32(self.mean[c]) for c in range(3))
        return (a[0, 0] * d0 * d0 + a[1, 1] * d1 * d1 + a[2, 2] * d2 * d2
                + 2 * (a[0, 1] * d0 * d1 + a[0, 2] * d0 * d2 + a[1, 2] * d1 * d2))

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        return -0.5 * (self.mahal2(x) + np.float32(self.log_det + 3 * np.log(2 * np.pi)))


def inv3(m: np.ndarray) -> tuple[np.ndarray, float]:
    """Inverse and determinant of a 3x3 matrix by cofactors: LAPACK's inv, called this often on tiny
    matrices, costs far more in call overhead (thread wake-ups on a busy machine) than the arithmetic."""
    def cof(r0: int, r1: int, c0: int, c1: int) -> float:  # the 2x2 minor m[r0 r1; c0 c1]
        return float(m[r0, c0] * m[r1, c1] - m[r0, c1] * m[r1, c0])

    c = np.array([[cof(1, 2, 1, 2), -cof(0, 2, 1, 2), cof(0, 1, 1, 2)],
                  [-cof(1, 2, 0, 2), cof(0, 2, 0, 2), -cof(0, 1, 0, 2)],
                  [cof(1, 2, 0, 1), -cof(0, 2, 0, 1), cof(0, 1, 0, 1)]])
    det = float(m[0, 0] * c[0, 0] + m[0, 1] * c[1, 0] + m[0, 2] * c[2, 0])
    return (c / det if det != 0 else np.full((3, 3), np.nan)), det


def fit_gaussian(samples: np.ndarray, min_std: tuple[float, float, float] = (2.0, 1.0, 1.0),
                  widen: tuple[float, float, float] = (1.0, 1.0, 1.0), trim: float = 9.0,
                  shading: float = 0.0) -> ColourGaussian | None:
    """Robust Gaussian of Lab samples [N, 3]: fit, drop samples beyond ``trim`` (squared
    Mahalanobis; 9 keeps ~97% of a true Gaussian) twice so specular spots, stubble or stray
    strands do not widen it, then floor and widen the std per channel. None with < 20 samples.

    ``shading`` adds spread along the ray from black through the mean: darkening a surface
    (less light) scales L+16, a and b together (Lab's cube roots of a scaled XYZ), so a shadowed
    neck lies on that ray, not just lower on the L axis. The spread is ``shading`` x the mean's
    distance from black."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1, 3)
    if len(x) < 20:
        return None
    if len(x) > 5000:  # plenty for 9 numbers; keeps the fit cheap on big images
        x = x[np.random.default_rng(0).choice(len(x), 5000, replace=False)]
    keep = x
    for _ in range(3):
        mean = keep.mean(0)
        cov = np.cov(keep.T) + np.diag(np.square(min_std)) * 0.25
        inv, _ = inv3(cov)
        d = ColourGaussian(mean, inv, 0.0, 0).mahal2(x)
        nxt = x[d <= trim]
        if len(nxt) < 20:
            break
        keep = nxt
    mean = keep.mean(0)
    cov = np.cov(keep.T)
    std = np.sqrt(np.maximum(np.diag(cov), 1e-9))
    floor = np.asarray(min_std, dtype=np.float64) * np.asarray(widen)
    if (std < 1e-3 * floor).any():  # a flat colour (a solid frame): independent channels at the floor
        cov = np.diag(np.square(floor))
    else:
        scale = np.maximum(std, min_std) / std * np.asarray(widen)
        cov = cov * np.outer(scale, scale)
    if shading > 0:
        ray = mean + np.array([16.0, 0.0, 0.0])  # from Lab's black (L = -16 in the cube-root law)
        cov = cov + np.square(shading) * np.outer(ray, ray)
    inv, det = inv3(cov)
    if not det > 1e-12:  # still degenerate (perfectly correlated channels): independent channels
        cov = np.diag(np.square(np.maximum(std, min_std) * widen))
        inv, det = inv3(cov)
    return ColourGaussian(mean, inv, float(np.log(det)), len(keep))
