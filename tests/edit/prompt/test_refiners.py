"""Prompt refinement: the rule grammar on a table of prompts, and the two model refiners' code paths
(tiny random transformers model built offline, a real local HTTP server) down to the fallback."""

from __future__ import annotations

import colorsys
import http.server
import json
import socket
import threading

import pytest

from dynavatar.edit import EditPlan, EditPlanError
from dynavatar.edit.prompt import (OpenAIRefiner, PromptRefiner, RuleRefiner, TransformersRefiner,
                                   build_system_prompt, extract_json_object, get_refiner, plan_from_text)
from dynavatar.errors import DynavatarError

EYES = {"iris", "left_eye", "right_eye"}  # an eye colour: the iris (eye labels of older avatars)
EYES_KEPT = EYES | {"sclera"}  # keeping the eyes keeps their whites too
BROWS = {"left_brow", "right_brow"}
LIPS = {"upper_lip", "lower_lip"}
GLASSES = {"eyeglasses", "left_eye", "right_eye"}
SKIN = {"skin", "nose", "left_ear", "right_ear", "neck"}  # "skin" means all visible skin


def hue_deg(rgb) -> float:
    return colorsys.rgb_to_hls(*rgb)[0] * 360.0


def hue_close(rgb, target: float, tol: float = 20.0) -> bool:
    d = abs(hue_deg(rgb) - target) % 360.0
    return min(d, 360.0 - d) <= tol


def lightness(rgb) -> float:
    return colorsys.rgb_to_hls(*rgb)[1]


