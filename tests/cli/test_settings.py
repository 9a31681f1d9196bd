"""--set FIELD=VALUE / --config FILE: typed, validated against the config dataclasses themselves."""

from __future__ import annotations

import pytest

from dynavatar.cli.settings import apply_settings, config_fields, parse_settings
from dynavatar.config import PipelineConfig
from dynavatar.edit import EditConfig
from dynavatar.errors import ConfigError
from dynavatar.track import TrackerConfig


def test_bare_and_dotted_names_reach_nested_fields():
    pipe = PipelineConfig.preset("tiny")
    out = apply_settings(pipe, ["reconstruct.lr.sh=0.03", "eval_fraction=0.2", "reconstruct.steps=7"])
    assert out.reconstruct.lr.sh == 0.03 and out.reconstruct.eval_fraction == 0.2 and out.reconstruct.steps == 7
    assert pipe.reconstruct.steps == 300 and pipe.reconstruct.lr.sh != 0.03  # the original is untouched
    assert apply_settings(EditConfig(), ["steps=5"]).steps == 5


def test_every_leaf_field_is_listed_with_its_type():
    fields = config_fields(PipelineConfig.preset("fast"))
    assert "reconstruct.densify.refine_every" in fields and "preprocess.resolution" in fields
    assert fields["reconstruct.steps"][1] == 9000


@pytest.mark.parametrize("item, words", [
    ("steps=10", ["ambiguous", "reconstruct.steps", "track.steps"]),  # both stages have a `steps`
    ("stepz=10", ["unknown setting 'stepz'", "reconstruct.steps"]),
    ("reconstruct.steps=ten", ["reconstruct.steps='ten'", "an integer"]),
    ("reconstruct.steps=1.5", ["an integer"]),
    ("reconstruct.w_l1=nan", ["a number"]),
    ("reconstruct.refine_params=maybe", ["true or false"]),
    ("reconstruct.background=1,1", ["comma-separated numbers"]),
    ("reconstruct.steps=none", ["cannot be none"]),
    ("noequals", ["expected FIELD=VALUE"]),
    ("=3", ["expected FIELD=VALUE"]),
])
def test_bad_settings_are_one_line_errors_naming_the_fix(item, words):
    with pytest.raises(ConfigError) as e:
        apply_settings(PipelineConfig.preset("tiny"), [item])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_values_are_parsed_by_the_fields_type():
    out = parse_settings(PipelineConfig.preset("tiny"), [
        "reconstruct.background=0,0.5,1", "preprocess.max_frames=none", "reconstruct.torso=false",
        "reconstruct.refine_params=no", "track.device=cpu", "preprocess.max_frames=12"])
    assert out["reconstruct.background"] == (0.0, 0.5, 1.0)
    assert out["reconstruct.torso"] is False and out["reconstruct.refine_params"] is False
    assert out["track.device"] == "cpu" and out["preprocess.max_frames"] == 12  # the later one wins
    assert parse_settings(PipelineConfig.preset("tiny"), ["reconstruct.torso=auto"])["reconstruct.torso"] == "auto"


def test_config_files_json_and_toml_nested_or_dotted(tmp_path):
    (tmp_path / "a.json").write_text('{"reconstruct": {"steps": 11, "lr": {"sh": 0.02}}, "track.steps": 3}')
    (tmp_path / "b.toml").write_text('[reconstruct]\nsteps = 12\nbackground = [0, 0, 0]\n')
    a = apply_settings(PipelineConfig.preset("tiny"), file=tmp_path / "a.json")
    assert (a.reconstruct.steps, a.reconstruct.lr.sh, a.track.steps) == (11, 0.02, 3)
    b = apply_settings(PipelineConfig.preset("tiny"), ["reconstruct.steps=13"], file=tmp_path / "b.toml")
    assert b.reconstruct.steps == 13 and b.reconstruct.background == (0.0, 0.0, 0.0)  # --set after the file


@pytest.mark.parametrize("name, text, words", [
    ("bad.json", "{not json", ["not valid JSON"]),
    ("bad.toml", "steps = = 3", ["not valid TOML"]),
    ("list.json", "[1, 2]", ["must hold a table"]),
    ("types.json", '{"reconstruct": {"refine_params": 3}}', ["true or false"]),
    ("types2.json", '{"reconstruct": {"steps": true}}', ["an integer"]),
])
def test_bad_config_files_are_one_line_errors(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as e:
        apply_settings(PipelineConfig.preset("tiny"), file=tmp_path / name)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)
    with pytest.raises(ConfigError, match="not found"):
        apply_settings(TrackerConfig(), file=tmp_path / "missing.json")


@pytest.mark.parametrize("item, words", [
    ("reconstruct.steps=-5", "cannot be negative"), ("preprocess.resolution=0", "at least 1"),
    ("reconstruct.batch_size=0", "at least 1"), ("reconstruct.w_l1=-1", "cannot be negative"),
    ("reconstruct.lr.sh=-0.1", "cannot be negative"), ("reconstruct.eval_fraction=1.5", "a fraction"),
    ("reconstruct.densify.refine_every=-1", "cannot be negative"),
])
def test_out_of_range_settings_are_refused(item, words):
    with pytest.raises(ConfigError, match=words):
        apply_settings(PipelineConfig.preset("tiny"), [item])


def test_a_run_folders_config_json_reads_back_as_the_same_settings(tmp_path):
    fast = PipelineConfig.preset("fast")
    fast.save(tmp_path / "config.json")
    assert apply_settings(PipelineConfig.preset("tiny"), file=tmp_path / "config.json") == fast
