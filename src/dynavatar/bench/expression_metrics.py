"""How much an expression edit shows, measured on the rendered pictures with the landmark detector.

An expression edit changes FLAME parameters; whether a person *sees* it depends on how far the mouth
corners, lips, lids and brows move in the picture. ``measure_expression(before, after)`` finds the
face in both renders (mediapipe face mesh, offline), aligns the after-landmarks onto the before ones
on points no expression moves (nose bridge, forehead, face outline at the temples: a similarity
transform, so a pixel of head jitter is not read as a smile), and reports every figure in the
before-picture's face frame: x along the eye line, y up, lengths in units of the inter-ocular
distance (IOD: between the two eyes' centres, the midpoints of their corners).

``EXPRESSION_TARGETS`` says how large each named expression's change must be at plain strength to be
visible at a glance. Why these numbers (IOD ~ 62 mm on an adult, so 0.01 IOD ~ 0.6 mm, about a
pixel at 512 px head-and-shoulders framing):

* the landmark detector's own noise on two renders of the same face is below 0.005 IOD on every
  figure and below 2 % on ratios (measured on the demo head), so every threshold is 6x or more above it;
* a posed social smile moves each mouth corner up by 3-6 mm and out by 3-5 mm (mouth 10-20 % wider):
  plain strength must reach the lower end, corners up >= 0.04 IOD (2.5 mm) and width +6 %;
* a frown (corners pulled down, depressor anguli oris) is smaller in real faces: >= 0.03 IOD down;
* "open mouth": the lips part by at least 0.15 IOD (9 mm, a clearly open mouth; speech is 2-8 mm);
* "close the eyes": the eye aspect ratio falls to at most 35 % of the open eye's (lids meet; the
  detector keeps a few pixels of lid margin even on shut eyes);
* "raise the eyebrows": brows at least 0.04 IOD (2.5 mm) further from the eyes (a full raise is 6-10 mm);
* "surprised": brows up >= 0.04 IOD, lips apart by >= 0.06 IOD and the eyes no less open than before.

Signature kept stable for ``bench edit``: uint8 [H, W, 3] RGB in, dict of floats out, one-line
DynavatarError (NoFaceError) when either picture has no face.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, NoFaceError

__all__ = ["EXPRESSION_TARGETS", "EXPRESSION_FIGURES", "measure_expression", "expression_landmarks",
           "meets_target", "face_frame_figures"]

# ------------------------------------------------------------------------ mediapipe face-mesh indices
_RIGHT_EYE = (33, 160, 158, 133, 153, 144)  # p1 outer corner, p2 p3 upper lid, p4 inner corner, p5 p6 lower lid
_LEFT_EYE = (263, 387, 385, 362, 380, 373)
_MOUTH_CORNERS = (61, 291)  # right, left outer corners
_INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))  # upper inner lip above lower inner lip
_RIGHT_BROW = (70, 63, 105, 66, 107)
_LEFT_BROW = (300, 293, 334, 296, 336)
# points that no expression moves: the nose bridge and ridge, the forehead, the face outline at the temples
_RIGID = (6, 168, 197, 195, 5, 4, 1, 8, 9, 151, 10, 109, 338, 67, 297, 127, 356, 234, 454, 33, 133, 362, 263)

#: Every figure ``measure_expression`` returns (IOD units unless said otherwise).
EXPRESSION_FIGURES = (
    "iod_px",  # inter-ocular distance in the before picture, pixels
    "corner_rise",  # mean upward motion of the two mouth corners (negative: a drop)
    "corner_drop",  # -corner_rise
    "mouth_width_change",  # relative change of the corner-to-corner width (0.06 = 6 % wider)
    "lip_gap_before", "lip_gap_after", "lip_gap_change",  # inner-lip gap (mean of three pairs)
    "ear_before", "ear_after", "ear_ratio",  # eye aspect ratio (mean of both eyes), after / before
    "brow_raise",  # change of the brow-to-eye-centre distance
    "asymmetry",  # |left corner rise - right corner rise|: a lopsided edit shows here
)

#: Minimum change each named expression must reach at plain strength to be visible at a glance:
#: {expression: {figure: (">=" or "<=", threshold)}} (the justification is the module docstring).
EXPRESSION_TARGETS: dict[str, dict[str, tuple[str, float]]] = {
    "smile": {"corner_rise": (">=", 0.04), "mouth_width_change": (">=", 0.06)},
    "frown": {"corner_drop": (">=", 0.03)},
    "open_mouth": {"lip_gap_change": (">=", 0.15)},
    "closed_eyes": {"ear_ratio": ("<=", 0.35)},
    "raised_brows": {"brow_raise": (">=", 0.04)},
    "surprise": {"brow_raise": (">=", 0.04), "lip_gap_change": (">=", 0.06), "ear_ratio": (">=", 0.95)},
}

_DETECTOR = None  # one face mesh per process: building it loads its models (about half a second)


def _detector():
    global _DETECTOR
    if _DETECTOR is None:
        from ..perceive.landmarks import MediapipeFaceMesh

        _DETECTOR = MediapipeFaceMesh(max_faces=1)
    return _DETECTOR


def expression_landmarks(image: np.ndarray, detector=None, what: str = "picture") -> np.ndarray:
    """The 478 face-mesh points (x, y pixels) of the largest face in uint8 RGB ``image`` [H, W, 3].

    Small faces are upscaled first (mediapipe misses faces under ~100 px and is coarse below 200 px).
    -> [478, 2] float64. Raises NoFaceError (one line) when there is no face."""
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ConfigError(f"the {what} must be a uint8 RGB image [H, W, 3], got {img.dtype} {img.shape}; "
                          "convert it with (rgb * 255).round().astype(np.uint8)")
    scale = max(1.0, 384.0 / max(img.shape[:2]))
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale > 1 else img
    # always framed by a margin of the picture's edge colour: the face detector misses a face that fills
    # the picture (a close crop), and both pictures must go through the same steps to be compared
    pad = big.shape[0] // 4
    edge = np.concatenate([big[0], big[-1], big[:, 0], big[:, -1]]).mean(0)
    framed = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=[int(c) for c in edge])
    faces = (detector or _detector()).detect(framed)
    if not faces:
        raise NoFaceError(f"no face found in the {what} ({img.shape[1]}x{img.shape[0]}); render it larger or "
                          "more frontal so the landmark detector can measure the expression")
    face = max(faces, key=lambda f: f.size)
    return (face.points[:, :2] - pad) / scale


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares scale s, rotation R [2, 2], translation t [2] with s R src + t ~ dst (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1.0, d])
    R = u @ D @ vt
    s = float((sig * np.diag(D)).sum() / (a ** 2).sum())
    return s, R, md - s * R @ ms


def _eye_centres(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right and left eye centres: the midpoints of each eye's corners (the lids do not move them)."""
    return (p[_RIGHT_EYE[0]] + p[_RIGHT_EYE[3]]) / 2, (p[_LEFT_EYE[0]] + p[_LEFT_EYE[3]]) / 2