# prompt, kind, regions (exact set, or None), extra checks on the plan
CASES = [
    ("red hair", "colour", {"hair"}, lambda p: hue_close(p.colour, 0) and p.colour_name == "red"),
    ("Make the hair RED!!", "colour", {"hair"}, lambda p: hue_close(p.colour, 0)),
    ("platinum blonde hair", "colour", {"hair"},
     lambda p: lightness(p.colour) > 0.75 and hue_close(p.colour, 45, 20) and p.material is None),
    ("blonde hair", "colour", {"hair"}, lambda p: hue_close(p.colour, 40, 15)),
    ("make her blonde", "colour", {"hair"}, lambda p: hue_close(p.colour, 40, 15)),
    ("auburn hair", "colour", {"hair"}, lambda p: hue_close(p.colour, 12, 12) and lightness(p.colour) < 0.45),
    ("ginger hair", "colour", {"hair"}, lambda p: hue_close(p.colour, 22, 12)),
    ("brunette hair", "colour", {"hair"}, lambda p: lightness(p.colour) < 0.3),
    ("silver hair", "colour", {"hair"}, lambda p: p.material is None and lightness(p.colour) > 0.6),
    ("grey hair", "colour", {"hair"}, lambda p: max(p.colour) - min(p.colour) < 0.05),
    ("white hair", "colour", {"hair"}, lambda p: min(p.colour) > 0.9),
    ("black hair", "colour", {"hair"}, lambda p: max(p.colour) < 0.1),
    ("brown hair", "colour", {"hair"}, lambda p: hue_close(p.colour, 25, 15) and lightness(p.colour) < 0.4),
    ("golden hair", "colour", {"hair"}, lambda p: p.material is None and hue_close(p.colour, 40, 15)),
    ("pastel pink hair", "colour", {"hair"},
     lambda p: hue_close(p.colour, 335, 20) and lightness(p.colour) > 0.75),
    ("dark blue shirt", "colour", {"clothes"}, lambda p: hue_close(p.colour, 225, 20) and lightness(p.colour) < 0.35
     and "shirt" in p.instruction and "wearing" in p.positive_prompt),
    ("very light blue eyes", "colour", EYES, lambda p: hue_close(p.colour, 225, 25) and lightness(p.colour) > 0.7),
    ("bright green hair", "colour", {"hair"}, lambda p: hue_close(p.colour, 125, 20)),
    ("teal eyes", "colour", EYES, lambda p: hue_close(p.colour, 180, 15)),
    ("purple lips", "colour", LIPS, lambda p: hue_close(p.colour, 275, 20)),
    ("blue eyes", "colour", EYES, lambda p: hue_close(p.colour, 225, 20) and p.instruction == "make the eyes blue"
     and p.positive_prompt == "a photo of a person with blue eyes"),
    ("green left eye", "colour", {"iris", "left_eye"}, lambda p: hue_close(p.colour, 130, 20)),
    ("red eyebrows", "colour", BROWS, None),
    ("red lipstick", "colour", LIPS, None),
    ("white teeth", "colour", {"teeth"}, None),
    ("turn him green", "colour", SKIN, lambda p: hue_close(p.colour, 130, 20)),
    ("olive skin", "colour", SKIN,
     lambda p: hue_close(p.colour, 30, 15)),  # a skin tone, not olive green
    # materials
    ("gold skin", "colour", None, lambda p: p.material == "metallic" and hue_close(p.colour, 46, 12)),
    ("metallic silver lips", "colour", LIPS, lambda p: p.material == "metallic"),
    ("shiny red lips", "colour", LIPS, lambda p: p.material == "glossy" and hue_close(p.colour, 0)),
    ("glossy hair", "appearance", {"hair"}, lambda p: p.material == "glossy" and p.colour is None),
    ("matte lips", "appearance", LIPS, lambda p: p.material == "matte"),
    # preserve / negation
    ("red hair but keep the eyebrows", "colour", {"hair"}, lambda p: set(p.preserve) == BROWS),
    ("make the hair red without changing the eyebrows", "colour", {"hair"}, lambda p: set(p.preserve) == BROWS),
    ("make the face green, not the lips", "colour", {"skin", "nose"}, lambda p: set(p.preserve) == LIPS),
    ("make the face green but not the nose", "colour", {"skin"}, lambda p: p.preserve == ["nose"]),
    ("keep the eyes and make the hair red", "colour", {"hair"}, lambda p: set(p.preserve) == EYES_KEPT),
    ("auburn hair, don't change the eyes", "colour", {"hair"}, lambda p: set(p.preserve) == EYES_KEPT),
    ("red hair and lips", "colour", {"hair"} | LIPS, lambda p: p.instruction == "make the hair and the lips red"),
    ("make the hair and the eyes blue", "colour", {"hair"} | EYES, None),
    # accessories
    ("add round glasses", "accessory", None,
     lambda p: GLASSES <= set(p.regions) and "skin" in p.regions and p.instruction == "add round glasses"
     and p.mask_dilation > 6),
    ("sunglasses", "accessory", None, lambda p: "eyeglasses" in p.regions and "sunglasses" in p.instruction),
    ("give her a red baseball cap", "accessory", {"headwear", "hair"},
     lambda p: p.instruction == "add a red baseball cap" and hue_close(p.colour, 0)),
    ("put on a beanie", "accessory", {"headwear", "hair"}, None),
    ("add earrings", "accessory", {"left_ear", "right_ear"}, None),
    ("add a beard", "accessory", {"skin"}, lambda p: "beard" in p.instruction),
    ("make the glasses red", "colour", {"eyeglasses"}, lambda p: hue_close(p.colour, 0)),
    # no beard label: the colour stays in words so a palette editor never tints all the skin
    ("dye the beard red", "appearance", {"skin"},
     lambda p: p.colour is None and p.material is None and p.instruction == "make the beard red"),
    ("add freckles", "appearance", {"skin", "nose"}, lambda p: p.instruction == "add freckles"),
    # removals
    ("remove the glasses", "remove", None,
     lambda p: "eyeglasses" in p.regions and p.instruction == "remove the glasses"),
    ("without glasses", "remove", None, lambda p: "eyeglasses" in p.regions),
    ("no beard", "remove", {"skin"}, lambda p: "beard" in p.instruction),
    ("take off his hat", "remove", {"headwear", "hair"}, lambda p: p.instruction == "remove the hat"),
    ("make him bald", "remove", {"hair"}, lambda p: "bald" in p.instruction),
    ("remove the glasses and the hat", "remove", None, lambda p: {"eyeglasses", "headwear"} <= set(p.regions)),
    # expressions
    ("make her smile", "expression", None,
     lambda p: p.expression["smile"] >= 0.5 and p.instruction == "make her smile"),
    ("surprised", "expression", None, lambda p: "surprise" in p.expression),
    ("open mouth", "expression", None, lambda p: "open_mouth" in p.expression and "mouth_interior" in p.regions),
    ("close the eyes", "expression", None, lambda p: p.expression == {"closed_eyes": 1.0}),
    ("raise eyebrows", "expression", None, lambda p: "raised_brows" in p.expression),
    ("wink", "expression", None, lambda p: set(p.expression) == {"wink_left"}),
    ("wink with the right eye", "expression", None, lambda p: set(p.expression) == {"wink_right"}),
    ("stop smiling", "expression", None, lambda p: set(p.expression) == {"neutral"}),
    ("smile and close the eyes", "expression", None, lambda p: set(p.expression) == {"smile", "closed_eyes"}),
    ("smile but keep the eyes", "expression", None, lambda p: set(p.preserve) == EYES_KEPT and not EYES_KEPT & set(p.regions)),
    # fallback
    ("asdf qwerty zxcv", "appearance", {"skin", "hair"}, lambda p: p.instruction == "asdf qwerty zxcv"),
    ("cyberpunk style", "appearance", {"skin", "hair"}, None),
]


