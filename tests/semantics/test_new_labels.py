"""Labels iris, sclera and teeth: the parser's rules, old avatars' label columns mapped by name,
the colour split for avatars labelled before, and "eyes" still meaning the whole eye."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from dynavatar.geometry.labels import (LABEL_COLOURS, LABEL_NAMES, LEGACY_LABEL_NAMES, NUM_LABELS, label_index,
                                       labels_by_name, upgrade_label_columns)
from dynavatar.perceive.landmark_parser import paint_teeth, split_eyes
from dynavatar.semantics.avatar_labels import has_iris_labels, label_group_indices, split_eye_and_mouth_labels


def test_new_labels_are_appended_so_old_indices_keep_their_meaning():
    assert LABEL_NAMES[:17] == LEGACY_LABEL_NAMES and LABEL_NAMES[17:] == ("iris", "sclera", "teeth")
    assert len(LABEL_COLOURS) == NUM_LABELS == 20 and len(set(LABEL_COLOURS)) == NUM_LABELS


def test_old_label_columns_map_by_name():
    old = torch.rand(5, 17)
    new = upgrade_label_columns(old)
    assert new.shape == (5, NUM_LABELS)
    for j, name in enumerate(LEGACY_LABEL_NAMES):
        assert torch.equal(new[:, label_index(name)], old[:, j])
    assert new[:, 17:].abs().sum() == 0
    # a saved list in another order maps by name, not position (numpy too)
    names = ["hair", "iris", "background"]
    m = labels_by_name(np.array([[0.5, 0.3, 0.2]]), names)
    assert m[0, label_index("hair")] == 0.5 and m[0, label_index("iris")] == 0.3 and m[0, 0] == 0.2
    assert upgrade_label_columns(torch.zeros(3, 0)).shape == (3, 0)
    with pytest.raises(ValueError, match="re-label"):
        upgrade_label_columns(torch.zeros(3, 12))


def test_eyes_group_is_the_whole_opening():
    assert set(label_group_indices("eyes")) == {label_index(n) for n in ("left_eye", "right_eye", "iris", "sclera")}
    assert label_group_indices("iris") == [label_index("iris")]


def _face(h: int, w: int, right_eye: np.ndarray, left_eye: np.ndarray):
    return types.SimpleNamespace(parts={"right_eye": right_eye, "left_eye": left_eye})


def test_parser_splits_eye_openings_into_iris_and_sclera():
    h, w = 20, 40
    labels = np.zeros((h, w), np.uint8)
    right = np.zeros((h, w), bool)
    right[8:13, 4:18] = True
    left = np.zeros((h, w), bool)
    left[8:13, 24:36] = True
    labels[right], labels[left] = label_index("right_eye"), label_index("left_eye")
    pts = np.zeros((478, 2))
    pts[468], pts[469:473] = (11.0, 10.5), (11.0, 10.5) + 3.0 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])
    pts[473], pts[474:478] = (30.0, 40.0), (30.0, 40.0) + 2.0 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])
    split_eyes(labels, _face(h, w, right, left), pts)
    iris = labels == label_index("iris")
    assert iris[right].sum() > 10 and iris[10, 11] and not iris[10, 4], "a disc around the iris centre"
    assert ((labels == label_index("sclera")) | iris)[right].all()
    assert not iris[~right].any(), "clipped to the opening"
    # the left iris centre is far outside its opening: that eye is left as it was
    assert (labels[left] == label_index("left_eye")).all()


def test_parser_paints_bright_grey_mouth_pixels_as_teeth():
    labels = np.full((4, 6), label_index("mouth_interior"), np.uint8)
    lab = np.zeros((4, 6, 3), np.float32)
    lab[:, :3] = (80.0, 2.0, 8.0)  # teeth: light, low chroma
    lab[:, 3:] = (45.0, 30.0, 15.0)  # tongue: darker and red
    paint_teeth(labels, None, lab, skin_lightness=70.0)
    assert (labels[:, :3] == label_index("teeth")).all() and (labels[:, 3:] == label_index("mouth_interior")).all()


def test_avatars_labelled_before_get_iris_sclera_and_teeth_by_colour():
    labels = torch.zeros(24, NUM_LABELS)
    labels[:12, label_index("left_eye")] = 1.0
    labels[12:, label_index("mouth_interior")] = 1.0
    rgb = torch.tensor([[0.92, 0.9, 0.88]] * 6 + [[0.3, 0.45, 0.7]] * 6 + [[0.95, 0.93, 0.86]] * 5
                       + [[0.5, 0.1, 0.12]] * 7)
    assert not has_iris_labels(labels)
    out = split_eye_and_mouth_labels(labels, rgb)
    names = [LABEL_NAMES[i] for i in out.argmax(1)]
    assert names == ["sclera"] * 6 + ["iris"] * 6 + ["teeth"] * 5 + ["mouth_interior"] * 7
    assert torch.allclose(out.sum(1), labels.sum(1)) and has_iris_labels(out)
