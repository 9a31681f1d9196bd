"""Without weights: the transformers refiner falls back to the rules with a warning; SDS names the
missing weights (edit/prompt/local_llm.py, edit/apply/sds_loading.py)."""

from __future__ import annotations

import logging

import pytest

from dynavatar.edit import EditPlan, TransformersRefiner
from dynavatar.errors import DynavatarError


@pytest.fixture
def empty_offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    return tmp_path


def test_transformers_refiner_without_weights_falls_back_to_rules(empty_offline_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="dynavatar.edit"):
        plan = TransformersRefiner(local_files_only=True).refine("red hair")
    assert plan.kind == "colour" and plan.regions == ["hair"]
    assert plan.refiner.startswith("rule (fallback from transformers")
    assert any("using the rule-based refiner" in r.getMessage() for r in caplog.records)
    with pytest.raises(DynavatarError, match="Qwen"):  # strict: the missing weights are named
        TransformersRefiner(local_files_only=True, strict=True).refine("red hair")


def test_sds_without_weights_names_them(empty_offline_cache):
    pytest.importorskip("diffusers")
    from dynavatar.edit.apply.sds_guidance import SDSGuidance

    with pytest.raises(DynavatarError) as e:
        SDSGuidance.from_pretrained()
    msg = str(e.value)
    assert "Stable Diffusion 1.5" in msg and "dynavatar download sd15" in msg and "tokenizer is empty" not in msg
    assert "\n" not in msg
    plan = EditPlan(prompt="red hair", kind="appearance", regions=["hair"], instruction="make the hair red")
    assert "cannot run here" in plan.with_backend(method="sds").summary()
