"""What the rule refiner heard and what it refuses: understood / ignored words on every plan, the
clause and length caps, prompts in other languages, and "keep X" in every phrasing."""

from __future__ import annotations

import pytest

from dynavatar.edit import EditPlan, EditPlanError
from dynavatar.edit.prompt import RuleRefiner, TransformersRefiner
from dynavatar.edit.prompt.chat import GenerationError

BROWS = {"left_brow", "right_brow"}


# ---------------------------------------------------------------------------- understood / ignored
def test_unknown_words_are_reported():
    plan = RuleRefiner().refine("red hair with sparkly unicorn vibes")
    assert plan.kind == "colour" and plan.regions == ["hair"]
    assert plan.understood == ["red", "hair"] and plan.ignored == ["sparkly", "unicorn", "vibes"]
    summary = plan.summary()
    assert "I understood: red, hair; ignored: sparkly, unicorn, vibes" in summary and "\n" not in summary


def test_a_second_colour_on_hair_is_the_defined_roots_and_ends_split():
    plan = RuleRefiner().refine("red and blue hair")
    assert plan.colour_name == "red with blue ends" and plan.ignored == []


@pytest.mark.parametrize("prompt", ["please make her hair red", "make his hair red", "could you please make the hair red",
                                    "give her red lips please", "make the person's hair red"])
def test_stop_words_are_not_ignored(prompt):
    plan = RuleRefiner().refine(prompt)
    assert plan.ignored == [] and "red" in plan.understood
    assert "ignored" not in plan.summary()


def test_free_form_words_are_passed_on_not_ignored():
    plan = RuleRefiner().refine("give her a steampunk look")
    assert plan.kind == "appearance" and "steampunk" in plan.instruction
    assert plan.ignored == [] and plan.understood == []
    glasses = RuleRefiner().refine("add round glasses")  # an object's adjective stays in its words
    assert glasses.instruction == "add round glasses" and glasses.ignored == []


def test_glasses_details_the_glasses_editor_reads_are_not_ignored():
    """The glasses are built from the prompt's own words (frame material, lens tint): those words are
    used, so the report does not call them ignored; elsewhere they still are."""
    from dynavatar.edit.apply.glasses import glasses_request

    shell = RuleRefiner().refine("cat-eye glasses in tortoiseshell")
    assert shell.ignored == [] and glasses_request(shell)["colour"] != glasses_request("cat-eye glasses")["colour"]
    blue = RuleRefiner().refine("aviator sunglasses with blue lenses")
    assert blue.ignored == [] and glasses_request(blue)["lens_tint"][2] > 0.5  # blue lenses
    assert RuleRefiner().refine("red hair with tortoiseshell vibes").ignored == ["tortoiseshell", "vibes"]


def test_every_plan_of_a_prompt_carries_the_report():
    plans = RuleRefiner().refine_all("red hair and blue eyes with zebra stripes")
    assert [p.kind for p in plans] == ["colour", "colour"]
    for p in plans:
        assert p.understood == ["red", "hair", "blue", "eyes"] and p.ignored == ["zebra", "stripes"]
        assert EditPlan.from_json(p.to_json()) == p  # the report survives JSON


def test_report_fields_are_validated():
    d = RuleRefiner().refine("red hair").to_dict()
    with pytest.raises(EditPlanError, match="ignored must be a list of words"):
        EditPlan.from_dict({**d, "ignored": "sparkly"})
    old = {k: v for k, v in d.items() if k not in ("understood", "ignored")}  # plans saved before the report
    assert EditPlan.from_dict(old).ignored == []


# ---------------------------------------------------------------------------- caps
def test_at_most_eight_clauses():
    eight = "red hair, blue eyes, green lips, white teeth, add a hat, add glasses, add earrings, smile"
    assert len(RuleRefiner().refine_all(eight)) == 8
    with pytest.raises(EditPlanError) as err:
        RuleRefiner().refine_all(eight + ", frown")
    assert str(err.value) == "the prompt has 9 clauses; at most 8 per edit \u2014 split it into several edits"


@pytest.mark.parametrize("prompt,match", [
    ("", "non-empty string"), ("   \n\t ", "non-empty string"), (None, "non-empty string"),
    ("red hair " * 1112, "the prompt is 10,008 characters long; at most 500"),
    (" " * 10_000, "non-empty string"),
])
def test_empty_and_huge_prompts_get_one_line(prompt, match):
    for refiner in (RuleRefiner(), TransformersRefiner(model="never-loaded")):  # checked before any model
        with pytest.raises(EditPlanError, match=match) as err:
            refiner.refine(prompt)
        assert "\n" not in str(err.value) and len(str(err.value)) < 300


# ---------------------------------------------------------------------------- other languages
@pytest.mark.parametrize("prompt", ["pelo rojo", "rote Haare", "\u8d64\u3044\u9aea", "cheveux rouges",
                                    "\u0440\u044b\u0436\u0438\u0435 \u0432\u043e\u043b\u043e\u0441\u044b"])
def test_non_english_prompt_points_to_the_model_refiners(prompt):
    with pytest.raises(EditPlanError) as err:
        RuleRefiner().refine(prompt)
    msg = str(err.value)
    assert "understands English only" in msg and "refiner='transformers'" in msg
    assert "DYNAVATAR_LLM_BASE_URL" in msg and "\n" not in msg


def test_understood_prompts_keep_working():
    mixed = RuleRefiner().refine("rote Haare und blue eyes")
    assert mixed.kind == "colour" and set(mixed.regions) == {"iris", "left_eye", "right_eye"}
    assert mixed.ignored == ["rote", "haare", "und"]
    made_up = RuleRefiner().refine("asdf qwerty zxcv")  # not a language: a free-form edit, as before
    assert made_up.kind == "appearance" and made_up.instruction == "asdf qwerty zxcv"


def test_model_refiner_fallback_says_both_reasons():
    class Down(TransformersRefiner):
        def generate_text(self, messages):
            raise GenerationError("cannot reach the model")

    with pytest.raises(EditPlanError, match="cannot reach the model.*understands English only"):
        Down(model="down").refine("pelo rojo")


# ---------------------------------------------------------------------------- keep X
KEEP_PHRASINGS = [
    "red hair but keep the eyebrows", "red hair, keep eyebrows", "red hair except the eyebrows",
    "red hair without changing the eyebrows", "red hair; don't touch the eyebrows",
    "red hair and leave the eyebrows alone", "red hair but not the eyebrows", "red hair (eyebrows unchanged)",
]


@pytest.mark.parametrize("prompt", KEEP_PHRASINGS)
def test_keep_the_brows_in_every_phrasing(prompt):
    for plan in [RuleRefiner().refine(prompt), *RuleRefiner().refine_all(prompt)]:
        assert plan.kind == "colour" and plan.regions == ["hair"] and plan.colour_name == "red"
        assert set(plan.preserve) == BROWS and not BROWS & set(plan.regions)
        assert plan.ignored == []
