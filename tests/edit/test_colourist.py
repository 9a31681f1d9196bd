"""The colourist's recolour: a region's colour distribution moved onto a named shade, lightness
structure kept; irises only for eyes; qualifiers honoured or reported; prompts read right."""

from __future__ import annotations

import logging

import pytest
import torch

from dynavatar.edit.colour_space import oklab_to_rgb, rgb_to_oklab
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.edit.editors.palette_recolour import (colourist_oklab, fit_region, iris_membership,
                                                      lightness_gain, target_from_plan)
from dynavatar.edit.plan import EditPlanError
from dynavatar.edit.prompt.rule_refiner import RuleRefiner


def _plan(prompt: str):
    (plan,) = RuleRefiner().refine_all(prompt)
    return plan


def _brown_strands(n: int = 400, seed: int = 0) -> torch.Tensor:
    """OKLab [n, 3] of brown hair: lightness from shadow to highlight, a little hue/chroma noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    rgb = torch.stack([0.12 + 0.45 * t, 0.07 + 0.30 * t, 0.04 + 0.18 * t], -1)
    rgb = (rgb * (1 + 0.06 * torch.randn(n, 3, generator=g, dtype=torch.float64))).clamp(0, 1)
    return rgb_to_oklab(rgb)


@pytest.mark.parametrize("prompt", ["auburn hair", "platinum blonde hair", "pink hair", "black hair"])
def test_recolour_moves_the_distribution_and_keeps_the_lightness_order(prompt):
    lab = _brown_strands()
    plan = _plan(prompt)
    target = target_from_plan(plan, lab)
    new = colourist_oklab(lab, fit_region(lab, torch.ones(len(lab))), target)
    order_before, order_after = lab[:, 0].argsort().argsort(), new[:, 0].argsort().argsort()
    assert torch.corrcoef(torch.stack([order_before.double(), order_after.double()]))[0, 1] > 0.98
    # not a flat fill: the strands keep a spread of lightness ...
    assert new[:, 0].std() > 0.3 * (target.light[0] - target.dark[0]).abs()
    # ... within the shade's range
    lo, hi = sorted([float(target.dark[0]), float(target.light[0])])
    assert lo - 0.08 <= float(new[:, 0].quantile(0.05)) and float(new[:, 0].quantile(0.95)) <= hi + 0.08
    rgb = oklab_to_rgb(new)
    assert (rgb >= -1e-3).all() and (rgb <= 1 + 1e-3).all(), "in gamut, no clipping"


def test_auburn_is_a_deep_red_brown_not_bright_orange():
    lab = _brown_strands()
    new = colourist_oklab(lab, fit_region(lab, torch.ones(len(lab))), target_from_plan(_plan("auburn hair"), lab))
    chroma = new[:, 1:].norm(dim=-1)
    hue = torch.rad2deg(torch.atan2(new[:, 2], new[:, 1]))
    assert float(chroma.median()) < 0.12  # orange (#f07818) is ~0.17
    assert 10 < float(hue.median()) < 60  # red-orange-brown, not yellow


def test_a_lipstick_steepens_the_lips_shading_less_than_a_dye_steepens_strands():
    """Pale lips with a narrow spread of lightness (shading, the lip line): red lipstick spreads them
    about 1.5 times (``lightness_gain`` of the lips; the cap is per segment of the rank map, so a little
    more over the whole range), a hair dye up to 3 times; the order is kept."""
    g = torch.Generator().manual_seed(1)
    t = torch.rand(300, generator=g, dtype=torch.float64)
    lips = rgb_to_oklab(torch.stack([0.80 - 0.08 * t, 0.58 - 0.08 * t, 0.60 - 0.08 * t], -1))  # [300, 3]
    plan = _plan("red lipstick")
    assert lightness_gain(plan.regions) == 1.5 and lightness_gain(_plan("red hair").regions) == 3.0
    target = target_from_plan(plan, lips)
    assert target.max_gain == 1.5  # every recolour path takes the gain from the target
    fit = fit_region(lips, torch.ones(len(lips)))
    spread = lambda x: float(x[:, 0].quantile(0.95) - x[:, 0].quantile(0.05))  # noqa: E731
    gentle = colourist_oklab(lips, fit, target, max_gain=lightness_gain(plan.regions))
    steep = colourist_oklab(lips, fit, target, max_gain=3.0)
    assert spread(gentle) <= 1.75 * spread(lips) and 2.5 * spread(lips) < spread(steep), (spread(gentle), spread(steep))
    order = lambda x: x[:, 0].argsort().argsort().double()  # noqa: E731
    assert torch.corrcoef(torch.stack([order(lips), order(gentle)]))[0, 1] > 0.98


def test_a_region_already_at_the_target_maps_onto_itself():
    lab = _brown_strands()
    target = target_from_plan(_plan("copper hair"), lab)
    once = colourist_oklab(lab, fit_region(lab, torch.ones(len(lab))), target)
    twice = colourist_oklab(once, fit_region(once, torch.ones(len(once))), target)
    assert (twice - once).abs().max() < 0.03


def test_blue_eyes_move_the_iris_only():
    # an eye opening: sclera (white), iris (brown), limbal ring (darker brown), pupil (black), glint
    rgb = torch.tensor([[0.92, 0.90, 0.88]] * 60 + [[0.45, 0.28, 0.15]] * 30 + [[0.22, 0.13, 0.07]] * 10
                       + [[0.02, 0.02, 0.02]] * 8 + [[1.0, 1.0, 1.0]] * 2, dtype=torch.float64)
    lab = rgb_to_oklab(rgb)
    member = iris_membership(lab, torch.ones(len(lab)))
    assert member[:60].max() < 0.1 and member[108:].max() < 0.1, "sclera and glint are not iris"
    assert member[100:108].max() < 0.1, "the pupil is not iris"
    assert member[60:90].min() > 0.9 and member[90:100].min() > 0.5, "iris and limbal ring move"
    editor, plan = PaletteEditor(feather=0.0), _plan("blue eyes")
    img = rgb.float().view(1, 10, 11, 3)
    out = editor.edit(img, torch.ones(1, 10, 11), plan.__class__(**{**plan.to_dict(), "mask_dilation": 0,
                                                                     "colour": tuple(plan.colour)}))
    out = out.view(-1, 3)
    assert (out[:60] - img.view(-1, 3)[:60]).abs().max() < 0.02, "the sclera keeps its colour"
    iris = rgb_to_oklab(out[60:90].double())
    assert float(torch.rad2deg(torch.atan2(iris[:, 2], iris[:, 1])).median()) < -90, "the iris turns blue"


def test_dark_roots_darken_the_top_and_two_colours_split_roots_and_ends():
    lab = _brown_strands()
    heights = torch.linspace(0, 1, len(lab), dtype=torch.float64)
    plan = _plan("blonde hair with dark roots")
    assert "dark roots" in plan.colour_name
    target = target_from_plan(plan, lab)
    fit = fit_region(lab, torch.ones(len(lab)))
    new = colourist_oklab(lab, fit, target, heights=heights)
    plain = colourist_oklab(lab, fit, target)
    top, bottom = heights < 0.1, heights > 0.6
    assert (new[top, 0] - plain[top, 0]).mean() < -0.1 and (new[bottom] - plain[bottom]).abs().max() < 1e-6
    split = _plan("red and blue hair")
    assert split.colour_name == "red with blue ends"
    two = colourist_oklab(lab, fit, target_from_plan(split, lab), heights=heights)
    hue = torch.rad2deg(torch.atan2(two[:, 2], two[:, 1]))
    assert float(hue[top].median()) > -30 and float(hue[heights > 0.8].median()) < -90


def test_positional_qualifiers_without_positions_are_reported(caplog):
    from dynavatar.edit.apply.splat_recolour import recolour_splats
    from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
    from dynavatar.geometry.labels import NUM_LABELS, label_index

    g = GaussianAvatar.init_on_mesh(40, num_labels=NUM_LABELS)
    g.sh[:, 0] = rgb_to_sh(oklab_to_rgb(_brown_strands(40)).float())
    g.labels[:, label_index("hair")] = 1.0
    with caplog.at_level(logging.WARNING, logger="dynavatar.edit"):
        out = recolour_splats(g, _plan("blonde hair with dark roots"), torch.ones(40))
    assert "dark roots" in caplog.text and "positions" in caplog.text
    assert not torch.equal(out.sh, g.sh)
    pos = torch.zeros(40, 3)
    pos[:, 1] = torch.linspace(1, 0, 40)  # splat 0 at the top
    rooted = recolour_splats(g, _plan("blonde hair with dark roots"), torch.ones(40), positions=pos)
    assert float(rooted.sh[:5, 0].mean()) < float(out.sh[:5, 0].mean()) - 0.05


def test_prompts_read_qualifiers_contradictions_and_typos():
    assert _plan("brown hair with blonde highlights").colour_name == "brown with highlights"
    assert "ombre" in _plan("pastel pink ombre hair").colour_name
    with pytest.raises(EditPlanError, match="one colour"):
        RuleRefiner().refine_all("red and blue lips")
    typo = _plan("purpel hair")
    assert typo.colour_name == "purple (nearest to 'purpel')" and typo.regions == ["hair"]
    assert _plan("blue eyes").regions == ["iris", "left_eye", "right_eye"]
    assert "sclera" not in _plan("green eyes").regions


def test_blue_eyes_keep_the_pupil_of_a_dark_brown_eye_without_geometry():
    """Pixels of a keyframe: a near-black brown iris around a black pupil. The pupil is hardly darker
    than the iris, so no colour cut finds it; the darkest share of the iris is the pupil, kept."""
    rgb = torch.tensor([[0.92, 0.90, 0.88]] * 50 + [[0.12, 0.08, 0.06]] * 50 + [[0.03, 0.025, 0.02]] * 8,
                       dtype=torch.float64)
    member = iris_membership(rgb_to_oklab(rgb), torch.ones(len(rgb)))
    assert member[50:100].min() > 0.9, "the dark iris moves"
    assert member[100:].max() < 0.1 and member[:50].max() < 0.1, "pupil and white do not"
    editor, plan = PaletteEditor(feather=0.0), _plan("blue eyes")
    img = rgb.float().view(1, 12, 9, 3)
    out = editor.edit(img, torch.ones(1, 12, 9), plan.__class__(**{**plan.to_dict(), "mask_dilation": 0,
                                                                    "colour": tuple(plan.colour)})).view(-1, 3)
    assert (out[100:] - img.view(-1, 3)[100:]).abs().max() < 0.02, "the pupil stays black"
    iris = rgb_to_oklab(out[50:100].double())
    assert float(iris[:, 0].median()) > 0.3, "lifted into the blue shade's lightness"
    assert float(torch.rad2deg(torch.atan2(iris[:, 2], iris[:, 1])).median()) < -90, "the iris turns blue"


@pytest.mark.parametrize("shade", ["nude", "mauve", "berry", "brick red", "terracotta", "coral", "plum"])
def test_lipstick_shades_are_colours_the_offline_editor_can_do(shade):
    """A lipstick shade is a colour plan on the lips (not an appearance edit that needs diffusion
    weights), and its recolour lands near the shade's own hue."""
    plan = _plan(f"{shade} lipstick")
    assert plan.kind == "colour" and plan.colour_name == shade and set(plan.regions) == {"upper_lip", "lower_lip"}
    lips = rgb_to_oklab(torch.tensor([[0.80, 0.55, 0.56]], dtype=torch.float64).repeat(50, 1))
    new = colourist_oklab(lips, fit_region(lips, torch.ones(50)), target_from_plan(plan, lips))
    want = rgb_to_oklab(torch.tensor([plan.colour], dtype=torch.float64))[0]
    hue = lambda lab: torch.atan2(lab[..., 2], lab[..., 1])  # noqa: E731
    gap = torch.remainder(hue(new).median() - hue(want) + torch.pi, 2 * torch.pi) - torch.pi
    assert abs(float(gap)) < 0.6, (shade, float(gap))
