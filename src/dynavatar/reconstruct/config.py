"""Reconstruction settings as a nested dataclass with named presets."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from ..gaussians.densify import BindingStrategy
from .surface import SurfaceBox

__all__ = ["ReconstructConfig", "LearningRates", "PRESETS", "FLAT_CHOICES"]

#: ``ReconstructConfig.flat_on`` choices: which triangles' splats ``regularisers.flatness_loss`` lays on the surface
FLAT_CHOICES = ("face", "skin", "all")


@dataclasses.dataclass
class LearningRates:
    means_local: float = 5e-3  # triangle-local units (k ~ triangle size)
    position_final: float = 0.05  # means_local decays exponentially to this fraction by the last step
    log_scales_local: float = 1e-2
    quats_local: float = 2e-3
    opacity_logits: float = 5e-2
    sh: float = 5e-3  # DC colour (higher orders get /20)
    expr: float = 1e-3  # per-frame refinement of tracked FLAME parameters (small on purpose)
    pose: float = 1e-4  # rotation, jaw, eyes (radians)
    translation: float = 1e-5  # metres
    torso: float = 1e-4  # metres: the torso sheet's per-frame shift (FlameParams.torso), untracked so faster


@dataclasses.dataclass
class ReconstructConfig:
    resolution: int = 512  # training image side (crops are resized to it)
    steps: int = 15_000  # optimisation steps
    batch_size: int = 1  # frames per step
    splats_per_face: int = 1  # initial splats on every triangle
    sh_degree: int = 0  # 0 for monocular input (view-dependence is not observable)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # matted images are composited on it
    random_background: bool = False  # True: training composites each step on a random colour instead. On a
    # fixed white, splats at the outline that learned white pass for "nothing" from the front and show as white
    # patches when the head turns; random colours remove those, but cost 0.2-0.4 dB of held-out PSNR (scored
    # on white) on 128-px CPU fits and were not measured on a GPU (docs/benchmarks.md), so it is not the default
    foreground_colours: bool = True  # composite the person's colour alone at the matte's soft edge, not the mix
    # with the room behind (``matting.foreground_colours``): no wall-coloured fringe learned into the hair
    despill: bool = True  # with foreground_colours: a green or blue screen's light taken off the person
    # (``matting.despill``); other backdrops are left as they are
    w_l1: float = 0.8
    w_dssim: float = 0.2
    w_position: float = 0.01  # keep splats within ~1 triangle size of their triangle
    position_margin: float = 1.0
    w_scale: float = 1.0  # keep splats small (local scale beyond the margin is penalised)
    scale_margin: float = 0.6
    bind_to_surface: bool = True  # project every splat into a box round its triangle after each step
    # (``surface``): one view cannot tell a splat on the skin from one behind it, and a turned head shows it
    surface: SurfaceBox = dataclasses.field(default_factory=SurfaceBox)
    init_colours: str = "seen"  # the splats' first colours: "seen", what each draws in a few frames, hidden ones
    # their region's mean (``init_colours``); "projected" (before 2026-12-07), the pixel its triangle projects to
    # in the first frame: hidden splats copied the face in front of them, a second face on a turned head
    w_face_opacity: float = 0.1  # the face's splats are pushed to opaque (``face_opacity_loss``; 0: off): a solid
    # face hides the splats behind it, which a turned head would show as a second face (docs/benchmarks.md)
    w_flat: float = 0.01  # the splats on ``flat_on`` triangles are laid flat on them (``regularisers.flatness_loss``;
    # 0: off): a splat standing across the skin is a line from the front and a fleck when the head turns
    flat_on: str = "skin"  # "face", "skin" (all but the scalp and the torso sheet) or "all"
    w_beyond_frame: float = 0.05  # what is drawn below the video frame's bottom edge is pushed to transparent
    # (``regularisers.beyond_frame_loss``; 0: off): unseen there, the clothes' splats fanned out into thin spikes
    eval_fraction: float = 0.1  # the last frames, never trained on (self-reenactment protocol)
    refine_params: bool = True  # jointly refine per-frame expression/pose/translation
    track_steps: int = 100  # photometric tracking stage after the fit: Adam steps per chunk of the frames the
    # fit did not train on (held out), the avatar frozen (``refine_tracking.track_untrained_frames``), so every
    # frame's stored motion matches its pixels, not only the trained ones. 0: they keep the landmark fit
    w_landmarks: float = 0.0  # > 0: the refined motion is also kept on the detected landmarks (``landmark_anchor``).
    # Off: it brings the lips' mesh closer to the detector's contour and the lips labels up a little, but the
    # held-out PSNR pays more than that is worth (docs/benchmarks.md)
    w_landmark_budget: float = 0.0  # > 0: no frame's refined motion (training's joint refinement and the tracking
    # stage) may move the face further off the detected landmarks than the landmark fit had it (``landmark_budget``)
    landmark_points: str = "all"  # which landmarks the anchor holds: "all" or "mouth" (``ANCHOR_POINTS``). "mouth"
    # costs less PSNR and helps the lips on the training frames, but not on held-out ones
    train_neck: bool = True  # refine the neck joint per frame too (the collar line); False: it stays 0 in
    # training (then only the test-time tracking refinement moves it)
    torso: bool | str = "auto"  # torso sheet below the neck for shoulders/clothes (flame.torso); "auto":
    # when the parsed frames show clothes (or, unparsed, the matte reaches the bottom edge)
    checkpoint_every: int = 2000  # steps between checkpoints (0 = none)
    checkpoint_seconds: float = 60.0  # also a checkpoint when this long has passed since the last (0 = off);
    # either rule writes one, and a checkpoint resumes the run exactly (``reconstruct.resume``)
    log_every: int = 50
    lr: LearningRates = dataclasses.field(default_factory=LearningRates)
    densify: BindingStrategy = dataclasses.field(default_factory=BindingStrategy)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init_colours not in ("seen", "projected"):
            raise ConfigError(f"init_colours={self.init_colours!r}: choose 'seen' or 'projected'")
        if not self.w_face_opacity >= 0:  # NaN fails too
            raise ConfigError(f"w_face_opacity={self.w_face_opacity}: give 0 (off) or a positive weight, e.g. 0.1")
        if not self.w_flat >= 0:
            raise ConfigError(f"w_flat={self.w_flat}: give 0 (off) or a positive weight, e.g. 0.1")
        if not self.w_beyond_frame >= 0:
            raise ConfigError(f"w_beyond_frame={self.w_beyond_frame}: give 0 (off) or a positive weight, e.g. 0.05")
        if self.flat_on not in FLAT_CHOICES:
            raise ConfigError(f"flat_on={self.flat_on!r}: choose one of {', '.join(FLAT_CHOICES)}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "ReconstructConfig":
        """Named settings (``PRESETS``: ``tiny`` for CPU tests, ``fast``, ``quality``), with ``overrides``
        changing fields of it, e.g. ``ReconstructConfig.preset("fast", steps=3000)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name](), **overrides)


