"""``bench.error_regions``: the held-out squared error split over the outline band, the background and
the parser's label groups, checked against a pixel-by-pixel brute force and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynavatar.bench.error_regions import (REGIONS, error_shares, format_error_regions, region_squared_errors)
from dynavatar.geometry.labels import LABEL_NAMES, label_index


def _brute_force(pred, target, matte, labels, seen, px):
    """Each pixel's region by the rules of the module docstring, looked up one pixel at a time."""
    h, w = matte.shape
    hard = matte >= 0.5
    out = {k: 0.0 for k in ("outline", "background", *REGIONS, "other")}
    for y in range(h):
        for x in range(w):
            if not seen[y, x]:
                continue
            e = float(((pred[y, x] - target[y, x]) ** 2).sum())
            win = hard[max(0, y - px):y + px + 1, max(0, x - px):x + px + 1]
            name = LABEL_NAMES[labels[y, x]]
            if win.any() and not win.all():
                region = "outline"
            elif not hard[y, x] or name == "background":
                region = "background"
            else:
                region = next((r for r, members in REGIONS.items() if name in members), "other")
            out[region] += e
    return out


def test_region_errors_match_a_pixel_by_pixel_brute_force():
    rng = np.random.default_rng(0)
    h = w = 24
    pred, target = rng.random((h, w, 3)), rng.random((h, w, 3))
    matte = np.zeros((h, w))
    matte[4:20, 6:18] = 1.0
    matte[10, 12] = 0.3  # a hole inside: its own small outline
    labels = rng.integers(0, len(LABEL_NAMES), (h, w))
    seen = np.ones((h, w), bool)
    seen[:, :2] = False  # the crop's padding past the frame
    got = region_squared_errors(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(matte),
                                torch.from_numpy(labels), torch.from_numpy(seen), band_px=2)
    want = _brute_force(pred, target, matte, labels, seen, 2)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-6), k  # float32 sums
    assert got["pixels"] == seen.sum() * 3
    total = sum(want.values())
    assert total == pytest.approx(float(((pred - target) ** 2).sum(-1)[seen].sum()), rel=1e-9)  # every seen pixel counted once


def test_shares_sum_to_one_and_removing_the_only_error_leaves_none():
    h = w = 16
    target = torch.zeros(h, w, 3)
    pred = target.clone()
    matte = torch.zeros(h, w)
    matte[:, 8:] = 1.0
    labels = torch.full((h, w), label_index("hair"), dtype=torch.long)
    pred[2, 12] = 0.5  # one wrong pixel, inside the hair, away from the outline (x = 8 +- 4)
    totals = region_squared_errors(pred, target, matte, labels)
    shares = error_shares(totals)
    assert shares["hair"]["share"] == pytest.approx(1.0) and shares["hair"]["psnr_without"] == math.inf
    assert sum(s["share"] for s in shares.values()) == pytest.approx(1.0)
    mse = 0.75 / (h * w * 3)
    assert shares["face"]["psnr_without"] == pytest.approx(10 * math.log10(1 / mse))  # no face error: all of it stays
    assert format_error_regions(shares) == "hair 100 % (no error left)"
    assert format_error_regions(None) == "n/a"


def test_without_labels_everything_in_the_matte_is_other():
    h = w = 12
    pred, target = torch.ones(h, w, 3), torch.zeros(h, w, 3)
    matte = torch.ones(h, w)
    totals = region_squared_errors(pred, target, matte, None, band_px=1)
    assert totals["outline"] == 0 and totals["background"] == 0  # a matte with no contour has no outline band
    assert totals["other"] == pytest.approx(3 * h * w)