@pytest.mark.parametrize("prompt,kind,regions,check", CASES, ids=[c[0] for c in CASES])
def test_rule_refiner_table(prompt, kind, regions, check):
    plan = RuleRefiner().refine(prompt)
    assert plan.kind == kind, plan.summary()
    if regions is not None:
        assert set(plan.regions) == regions, plan.summary()
    if check is not None:
        assert check(plan), plan.summary()
    assert plan.prompt == prompt and plan.refiner == "rule"
    assert plan.instruction.strip() and plan.positive_prompt.strip()
    again = EditPlan.from_json(plan.to_json())
    assert again == plan.validate()


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_adverbs_order_expression_intensity():
    r = RuleRefiner()
    slight, plain, big = (r.refine(p).expression["smile"] for p in ("slightly smile", "make her smile", "big smile"))
    assert slight < plain < big
    assert r.refine("a bit surprised").expression["surprise"] < r.refine("very surprised").expression["surprise"]
    assert r.refine("smile 30%").expression["smile"] == pytest.approx(0.3)


def test_hedged_colour_edit_is_weaker():
    r = RuleRefiner()
    assert r.refine("slightly red hair").strength < r.refine("red hair").strength == 1.0


def test_kind_defaults_differ_sensibly():
    r = RuleRefiner()
    colour, accessory = r.refine("red hair"), r.refine("add a hat")
    assert colour.num_steps < accessory.num_steps
    assert colour.text_guidance < accessory.text_guidance
    assert accessory.mask_dilation > colour.mask_dilation


def test_refine_all_splits_independent_clauses():
    r = RuleRefiner()
    plans = r.refine_all("red hair and blue eyes")
    assert [p.kind for p in plans] == ["colour", "colour"]
    assert set(plans[0].regions) == {"hair"} and hue_close(plans[0].colour, 0)
    assert set(plans[1].regions) == EYES and hue_close(plans[1].colour, 225)
    assert all(p.prompt == "red hair and blue eyes" for p in plans)
    three = r.refine_all("blue hair, green eyes, and red lips")
    assert [set(p.regions) for p in three] == [{"hair"}, EYES, LIPS]
    mixed = r.refine_all("wearing sunglasses and smiling")
    assert [p.kind for p in mixed] == ["accessory", "expression"]
    # "salt and pepper" is one colour, not two clauses
    assert len(r.refine_all("salt and pepper hair")) == 1
    # a "keep" clause protects the regions for every plan of the prompt
    kept = r.refine_all("red hair and blue lips, but keep the eyebrows")
    assert len(kept) == 2 and all(set(p.preserve) == BROWS for p in kept)


