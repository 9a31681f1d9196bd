"""The one semantic label set used everywhere: parser outputs, splat labels, edit plans.

Index order is part of the on-disk format (parsing maps, saved avatars): append, never reorder.
Version 2 appended ``iris``, ``sclera`` and ``teeth``: the eye opening split into the coloured disc
and the white around it (an eye-colour edit means the iris only), and the bright teeth inside the
mouth. ``left_eye`` / ``right_eye`` stay for eye-opening pixels a parser cannot split (avatars
labelled before version 2 have only them); the group "eyes" (``semantics.metrics.LABEL_GROUPS``)
is all four, so old prompts and masks still mean the whole eye. Saved avatars of version 1 carry
17 label columns: ``upgrade_label_columns`` maps them by name.
"""

from __future__ import annotations

__all__ = ["LABEL_NAMES", "NUM_LABELS", "label_index", "LABEL_COLOURS", "REGION_TO_LABEL", "LEGACY_LABEL_NAMES",
           "labels_by_name", "upgrade_label_columns"]

LABEL_NAMES: tuple[str, ...] = (
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip",
    "lower_lip", "mouth_interior", "hair", "left_ear", "right_ear", "neck", "clothes", "eyeglasses",
    "headwear", "iris", "sclera", "teeth",
)
#: The label list of saved avatars and parsed datasets written before iris, sclera and teeth existed.
LEGACY_LABEL_NAMES: tuple[str, ...] = LABEL_NAMES[:17]
NUM_LABELS = len(LABEL_NAMES)

# "left"/"right" are the person's own left and right (the image's right and left in a frontal view),
# as in FLAME, mediapipe's face mesh and the CelebAMask-HQ / LaPa parsing sets.

# A fixed colour per label for overlays: uint8 RGB.
LABEL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (230, 180, 150), (110, 60, 20), (150, 80, 30), (40, 120, 255), (0, 200, 255),
    (255, 220, 0), (220, 30, 60), (160, 0, 40), (90, 0, 90), (120, 60, 200), (0, 160, 80),
    (0, 220, 120), (255, 140, 0), (60, 60, 160), (255, 0, 255), (0, 255, 0), (0, 70, 170), (235, 235, 250),
    (255, 250, 160),
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


def labels_by_name(labels, names) -> "object":
    """Label columns ``labels`` [N, len(names)] (torch or numpy) whose column j is label ``names[j]``
    -> [N, NUM_LABELS] in today's order; labels the old list lacks get 0. Matching is by name, never
    by position, so a list written by any version maps right."""
    names = list(names)
    if labels.shape[-1] != len(names):
        raise ValueError(f"{labels.shape[-1]} label columns but {len(names)} label names")
    unknown = [n for n in names if n not in LABEL_NAMES]
    if unknown:
        raise ValueError(f"unknown labels {unknown}; the labels are: {', '.join(LABEL_NAMES)}")
    shape = tuple(labels.shape[:-1]) + (NUM_LABELS,)
    out = labels.new_zeros(shape) if hasattr(labels, "new_zeros") else __import__("numpy").zeros(shape, labels.dtype)
    for j, n in enumerate(names):
        out[..., LABEL_NAMES.index(n)] = labels[..., j]
    return out


def upgrade_label_columns(labels, names=None):
    """A saved avatar's label tensor [N, K] in today's column order: unchanged when K is 0 (not yet
    labelled) or ``NUM_LABELS``; mapped by name from ``names`` (the list saved with it) or, for the
    17 columns of avatars saved before version 2, from ``LEGACY_LABEL_NAMES``. -> [N, NUM_LABELS]"""
    k = labels.shape[-1]
    if k == 0:
        return labels
    if names is not None:
        return labels_by_name(labels, names)
    if k in (0, NUM_LABELS):
        return labels
    if k == len(LEGACY_LABEL_NAMES):
        return labels_by_name(labels, LEGACY_LABEL_NAMES)
    raise ValueError(f"{k} label columns match no known label list (today's has {NUM_LABELS}, the old one "
                     f"{len(LEGACY_LABEL_NAMES)}); re-label the avatar with avatar.label_splats()")
