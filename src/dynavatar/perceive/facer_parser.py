"""The real face-parsing backend: pyfacer's FaRL parsers (LaPa or CelebAMask-HQ labels), mapped onto
our labels with explicit tables.

pyfacer is imported on first use (``pip install 'dynavatar[facer]'``); its weights are given, or come
from the torch hub cache, or are fetched there on first use (``dynavatar.hub.resolve_weights``, names
"farl" and "farl-celebm") unless ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DynavatarError, InvalidParametersError, MissingDependencyError
from ..geometry.labels import LABEL_NAMES, NUM_LABELS, label_index
from ..hub import MissingWeightsError, resolve_weights
from .face_frame import MP_BRIDGE, MP_IRIS_LEFT, MP_IRIS_RIGHT
from .face_parser import check_images, check_landmarks, check_mattes, detect_landmarks
from .landmarks import MediapipeFaceMesh

__all__ = ["FacerParser", "LAPA_TO_LABEL", "CELEBM_TO_LABEL", "facer_five_points", "map_label_probs"]

logger = logging.getLogger("dynavatar.perceive")

_L = {name: i for i, name in enumerate(LABEL_NAMES)}

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
# facer's model names -> (label table, the weights' name in dynavatar.weights.KNOWN_WEIGHTS).
_FACER_MODELS = {
    "farl/lapa/448": (LAPA_TO_LABEL, "farl"),
    "farl/celebm/448": (CELEBM_TO_LABEL, "farl-celebm"),
}
_SIDE_PAIRS = (("left_eye", "right_eye"), ("left_brow", "right_brow"), ("left_ear", "right_ear"))


class FacerParser:
    """pyfacer's FaRL face parser (``farl/lapa/448`` or ``farl/celebm/448``), mapped onto our labels.

    The face is aligned with five points taken from mediapipe's mesh (iris centres, nose tip,
    mouth corners), so facer's RetinaFace detector and its weights are not needed. The parser's
    weights (``face_parsing.farl.lapa.*.pt`` / ``face_parsing.farl.celebm.*.pt``) are given as
    ``weights``, or found in ``$TORCH_HOME/hub/checkpoints``, or fetched there on first use (with a
    progress bar) unless ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``.

    Mapping: see ``LAPA_TO_LABEL`` / ``CELEBM_TO_LABEL``; probabilities of their classes that map
    to one of ours are summed. After mapping, left/right pairs are checked against the landmarks
    (our ``left_eye`` must lie on the person's left of the nose bridge) and swapped if a
    checkpoint uses the image-side convention instead; earrings go to the ear on their side.
    """

    def __init__(self, model: str = "farl/lapa/448", device: str = "cpu", *, weights: str | Path | None = None,
                 detector=None, local_files_only: bool | None = None) -> None:
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
        self.table, known = _FACER_MODELS[model]
        self.weights = Path(weights) if weights is not None else _resolve(known, model, local_files_only)
        if not self.weights.is_file():
            raise DynavatarError(f"facer weights not found: {self.weights}; pass the .pt file as weights=...")
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
            self._detector = MediapipeFaceMesh(max_faces=1)
        return self._detector

    def parse(self, images: np.ndarray, landmarks: np.ndarray | None = None, *,
              mattes: np.ndarray | None = None) -> np.ndarray:
        """As :class:`FaceParser`. ``mattes`` (if given) is multiplied in: outside the person
        everything is background, which the LaPa model alone cannot say (it has no body)."""
        import torch

        images = check_images(images)
        lms = check_landmarks(landmarks, len(images))
        mts = check_mattes(mattes, images.shape)
        b, h, w = images.shape[:3]
        out = np.zeros((b, NUM_LABELS, h, w), np.float32)
        net = self._load()
        for i, img in enumerate(images):
            pts = lms[i] if lms is not None else detect_landmarks(self.detector, img)
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


def _resolve(known: str, model: str, local_files_only: bool | None) -> Path:
    """The checkpoint file (cached, or fetched unless offline); absent offline, the way on without it."""
    try:
        return resolve_weights(known, local_files_only=local_files_only, what=f"facer parser {model!r}")
    except MissingWeightsError as exc:
        raise type(exc)(f"{exc} The offline LandmarkParser needs no weights.") from exc


def facer_five_points(points: np.ndarray) -> np.ndarray:
    """mediapipe points [478, 2+] -> the 5 points facer aligns with [5, 2], in its order: the
    image-left eye, the image-right eye, the nose tip, the image-left and image-right mouth corner."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    return np.stack([p[MP_IRIS_RIGHT], p[MP_IRIS_LEFT], p[4], p[61], p[291]])


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
    axis = p[MP_IRIS_LEFT] - p[MP_IRIS_RIGHT]  # towards the person's left
    mid = p[MP_BRIDGE]
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
