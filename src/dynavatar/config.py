"""The whole pipeline's settings in one object: video -> preprocess -> track -> reconstruct.

Each stage keeps its own config with its own presets (``PreprocessConfig``, ``TrackerConfig.preset``,
``ReconstructConfig.preset``); ``PipelineConfig`` nests one of each, and its presets name the stage
presets that belong together, so ``Avatar.from_video(config=PipelineConfig.preset("quality"))``
and ``Avatar.from_video(preset="quality")`` are the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .perceive import PreprocessConfig
from .reconstruct.config import PRESETS, ReconstructConfig
from .track import TrackerConfig

__all__ = ["PipelineConfig"]


@dataclasses.dataclass
class PipelineConfig:
    # video -> head crops, mattes, landmarks and parsing (cached in OUT/data)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    # crops -> per-frame FLAME parameters and cameras (cached in OUT/data/tracking); its device is
    # the fit's unless set here
    track: TrackerConfig = dataclasses.field(default_factory=TrackerConfig)
    # tracked frames -> the Gaussian avatar (resumable checkpoints in OUT/checkpoint)
    reconstruct: ReconstructConfig = dataclasses.field(default_factory=lambda: ReconstructConfig.preset("fast"))
    name: str = "fast"  # the preset this started from, recorded in the avatar's metadata

    @classmethod
    def preset(cls, name: str, **overrides) -> "PipelineConfig":
        """``tiny`` (CPU tests), ``fast`` or ``quality``: the reconstruction preset of that name, the
        tracker's ``tiny`` preset for ``tiny`` and its ``default`` otherwise, and 512-px crops of every
        frame. ``overrides`` replace whole stages, e.g. ``preset("fast", track=TrackerConfig.preset("fast"))``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        stages = dict(preprocess=PreprocessConfig(resolution=512, max_frames=None),
                      track=TrackerConfig.preset("tiny" if name == "tiny" else "default"),
                      reconstruct=ReconstructConfig.preset(name), name=name)
        return cls(**{**stages, **overrides})

    @classmethod
    def resolve(cls, config: "PipelineConfig | ReconstructConfig | None" = None, preset: str = "fast",
                **preprocess) -> "PipelineConfig":
        """The pipeline ``Avatar.from_video`` / ``from_dataset`` runs: ``config`` itself, or ``preset``'s
        with ``config`` (a ``ReconstructConfig``) as its reconstruction; ``preprocess`` fields that are
        not None (``resolution``, ``max_frames``) override the preprocessing ones."""
        if isinstance(config, cls):
            pipe = config
        else:
            pipe = cls.preset(preset)
            if config is not None:
                pipe = dataclasses.replace(pipe, reconstruct=config)
        changes = {k: v for k, v in preprocess.items() if v is not None}
        if changes:
            pipe = dataclasses.replace(pipe, preprocess=dataclasses.replace(pipe.preprocess, **changes))
        return pipe

    def save(self, path: str | os.PathLike) -> Path:
        """Write every stage's resolved settings as JSON (atomically): a run folder's ``config.json``
        says how it was made, and ``dynavatar fit --config`` reads the same file back."""
        from .io.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(dataclasses.asdict(self), indent=1, default=str))
        return path
