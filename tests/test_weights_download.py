"""Weights fetched on first use, like every Hugging Face library, tested without internet against a
real local HTTP server that speaks the hub's API (``hub_server.py``): the first call downloads
into a temporary cache with a progress bar, the second is served by the cache alone, offline mode
gives the one-line message, corrupt and half-finished copies are caught, and ``dynavatar download``
/ ``dynavatar info`` / ``editor="auto"`` / ``plan()`` say and do the right thing.

Every probe and download goes to 127.0.0.1: huggingface_hub's endpoint (read at its import) is
pointed at the server for the test's duration, and the suite's ``HF_HUB_OFFLINE=1`` (conftest) is
lifted only inside the ``hub`` fixture.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dynavatar.cli import main
from dynavatar.edit.plan import EditPlan
from dynavatar.errors import ConfigError
from dynavatar.hub import (CorruptWeightsError, MissingWeightsError, WeightsDownloadError, lpips_function,
                           resolve_weights, weights_status)
from dynavatar.weights import KNOWN_WEIGHTS, KnownWeights
from hub_server import HubServer

safetensors_numpy = pytest.importorskip("safetensors.numpy")
constants = pytest.importorskip("huggingface_hub.constants")

PINNED = {w.key: w for w in KNOWN_WEIGHTS}


def tiny_repo() -> dict[str, bytes]:
    """A tiny "model": a config, its weights twice (fp32 and an fp16 variant) and a .bin copy, as real repos have."""
    weights = safetensors_numpy.save({"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    return {"config.json": b'{"hidden_size": 4}', "model.safetensors": weights,
            "model.fp16.safetensors": weights, "pytorch_model.bin": b"\0" * 64, "README.md": b"# tiny\n"}


def torch_zip(seed: int) -> bytes:
    """A small file in torch's zip checkpoint format (what torch.save and TorchScript write)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", bytes(range(seed, seed + 32)))
    return buf.getvalue()


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """A running local hub; huggingface_hub online and pointed at it; empty caches under tmp_path."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"), raising=False)
        yield server


def tiny_weights(hub: HubServer, repo: str = "tiny-org/tiny-model") -> KnownWeights:
    commit = hub.add_repo(repo, tiny_repo())
    return KnownWeights("Tiny", "a test model", hub_repo=repo, key="tiny", revision=commit)


def go_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ============================================================================ first use, then the cache
def test_first_call_downloads_with_a_progress_bar_then_the_cache_serves(hub, capsys, tmp_path):
    w = tiny_weights(hub)
    folder = resolve_weights(w)
    assert folder == tmp_path / "hub" / "models--tiny-org--tiny-model" / "snapshots" / w.revision
    # one format of the weights: the fp16 variant and the .bin copy were not fetched
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.rsplit("/", 1)[-1] for p in hub.content_gets()) == ["README.md", "config.json", "model.safetensors"]
    assert "Fetching 3 files" in capsys.readouterr().err  # the progress bar
    hub.requests.clear()
    assert resolve_weights(w) == folder
    assert hub.requests == []  # the cache alone: not even a metadata request
    assert weights_status(w).state == "present"


def test_offline_with_an_empty_cache_gives_the_clear_message(hub, monkeypatch):
    w = tiny_weights(hub)
    with pytest.raises(MissingWeightsError, match="local_files_only=True.*dynavatar download tiny"):
        resolve_weights(w, local_files_only=True)
    go_offline(monkeypatch)
    with pytest.raises(MissingWeightsError) as err:
        resolve_weights("ip2p", what="InstructPix2Pix editor")
    msg = str(err.value)
    assert "\n" not in msg and "InstructPix2Pix editor" in msg and "timbrooks/instruct-pix2pix" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "`dynavatar download ip2p`" in msg
    assert hub.requests == []
    assert weights_status("ip2p").state == "neither" and hub.requests == []  # decided without a probe


def test_a_corrupt_cached_file_is_reported_with_its_path(hub):
    w = tiny_weights(hub)
    folder = resolve_weights(w, progress=False)
    blob = (folder / "model.safetensors").resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[:-8])  # truncated: the cheap check sees it
    with pytest.raises(CorruptWeightsError, match=rf"{blob}.*truncated.*delete it"):
        resolve_weights(w)
    status = weights_status(w)
    assert status.state == "neither" and str(blob) in status.detail  # not "fetchable": the user must delete it
    flipped = bytearray(data)
    flipped[-1] ^= 1
    blob.write_bytes(bytes(flipped))  # same size, one bit: only the hash sees it
    assert resolve_weights(w) == folder
    with pytest.raises(CorruptWeightsError, match=rf"{blob}.*sha256"):
        resolve_weights(w, verify=True)
    result = CliRunner().invoke(main, ["download", "tiny-org/tiny-model", "--revision", w.revision, "--quiet"])
    assert result.exit_code == 2 and str(blob) in result.output and "delete it" in result.output


def test_an_interrupted_download_is_seen_and_resumed(hub, monkeypatch):
    w = tiny_weights(hub)
    folder = resolve_weights(w, progress=False)
    (folder / "model.safetensors").resolve().unlink()  # as if the fetch stopped before this file
    go_offline(monkeypatch)
    with pytest.raises(MissingWeightsError, match="incomplete.*model.safetensors.*dynavatar download tiny"):
        resolve_weights(w)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.requests.clear()
    assert resolve_weights(w, progress=False) == folder
    assert [p.rsplit("/", 1)[-1] for p in hub.content_gets()] == ["model.safetensors"]  # only what was missing
    assert (folder / "model.safetensors").read_bytes() == tiny_repo()["model.safetensors"]


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'ip2px': known names are ip2p, sd15, sd15-inpaint, clip, "
                                          "qwen, farl, farl-celebm, lpips"):
        resolve_weights("ip2px")
    with pytest.raises(ConfigError, match="no folder or file at"):
        resolve_weights(str(tmp_path / "nowhere" / "model"))
    assert resolve_weights(str(tmp_path)) == tmp_path  # a local path is used as given
    result = CliRunner().invoke(main, ["download", "ip2px"])
    assert result.exit_code == 2 and "known names are ip2p" in result.output


# ============================================================================ torch hub style files
def test_torch_hub_file_is_fetched_hash_checked_and_cached(hub, tmp_path):
    data = torch_zip(1)
    hub.files["face_parsing.test.pt"] = data
    good = KnownWeights("Test parser", "a test", key="testparser", torch_hub_files=("face_parsing.test.",),
                        url=hub.url + "/files/face_parsing.test.pt", sha256_prefix=hashlib.sha256(data).hexdigest()[:8])
    path = resolve_weights(good, progress=False)
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / "face_parsing.test.pt" and path.read_bytes() == data
    hub.requests.clear()
    assert resolve_weights(good) == path and hub.requests == []
    path.write_bytes(data[:-10])  # the zip's central directory is at the end: a truncated file fails to open
    with pytest.raises(CorruptWeightsError, match=rf"{path}.*delete it"):
        resolve_weights(good)
    path.unlink()
    bad = KnownWeights("Test parser", "a test", key="testparser", torch_hub_files=("face_parsing.test.",),
                       url=hub.url + "/files/face_parsing.test.pt", sha256_prefix="00000000")
    with pytest.raises(WeightsDownloadError, match="could not fetch"):
        resolve_weights(bad, progress=False)
    assert not path.exists()  # a file that failed its hash is never left in the cache


def test_facer_and_lpips_offline_say_what_is_missing(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match=r"face_parsing\.farl\.lapa\..*hub.checkpoints"):
        resolve_weights("farl")
    with caplog.at_level(logging.INFO, logger="dynavatar.hub"):
        assert lpips_function() is None  # no lpips package, or no AlexNet weights offline: no number promised
    assert "LPIPS not computed" in caplog.text and ("pip install lpips" in caplog.text or "alexnet" in caplog.text)


# ============================================================================ the CLI: download and info
def serve_pinned(hub: HubServer, key: str) -> None:
    """Serve the tiny repo under a known model's real id, at its pinned commit."""
    w = PINNED[key]
    hub.add_repo(w.hub_repo, tiny_repo() | {w.probe_file: b"{}"})
    hub.repos[w.hub_repo]["commit"] = w.revision