def test_refine_merges_or_takes_the_first_clause(caplog):
    r = RuleRefiner()
    same = r.refine("red hair and red lips")
    assert set(same.regions) == {"hair"} | LIPS and hue_close(same.colour, 0)
    with caplog.at_level("WARNING", logger="dynavatar.edit"):
        first = r.refine("red hair and blue eyes")
    assert set(first.regions) == {"hair"} and "refine_all" in caplog.text


def test_empty_prompt_is_an_error():
    for bad in ("", "   ", None):
        with pytest.raises(EditPlanError):
            RuleRefiner().refine(bad)


def test_rule_refiner_is_a_prompt_refiner():
    assert isinstance(RuleRefiner(), PromptRefiner)


# ---------------------------------------------------------------------------------------- JSON helpers
GOOD = {"kind": "colour", "regions": ["hair"], "instruction": "make the hair red",
        "positive_prompt": "a photo of a person with red hair", "colour": [0.8, 0.1, 0.1], "colour_name": "red"}


@pytest.mark.parametrize("text", [
    json.dumps(GOOD),
    "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
    "Sure! Here is the plan:\n" + json.dumps(GOOD) + "\nLet me know if you need anything else {or not}.",
    "thinking... {not json} then " + json.dumps(GOOD) + " trailing",
    json.dumps(GOOD)[:-1] + ",}",  # a trailing comma
    "```\n" + json.dumps({"expression": {"smile": 0.7}, **GOOD}) + "\n```",
])
def test_extract_json_object(text):
    d = extract_json_object(text)
    assert d["regions"] == ["hair"] and d["kind"] == "colour"


def test_extract_json_object_without_json():
    for text in ("", "no json here", "{broken"):
        with pytest.raises(EditPlanError):
            extract_json_object(text)


def test_plan_from_text_fills_prompt_and_refiner_and_coerces():
    reply = json.dumps({**GOOD, "color": "#ff0000", "colour": None, "preserve": None, "num_steps": 12.0})
    reply = reply.replace('"colour": null, ', "")
    plan = plan_from_text(reply, "make it red", "test-model")
    assert plan.prompt == "make it red" and plan.refiner == "test-model"
    assert plan.colour == (1.0, 0.0, 0.0) and plan.num_steps == 12 and plan.preserve == []
    assert plan.text_guidance == 5.0  # the colour kind's default, not the dataclass's
    with pytest.raises(EditPlanError, match="unknown edit plan fields"):
        plan_from_text(json.dumps({**GOOD, "explanation": "x"}), "p", "m")


def test_system_prompt_states_the_schema():
    text = build_system_prompt()
    for needle in ("left_eye", "eyeglasses", "closed_eyes", "metallic", "mask_dilation", '"kind"', "Request:"):
        assert needle in text
    assert text.count("Request:") == 3


