"""The one semantic label set used everywhere: parser outputs, splat labels, edit plans.

Index order is part of the on-disk format (parsing maps, saved avatars): append, never reorder.
"""

from __future__ import annotations

__all__ = ["LABEL_NAMES", "NUM_LABELS", "label_index", "LABEL_COLOURS", "REGION_TO_LABEL"]

LABEL_NAMES: tuple[str, ...] = (
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip",
    "lower_lip", "mouth_interior", "hair", "left_ear", "right_ear", "neck", "clothes", "eyeglasses",
    "headwear",
)
NUM_LABELS = len(LABEL_NAMES)

# "left"/"right" are the person's own left and right (the image's right and left in a frontal view),
# as in FLAME, mediapipe's face mesh and the CelebAMask-HQ / LaPa parsing sets.

# A fixed colour per label for overlays: uint8 RGB.
LABEL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (230, 180, 150), (110, 60, 20), (150, 80, 30), (40, 120, 255), (0, 200, 255),
    (255, 220, 0), (220, 30, 60), (160, 0, 40), (90, 0, 90), (120, 60, 200), (0, 160, 80),
    (0, 220, 120), (255, 140, 0), (60, 60, 160), (255, 0, 255), (0, 255, 0),
)

# The head model's vertex regions -> label names (the prior for splats no frame shows).
REGION_TO_LABEL: dict[str, str] = {
    "skin": "skin", "scalp": "hair", "left_brow": "left_brow", "right_brow": "right_brow",
    "left_eye": "left_eye", "right_eye": "right_eye", "nose": "nose", "upper_lip": "upper_lip",
    "lower_lip": "lower_lip", "mouth_interior": "mouth_interior", "left_ear": "left_ear",
    "right_ear": "right_ear", "neck": "neck", "torso": "clothes",
}


def label_index(name: str) -> int:
    """Index of ``name`` in LABEL_NAMES; a clear error listing the valid names otherwise."""
    try:
        return LABEL_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown label {name!r}; the labels are: {', '.join(LABEL_NAMES)}") from None