def test_cli_download_then_info_says_present_fetchable_or_neither(hub, monkeypatch, tmp_path):
    serve_pinned(hub, "ip2p")
    serve_pinned(hub, "sd15")  # served but not fetched: fetchable; clip, qwen, sd15-inpaint: not served: neither
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    for i, w in enumerate(w for w in KNOWN_WEIGHTS if w.url):  # the torch hub files: present, so never probed
        (ckpt / w.url.rsplit("/", 1)[-1]).write_bytes(torch_zip(i))
    result = CliRunner().invoke(main, ["download", "ip2p", "--quiet"])
    assert result.exit_code == 0, result.output
    snap = tmp_path / "hub" / "models--timbrooks--instruct-pix2pix" / "snapshots" / PINNED["ip2p"].revision
    assert result.output.strip() == f"ip2p: fetched and verified: {snap}"
    again = CliRunner().invoke(main, ["download", "ip2p", "--quiet"])
    assert again.output.strip() == f"ip2p: already present, verified: {snap}"

    states = info_states()
    assert states == {"ip2p": "present", "sd15": "fetchable", "sd15-inpaint": "neither", "clip": "neither",
                      "qwen": "neither", "farl": "present", "farl-celebm": "present", "lpips": "present"}
    sd15 = PINNED["sd15"].hub_repo
    assert ("HEAD", f"/{sd15}/resolve/{PINNED['sd15'].revision}/model_index.json") in hub.requests  # the probe
    assert not any(sd15 in p for p in hub.content_gets())  # info only asks; it fetches nothing
    go_offline(monkeypatch)
    hub.requests.clear()
    assert info_states()["sd15"] == "neither" and hub.requests == []  # HF_HUB_OFFLINE: no probe at all
    result = CliRunner().invoke(main, ["download", "sd15"])
    assert result.exit_code == 2 and "cannot download sd15: HF_HUB_OFFLINE=1" in result.output


