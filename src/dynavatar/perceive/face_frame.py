"""The geometry of one face for the landmark parser: its own frame, part masks and the lines that
separate face, ears, neck and hair.

From mediapipe's 478 face-mesh points (``geometry.landmark_sets``) ``FaceFrame.build`` computes, per
pixel, coordinates in the face's own frame (``u`` across, ``v`` down the face, in face heights from the
chin: tilted heads work), the face parts as masks (polygons sampled at pixel centres, ``fill_polygon``),
distances to the face oval, what lies below the jaw line, and where the ears should be given the head's
yaw (which ear is visible) and pitch (ears move up or down).  Indices are mediapipe's; "left"/"right"
are the person's own.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..geometry.landmark_sets import FACE_MESH_POLYGONS

__all__ = ["FaceFrame", "fill_polygon", "MP_CHIN", "MP_FOREHEAD", "MP_BRIDGE", "MP_IRIS_RIGHT", "MP_IRIS_LEFT"]

# The jaw from the angle below one ear to the other, through the chin: the top of the neck.
_JAW = (58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288)
#: Single mediapipe points the parsers orient by: chin, forehead top, nose bridge, the irises' centres.
MP_CHIN, MP_FOREHEAD, MP_BRIDGE = 152, 10, 168
MP_IRIS_RIGHT, MP_IRIS_LEFT = 468, 473
_BROW_TOPS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
_EAR_BOTTOM = (58, 288)  # the oval's points at about mouth level: where ears end and the neck starts


def fill_polygon(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    """Filled polygon (pixel-edge coordinates [N, 2]) -> bool mask [H, W]: a pixel is inside when
    its centre is (even-odd rule), as a rasteriser samples it.

    Why not ``cv2.fillPoly``: it also paints every pixel its outline touches, which dilates each
    part by about half a pixel and turns a sliver thinner than a pixel into a full pixel line. On
    a closed mouth the mouth-interior polygon between the inner lip contours is such a sliver, and
    painted as a 1-px line it splits the lips in every closed-mouth frame.
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
class FaceFrame:
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
    def build(cls, points: np.ndarray, shape: tuple[int, int]) -> "FaceFrame":
        import cv2

        p3 = np.asarray(points, dtype=np.float64)  # [478, 2|3]
        p = p3[:, :2]
        h, w = shape
        chin, top = p[MP_CHIN], p[MP_FOREHEAD]
        height = max(float(np.linalg.norm(chin - top)), 1.0)
        down = (chin - top) / height
        right = np.array([down[1], -down[0]])
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        dx, dy = xs - chin[0], ys - chin[1]
        u = (dx * right[0] + dy * right[1]) / height
        v = (dx * down[0] + dy * down[1]) / height

        def level(idx) -> float:
            return float(np.mean((p[list(idx)] - chin) @ down) / height)

        parts = {name: fill_polygon(shape, p[list(idx)]) for name, idx in FACE_MESH_POLYGONS.items()}
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
        below_jaw = fill_polygon(shape, _below_jaw_outline(p, chin, down, right, height, sides)) & ~parts["face_oval"]
        return cls(u, v, height, parts, dist_out, dist_in, below_jaw, level(_BROW_TOPS),
                   level((MP_IRIS_RIGHT, MP_IRIS_LEFT)), level(_EAR_BOTTOM), _ear_shift(p3, down), u_of(MP_BRIDGE),
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
    along = points[MP_CHIN] - points[MP_FOREHEAD]  # [3] down the face
    back = np.cross(across, along)
    norm = float(np.linalg.norm(back))
    if norm < 1e-9 or not np.isfinite(norm):
        return 0.0
    back = back / norm
    level_back = np.array([0.0, -0.2])
    return float(np.clip((back[:2] - level_back) @ down * 0.35, -0.25, 0.25))