def _ear(p: np.ndarray, idx: tuple[int, ...]) -> float:
    """Eye aspect ratio (Soukupova & Cech): lid openings over the corner distance."""
    p1, p2, p3, p4, p5, p6 = (p[i] for i in idx)
    return float((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2 * np.linalg.norm(p1 - p4)))


def face_frame_figures(p: np.ndarray, origin: np.ndarray, axes: np.ndarray, iod: float) -> dict[str, float]:
    """Expression figures of one set of landmarks [478, 2] in a face frame (origin [2], axes [2, 2]
    rows = x along the eye line, y up; lengths / ``iod``): corners (x, y), width, lip gap, EAR, brows."""
    q = (p - origin) @ axes.T / iod  # [478, 2] face frame, IOD units
    eye_y = (q[_RIGHT_EYE[0], 1] + q[_RIGHT_EYE[3], 1] + q[_LEFT_EYE[0], 1] + q[_LEFT_EYE[3], 1]) / 4
    return {
        "corner_right_y": float(q[_MOUTH_CORNERS[0], 1]), "corner_left_y": float(q[_MOUTH_CORNERS[1], 1]),
        "width": float(np.linalg.norm(q[_MOUTH_CORNERS[1]] - q[_MOUTH_CORNERS[0]])),
        "lip_gap": float(np.mean([np.linalg.norm(q[a] - q[b]) for a, b in _INNER_LIP_PAIRS])),
        "ear": (_ear(p, _RIGHT_EYE) + _ear(p, _LEFT_EYE)) / 2,
        "brow": float(q[list(_RIGHT_BROW + _LEFT_BROW), 1].mean() - eye_y),
    }