def info_states() -> dict[str, str]:
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    rows = result.output.split("optional weights")[1].splitlines()[1::2]
    return {row.split()[1]: row.split()[0] for row in rows if row.strip()}


# ============================================================================ what "auto" runs, and says
def hat() -> EditPlan:
    return EditPlan(prompt="add a hat", kind="accessory", regions=["headwear", "hair"], instruction="add a hat")


def red_hair() -> EditPlan:
    return EditPlan(prompt="red hair", kind="colour", regions=["hair"], instruction="make the hair red",
                    colour=(0.8, 0.1, 0.1))


def test_plan_says_what_will_run_here(hub, monkeypatch):
    assert red_hair().with_backend().summary().endswith("-> editor: palette (offline; the splat recolour is the whole edit, no loop) on hair")
    assert "editor" not in red_hair().summary() and "backend" not in red_hair().to_dict()
    serve_pinned(hub, "ip2p")
    line = hat().with_backend().backend
    assert line == "editor: InstructPix2Pix (weights not cached; will download ~4.3 GB on first use) on headwear, hair"
    assert "SDS (Stable Diffusion 1.5) (cannot run here" in hat().with_backend(method="sds").backend  # not served
    go_offline(monkeypatch)
    assert "InstructPix2Pix (cannot run here: weights not cached; HF_HUB_OFFLINE=1" in hat().with_backend().backend
    assert "cannot do 'accessory' edits" in hat().with_backend("palette").backend


