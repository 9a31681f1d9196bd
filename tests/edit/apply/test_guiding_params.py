"""Guiding parameters (DynamicAvatars): the plan carries the IDU loop's knobs, filled per kind by the
refiners, and they reach the loop unless the user's EditConfig sets them (edit/plan.py,
edit/prompt/kind_defaults.py, edit/apply/loop.py ``loop_config``)."""

from __future__ import annotations

import dataclasses

import pytest

from dynavatar.edit import EditPlan, EditPlanError, RuleRefiner
from dynavatar.edit.apply.loop import EditConfig, loop_config
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.edit.prompt.model_reply import plan_from_text


def test_rule_refiner_sets_the_knobs_per_kind():
    r = RuleRefiner()
    colour, hat = r.refine("red hair"), r.refine("add a hat")
    assert colour.guiding() == {"w_adv": 0.02, "keyframes": 8, "reedit_every": 100, "steps": 300}
    assert hat.adv_weight > colour.adv_weight and hat.keyframes > colour.keyframes
    assert hat.reedit_every < colour.reedit_every and "loop " in hat.summary()


def test_model_plans_fill_missing_knobs_and_validate_given_ones():
    reply = '{"kind": "colour", "regions": ["hair"], "instruction": "make the hair red", "colour": [1, 0, 0], "keyframes": 3}'
    plan = plan_from_text(reply, "red hair", "test")
    assert plan.keyframes == 3 and plan.optimise_steps == 300  # given, and the kind's default
    with pytest.raises(EditPlanError, match="adv_weight"):
        plan_from_text(reply.replace('"keyframes": 3', '"adv_weight": 7'), "red hair", "test")
    with pytest.raises(EditPlanError, match="keyframes"):
        plan_from_text(reply.replace('"keyframes": 3', '"keyframes": 0'), "red hair", "test")


def test_old_plans_without_knobs_still_load():
    d = RuleRefiner().refine("red hair").to_dict()
    for k in ("adv_weight", "keyframes", "reedit_every", "optimise_steps"):
        del d[k]
    plan = EditPlan.from_dict(d)
    assert plan.guiding() == {} and loop_config(plan) == EditConfig()


def test_explicit_config_overrides_only_the_fields_the_user_set():
    plan = dataclasses.replace(RuleRefiner().refine("add a hat"), keyframes=5, optimise_steps=7)
    cfg = loop_config(plan, EditConfig(steps=11, lr_colour=0.5))
    assert cfg.steps == 11 and cfg.lr_colour == 0.5  # the user's
    assert cfg.keyframes == 5 and cfg.w_adv == plan.adv_weight and cfg.reedit_every == plan.reedit_every  # the plan's


@pytest.fixture(scope="module")
def avatar(tiny_labelled_avatar):
    return tiny_labelled_avatar  # conftest.py: fitted to a tiny synthetic clip and labelled, built once


def test_a_plan_value_reaches_the_loop(avatar):
    """The plan's keyframes, steps and re-edit period decide the run: 2 keyframes are edited, 3 steps
    are taken, and the record says so (through Avatar.edit, as a user runs it)."""
    plan = dataclasses.replace(RuleRefiner().refine("red hair"), keyframes=2, optimise_steps=3, reedit_every=2,
                               adv_weight=0.0)
    edited = avatar.edit(plan, editor=PaletteEditor(), progress=False)
    rec = edited.meta["edits"][-1]
    assert rec["config"]["keyframes"] == 2 and rec["config"]["steps"] == 3 and rec["config"]["w_adv"] == 0.0
    assert len(rec["keyframes"]) == 2