# ---------------------------------------------------------------------------------------- transformers
def tiny_tokenizer(chat_template: bool = True):
    """A byte-level tokenizer with no merges, built in memory (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if chat_template:
        hf.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return hf


def tiny_llama(vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=16384,
                      bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tiny_components():
    tok = tiny_tokenizer()
    return tiny_llama(len(tok)), tok


def test_transformers_refiner_repairs_then_falls_back(tiny_components, caplog):
    model, tok = tiny_components
    calls = []

    class Counting(TransformersRefiner):
        def generate_text(self, messages):
            calls.append(messages)
            return super().generate_text(messages)

    refiner = Counting(model="tiny-llama", pipeline_or_model=model, tokenizer=tok, max_new_tokens=8)
    with caplog.at_level("WARNING", logger="dynavatar.edit"):
        plan = refiner.refine("red hair")
    assert len(calls) == 2  # the first answer, then one repair
    assert calls[1][-1]["role"] == "user" and "not a valid edit plan" in calls[1][-1]["content"]
    assert calls[1][-2]["role"] == "assistant"
    assert plan.refiner.startswith("rule (fallback from transformers:tiny-llama: invalid plan after one repair")
    assert plan.kind == "colour" and plan.regions == ["hair"]  # the rules' answer
    assert "fallback" in caplog.text or "rule-based" in caplog.text
    EditPlan.from_json(plan.to_json())


def test_transformers_refiner_plain_prompt_without_chat_template(tiny_components):
    model, _ = tiny_components
    tok = tiny_tokenizer(chat_template=False)
    refiner = TransformersRefiner(model="tiny", pipeline_or_model=model, tokenizer=tok, max_new_tokens=4)
    text = refiner._chat_text([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tok)
    assert text.endswith("Assistant:") and "System: S" in text
    assert isinstance(refiner.generate_text([{"role": "user", "content": "hi"}]), str)


class ReplyingLM:
    """A stand-in causal LM whose generate() appends a fixed reply: the success path, end to end."""

    def __init__(self, tokenizer, reply: str):
        import torch

        self.device = torch.device("cpu")
        self._ids = tokenizer(reply, return_tensors="pt")["input_ids"]

    def generate(self, input_ids, attention_mask=None, **kw):
        import torch

        return torch.cat([input_ids, self._ids], dim=1)


def test_transformers_refiner_success_through_the_real_decode_path():
    tok = tiny_tokenizer()
    reply = "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```"
    refiner = TransformersRefiner(model="fake-lm", pipeline_or_model=ReplyingLM(tok, reply), tokenizer=tok)
    plan = refiner.refine("make the hair red")
    assert plan.refiner == "transformers:fake-lm" and plan.prompt == "make the hair red"
    assert plan.kind == "colour" and plan.regions == ["hair"] and plan.colour == (0.8, 0.1, 0.1)


def test_transformers_refiner_repair_succeeds_on_second_answer():
    answers = iter(["not json at all", json.dumps(GOOD)])

    class Scripted(TransformersRefiner):
        def generate_text(self, messages):
            return next(answers)

    plan = Scripted(model="scripted").refine("red hair")
    assert plan.refiner == "transformers:scripted" and plan.kind == "colour"


def test_transformers_refiner_accepts_a_pipeline_like_object():
    tok = tiny_tokenizer()

    class Pipe:
        model = ReplyingLM(tok, json.dumps(GOOD))
        tokenizer = tok

    plan = TransformersRefiner(model="pipe", pipeline_or_model=Pipe()).refine("red hair")
    assert plan.refiner == "transformers:pipe"


def test_transformers_refiner_missing_weights_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refiner = TransformersRefiner(model="no-such-org/no-such-model", device="cpu", strict=True)  # else: rules
    with pytest.raises(DynavatarError, match="huggingface-cli download no-such-org/no-such-model"):
        refiner.refine("red hair")


# ---------------------------------------------------------------------------------------- OpenAI server
class ChatServer:
    """A real HTTP server on 127.0.0.1 answering like /v1/chat/completions with scripted contents."""

    def __init__(self, contents, reject_response_format=False, raw=None):
        self.contents = list(contents)
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status = 200
                if reject_response_format and "response_format" in body:  # like some local servers
                    status, data = 400, json.dumps({"error": {"message": "response_format is not supported"}})
                elif raw is not None:
                    data = raw
                else:
                    content = outer.contents.pop(0) if outer.contents else "{}"
                    data = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_refiner_good_json():
    with ChatServer([json.dumps(GOOD)]) as server:
        refiner = OpenAIRefiner(base_url=server.url, model="local-model", api_key="sk-test", timeout=5)
        plan = refiner.refine("make the hair red")
    assert plan.refiner == "openai:local-model" and plan.kind == "colour" and plan.colour == (0.8, 0.1, 0.1)
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    body = req["body"]
    assert body["temperature"] == 0 and body["response_format"] == {"type": "json_object"}
    assert body["model"] == "local-model" and body["messages"][0]["role"] == "system"
    assert body["messages"][-1] == {"role": "user", "content": "make the hair red"}
    assert "sk-test" not in repr(refiner)


def test_openai_refiner_repair_path():
    bad = json.dumps({**GOOD, "regions": ["hairs"]})  # not a label
    with ChatServer([bad, json.dumps(GOOD)]) as server:
        plan = OpenAIRefiner(base_url=server.url, model="m", timeout=5).refine("red hair")
    assert plan.refiner == "openai:m" and plan.regions == ["hair"]
    assert len(server.requests) == 2
    repair = server.requests[1]["body"]["messages"]
    assert repair[-2] == {"role": "assistant", "content": bad} and "hairs" in repair[-1]["content"]


def test_openai_refiner_invalid_twice_falls_back():
    with ChatServer(["nope", "still nope"]) as server:
        plan = OpenAIRefiner(base_url=server.url, model="m", timeout=5).refine("blue eyes")
    assert plan.refiner.startswith("rule (fallback from openai:m: invalid plan after one repair")
    assert set(plan.regions) == EYES


def test_openai_refiner_retries_without_response_format():
    with ChatServer([json.dumps(GOOD)], reject_response_format=True) as server:
        plan = OpenAIRefiner(base_url=server.url, model="m", timeout=5).refine("red hair")
    assert plan.refiner == "openai:m"
    assert ["response_format" in r["body"] for r in server.requests] == [True, False]


def test_openai_refiner_malformed_response_falls_back():
    with ChatServer([], raw=json.dumps({"unexpected": True})) as server:
        plan = OpenAIRefiner(base_url=server.url, model="m", timeout=5).refine("red hair")
    assert plan.refiner.startswith("rule (fallback from openai:m: generation failed") and plan.kind == "colour"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_refiner_server_down(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level("WARNING", logger="dynavatar.edit"):
        plan = OpenAIRefiner(base_url=url, model="m", timeout=2).refine("red hair")
    assert plan.refiner.startswith("rule (fallback from openai:m: generation failed: cannot reach")
    assert plan.kind == "colour" and "rule-based" in caplog.text
    with pytest.raises(DynavatarError, match=f"{url}/v1/chat/completions"):
        OpenAIRefiner(base_url=url, model="m", timeout=2, strict=True).refine("red hair")


def test_openai_refiner_reads_the_environment(monkeypatch):
    for k in ("DYNAVATAR_LLM_BASE_URL", "OPENAI_BASE_URL", "DYNAVATAR_LLM_MODEL", "DYNAVATAR_LLM_API_KEY",
              "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid:8000/v1/")
    monkeypatch.setenv("DYNAVATAR_LLM_MODEL", "qwen")
    r = OpenAIRefiner()
    assert r.url == "http://example.invalid:8000/v1/chat/completions" and r.model == "qwen"
    assert OpenAIRefiner(base_url="http://h:1").url == "http://h:1/v1/chat/completions"


# ---------------------------------------------------------------------------------------- get_refiner
ENV_VARS = ("DYNAVATAR_LLM_BASE_URL", "OPENAI_BASE_URL", "DYNAVATAR_LLM_MODEL", "DYNAVATAR_LLM_API_KEY",
            "OPENAI_API_KEY")


def test_get_refiner_auto_without_anything_is_rules(tmp_path, monkeypatch):
    for k in ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-enough-on-its-own")
    assert isinstance(get_refiner("auto"), RuleRefiner)
    assert isinstance(get_refiner(), RuleRefiner)


def test_get_refiner_auto_prefers_endpoint_then_cached_model(tmp_path, monkeypatch):
    for k in ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snap = tmp_path / "models--Qwen--Qwen2.5-1.5B-Instruct" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    local = get_refiner("auto", timeout=3)  # options the chosen refiner does not take are ignored
    assert isinstance(local, TransformersRefiner) and local.model_id == "Qwen/Qwen2.5-1.5B-Instruct"
    monkeypatch.setenv("DYNAVATAR_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    assert isinstance(get_refiner("auto"), OpenAIRefiner)
    assert isinstance(get_refiner("rule"), RuleRefiner)
    with pytest.raises(DynavatarError, match="unknown refiner"):
        get_refiner("magic")
