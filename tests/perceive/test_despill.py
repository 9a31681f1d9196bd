"""A chroma-key backdrop's light off the person (``matting.despill``): grey hair lit green goes back
to grey, skin keeps its colour, the backdrop itself and other backdrops are left alone, and a fit's
targets take it only when the fit recorded it."""

from __future__ import annotations

import numpy as np
import pytest

from dynavatar.perceive.matting import despill

GREEN_SCREEN = (56, 127, 87)  # d0's backdrop, 0-255
SKIN = (205, 160, 135)


def _frame(backdrop, person_rgb) -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 frame: the backdrop, with a 20x20 person square in the middle (alpha 1) whose left
    half is ``person_rgb`` and right half skin. -> image uint8 [40, 40, 3], alpha float [40, 40]"""
    img = np.empty((40, 40, 3), np.uint8)
    img[:] = backdrop
    img[10:30, 10:20] = person_rgb
    img[10:30, 20:30] = SKIN
    alpha = np.zeros((40, 40), np.float32)
    alpha[10:30, 10:30] = 1.0
    return img, alpha


def test_green_spill_on_grey_hair_is_limited_and_skin_and_backdrop_keep_their_colour():
    spilled_grey = (60, 78, 58)  # grey hair lit by the green screen: green above both red and blue
    img, alpha = _frame(GREEN_SCREEN, spilled_grey)
    out = despill(img, alpha)
    assert tuple(out[15, 12]) == (60, 60, 58)  # green limited to max(red, blue)
    assert tuple(out[15, 25]) == SKIN  # more red than green: untouched
    assert tuple(out[2, 2]) == GREEN_SCREEN  # not the person: untouched (the composite drops it)


def test_blue_screen_limits_blue_the_same_way():
    img, alpha = _frame((40, 70, 170), (60, 62, 85))
    out = despill(img, alpha)
    assert tuple(out[15, 12]) == (60, 62, 62)
    assert tuple(out[15, 25]) == SKIN


@pytest.mark.parametrize("backdrop", [(200, 60, 50),  # red: limiting red would take it out of the skin
                                      (198, 205, 248),  # lavender wall (wojtek): blue, but pale: no key
                                      (150, 105, 50),  # wood (d12)
                                      (83, 88, 86)])  # grey (d18)
def test_backdrops_that_are_no_key_leave_the_image_as_it_is(backdrop):
    img, alpha = _frame(backdrop, (60, 78, 58))
    assert np.array_equal(despill(img, alpha), img)


def test_padding_past_the_frame_is_not_taken_for_the_backdrop():
    """Black padding (``inside`` False) is neither backdrop nor person: a crop mostly padding with a
    green strip still sees a green key, and one whose only background is padding sees none."""
    img, alpha = _frame(GREEN_SCREEN, (60, 78, 58))
    inside = np.ones((40, 40), bool)
    inside[:, :8] = False
    img[:, :8] = 0
    assert tuple(despill(img, alpha, inside)[15, 12]) == (60, 60, 58)
    nothing = np.zeros((40, 40), bool)
    nothing[10:30, 10:30] = True  # only the person is inside the frame
    assert np.array_equal(despill(img, alpha, nothing), img)
