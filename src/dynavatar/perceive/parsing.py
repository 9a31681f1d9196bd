"""Face parsing: per-pixel probabilities over the project's fixed label set (``labels.LABEL_NAMES``).

Two backends behind one protocol:

* :class:`LandmarkParser`, the offline default. Nothing learned beyond what ships in the mediapipe
  wheel: the face parts come from mediapipe's dense face mesh (478 points), person vs background
  from the matte, and hair / skin / neck / clothes / ears from colour statistics fitted to each
  image (skin from the cheeks, nose, forehead and chin; hair by EM against skin above the brows;
  clothes from what is below the chin and not connected to the hair) plus the face's geometry
  and connectivity. See the class docstring for the rules and their limits.
* :class:`FacerParser`, the real backend: pyfacer's FaRL parsers (LaPa or CelebAMask-HQ labels),
  mapped onto our labels with explicit tables. Its weights must already be in the torch hub cache.

Probabilities are ``float32 [B, K, H, W]`` and sum to 1 over K at every pixel; ``parse_to_labels``
takes the argmax, ``colourise`` and ``overlay`` draw them for people to look at.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import DynavatarError, InvalidParametersError, MissingDependencyError
from ..geometry.labels import LABEL_COLOURS, LABEL_NAMES, NUM_LABELS, label_index
from ..geometry.landmark_sets import FACE_MESH_POLYGONS, LIP_INNER_LOWER, LIP_INNER_UPPER, N_MESH_POINTS

__all__ = ["FaceParser", "LandmarkParser", "LandmarkParserConfig", "FacerParser", "LAPA_TO_LABEL",
           "CELEBM_TO_LABEL", "parse_to_labels", "colourise", "overlay", "parse_dataset", "parse_frame"]

logger = logging.getLogger("dynavatar.perceive")

_L = {name: i for i, name in enumerate(LABEL_NAMES)}


@runtime_checkable
class FaceParser(Protocol):
    """Anything that turns RGB images into per-pixel label probabilities over ``LABEL_NAMES``."""

    name: str

    def parse(self, images: np.ndarray, landmarks: np.ndarray | None = None, *,
              mattes: np.ndarray | None = None) -> np.ndarray:
        """images: uint8 [B, H, W, 3]; landmarks: mediapipe 478 points in pixels [B, 478, 2|3] (x right,
        y down) or None; mattes: foreground alpha float [B, H, W] or None.
        Returns float32 probabilities [B, K, H, W] summing to 1 over K."""
        ...


_SKIN_SAMPLES = ("right_cheek", "left_cheek", "nose_wall", "forehead", "chin")
# The jaw from the angle below one ear to the other, through the chin: the top of the neck.
_JAW = (58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288)
# Face parts painted from the mesh last, in this order (later ones win where they touch).
_PAINTED = ("nose", "right_brow", "left_brow", "right_eye", "left_eye", "upper_lip", "lower_lip", "mouth_interior")
_CHIN, _FOREHEAD, _BRIDGE = 152, 10, 168
_IRIS_RIGHT, _IRIS_LEFT = 468, 473
_BROW_TOPS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
_MOUTH_CORNERS = (61, 291)
_EAR_BOTTOM = (58, 288)  # the oval's points at about mouth level: where ears end and the neck starts


# --------------------------------------------------------------------------------------------
# Small helpers shared by the backends
# --------------------------------------------------------------------------------------------

def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        raise InvalidParametersError(f"images must be a batch uint8 [B, H, W, 3]; got {images.shape} "
                                     "(add a batch axis)")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidParametersError(f"images must be uint8 [B, H, W, 3]; got {images.dtype} {images.shape}")
    return images


def _check_landmarks(landmarks: np.ndarray | None, batch: int) -> np.ndarray | None:
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[0] != batch or lm.shape[1] != N_MESH_POINTS or lm.shape[2] not in (2, 3):
        raise InvalidParametersError(
            f"landmarks must be mediapipe face-mesh points [B={batch}, {N_MESH_POINTS}, 2|3] in pixels; got "
            f"{lm.shape}. Other landmark sets (e.g. 68 points) are not enough: pass None to detect them.")
    if not np.isfinite(lm[..., :2]).all():
        raise InvalidParametersError("landmarks contain NaN or inf")
    return lm


def _check_mattes(mattes: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mattes is None:
        return None
    m = np.asarray(mattes, dtype=np.float32)
    if m.shape != shape[:3]:
        raise InvalidParametersError(f"mattes must be float [B, H, W] = {shape[:3]}; got {m.shape}")
    return np.clip(m, 0.0, 1.0)


def _detect_landmarks(detector, image: np.ndarray) -> np.ndarray | None:
    """The largest face's 478 points [478, 3] (x, y, relative depth) in ``image`` or None."""
    faces = detector.detect(image)
    if not faces:
        return None
    return max(faces, key=lambda f: f.size).points


def parse_to_labels(probs: np.ndarray) -> np.ndarray:
    """Probabilities [B, K, H, W] (or [K, H, W]) -> uint8 label indices [B, H, W] (or [H, W])."""
    probs = np.asarray(probs)
    if probs.ndim not in (3, 4) or probs.shape[-3] != NUM_LABELS:
        raise InvalidParametersError(f"probs must be [B, {NUM_LABELS}, H, W] or [{NUM_LABELS}, H, W]; "
                                     f"got {probs.shape}")
    return np.argmax(probs, axis=-3).astype(np.uint8)