def test_editor_auto_fetches_the_real_backend_when_it_can(hub, monkeypatch, tmp_path, caplog):
    """The whole path: "auto" on a non-colour plan downloads a (tiny, random) InstructPix2Pix from the
    local hub at the pinned revision, diffusers loads it; colour plans stay on the palette editor."""
    from dynavatar.edit.editors.base import get_editor
    from dynavatar.edit.editors.random_pipelines import random_ip2p_pipeline

    random_ip2p_pipeline("tiny").save_pretrained(tmp_path / "ip2p")
    files = {p.relative_to(tmp_path / "ip2p").as_posix(): p.read_bytes()
             for p in (tmp_path / "ip2p").rglob("*") if p.is_file()}
    w = PINNED["ip2p"]
    hub.add_repo(w.hub_repo, files)
    hub.repos[w.hub_repo]["commit"] = w.revision
    with caplog.at_level(logging.INFO, logger="dynavatar.edit"):
        assert get_editor("auto", red_hair()).name == "palette"
        editor = get_editor("auto", hat(), device="cpu")
    assert editor.name == "ip2p" and editor.pipe.tokenizer.vocab_size > 0
    assert "editor 'auto': palette" in caplog.text and "editor 'auto': InstructPix2Pix" in caplog.text
    assert editor.auto_choice.startswith("InstructPix2Pix")
    assert hat().with_backend().backend.startswith("editor: InstructPix2Pix (weights cached at ")
    assert os.path.isdir(Path(os.environ["HF_HUB_CACHE"]) / "models--timbrooks--instruct-pix2pix")


def test_avatar_plan_and_cli_plan_only_say_what_will_run(tmp_path):
    import torch

    from dynavatar.api import Avatar
    from dynavatar.flame import FlameModel
    from dynavatar.gaussians.avatar import GaussianAvatar
    from dynavatar.geometry.cameras import Cameras

    head = FlameModel.load()
    g = GaussianAvatar.init_on_mesh(head.faces.shape[0], 1, init_scale=0.6, init_opacity=0.9,
                                    generator=torch.Generator().manual_seed(1))
    cams = Cameras.orbit(2, radius=0.6, azimuth_range_deg=(-20, 20), width=32, height=32, fov_y_deg=25.0)
    avatar = Avatar(g, head, head.zero_params(2), cams, {"preset": "test"}, None)
    assert avatar.plan("red hair", refiner="rule").summary().endswith("-> editor: palette (offline; the splat recolour is the whole edit, no loop) on hair")
    sds = avatar.plan("red hair", "rule", method="sds").summary()
    assert "-> editor: SDS (Stable Diffusion 1.5) (cannot run here" in sds
    avatar.save(tmp_path / "a")
    res = CliRunner().invoke(main, ["edit", str(tmp_path / "a"), "add a hat", "-o", str(tmp_path / "b"),
                                    "--plan-only", "--refiner", "rule", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "-> editor: InstructPix2Pix (cannot run here: weights not cached; HF_HUB_OFFLINE=1" in res.output
    glasses = avatar.plan("add round glasses", refiner="rule").summary()  # built offline, as Avatar.edit does
    assert glasses.endswith("-> editor: glasses as geometry (offline) on eyeglasses, left_eye, right_eye, iris, sclera, nose, skin")
    assert not (tmp_path / "b").exists()
    res = CliRunner().invoke(main, ["edit", str(tmp_path / "a"), "red hair", "--plan-only", "--refiner", "rule",
                                    "--device", "cpu"])  # a plan needs no output folder
    assert res.exit_code == 0 and "-> editor: palette (offline; the splat recolour is the whole edit, no loop) on hair" in res.output, res.output
    res = CliRunner().invoke(main, ["edit", str(tmp_path / "a"), "red hair", "--refiner", "rule", "--device", "cpu"])
    assert res.exit_code == 2 and "Missing option '-o' / '--out'" in res.output, res.output