def _tiny() -> ReconstructConfig:
    return ReconstructConfig(
        resolution=128, steps=300, batch_size=2, checkpoint_every=0, log_every=25,  # checkpoints by time only
        track_steps=30,
        lr=LearningRates(means_local=1e-2, log_scales_local=2e-2, opacity_logits=5e-2, sh=2e-2),
        densify=BindingStrategy(refine_start=100, refine_stop=250, refine_every=50, reset_every=0,
                                grad_threshold=4e-4))


def _fast() -> ReconstructConfig:
    # sized for the 2-minute end-to-end budget on one GPU (``dynavatar bench fit``; docs/benchmarks.md)
    return ReconstructConfig(
        resolution=512, steps=9000, batch_size=4, splats_per_face=2, checkpoint_every=3000,
        densify=BindingStrategy(refine_start=500, refine_stop=6000, refine_every=100, reset_every=2500))


def _quality() -> ReconstructConfig:
    # sized for the 5-minute end-to-end budget on one GPU (``dynavatar bench fit``; docs/benchmarks.md)
    return ReconstructConfig(
        resolution=512, steps=22_000, batch_size=4, splats_per_face=2, checkpoint_every=5000,
        densify=BindingStrategy(refine_start=500, refine_stop=15_000, refine_every=100, reset_every=3000))


#: preset name -> a function building it (``ReconstructConfig.preset``)
PRESETS = {"tiny": _tiny, "fast": _fast, "quality": _quality}
