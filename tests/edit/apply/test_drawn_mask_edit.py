"""Editing a region drawn on one frame (DynamicAvatars' mask mapping, edit/apply/region.py
``DrawnRegion``): the splats under the mask are edited, and at other times and head turns the
changed pixels coincide with the mask carried there by the exact route (IoU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynavatar.edit import EditPlan
from dynavatar.edit.apply.keyframes import rotate_head
from dynavatar.edit.apply.loop import EditConfig
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.errors import DynavatarError

# regions are the plan's words; the drawn mask decides where
RED = EditPlan(prompt="make it red", kind="colour", regions=["skin"], instruction="make it red",
               colour=(0.9, 0.05, 0.05), colour_name="red")
CFG = EditConfig(keyframes=3, steps=25, reedit_every=0, w_adv=0.0, lr_colour=5e-2)


@pytest.fixture(scope="module")
def avatar(tiny_labelled_avatar):
    return tiny_labelled_avatar  # conftest.py: fitted to a tiny synthetic clip and labelled, built once


def _drawn(avatar, frame: int) -> np.ndarray:
    """A box over the upper middle of the head on ``frame``'s render (what a user might scribble)."""
    alpha = avatar.render(frame=frame).astype(int).sum(-1) < 3 * 250  # not background
    ys, xs = np.nonzero(alpha)
    m = np.zeros_like(alpha)
    y0, y1 = ys.min(), ys.min() + (ys.max() - ys.min()) // 2
    x0, x1 = np.percentile(xs, 30).astype(int), np.percentile(xs, 70).astype(int)
    m[y0:y1, x0:x1] = True
    return m


def test_drawn_mask_edit_stays_in_the_propagated_mask(avatar):
    frame = 0
    drawn = _drawn(avatar, frame)
    edited = avatar.edit(RED, editor=PaletteEditor(), config=CFG, progress=False, mask=drawn, frame=frame)
    rec = edited.meta["edits"][-1]
    assert rec["mask_route"] == "exact" and rec["splats_edited"] > 0
    sel = avatar.splats_under_mask(drawn, frame=frame)
    assert torch.equal(edited.gaussians.sh[~sel], avatar.gaussians.sh[~sel])  # only the drawn splats changed
    n = avatar.params.batch_size
    poses = [{"frame": f} for f in (n // 2, n - 1)]
    poses.append({"params": rotate_head(avatar.params[n // 2], 0.4), "camera": avatar.cameras[n // 2]})
    ious = []
    for kw in poses:
        changed = np.abs(edited.render(**kw).astype(int) - avatar.render(**kw).astype(int)).max(-1) > 12
        mapped = avatar.render_selection(sel, **kw) > 0.5
        ious.append((changed & mapped).sum() / max((changed | mapped).sum(), 1))
    print("IoU of changed pixels vs the propagated mask:", [round(float(i), 3) for i in ious])
    assert min(ious) >= 0.7, ious  # measured 0.91-0.93 (32 px synthetic clip)


def test_drawn_mask_errors_are_one_line(avatar):
    drawn = _drawn(avatar, 0)
    with pytest.raises(DynavatarError, match="frame it was drawn on"):
        avatar.edit(RED, editor=PaletteEditor(), config=CFG, mask=drawn)
    with pytest.raises(DynavatarError, match="mask_route"):
        avatar.edit(RED, editor=PaletteEditor(), config=CFG, mask=drawn, frame=0, mask_route="magic")
    with pytest.raises(DynavatarError, match="covers no visible splat"):
        avatar.edit(RED, editor=PaletteEditor(), config=CFG, mask=np.zeros_like(drawn), frame=0)


@pytest.mark.slow
def test_learned_route_edit_runs(avatar):
    """The learned route trains a MaskMapper (minutes on a CPU): slow."""
    drawn = _drawn(avatar, 0)
    edited = avatar.edit(RED, editor=PaletteEditor(), config=dataclasses.replace(CFG, steps=5), progress=False,
                         mask=drawn, frame=0, mask_route="learned")
    assert edited.meta["edits"][-1]["mask_route"] == "learned"