def measure_expression(before_rgb: np.ndarray, after_rgb: np.ndarray, detector=None) -> dict[str, float]:
    """How much the face's expression changed from ``before_rgb`` to ``after_rgb`` (uint8 [H, W, 3],
    the same view of the same avatar) -> {EXPRESSION_FIGURES name: float}.

    ``detector``: a ``perceive.landmarks.LandmarkDetector`` with mediapipe's 478-point layout
    (default: the offline mediapipe face mesh, built once per process)."""
    pb = expression_landmarks(before_rgb, detector, "before picture")
    pa = expression_landmarks(after_rgb, detector, "after picture")
    s, R, t = _similarity(pa[list(_RIGID)], pb[list(_RIGID)])
    pa = s * pa @ R.T + t  # the after face laid onto the before face's rigid points
    right, left = _eye_centres(pb)
    iod = float(np.linalg.norm(left - right))
    if iod < 4.0:
        raise NoFaceError(f"the face in the before picture is too small to measure (eyes {iod:.1f} px apart); "
                          "render it at 256 px or more")
    x = (left - right) / iod  # image x of the subject's left is the picture's right: x runs right -> left eye
    axes = np.stack([x, np.array([x[1], -x[0]])])  # y up: image y grows downwards
    if axes[1] @ np.array([0.0, -1.0]) < 0:
        axes[1] = -axes[1]
    origin = (left + right) / 2
    fb, fa = (face_frame_figures(p, origin, axes, iod) for p in (pb, pa))
    rise_r = fa["corner_right_y"] - fb["corner_right_y"]
    rise_l = fa["corner_left_y"] - fb["corner_left_y"]
    rise = (rise_r + rise_l) / 2
    return {
        "iod_px": iod,
        "corner_rise": rise,
        "corner_drop": -rise,
        "mouth_width_change": fa["width"] / fb["width"] - 1.0,
        "lip_gap_before": fb["lip_gap"], "lip_gap_after": fa["lip_gap"],
        "lip_gap_change": fa["lip_gap"] - fb["lip_gap"],
        "ear_before": fb["ear"], "ear_after": fa["ear"], "ear_ratio": fa["ear"] / max(fb["ear"], 1e-6),
        "brow_raise": fa["brow"] - fb["brow"],
        "asymmetry": abs(rise_l - rise_r),
    }


def meets_target(expression: str, figures: dict[str, float]) -> dict[str, bool]:
    """Which of ``expression``'s EXPRESSION_TARGETS the measured ``figures`` reach -> {figure: ok}."""
    if expression not in EXPRESSION_TARGETS:
        raise ConfigError(f"no visibility target for expression {expression!r}; "
                          f"choose one of: {', '.join(EXPRESSION_TARGETS)}")
    out = {}
    for name, (op, threshold) in EXPRESSION_TARGETS[expression].items():
        v = figures[name]
        out[name] = bool(v >= threshold if op == ">=" else v <= threshold)
    return out
