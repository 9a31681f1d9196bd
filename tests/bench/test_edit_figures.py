"""The figures of ``bench edit`` on hand-made images with known answers, and the gallery sheet."""

from __future__ import annotations

import numpy as np
import torch

from dynavatar.bench.edit_gallery import gallery_sheet
from dynavatar.edit.colour_space import oklab_to_rgb
from dynavatar.edit.editors.palette_recolour import ColourTarget
from dynavatar.edit.metrics import lightness_structure, mean_change, spill_fraction, target_coverage

RED = ColourTarget(torch.tensor([0.25, 0.08, 0.04], dtype=torch.float64),
                   torch.tensor([0.55, 0.17, 0.08], dtype=torch.float64))


def _img(lab_rows) -> np.ndarray:
    rgb = oklab_to_rgb(torch.tensor(lab_rows, dtype=torch.float64)).clamp(0, 1).numpy()
    return (rgb * 255).round().astype(np.uint8)


def test_coverage_counts_pixels_that_reached_the_shade():
    region = np.zeros((12, 12), bool)
    region[1:11, 1:11] = True
    img = np.zeros((12, 12, 3), np.uint8)
    img[:, :] = _img([[0.4, 0.12, 0.06]])[0]  # a red-brown inside the shade
    img[:, 6:] = _img([[0.4, -0.02, -0.12]])[0]  # blue on the right half: not reached
    cov = target_coverage(img, region, RED, erode=2)
    assert abs(cov - 0.5) < 0.01  # eroded core: columns 3..8, half of them red
    grey = ColourTarget(torch.tensor([0.3, 0.0, 0.005], dtype=torch.float64),
                        torch.tensor([0.9, 0.005, 0.01], dtype=torch.float64))
    assert target_coverage(np.full((12, 12, 3), 200, np.uint8), region, grey) == 1.0
    assert np.isnan(target_coverage(img, np.zeros((12, 12), bool), RED))


def test_spill_structure_and_sclera_change():
    before = np.full((20, 20, 3), 100, np.uint8)
    region = np.zeros((20, 20), bool)
    region[5:15, 5:15] = True
    after = before.copy()
    after[region] = 180
    after[0, 0] = 110  # one pixel far off the region changed by 10/255
    after[4, 5] = 150  # inside the 3 px band: the region's own edge, not spill
    assert spill_fraction(before, after, region) == 1 / 400
    ramp = np.repeat(np.linspace(40, 200, 20).astype(np.uint8)[:, None], 20, 1)
    ramp = np.repeat(ramp[..., None], 3, 2)
    assert lightness_structure(ramp, (ramp * 0.8).astype(np.uint8), region) > 0.99
    flat = ramp.copy()
    flat[region] = 120
    flat[7, 7] = 121  # a flat fill with one stray pixel: no structure left
    assert lightness_structure(ramp, flat, region) < 0.5
    assert mean_change(before, after, region) == 80.0 and np.isnan(mean_change(before, after, region & False))


def test_gallery_sheet_lays_out_prompts_by_poses():
    a = np.zeros((64, 64, 3), np.uint8)
    b = np.full((64, 64, 3), 255, np.uint8)
    sheet = gallery_sheet([("red hair", [(a, b)] * 3), ("blue eyes", [(a, b)] * 3)], ["f1", "f2", "turn"], cell=32)
    assert sheet.shape == (20 + 2 * (20 + 64), 96, 3)
    assert sheet[20 + 20 + 5, 5].max() < 60 and sheet[20 + 20 + 32 + 5, 5].min() > 200  # before above after


def test_zero_step_bench_edits_take_a_few_views_not_the_plans_keyframes():
    """``--steps 0`` runs the splat-space recolour alone: its statistics need a few views, and the
    plan's 8 keyframes with head turns (16 views) must not come back through ``loop_config``."""
    from dynavatar.bench.edit import _edit_config
    from dynavatar.edit import EditConfig
    from dynavatar.edit.apply.loop import loop_config
    from dynavatar.edit.prompt.rule_refiner import RuleRefiner

    (plan,) = RuleRefiner().refine_all("red hair")
    assert plan.keyframes > 3, "the plan asks for more keyframes than the zero-step bench uses"
    cfg = loop_config(plan, _edit_config(EditConfig, 0))
    assert (cfg.steps, cfg.keyframes, cfg.novel_yaws) == (0, 3, ())
    assert loop_config(plan, _edit_config(EditConfig, None)).keyframes == plan.keyframes


def test_offline_bench_builds_glasses_with_the_geometry_editor(tiny_labelled_avatar, tmp_path):
    """Under ``--editor palette`` (the offline bench) a glasses prompt is built as geometry, as
    ``editor="auto"`` does offline, and its row shows new pixels; colour prompts keep the palette."""
    from dynavatar.bench.edit import _plan_editor, run_edit_bench
    from dynavatar.edit.prompt.rule_refiner import RuleRefiner

    (glasses,) = RuleRefiner().refine_all("add round glasses")
    (red,) = RuleRefiner().refine_all("red hair")
    assert _plan_editor(glasses, "palette", "palette") == "geometry"
    assert _plan_editor(red, "palette", "palette") == "palette"
    assert _plan_editor(glasses, "ip2p-random", "ED") == "ED"
    tiny_labelled_avatar.save(tmp_path / "avatar")
    r = run_edit_bench(tmp_path / "avatar", prompts=("add round glasses",), steps=0, frames=1, device="cpu")
    (row,) = r["rows"]
    assert "error" not in row, row
    assert row["editors"] == ["geometry"] and row["changed_pct"]["median"] > 0.5, row


def test_spill_region_keeps_the_regions_soft_fringe_and_not_a_shared_edge():
    from dynavatar.edit.metrics import majority_region

    bg, skin, hair = 0, 1, 10
    probs = np.zeros((11, 5, 1))  # [K, H, W]: five pixels in a column
    probs[bg] = 1.0
    probs[:, 0] = 0.0  # pixel 0: solid hair
    probs[hair, 0] = 1.0
    probs[:, 1] = 0.0  # pixel 1: hair's fringe over the background (alpha 0.2, all of it hair)
    probs[hair, 1], probs[bg, 1] = 0.2, 0.8
    probs[:, 2] = 0.0  # pixel 2: the hairline, mostly skin under some hair
    probs[hair, 2], probs[skin, 2], probs[bg, 2] = 0.3, 0.6, 0.1
    probs[:, 3] = 0.0  # pixel 3: next to nothing drawn
    probs[hair, 3], probs[bg, 3] = 0.01, 0.99
    got = majority_region(probs, [hair], bg)[:, 0]
    assert got.tolist() == [True, True, False, False, False]
    assert (probs[[hair]].sum(0) > 0.5)[:, 0].tolist() == [True, False, False, False, False]  # the edit's own region
    assert not majority_region(probs, [], bg).any()
