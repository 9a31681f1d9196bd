"""Offline means no socket: with every way to open a connection made to fail, "auto" refinement,
rule plans, a palette edit and the "are the weights cached?" checks of the optional backends all
run, in process, without trying to connect anywhere. Keys and URLs set for other OpenAI tools
(OPENAI_API_KEY / OPENAI_BASE_URL) must not make "auto" send prompts anywhere."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
import torch

from dynavatar.edit.editors.base import get_editor
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.edit.editors.pipeline_loading import MissingWeightsError, load_pipeline
from dynavatar.edit.plan import EditPlan
from dynavatar.edit.prompt import DEFAULT_LLM, OpenAIRefiner, RuleRefiner, TransformersRefiner, get_refiner
from dynavatar.errors import DynavatarError
from dynavatar.hub import all_weights_status, resolve_weights
from dynavatar.weights import KNOWN_WEIGHTS, find_hub_weights, find_weights, hub_offline

LLM_VARS = ("DYNAVATAR_LLM_BASE_URL", "DYNAVATAR_LLM_MODEL", "DYNAVATAR_LLM_API_KEY", "OPENAI_API_KEY",
            "OPENAI_BASE_URL")


class NetworkAttempt(AssertionError):
    """Raised (and recorded) by the guard: not an OSError, so no caller can swallow it as "offline"."""


@pytest.fixture()
def no_network(monkeypatch):
    """Every way to reach a socket raises NetworkAttempt; the test fails if any was tried."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise NetworkAttempt(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert attempts == [], f"connections attempted: {attempts}"


@pytest.fixture()
def openai_env_only(monkeypatch, tmp_path):
    """OPENAI_* set as for another tool, nothing for dynavatar, and an empty Hugging Face cache."""
    for name in LLM_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-for-another-tool")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the suite's default (conftest), said here because it is the point
    return tmp_path


def test_the_guard_catches_a_connection(no_network):
    with pytest.raises(NetworkAttempt):
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)
    assert len(no_network) == 1
    no_network.clear()


def test_auto_stays_on_the_rules_with_openai_variables_set(no_network, openai_env_only, caplog, monkeypatch):
    with caplog.at_level("INFO", logger="dynavatar.edit"):
        refiner = get_refiner("auto")
    assert isinstance(refiner, RuleRefiner)
    assert "rule-based refiner" in caplog.text and "DYNAVATAR_LLM_BASE_URL is not set" in caplog.text
    assert "OPENAI_BASE_URL, OPENAI_API_KEY alone does not send prompts anywhere" in caplog.text
    monkeypatch.setenv("DYNAVATAR_LLM_MODEL", "gpt-4o-mini")  # a model or key without a URL: still no endpoint
    monkeypatch.setenv("DYNAVATAR_LLM_API_KEY", "sk-x")
    assert isinstance(get_refiner("auto"), RuleRefiner)
    plans = [refiner.refine(p) for p in ("red hair", "add round glasses", "make her smile slightly",
                                         "blue eyes but keep the eyebrows")]
    assert [p.kind for p in plans] == ["colour", "accessory", "expression", "colour"]
    assert [p.kind for p in refiner.refine_all("red hair and blue eyes")] == ["colour", "colour"]


def test_palette_edit_from_a_rule_plan_offline(no_network, openai_env_only):
    plan = get_refiner("auto").refine("red hair")
    editor = get_editor("auto", plan)
    assert isinstance(editor, PaletteEditor)
    images = torch.full((1, 24, 24, 3), 0.35)  # [B, H, W, 3] brown-grey
    masks = torch.zeros(1, 24, 24)  # [B, H, W]: the "hair" is the top third
    masks[:, :8] = 1.0
    out = editor.edit(images, masks, plan)
    top, bottom = out[0, :4].mean((0, 1)), out[0, -4:]
    assert top[0] > top[1] + 0.1 and top[0] > top[2] + 0.1  # reddened
    assert torch.equal(bottom, images[0, -4:])  # far from the mask: bit-identical


def test_auto_opts_in_only_by_dynavatar_setting(no_network, openai_env_only, monkeypatch):
    explicit = get_refiner("auto", base_url="http://127.0.0.1:9/v1")
    assert isinstance(explicit, OpenAIRefiner)
    monkeypatch.setenv("DYNAVATAR_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    assert isinstance(get_refiner("auto"), OpenAIRefiner)
    # Choosing opened nothing; asking would, and the guard would see it (so a wrong choice fails here).
    with pytest.raises(NetworkAttempt):
        explicit.refine("red hair")
    no_network.clear()


def test_weight_lookups_open_no_socket(no_network, openai_env_only):
    assert all(find_weights(w) is None for w in KNOWN_WEIGHTS)  # a look at empty cache folders
    with pytest.raises(MissingWeightsError, match="not in the Hugging Face cache"):
        load_pipeline("ip2p", "timbrooks/instruct-pix2pix", device="cpu")
    hat = EditPlan(prompt="add a hat", kind="accessory", regions=["headwear", "hair"], instruction="add a hat")
    with pytest.raises(MissingWeightsError, match="InstructPix2Pix"):
        get_editor("auto", hat)
    with pytest.raises(DynavatarError, match="download no-such-org/no-such-model"):
        TransformersRefiner(model="no-such-org/no-such-model", device="cpu", strict=True).refine("red hair")


def test_cached_but_broken_local_model_loads_offline(no_network, openai_env_only, caplog):
    snap = openai_env_only / "hub" / ("models--" + DEFAULT_LLM.replace("/", "--")) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert find_hub_weights(DEFAULT_LLM) == snap
    with caplog.at_level("INFO", logger="dynavatar.edit"):
        local = get_refiner("auto")
    assert isinstance(local, TransformersRefiner) and "cached" in caplog.text
    local.strict = True  # raise rather than fall back to the rules, to see why loading failed
    with pytest.raises(DynavatarError, match="could not load them"):  # transformers read the cache only
        local.refine("red hair")


def test_hub_offline_sets_and_restores(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with hub_offline():
        assert constants.HF_HUB_OFFLINE is True and constants.is_offline_mode()
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
    with hub_offline(enabled=False):
        assert constants.HF_HUB_OFFLINE is False


def test_offline_weights_resolution_info_and_plans_open_no_socket(no_network, openai_env_only):
    """With HF_HUB_OFFLINE=1 every real backend's weights are "neither" without asking any host, each
    resolution fails with the one-line message, the CLIP metric is skipped and a plan says so."""
    from click.testing import CliRunner

    from dynavatar.cli import main
    from dynavatar.edit.metrics import clip_direction_metrics

    for w in KNOWN_WEIGHTS:
        with pytest.raises(DynavatarError, match=f"HF_HUB_OFFLINE=1.*dynavatar download {w.key}"):
            resolve_weights(w.key)
    assert {s.state for s in all_weights_status()} == {"neither"}
    assert clip_direction_metrics([], [], "a person", "a person with red hair") is None
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0 and "neither   ip2p" in result.output
    hat = EditPlan(prompt="add a hat", kind="accessory", regions=["headwear", "hair"], instruction="add a hat")
    assert "InstructPix2Pix (cannot run here" in hat.with_backend().summary()
