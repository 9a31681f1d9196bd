"""Face detection + dense landmarks behind one protocol.

Backend: mediapipe 0.10.21 face mesh (478 points with iris refinement; its models ship inside the
wheel, so it runs offline). The tracker and the parser need those 478 points; another detector plugs in
through the ``LandmarkDetector`` protocol.

Mediapipe's face detector misses faces under ~100 px, so :class:`MediapipeFaceMesh` retries on
upscaled overlapping tiles before it reports "no face", and :func:`follow_face` looks first in a
window around the previous frame's face (which keeps faces large and follows one person).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError
from .quiet import quiet_native_logs, settle_graph

__all__ = ["FaceLandmarks", "LandmarkDetector", "MediapipeFaceMesh", "follow_face", "bbox_iou"]


@dataclasses.dataclass
class FaceLandmarks:
    points: np.ndarray  # [L, 3] x, y in pixels of the image given; z relative depth in pixels
    bbox: np.ndarray  # [4] x0, y0, x1, y1 (pixels) of the landmarks

    @property
    def size(self) -> float:
        return float(max(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))

    def moved(self, offset_xy: np.ndarray, scale: float) -> "FaceLandmarks":
        """Landmarks of a crop mapped back: original = crop / scale + offset."""
        p = self.points.copy()
        p[:, :2] = p[:, :2] / scale + offset_xy
        p[:, 2] = p[:, 2] / scale
        return FaceLandmarks(p, _bbox(p))


def _bbox(points: np.ndarray) -> np.ndarray:
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])


def bbox_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class LandmarkDetector(Protocol):
    n_points: int
    name: str

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        """All faces in an RGB uint8 image [H, W, 3]."""
        ...


class MediapipeFaceMesh:
    """mediapipe face mesh, 478 points (468 + 10 iris), offline."""

    n_points = 478
    name = "mediapipe-facemesh"

    def __init__(self, max_faces: int = 3, min_detection_confidence: float = 0.5, tile_retry: bool = True) -> None:
        with quiet_native_logs():  # mediapipe's native logs (glog/absl/TF-Lite) stay off the terminal
            try:
                from mediapipe.python.solutions import face_mesh
            except ImportError as exc:  # pragma: no cover - mediapipe is a core dependency
                raise MissingDependencyError("mediapipe is needed for landmarks: "
                                             "pip install mediapipe==0.10.21") from exc
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                                            min_detection_confidence=min_detection_confidence)
            settle_graph(self._mesh)  # its models load (and log) on the graph's threads: wait for them here
        self.tile_retry = tile_retry

    def _run(self, image: np.ndarray) -> list[FaceLandmarks]:
        h, w = image.shape[:2]
        with quiet_native_logs():  # the graph starts (and logs) on the first call
            res = self._mesh.process(np.ascontiguousarray(image))
        faces = []
        for lm in res.multi_face_landmarks or []:
            p = np.array([(q.x * w, q.y * h, q.z * w) for q in lm.landmark], dtype=np.float64)
            faces.append(FaceLandmarks(p, _bbox(p)))
        return faces

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        faces = self._run(image)
        if faces or not self.tile_retry:
            return faces
        return self._detect_tiles(image)

    def _detect_tiles(self, image: np.ndarray) -> list[FaceLandmarks]:
        """Small faces: overlapping tiles at decreasing sizes (half the frame, 480 px, 320 px),
        each upscaled to 640 px, until a level finds faces; duplicates are merged."""
        import cv2

        h, w = image.shape[:2]
        for tile in (max(h, w) // 2, 480, 320):
            if tile < 160 or tile >= max(h, w):
                continue
            found: list[FaceLandmarks] = []
            ys = np.arange(0, max(h - tile, 0) + 1, tile // 2)
            xs = np.arange(0, max(w - tile, 0) + 1, tile // 2)
            for y0 in np.unique(np.append(ys, max(h - tile, 0))):
                for x0 in np.unique(np.append(xs, max(w - tile, 0))):
                    crop = image[y0:y0 + tile, x0:x0 + tile]
                    scale = 640.0 / max(crop.shape[:2])
                    up = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
                    for f in self._run(up):
                        f = f.moved(np.array([x0, y0], dtype=np.float64), scale)
                        if all(bbox_iou(f.bbox, g.bbox) < 0.3 for g in found):
                            found.append(f)
            if found:
                return found
        return []

    def close(self) -> None:
        with quiet_native_logs():
            self._mesh.close()


def follow_face(detector: LandmarkDetector, image: np.ndarray, previous: FaceLandmarks | None,
                window: float = 2.2) -> tuple[FaceLandmarks | None, int]:
    """Find the tracked person's face in ``image``.

    With a previous face, look first in a square window ``window`` times its size around it
    (upscaled when small); otherwise, or if that fails, search the whole frame. Among several
    faces, keep the one that overlaps the previous face most, else the largest.
    Returns the face (or None) and how many faces were seen.
    """
    import cv2

    h, w = image.shape[:2]
    if previous is not None:
        cx, cy = (previous.bbox[:2] + previous.bbox[2:]) / 2
        half = previous.size * window / 2
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
        if x1 - x0 > 16 and y1 - y0 > 16:
            crop = image[y0:y1, x0:x1]
            scale = max(1.0, 384.0 / max(crop.shape[:2]))
            if scale > 1.0:
                crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            faces = [f.moved(np.array([x0, y0], dtype=np.float64), scale) for f in detector.detect(crop)]
            best = _choose(faces, previous)
            if best is not None and bbox_iou(best.bbox, previous.bbox) > 0.2:
                return best, len(faces)
    faces = detector.detect(image)
    return _choose(faces, previous), len(faces)


def _choose(faces: list[FaceLandmarks], previous: FaceLandmarks | None) -> FaceLandmarks | None:
    if not faces:
        return None
    if previous is not None:
        ious = [bbox_iou(f.bbox, previous.bbox) for f in faces]
        if max(ious) > 0.1:
            return faces[int(np.argmax(ious))]
    return max(faces, key=lambda f: f.size)
