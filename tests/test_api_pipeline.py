"""The pipeline's settings (``PipelineConfig`` and the stages' ``XConfig.preset``) and the facade's
wiring of them: ``Avatar.from_video`` / ``from_dataset`` run the stages those settings name."""

from __future__ import annotations

import dataclasses
import json

import torch

import pytest
from flame_fixtures import vhap_export

import dynavatar
from dynavatar.api import Avatar
from dynavatar.config import PipelineConfig
from dynavatar.perceive import PreprocessConfig
from dynavatar.reconstruct import ReconstructConfig
from dynavatar.reconstruct.config import PRESETS
from dynavatar.track import TrackerConfig


def test_every_config_presets_the_same_way():
    assert not hasattr(dynavatar.reconstruct, "preset")  # one style: XConfig.preset(name, **overrides)
    for name, build in PRESETS.items():
        assert ReconstructConfig.preset(name) == build()
    tiny = ReconstructConfig.preset("tiny", steps=7, resolution=48)
    assert (tiny.steps, tiny.resolution, tiny.batch_size) == (7, 48, PRESETS["tiny"]().batch_size)
    assert ReconstructConfig.preset("tiny") is not ReconstructConfig.preset("tiny")
    assert TrackerConfig.preset("fast", device="cpu") == dataclasses.replace(TrackerConfig.preset("fast"), device="cpu")
    for cls in (ReconstructConfig, TrackerConfig, PipelineConfig):
        with pytest.raises(ValueError, match="unknown"):
            cls.preset("turbo")
    with pytest.raises(TypeError):
        ReconstructConfig.preset("fast", no_such_field=1)


@pytest.mark.parametrize("name", ["tiny", "fast", "quality"])
def test_pipeline_presets_name_the_stage_presets(name):
    pipe = PipelineConfig.preset(name)
    assert pipe.name == name and pipe.reconstruct == ReconstructConfig.preset(name)
    assert pipe.track == TrackerConfig.preset("tiny" if name == "tiny" else "default")
    assert pipe.preprocess == PreprocessConfig(resolution=512, max_frames=None)
    assert dynavatar.PipelineConfig is PipelineConfig


def test_pipeline_config_resolves_the_from_video_arguments():
    mine = ReconstructConfig.preset("tiny", steps=3)
    pipe = PipelineConfig.resolve(mine, "tiny")
    assert pipe.reconstruct is mine and pipe.track == TrackerConfig.preset("tiny") and pipe.name == "tiny"
    assert PipelineConfig.resolve(None, "quality") == PipelineConfig.preset("quality")
    given = PipelineConfig.preset("tiny")
    assert PipelineConfig.resolve(given, "fast") is given  # a whole pipeline wins over the preset name
    pre = PipelineConfig.resolve(None, "fast", resolution=256, max_frames=None).preprocess
    assert (pre.resolution, pre.max_frames) == (256, None)
    assert PipelineConfig() == PipelineConfig.preset("fast")


def test_from_video_hands_each_stage_its_settings(monkeypatch, tmp_path):
    import dynavatar.api as api

    calls = []
    monkeypatch.setattr(api, "preprocess", lambda path, out, config, progress: calls.append(("pre", out, config)))
    monkeypatch.setattr(Avatar, "from_dataset", classmethod(lambda cls, d, **kw: calls.append(("fit", d, kw))))
    mine = ReconstructConfig.preset("fast", steps=10)
    Avatar.from_video(tmp_path / "clip.mp4", preset="fast", config=mine, progress=False)
    (_, out, pre), (_, data_dir, kw) = calls
    assert pre == PreprocessConfig(resolution=512, max_frames=None)
    assert out == data_dir == tmp_path / "clip.mp4.dynavatar" / "data"
    assert kw["config"].reconstruct is mine and kw["config"].name == "fast" and kw["out_dir"] == out.parent
    calls.clear()
    Avatar.from_video(tmp_path / "clip.mp4", out_dir=tmp_path / "run", resolution=256, max_frames=12,
                      config=PipelineConfig.preset("tiny"))
    (_, out, pre), (_, _, kw) = calls
    assert (pre.resolution, pre.max_frames) == (256, 12) and out == tmp_path / "run" / "data"
    assert kw["config"].name == "tiny" and kw["config"].reconstruct == ReconstructConfig.preset("tiny")




def test_from_dataset_uses_the_cached_tracking_fits_labels_and_plots(monkeypatch, tmp_path):
    import dynavatar.track.cache as cache
    from dynavatar.track.importers import import_vhap

    import_vhap(vhap_export(tmp_path / "export", focal=120.0), tmp_path / "data", resolution=32)  # writes data/tracking too

    def no_tracking(*a, **k):
        raise AssertionError("the cached tracking should have been used")
    monkeypatch.setattr(cache, "track", no_tracking)
    cfg = ReconstructConfig.preset("tiny", steps=2, resolution=32, log_every=1, torso=False)
    avatar = Avatar.from_dataset(tmp_path / "data", out_dir=tmp_path / "run", preset="tiny", device="cpu",
                                 config=cfg, progress=False)
    assert avatar.meta["preset"] == "tiny" and avatar.meta["frame_index"] == [0, 1, 2, 3]
    assert avatar.meta["labels"] == {"source": "head regions"} and avatar.has_labels  # no parsed frames
    assert avatar.train_idx.tolist() == [0, 1, 2] and avatar.resolution == 32
    # the photometric tracking stage fitted the held-out frame's motion; the trained ones kept the fit's
    assert avatar.meta["held_out_tracking"] == "photometric tracking stage (30 steps)"
    landmark_motion = avatar.training_motion("tracked")
    assert not torch.equal(avatar.params.expr[3], landmark_motion.expr[3])
    assert (tmp_path / "run" / "training_curve.png").is_file()
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2
    assert avatar.render(frame=3).shape == (32, 32, 3)