def colourise(labels: np.ndarray) -> np.ndarray:
    """uint8 label indices [..., H, W] -> uint8 RGB [..., H, W, 3] with ``LABEL_COLOURS``."""
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) >= NUM_LABELS:
        raise InvalidParametersError(f"label index {int(labels.max())} is out of range (there are {NUM_LABELS} labels)")
    palette = np.asarray(LABEL_COLOURS, dtype=np.uint8)  # [K, 3]
    return palette[labels.astype(np.intp)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised ``labels`` [H, W] over ``image`` uint8 [H, W, 3]; background stays as is."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape[-2:] or image.ndim != 3:
        raise InvalidParametersError(f"image {image.shape} and labels {labels.shape} must share H, W")
    col = colourise(labels).astype(np.float32)
    a = np.where(labels[..., None] == _L["background"], 0.0, float(alpha))
    return np.clip(image.astype(np.float32) * (1 - a) + col * a, 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Colour statistics
# --------------------------------------------------------------------------------------------

def _to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 CIE Lab [H, W, 3] (L in [0, 100]): distances there are
    roughly perceptual, and lightness (which shading changes most) is its own axis."""
    import cv2

    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


@dataclasses.dataclass
class _Gaussian:
    """A colour model: a full-covariance Gaussian in Lab."""

    mean: np.ndarray  # [3]
    inv_cov: np.ndarray  # [3, 3]
    log_det: float
    n: int  # samples it was fitted on

    def mahal2(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of colours x [..., 3] -> float32 [...]. Written out per
        channel in float32: ~10x faster than einsum on a whole image."""
        a = self.inv_cov.astype(np.float32)
        d0, d1, d2 = (x[..., c].astype(np.float32, copy=False) - np.float32(self.mean[c]) for c in range(3))
        return (a[0, 0] * d0 * d0 + a[1, 1] * d1 * d1 + a[2, 2] * d2 * d2
                + 2 * (a[0, 1] * d0 * d1 + a[0, 2] * d0 * d2 + a[1, 2] * d1 * d2))

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        return -0.5 * (self.mahal2(x) + np.float32(self.log_det + 3 * np.log(2 * np.pi)))


def _inv3(m: np.ndarray) -> tuple[np.ndarray, float]:
    """Inverse and determinant of a 3x3 matrix by cofactors. LAPACK's inv costs milliseconds a
    call here (thread wake-ups on a busy machine) against microseconds for this."""
    def cof(r0: int, r1: int, c0: int, c1: int) -> float:  # the 2x2 minor m[r0 r1; c0 c1]
        return float(m[r0, c0] * m[r1, c1] - m[r0, c1] * m[r1, c0])

    c = np.array([[cof(1, 2, 1, 2), -cof(0, 2, 1, 2), cof(0, 1, 1, 2)],
                  [-cof(1, 2, 0, 2), cof(0, 2, 0, 2), -cof(0, 1, 0, 2)],
                  [cof(1, 2, 0, 1), -cof(0, 2, 0, 1), cof(0, 1, 0, 1)]])
    det = float(m[0, 0] * c[0, 0] + m[0, 1] * c[1, 0] + m[0, 2] * c[2, 0])
    return (c / det if det != 0 else np.full((3, 3), np.nan)), det


def _fit_gaussian(samples: np.ndarray, min_std: tuple[float, float, float] = (2.0, 1.0, 1.0),
                  widen: tuple[float, float, float] = (1.0, 1.0, 1.0), trim: float = 9.0,
                  shading: float = 0.0) -> _Gaussian | None:
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
        inv, _ = _inv3(cov)
        d = _Gaussian(mean, inv, 0.0, 0).mahal2(x)
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
    inv, det = _inv3(cov)
    if not det > 1e-12:  # still degenerate (perfectly correlated channels): independent channels
        cov = np.diag(np.square(np.maximum(std, min_std) * widen))
        inv, det = _inv3(cov)
    return _Gaussian(mean, inv, float(np.log(det)), len(keep))


# --------------------------------------------------------------------------------------------
# Geometry of one face
# --------------------------------------------------------------------------------------------

def _fill(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Filled polygon (pixel-edge coordinates [N, 2]) -> bool mask [H, W]: a pixel is inside when
    its centre is (even-odd rule), as a rasteriser samples it.

    Why not ``cv2.fillPoly``: it also paints every pixel its outline touches, which dilates each
    part by about half a pixel and turns a sliver thinner than a pixel into a full pixel line. On
    a closed mouth the mouth-interior polygon between the inner lip contours is such a sliver, and
    painted as a 1-px line it splits the lips in every closed-mouth frame (wojtek: 40-80 px a frame).
    A scan line per pixel row: every edge crossing the row's centre toggles inside/outside from
    the first pixel centre at or right of the crossing.
    """
    h, w = shape
    p = np.asarray(pts, dtype=np.float64)  # [E, 2] edge i runs p[i] -> p[i + 1]
    q = np.roll(p, -1, axis=0)
    y = np.arange(h, dtype=np.float64)[:, None] + 0.5  # [H, 1] row centres
    (x0, y0), (x1, y1) = p.T[:, None], q.T[:, None]  # each [1, E]
    crosses = ((y0 <= y) & (y < y1)) | ((y1 <= y) & (y < y0))  # [H, E] half-open: a vertex counts once
    rows, edges = np.nonzero(crosses)
    with np.errstate(invalid="ignore"):  # inf - inf at an infinite vertex; dropped below
        t = (y[rows, 0] - y0[0, edges]) / (y1[0, edges] - y0[0, edges])  # never 0 / 0: flat edges never cross
        x = x0[0, edges] + t * (x1[0, edges] - x0[0, edges])
    keep = np.isfinite(x)  # an infinite vertex crosses nowhere in particular
    rows, x = rows[keep], x[keep]
    cols = np.clip(np.ceil(x - 0.5), 0, w).astype(np.int64)  # first pixel whose centre is at or right of x
    toggles = np.zeros((h, w + 1), np.int32)
    np.add.at(toggles, (rows, cols), 1)
    return (np.cumsum(toggles[:, :w], axis=1) % 2).astype(bool)


@dataclasses.dataclass
class _Face:
    """One face's frame and masks. ``u`` runs towards the image right of an upright face, ``v``
    down the face, both in face heights (forehead top 10 -> chin 152) from the chin."""

    u: np.ndarray  # [H, W]
    v: np.ndarray  # [H, W]
    height: float  # face height in pixels
    parts: dict[str, np.ndarray]  # polygon name -> bool [H, W]
    dist_out: np.ndarray  # [H, W] pixels from the face oval (0 inside)
    dist_in: np.ndarray  # [H, W] pixels to the oval's edge from inside (0 outside)
    below_jaw: np.ndarray  # bool [H, W]
    v_brow: float  # level of the brows' top edge
    v_eye: float
    v_ear_bottom: float
    v_ear_shift: float  # ears sit lower (head tilted back) or higher (head bowed) than when level
    u_mid: float  # the nose bridge's u: splits the head into the person's right and left
    u_jaw: tuple[float, float]  # u of the jaw's ends below the ears (image left, image right)
    ear_visible: tuple[bool, bool]  # (person's right ear, person's left ear) can be seen (not turned away)
    u_sides: tuple[float, float]  # u of the face outline beside the eyes (234: image left, 454: image right)

    @property
    def throat(self) -> np.ndarray:
        """bool [H, W]: below the jaw, between its ends, down to half a face below the chin:
        neck (or a collar), not where long hair falls."""
        return self.below_jaw & (self.u > self.u_jaw[0]) & (self.u < self.u_jaw[1]) & (self.v < 0.5)

    @classmethod
    def build(cls, points: np.ndarray, shape: tuple[int, int]) -> "_Face":
        import cv2

        p3 = np.asarray(points, dtype=np.float64)  # [478, 2|3]
        p = p3[:, :2]
        h, w = shape
        chin, top = p[_CHIN], p[_FOREHEAD]
        height = max(float(np.linalg.norm(chin - top)), 1.0)
        down = (chin - top) / height
        right = np.array([down[1], -down[0]])
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        dx, dy = xs - chin[0], ys - chin[1]
        u = (dx * right[0] + dy * right[1]) / height
        v = (dx * down[0] + dy * down[1]) / height

        def level(idx) -> float:
            return float(np.mean((p[list(idx)] - chin) @ down) / height)

        parts = {name: _fill(shape, p[list(idx)]) for name, idx in FACE_MESH_POLYGONS.items()}
        oval = parts["face_oval"].astype(np.uint8)
        dist_out = cv2.distanceTransform(1 - oval, cv2.DIST_L2, 5)
        dist_in = cv2.distanceTransform(oval, cv2.DIST_L2, 5)

        def u_of(i: int) -> float:
            return float((p[i] - chin) @ right / height)

        # A turned head hides the ear on the side it turns to: there the nose tip comes close to
        # the face's outline (234 / 454 are the outline points beside the eyes).
        u_r, u_l, u_nose = u_of(234), u_of(454), u_of(1)
        width = max(u_l - u_r, 1e-6)
        sides = ((u_nose - u_r) / width, (u_l - u_nose) / width)  # 0.5 each when frontal
        ear_visible = (sides[0] > 0.3, sides[1] > 0.3)
        below_jaw = _fill(shape, _below_jaw_outline(p, chin, down, right, height, sides)) & ~parts["face_oval"]
        return cls(u, v, height, parts, dist_out, dist_in, below_jaw, level(_BROW_TOPS),
                   level((_IRIS_RIGHT, _IRIS_LEFT)), level(_EAR_BOTTOM), _ear_shift(p3, down), u_of(_BRIDGE),
                   (u_of(_EAR_BOTTOM[0]), u_of(_EAR_BOTTOM[1])), ear_visible, (u_r, u_l))


def _below_jaw_outline(p: np.ndarray, chin: np.ndarray, down: np.ndarray, right: np.ndarray, height: float,
                       sides: tuple[float, float]) -> np.ndarray:
    """Polygon [M, 2] of what lies below the jaw (skin there is neck): the jaw line from one ear's
    angle through the chin to the other, carried on outwards from its ends, closed far below.

    ``sides``: the share of the face's width on each side of the nose (0.5 when frontal). On a
    frontal face the line goes on halfway between sideways and the chin->end direction. The more
    a side faces the camera (head turned away from it), the more of the cheek and jaw beyond the
    mesh's outline it shows, and the line follows the chin->end direction (up towards the ear).
    On the side a head turns to (ear hidden) the outline's end sits beside the mouth and the cheek
    beyond it reaches down to the chin, so that side starts at the chin's level."""
    jaw = p[list(_JAW)]  # [15, 2] image left -> image right
    far = 4.0 * height

    def side_points(end: np.ndarray, side: np.ndarray, share: float) -> list[np.ndarray]:
        if share > 0.3:
            sideways = float(np.clip((0.8 - share) / 0.3, 0.0, 1.0))
            d = (end - chin) / max(float(np.linalg.norm(end - chin)), 1e-6) + sideways * side
            return [end + far * d / max(float(np.linalg.norm(d)), 1e-6)]
        at_chin = end + float((chin - end) @ down) * down
        return [at_chin, at_chin + far * side]

    left = side_points(jaw[0], -right, sides[0])[::-1]  # far point first
    right_pts = side_points(jaw[-1], right, sides[1])
    return np.concatenate([left, jaw, right_pts, [right_pts[-1] + far * down, left[0] + far * down]])


def _ear_shift(points: np.ndarray, down: np.ndarray) -> float:
    """How far (face heights, + = down the face) the ears move from their level-head place.

    The ears lie about a third of a face height behind the face's outline. With mediapipe's
    relative depth (z, same units as x) the face plane's backward normal is known; its image
    part, beyond what it is for a level head (the forehead leans back, so it points ~0.2 up),
    says where "behind" lands in the picture: lower for a head tilted back, higher when bowed.
    2D landmarks: 0."""
    if points.shape[1] < 3:
        return 0.0
    across = points[454] - points[234]  # [3] towards the image right
    along = points[_CHIN] - points[_FOREHEAD]  # [3] down the face
    back = np.cross(across, along)
    norm = float(np.linalg.norm(back))
    if norm < 1e-9 or not np.isfinite(norm):
        return 0.0
    back = back / norm
    level_back = np.array([0.0, -0.2])
    return float(np.clip((back[:2] - level_back) @ down * 0.35, -0.25, 0.25))


# --------------------------------------------------------------------------------------------
# The landmark parser
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LandmarkParserConfig:
    skin_tolerance: float = 20.0  # squared Mahalanobis distance (Lab) where "skin" gives way to "other colour"
    skin_shading: float = 0.1  # skin's extra spread along the shading ray, fraction of its distance from black
    skin_min_std: tuple[float, float, float] = (8.0, 3.0, 3.0)  # floor of the skin model's Lab std: neck, ears
    skin_widen: float = 1.2  # and its measured std widened by this (the samples miss the neck and ears)
    hair_min_distance: float = 8.0  # hair colour must be this far from skin (squared Mahalanobis), else bald
    min_seed_fraction: float = 0.002  # fewer seeds than this x image area: no such colour model (bald, no clothes)
    colour_smoothing: float = 0.004  # sigma of the smoothing of colour decisions, fraction of the image side
    edge_softness: float = 0.002  # sigma of the soft label edges, fraction of the image side
    ear_reach: float = 0.22  # how far ears reach beside the face oval, in face heights
    face_hair_band: float = 0.07  # inside the oval, hair may cover this band along its edge (face heights)
    refine_matte: bool = True  # return matte-edge pixels of the background's colour to the background
    hair_below_chin: float = 0.35  # hair prior's decay length below the chin when clothes look like hair (face heights)


class LandmarkParser:
    """Offline face parser from mediapipe landmarks + matte + per-image colour statistics.

    All geometry is in the face's own frame (u across, v down the face, in face heights from the
    chin), so tilted heads work; yaw and pitch are read from the mesh where they matter (ears, jaw).

    1. Person vs background: the matte (mediapipe selfie segmentation unless given), with two
       corrections: the inner face is always the person, and pixels along the matte's edge that
       have the colour of the background next to the person go back to the background (the
       256 px selfie model leaks wall under the jaw and beside the hair).
    2. Colour models in CIE Lab, refitted per image. *Skin* from the cheeks, nose walls, forehead
       middle and chin (robust trimmed Gaussian, with extra spread along the shading ray so a
       shadowed neck is still skin). *Hair* by a two-class EM against skin in the zone above the
       brows and off the face; rejected (bald) when its colour is within a few sigma of skin.
       Each pixel is skin-coloured or not by likelihood against hair and a flat "other colour",
       plus priors (inner face, throat, and the jaw's underside lean to skin), smoothed a little.
    3. Non-skin foreground is hair or clothes by connectivity: regions connected to the hair
       zone are hair, others are clothes when they lie below the chin. Below the chin a region
       connected to the hair becomes clothes where its colour is more like the clothes (a colour
       model from the unconnected clothes and from right under the neck) than the hair; without
       such a model it stays hair down to 2 x ``hair_below_chin`` face heights below the chin.
    4. Skin-coloured foreground: *neck* below the jaw line (carried on beyond the mesh's jaw
       ends, following the head's yaw); *left_ear* / *right_ear* (the person's own sides) beside
       the face within ``ear_reach``, between the brows' and the mouth's level shifted by the
       head's pitch, and only on a side the head is not turned away from; *skin* elsewhere
       (forehead, bald scalp, arms). Inside the face oval non-skin pixels are skin too (beard,
       shadows, nostrils, glasses) except on the forehead and along the oval's edge, where hair
       connected to the hair outside (a fringe, strands over the cheeks) stays hair.
    5. Face parts are painted last from the mesh polygons: nose, brows, eyes (the eyelid opening),
       upper and lower lip between the outer and inner lip contours, and the mouth interior
       inside the inner contour (zero area when the lips touch).

    *eyeglasses* and *headwear* always get zero probability: glasses become skin (inside the oval)
    or hair (the temples), hats become hair. Soft probabilities are the one-hot labels blurred by
    ``edge_softness`` and multiplied by the (refined) matte, with background = 1 - matte.
    """

    # The version after the slash changes when the same inputs give different maps, so cached
    # datasets parsed by an older version are parsed again (2: parts sampled at pixel centres).
    name = "landmark-parser/2"

    def __init__(self, config: LandmarkParserConfig | None = None, *, detector=None, matter=None) -> None:
        self.config = config or LandmarkParserConfig()
        self._detector = detector
        self._matter = matter

    # Backends are created on first need, so a parser that is always given landmarks and mattes
    # never loads mediapipe.
    @property
    def detector(self):
        if self._detector is None:
            from .landmarks import MediapipeFaceMesh

            self._detector = MediapipeFaceMesh(max_faces=1)
        return self._detector

    @property
    def matter(self):
        if self._matter is None:
            from .matting import MediapipeSelfieMatte

            self._matter = MediapipeSelfieMatte()
        return self._matter

    def parse(self, images: np.ndarray, landmarks: np.ndarray | None = None, *,
              mattes: np.ndarray | None = None) -> np.ndarray:
        images = _check_images(images)
        lms = _check_landmarks(landmarks, len(images))
        mts = _check_mattes(mattes, images.shape)
        out = np.empty((len(images), NUM_LABELS) + images.shape[1:3], np.float32)
        for b, img in enumerate(images):
            pts = lms[b] if lms is not None else _detect_landmarks(self.detector, img)
            alpha = mts[b] if mts is not None else self.matter.matte(img)
            self.parse_one(img, pts, alpha, out=out[b])
        return out

    def parse_labels(self, image: np.ndarray, landmarks: np.ndarray | None = None,
                     matte: np.ndarray | None = None) -> np.ndarray:
        """One image uint8 [H, W, 3] -> its label map uint8 [H, W] (the argmax of ``parse``).

        For preprocessing, which stores only labels: the [K, H, W] probabilities go into one
        scratch buffer kept between calls. Fresh 17-channel buffers cost more in page faults
        than the parsing itself on some machines (~100 ms a 512 px frame measured here)."""
        image = _check_images(np.asarray(image)[None])[0]
        lm = _check_landmarks(None if landmarks is None else np.asarray(landmarks)[None], 1)
        pts = lm[0] if lm is not None else _detect_landmarks(self.detector, image)
        alpha = _check_mattes(None if matte is None else np.asarray(matte)[None], (1,) + image.shape)
        alpha = alpha[0] if alpha is not None else self.matter.matte(image)
        shape = (NUM_LABELS,) + image.shape[:2]
        if getattr(self, "_scratch", None) is None or self._scratch.shape != shape:
            self._scratch = np.empty(shape, np.float32)
        return parse_to_labels(self.parse_one(image, pts, alpha, out=self._scratch))

    def parse_one(self, image: np.ndarray, points: np.ndarray | None, alpha: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
        """One image uint8 [H, W, 3], its face's points [478, 2|3] (or None: no face) and matte
        [H, W] -> probabilities float32 [K, H, W] (written into ``out`` when given). With the
        depth column the ears follow the head's pitch."""
        h, w = image.shape[:2]
        alpha = np.asarray(alpha, dtype=np.float32)
        out = np.empty((NUM_LABELS, h, w), np.float32) if out is None else out
        if points is None:
            logger.warning("landmark parser: no face found; the foreground is left unlabelled (uniform)")
            return _no_face_probs(alpha, out)
        face = _Face.build(points, (h, w))
        # The inner face is always the person (the matte can miss a face in harsh light); the
        # oval's rim is left to the matte: on a turned head it reaches past the silhouette.
        inner = face.dist_in > 0.05 * face.height
        for name in _PAINTED:
            inner |= face.parts[name]
        fg_alpha = np.maximum(alpha, inner.astype(np.float32))  # [H, W]
        labels, fg_alpha = self._label_map(image, face, fg_alpha)
        return self._soften(labels, fg_alpha, out)

    # -- the steps ---------------------------------------------------------------------------

    def _label_map(self, image: np.ndarray, face: _Face, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hard labels uint8 [H, W] and the (colour-refined) foreground alpha float32 [H, W]."""
        cfg = self.config
        lab = _to_lab(image)  # [H, W, 3]
        fg = alpha > 0.5
        skin_model = self._skin_model(lab, face, fg)
        min_seeds = max(50, int(cfg.min_seed_fraction * fg.size))
        alpha = self._refine_matte(lab, alpha, skin_model, face, min_seeds)
        fg = alpha > 0.5
        hair_zone = fg & (face.dist_out > 0.02 * face.height) & (face.v < face.v_brow)  # above the brows, off the face
        hair_model = self._hair_model(lab, hair_zone, skin_model, min_seeds)
        skin = self._skin_colour(lab, skin_model, hair_model, face) & fg  # [H, W] bool
        nonskin = fg & ~skin
        reach, clothes = self._hair_or_clothes(nonskin, hair_zone & nonskin, lab, hair_model, face, min_seeds)
        return self._assemble(face, fg, skin, reach, clothes), alpha

    def _assemble(self, face: _Face, fg: np.ndarray, skin: np.ndarray, reach: np.ndarray,
                  clothes: np.ndarray) -> np.ndarray:
        """Masks [H, W] bool -> labels uint8 [H, W] by the geometric rules 4-5 of the class doc."""
        cfg = self.config
        nonskin = fg & ~skin
        oval = face.parts["face_oval"]
        labels = np.full(fg.shape, _L["background"], np.uint8)
        # Outside the face: non-skin colours are hair unless they are clothes ...
        labels[nonskin] = _L["hair"]
        labels[clothes] = _L["clothes"]
        # ... skin colours are skin, neck below the jaw, ears beside the face.
        labels[skin] = _L["skin"]
        labels[skin & face.below_jaw] = _L["neck"]
        ear_top, ear_bottom = face.v_brow + face.v_ear_shift, face.v_ear_bottom + face.v_ear_shift
        beside = (face.u < face.u_sides[0] + 0.05) | (face.u > face.u_sides[1] - 0.05)  # not above or below the face
        ears = skin & ~oval & beside & (face.dist_out < cfg.ear_reach * face.height) & (face.v > ear_top) \
            & (face.v < ear_bottom)
        if face.ear_visible[1]:
            labels[ears & (face.u > face.u_mid)] = _L["left_ear"]  # the person's left: image right when frontal
        if face.ear_visible[0]:
            labels[ears & (face.u <= face.u_mid)] = _L["right_ear"]
        # Inside the face oval everything is skin except hair connected to the hair outside, on
        # the forehead or along the oval's edge (fringes, strands over the cheeks).
        face_hair_zone = (face.dist_in < cfg.face_hair_band * face.height) | (face.v < face.v_brow)
        labels[fg & oval & ~(nonskin & reach & face_hair_zone)] = _L["skin"]
        for name in _PAINTED:
            labels[face.parts[name]] = _L[name]
        return labels

    def _refine_matte(self, lab: np.ndarray, alpha: np.ndarray, skin: _Gaussian, face: _Face,
                      min_seeds: int) -> np.ndarray:
        """Take back into the background what the (coarse, 256 px) matte let through along its
        edge but is clearly the background's colour: a wall seen under the jaw or between hair
        and neck. A colour model of the background next to the person decides, and only in a
        band along the matte's edge, away from the face, and only where skin is far less likely."""
        import cv2

        if not self.config.refine_matte:
            return alpha
        side = max(alpha.shape)
        fg = (alpha > 0.5).astype(np.uint8)
        to_bg = cv2.distanceTransform(fg, cv2.DIST_L2, 5)  # inside: pixels to the background
        to_fg = cv2.distanceTransform(1 - fg, cv2.DIST_L2, 5)
        ring = (alpha < 0.05) & (to_fg < 0.08 * side)
        bg = _fit_gaussian(lab[ring], widen=(1.2, 1.2, 1.2)) if ring.sum() >= min_seeds else None
        if bg is None:
            return alpha
        band = (fg > 0) & (to_bg < 0.04 * side) & (face.dist_in < 0.05 * face.height)  # not the inner face
        odds = np.clip(bg.log_pdf(lab) - skin.log_pdf(lab), -20, 20).astype(np.float32)
        odds = np.where(bg.mahal2(lab) < 12.0, odds, -20.0).astype(np.float32)
        odds = cv2.GaussianBlur(odds, (0, 0), max(self.config.colour_smoothing * side, 0.5))
        wall = band & (odds > 3.0)
        if not wall.any():
            return alpha
        keep = cv2.GaussianBlur((~wall).astype(np.float32), (0, 0), max(self.config.edge_softness * side, 0.3))
        return np.minimum(alpha, keep)

    def _skin_model(self, lab: np.ndarray, face: _Face, fg: np.ndarray) -> _Gaussian:
        """Skin colour from the cheeks, nose walls, forehead middle and chin; falls back to the
        whole face oval (minus eyes, brows, lips) and then to a generic skin colour when the face
        is tiny or hidden."""
        cfg = self.config
        fit = functools.partial(_fit_gaussian, min_std=cfg.skin_min_std, widen=(cfg.skin_widen,) * 3,
                                shading=cfg.skin_shading)
        sample = np.logical_or.reduce([face.parts[n] for n in _SKIN_SAMPLES]) & fg
        model = fit(lab[sample])
        if model is None:
            inner = face.parts["face_oval"].copy()
            for name in _PAINTED[1:]:  # all parts but the nose, which is skin-coloured
                inner &= ~face.parts[name]
            model = fit(lab[inner])
        if model is None:
            cov = np.diag(np.square([15.0, 8.0, 8.0]))
            inv, det = _inv3(cov)
            model = _Gaussian(np.array([65.0, 15.0, 18.0]), inv, float(np.log(det)), 0)
        return model

    def _hair_model(self, lab: np.ndarray, zone: np.ndarray, skin: _Gaussian, min_seeds: int) -> _Gaussian | None:
        """Hair colour from the zone above the brows and off the face, or None (bald, shaved).

        A two-class EM in that zone: skin (the fixed skin model) against hair (a free Gaussian,
        started from the zone's least skin-like 30%). Red or blond hair close to skin colour is
        found this way where an absolute "far from skin" rule misses it. The result is rejected
        when hair would be a small part of the zone or its colour within a few sigma of skin
        (then the "hair" was shaded scalp)."""
        x = lab[zone]  # [N, 3]
        if len(x) < min_seeds:
            return None
        log_skin = skin.log_pdf(x)
        d = skin.mahal2(x)
        init = d >= max(float(np.quantile(d, 0.7)), 4.0)
        if init.sum() < min_seeds:
            return None
        fit = functools.partial(_fit_gaussian, widen=(1.3, 1.1, 1.1))
        model, prior = fit(x[init]), 0.5
        for _ in range(4):
            if model is None:
                return None
            take = model.log_pdf(x) - log_skin + np.log(prior / (1 - prior)) > 0  # [N] hair wins
            if take.sum() < min_seeds:
                return None
            model = fit(x[take])
            prior = float(np.clip(take.mean(), 0.05, 0.95))
        if model is None or prior < 0.1 or float(skin.mahal2(model.mean)) < self.config.hair_min_distance:
            return None
        return model

    def _skin_colour(self, lab: np.ndarray, skin: _Gaussian, hair: _Gaussian | None, face: _Face) -> np.ndarray:
        """bool [H, W]: is the colour more likely skin than hair or "something else"?
        "Something else" is a flat density at the skin model's ``skin_tolerance`` contour. The
        log-odds are smoothed before the decision so single noisy pixels do not flip."""
        import cv2

        cfg = self.config
        log_skin = skin.log_pdf(lab)  # [H, W]
        log_other = np.full_like(log_skin, -0.5 * (cfg.skin_tolerance + skin.log_det + 3 * np.log(2 * np.pi)))
        if hair is not None:
            log_other = np.logaddexp(log_other, hair.log_pdf(lab))
        # Spatial prior: the inner face below the brows, and the throat between the jaw's ends,
        # are skin unless strongly contradicted (stubble, shadow under the jaw).
        inner_face = (face.dist_in > cfg.face_hair_band * face.height) & (face.v > face.v_brow)
        jaw_side = (face.dist_out < 0.12 * face.height) & (face.v > face.v_ear_bottom)  # stubble under a turned jaw
        prior = np.where(inner_face, 2.0, 0.0) + np.where(face.throat, 4.0, 0.0) + np.where(jaw_side, 3.0, 0.0)
        odds = np.clip(log_skin - log_other, -20, 20).astype(np.float32) + prior.astype(np.float32)
        sigma = max(cfg.colour_smoothing * max(lab.shape[:2]), 0.5)
        odds = cv2.GaussianBlur(odds, (0, 0), sigma)
        return odds > 0

    def _hair_or_clothes(self, nonskin: np.ndarray, hair_seeds: np.ndarray, lab: np.ndarray,
                         hair: _Gaussian | None, face: _Face, min_seeds: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-skin foreground [H, W] -> (hair, clothes) bool masks [H, W] (hair: reaches the seeds).

        Regions connected (through non-skin pixels) to the hair seeds are hair; the others are
        clothes when they lie on average below the chin. A clothes colour model is fitted from
        those clothes and from non-skin pixels right below the neck (where long hair does not
        fall); below the chin, hair-connected pixels that look more like it than like the hair
        become clothes (a shirt touching long hair). Without a clothes model, hair-connected
        pixels stay hair down to 2 x ``hair_below_chin`` face heights below the chin."""
        import cv2

        cfg = self.config
        k = max(3, int(round(0.006 * max(nonskin.shape))) | 1)
        opened = cv2.morphologyEx(nonskin.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8)) > 0
        n, comp = cv2.connectedComponents(opened.astype(np.uint8), connectivity=8)
        hair_comps = np.unique(comp[hair_seeds & opened])
        reach = np.isin(comp, hair_comps[hair_comps > 0]) & opened  # [H, W]
        other = opened & ~reach
        clothes = np.zeros_like(nonskin)
        if other.any():
            count = np.bincount(comp[other], minlength=n)
            mean_v = np.bincount(comp[other], weights=face.v[other], minlength=n) / np.maximum(count, 1)
            clothes |= other & (mean_v[comp] > 0.0)
        below = reach & (face.v > 0.0)
        if below.any():
            under_neck = nonskin & (face.v > 0.25) & (np.abs(face.u) < 0.2)
            seeds = clothes | under_neck
            cloth = _fit_gaussian(lab[seeds]) if seeds.sum() >= min_seeds else None
            depth = face.v / cfg.hair_below_chin  # hair prior fades below the chin
            if cloth is not None and hair is not None:
                odds = np.clip(cloth.log_pdf(lab) - hair.log_pdf(lab), -20, 20) + depth - 1.0
            else:
                odds = depth - 2.0
            sigma = max(cfg.colour_smoothing * max(nonskin.shape), 0.5)
            odds = cv2.GaussianBlur(odds.astype(np.float32), (0, 0), sigma)
            clothes |= below & (odds > 0)
        # Thin strands lost to the opening follow the nearest decision.
        lost = nonskin & ~opened
        if lost.any():
            near_clothes = cv2.dilate(clothes.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
            near_reach = cv2.dilate(reach.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
            clothes |= lost & near_clothes & (face.v > 0)
            reach |= lost & near_reach & ~clothes
        return reach & ~clothes, clothes & nonskin

    def _soften(self, labels: np.ndarray, fg_alpha: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Hard labels [H, W] + foreground alpha [H, W] -> probabilities [K, H, W] (into
        ``probs``): each foreground label's one-hot blurred (soft edges), times alpha;
        background = 1 - alpha."""
        import cv2

        h, w = labels.shape
        sigma = self.config.edge_softness * max(h, w)
        probs[:] = 0.0
        fg_labels = labels.copy()
        if (labels != _L["background"]).any():
            # background pixels take their nearest foreground label, so blurring does not leak
            # "background" into the foreground distribution (the matte carries that).
            bg = (labels == _L["background"]).astype(np.uint8)
            _, idx = cv2.distanceTransformWithLabels(bg, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
            ys, xs = np.nonzero(bg == 0)
            lut = np.zeros(idx.max() + 1, np.uint8)
            lut[idx[ys, xs]] = labels[ys, xs]
            fg_labels = lut[idx]
        else:
            fg_labels[:] = _L["skin"]
        total = np.zeros((h, w), np.float32)
        for k in np.unique(fg_labels):
            onehot = (fg_labels == k).astype(np.float32)
            if sigma >= 0.3:
                onehot = cv2.GaussianBlur(onehot, (0, 0), sigma)
            probs[k] = onehot
            total += onehot
        probs /= np.maximum(total, 1e-6)
        probs *= fg_alpha
        probs[_L["background"]] = 1.0 - fg_alpha
        return probs


def _no_face_probs(alpha: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """No face: background from the matte, the foreground spread evenly over the labels this
    parser can produce (an honest "don't know"; its argmax is skin). Written into ``probs``."""
    k_fg = [_L[n] for n in ("skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip",
                            "lower_lip", "mouth_interior", "hair", "left_ear", "right_ear", "neck", "clothes")]
    probs[:] = 0.0
    probs[k_fg] = alpha[None] / len(k_fg)
    probs[_L["background"]] = 1.0 - alpha
    return probs


# --------------------------------------------------------------------------------------------
# facer (FaRL) backend
# --------------------------------------------------------------------------------------------

# LaPa's 11 labels as facer names them -> ours. LaPa has no ears, neck or clothes: they fall
# into its background (or face) class.
LAPA_TO_LABEL: dict[str, str] = {
    "background": "background", "face": "skin", "rb": "right_brow", "lb": "left_brow", "re": "right_eye",
    "le": "left_eye", "nose": "nose", "ulip": "upper_lip", "imouth": "mouth_interior", "llip": "lower_lip",
    "hair": "hair",
}
# CelebAMask-HQ's 19 labels as facer names them -> ours. "rr"/"lr" are the ears, "eyeg" glasses,
# "hat" headwear; earrings ("earr") go to the ears they hang from (left_ear here; FacerParser moves
# those on the person's right to right_ear) and necklaces ("neck_l") to the neck, the nearest of
# our regions (we have no jewellery labels).
CELEBM_TO_LABEL: dict[str, str] = {
    "background": "background", "neck": "neck", "face": "skin", "cloth": "clothes", "rr": "right_ear",
    "lr": "left_ear", "rb": "right_brow", "lb": "left_brow", "re": "right_eye", "le": "left_eye", "nose": "nose",
    "imouth": "mouth_interior", "llip": "lower_lip", "ulip": "upper_lip", "hair": "hair", "eyeg": "eyeglasses",
    "hat": "headwear", "earr": "left_ear", "neck_l": "neck",
}
# facer's model names -> (label table, weights file name prefix in the torch hub cache).
_FACER_MODELS = {
    "farl/lapa/448": (LAPA_TO_LABEL, "face_parsing.farl.lapa."),
    "farl/celebm/448": (CELEBM_TO_LABEL, "face_parsing.farl.celebm."),
}
_SIDE_PAIRS = (("left_eye", "right_eye"), ("left_brow", "right_brow"), ("left_ear", "right_ear"))


class FacerParser:
    """pyfacer's FaRL face parser (``farl/lapa/448`` or ``farl/celebm/448``), mapped onto our labels.

    The face is aligned with five points taken from mediapipe's mesh (iris centres, nose tip,
    mouth corners), so facer's RetinaFace detector and its weights are not needed. The parser's
    weights (``face_parsing.farl.lapa.*.pt`` / ``face_parsing.farl.celebm.*.pt``) must already be in
    ``$TORCH_HOME/hub/checkpoints`` or be given as ``weights``: nothing is downloaded.

    Mapping: see ``LAPA_TO_LABEL`` / ``CELEBM_TO_LABEL``; probabilities of their classes that map
    to one of ours are summed. After mapping, left/right pairs are checked against the landmarks
    (our ``left_eye`` must lie on the person's left of the nose bridge) and swapped if a
    checkpoint uses the image-side convention instead; earrings go to the ear on their side.
    """

    def __init__(self, model: str = "farl/lapa/448", device: str = "cpu", *, weights: str | Path | None = None,
                 detector=None) -> None:
        if model not in _FACER_MODELS:
            raise InvalidParametersError(f"unknown facer parser {model!r}; choose one of {sorted(_FACER_MODELS)}")
        try:
            import facer  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "the facer parser needs pyfacer (FaRL): pip install 'dynavatar[facer]' "
                "(or use the offline LandmarkParser)") from exc
        self.model_name = model
        self.name = f"facer-{model.replace('/', '-')}"
        self.table, prefix = _FACER_MODELS[model]
        self.weights = Path(weights) if weights is not None else _find_facer_weights(prefix, model)
        if not self.weights.is_file():
            raise DynavatarError(f"facer weights not found: {self.weights}")
        self.device = device
        self._detector = detector
        self._net = None

    def _load(self):
        if self._net is None:
            import facer

            self._net = facer.face_parser(self.model_name, device=self.device, model_path=str(self.weights))
        return self._net

    @property
    def detector(self):
        if self._detector is None:
            from .landmarks import MediapipeFaceMesh

            self._detector = MediapipeFaceMesh(max_faces=1)
        return self._detector

    def parse(self, images: np.ndarray, landmarks: np.ndarray | None = None, *,
              mattes: np.ndarray | None = None) -> np.ndarray:
        """As :class:`FaceParser`. ``mattes`` (if given) is multiplied in: outside the person
        everything is background, which the LaPa model alone cannot say (it has no body)."""
        import torch

        images = _check_images(images)
        lms = _check_landmarks(landmarks, len(images))
        mts = _check_mattes(mattes, images.shape)
        b, h, w = images.shape[:3]
        out = np.zeros((b, NUM_LABELS, h, w), np.float32)
        net = self._load()
        for i, img in enumerate(images):
            pts = lms[i] if lms is not None else _detect_landmarks(self.detector, img)
            if pts is None:
                logger.warning("facer parser: no face found in image %d; it is all background", i)
                out[i, _L["background"]] = 1.0
                continue
            five = facer_five_points(pts)
            data = {"points": torch.as_tensor(five[None], dtype=torch.float32, device=self.device),
                    "image_ids": torch.zeros(1, dtype=torch.long, device=self.device)}
            # float in [0, 1]: facer takes uint8 only when the image's max is above 1 (not for black frames)
            x = (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0).to(self.device)
            with torch.inference_mode():
                res = net(x, data)
            seg = res["seg"]
            theirs = torch.softmax(seg["logits"][0].float(), dim=0).cpu().numpy()  # [C, H, W]
            names = list(seg["label_names"])
            side = _person_side(pts, (h, w))
            mapped = _fix_sides(map_label_probs(theirs, names, self.table), side)
            if "earr" in names:  # earrings were mapped to left_ear; those on the person's right move over
                e = theirs[names.index("earr")] * (side < 0)
                mapped[_L["left_ear"]] -= e
                mapped[_L["right_ear"]] += e
            out[i] = mapped
        if mts is not None:
            fg = out[:, 1:] * mts[:, None]
            out[:, 1:] = fg
            out[:, 0] = 1.0 - fg.sum(1)
        return out


def _find_facer_weights(prefix: str, model: str) -> Path:
    from ..weights import torch_hub_checkpoints

    folder = torch_hub_checkpoints()
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.name.startswith(prefix) and f.suffix == ".pt":
                return f
    raise DynavatarError(
        f"the facer parser {model!r} needs its FaRL weights ({prefix}*.pt, e.g. "
        f"{prefix}main_ema_*_jit*.pt from https://github.com/FacePerceiver/facer/releases/tag/models-v1) "
        f"in {folder} (the torch hub cache; set TORCH_HOME to move it) or passed as FacerParser(weights=...). "
        "Nothing is downloaded here; the offline LandmarkParser needs no weights.")


def facer_five_points(points: np.ndarray) -> np.ndarray:
    """mediapipe points [478, 2+] -> the 5 points facer aligns with [5, 2], in its order: the
    image-left eye, the image-right eye, the nose tip, the image-left and image-right mouth corner."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    return np.stack([p[_IRIS_RIGHT], p[_IRIS_LEFT], p[4], p[61], p[291]])


def map_label_probs(theirs: np.ndarray, their_names: list[str], table: dict[str, str]) -> np.ndarray:
    """Probabilities over their labels [C, H, W] -> ours [K, H, W] by summing through ``table``."""
    missing = [n for n in their_names if n not in table]
    if missing:
        raise DynavatarError(f"the parser produced labels without a mapping to ours: {missing}")
    out = np.zeros((NUM_LABELS,) + theirs.shape[1:], np.float32)
    for c, n in enumerate(their_names):
        out[label_index(table[n])] += theirs[c]
    return out


def _person_side(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float32 [H, W]: > 0 on the person's left of the nose bridge, < 0 on their right
    (mediapipe's 473 is the person's left iris, 468 the right)."""
    p = np.asarray(points)[:, :2]
    axis = p[_IRIS_LEFT] - p[_IRIS_RIGHT]  # towards the person's left
    mid = p[_BRIDGE]
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32) + 0.5
    return (xs - mid[0]) * axis[0] + (ys - mid[1]) * axis[1]


def _fix_sides(probs: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Swap every left/right pair if the eyes came out on the wrong sides of the nose bridge
    (a checkpoint naming sides by the image, not the person). probs [K, H, W]; side [H, W]."""

    def lean(name: str) -> float:
        m = probs[label_index(name)]
        s = float(m.sum())
        return float((m * side).sum() / s) if s > 1e-3 else 0.0

    if lean("left_eye") < 0 < lean("right_eye"):
        probs = probs.copy()
        for a, b in _SIDE_PAIRS:
            ia, ib = label_index(a), label_index(b)
            probs[[ia, ib]] = probs[[ib, ia]]
    return probs


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

def parse_frame(parser: FaceParser, image: np.ndarray, landmarks: np.ndarray | None,
                matte: np.ndarray | None) -> np.ndarray:
    """One crop -> uint8 labels [H, W]. Landmarks are passed on only when they are mediapipe's
    478 points (a 68-point detector's are not enough; the parser then finds its own)."""
    lm = None
    if landmarks is not None and landmarks.shape[0] == N_MESH_POINTS:
        lm = np.asarray(landmarks, dtype=np.float64)
    if hasattr(parser, "parse_labels"):  # labels only, without a fresh [K, H, W] buffer a frame
        return parser.parse_labels(image, lm, matte)
    mt = None if matte is None else np.asarray(matte, dtype=np.float32)[None]
    return parse_to_labels(parser.parse(image[None], None if lm is None else lm[None], mattes=mt))[0]


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """uint8 label map [H, W] -> lossless 8-bit PNG."""
    import imageio.v3 as iio

    iio.imwrite(path, np.ascontiguousarray(labels, dtype=np.uint8))


def parse_dataset(dataset, parser: FaceParser | None = None, progress: bool = True, overwrite: bool = False):
    """Add ``parsing/%06d.png`` to a preprocessed folder that lacks it (cached datasets from
    before parsing existed), using its crops, mattes and crop landmarks; records the parser and
    label names in meta.json. Returns the reloaded :class:`~dynavatar.perceive.FrameDataset`.

    A folder that already has a complete parsing is left alone unless ``overwrite``. The maps
    are written into ``parsing.partial`` and renamed at the end, so an interrupted run leaves no
    half-parsed folder behind.
    """
    import json
    import shutil

    from tqdm.auto import tqdm

    from ..io.atomic import atomic_path
    from .dataset import FrameDataset

    ds = dataset if isinstance(dataset, FrameDataset) else FrameDataset.load(dataset)
    if ds.has_parsing and not overwrite:
        return ds
    parser = parser or LandmarkParser()
    tmp = ds.root / "parsing.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for i in tqdm(range(len(ds)), desc="parsing", disable=not progress, unit="frame"):
        labels = parse_frame(parser, ds.image(i), ds.lmk_crop[i], ds.matte(i))
        write_labels(tmp / f"{i:06d}.png", labels)
    final = ds.root / "parsing"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    meta = dict(ds.meta, parser=getattr(parser, "name", type(parser).__name__), label_names=list(LABEL_NAMES))
    with atomic_path(ds.root / "meta.json") as path:
        Path(path).write_text(json.dumps(meta, indent=1))
    return FrameDataset.load(ds.root)
