"""Settings of score distillation (SDS) and of its optional LoRA personalisation, with named presets.

- **View words reachable.** DreamFusion's 45 deg "front" cone is for cameras orbiting a whole object;
  an avatar edit turns the head by at most about 45 deg, so with that cone every view was "front
  view" and SDS was not view-aware at all. The front cone is 20 deg here.
- **Guidance scale 7.5 by default.** DreamFusion's 100 compensates for SDS's blur when a shape is
  *generated from nothing*; here the edit starts from a faithful reconstruction (and, with LoRA, a
  model that knows the subject), and very high guidance oversaturates colours and drifts identity.
  7.5 is also what the rest of the edit stack uses (``EditPlan.text_guidance``). Raise it (the
  ``dreamfusion`` preset uses 100) when edits come out too weak.
"""

from __future__ import annotations

import dataclasses

from ...errors import InvalidParametersError

__all__ = ["SDSConfig", "WEIGHTINGS"]

WEIGHTINGS = ("sds", "uniform")


@dataclasses.dataclass
class SDSConfig:
    """Settings of the score distillation and of the optional LoRA personalisation."""

    guidance_scale: float = 7.5  # classifier-free guidance; 7.5 for editing (see module doc), 100 = DreamFusion
    negative_prompt: str = ""  # the "unconditional" text of CFG; EditPlan.negative_prompt fits here
    t_min: float = 0.02  # smallest timestep, as a fraction of the training timesteps
    t_max: float = 0.98  # largest timestep at step 0
    t_max_final: float | None = 0.5  # largest timestep at the last step (linear anneal); None = no anneal
    weighting: str = "sds"  # "sds": w(t) = 1 - alpha_bar_t (DreamFusion); "uniform": w(t) = 1
    resolution: int = 512  # renders are resized to resolution^2; latent side = resolution / vae_scale_factor
    view_dependent: bool = True  # append ", front view" etc. to the prompt
    front_deg: float = 20.0  # |yaw| <= this -> "front view"; 20 so the edit loop's head turns (up to
    #                          SDSEditConfig.yaw_range, 46 deg) and a clip's own turns reach "side view"
    back_deg: float = 135.0  # |yaw| >= this -> "back view"; in between -> "side view"
    overhead_deg: float = 60.0  # pitch (camera elevation) >= this -> "overhead view"
    lora_rank: int = 4  # rank of the LoRA adapters of personalisation
    lora_alpha: float = 4.0  # LoRA output scale is lora_alpha / lora_rank
    lora_steps: int = 200  # personalisation steps; 0 = skip personalisation
    lora_lr: float = 1e-4  # AdamW learning rate of the LoRA parameters
    lora_batch_size: int = 4  # keyframes per personalisation step
    seed: int = 0  # seeds timesteps, noise and LoRA init: the same inputs give the same losses

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise InvalidParametersError(f"invalid SDSConfig: {msg}")

        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            bad(f"need 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")
        if self.t_max_final is not None and not self.t_min < self.t_max_final <= self.t_max:
            bad(f"need t_min < t_max_final <= t_max, got t_max_final={self.t_max_final}")
        if self.weighting not in WEIGHTINGS:
            bad(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.resolution <= 0:
            bad(f"resolution must be positive, got {self.resolution}")
        if self.lora_rank < 1 or self.lora_steps < 0 or self.lora_batch_size < 1:
            bad("lora_rank and lora_batch_size must be >= 1 and lora_steps >= 0")
        if not self.front_deg < self.back_deg:
            bad("front_deg must be smaller than back_deg")


    @classmethod
    def preset(cls, name: str, **overrides) -> "SDSConfig":
        """Named settings: ``fast`` (no personalisation: SDS straight from the base model), ``quality`` (a
        stronger, AvatarStudio-like personalisation before distilling), ``dreamfusion`` (DreamFusion's
        original settings: CFG 100, no timestep annealing)."""
        presets = {
            "fast": dict(lora_steps=0),
            "quality": dict(lora_rank=8, lora_alpha=8.0, lora_steps=400),
            "dreamfusion": dict(guidance_scale=100.0, t_max_final=None),
        }
        if name not in presets:
            raise InvalidParametersError(f"unknown SDSConfig preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})
