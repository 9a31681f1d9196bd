"""Score distillation (SDS) for the ``method="sds"`` avatar edit: rendered images in, a loss out.

This is the AvatarStudio-style building block: a frozen text-to-image diffusion model (Stable
Diffusion through diffusers) judges renders of the avatar, and its denoising error becomes a gradient
on the render (DreamFusion's score distillation), conditioned on the camera *view* and the animation
*time*, optionally after a light LoRA personalisation on the avatar's own keyframes so the score
pulls towards "this person, edited" rather than "some person".

What ``SDSGuidance.loss`` does, per batch of renders ``images [B, H, W, 3]`` in ``[0, 1]``:

1. resize to ``resolution`` and encode with the VAE, differentiably, in the working dtype
   -> ``latents [B, C, h, w]`` with ``h = resolution / vae_scale_factor``;
2. draw a timestep per sample from an annealed range (``t_max`` falls to ``t_max_final``: large
   noise early shapes the edit, small noise late refines detail) and noise ``eps``;
3. predict the noise with classifier-free guidance (one batched UNet call, uncond + cond), under
   ``no_grad``: SDS never backpropagates through the UNet;
4. ``grad = w(t) * (eps_cfg - eps)`` (optionally multiplied by the region mask resized to the
   latent grid, so only the region is pushed);
5. return ``0.5 * ||latents - (latents - grad).detach()||^2 / B``, whose gradient with respect to
   the latents is exactly ``grad / B`` (the mean over the batch, so the step size does not depend
   on how many views are rendered at once).

Choices, and why:

- **Guidance scale 7.5 by default.** DreamFusion's 100 compensates for SDS's blur when a shape is
  *generated from nothing*; here the edit starts from a faithful reconstruction (and, with LoRA, a
  model that knows the subject), and very high guidance oversaturates colours and drifts identity.
  7.5 is also what the rest of the edit stack uses (``EditPlan.text_guidance``). Raise it (the
  ``dreamfusion`` preset uses 100) when edits come out too weak.
- **View conditioning** follows DreamFusion/AvatarStudio: ", front view" / ", side view" /
  ", back view" / ", overhead view" appended to the prompt from the camera's yaw and pitch
  (degrees; yaw 0 = camera in front of the face, FLAME/``orbit_eyes`` convention, see ``view_angles``).
- **Time conditioning: interpolated keyframe embeddings.** Each keyframe ``k`` (a time ``t_k`` in
  ``[0, 1]`` and a short tag, by default ``"keyframe k"``, or a words-level description such as
  ``"smiling"``) gets the prompt ``"<prompt>, <view>, <tag_k>"``. For a render at time ``t`` the text
  embedding is the linear blend of the embeddings of the two keyframes around ``t``. Why this rather
  than learned time tokens: it needs no new vocabulary (no textual inversion, the tokenizer stays
  frozen), blending CLIP sequences that differ only in a suffix is a well-behaved prompt
  interpolation, it is exact at the keyframes (where the LoRA was trained with exactly those
  prompts, so the personalised model reads each tag as "this person at this moment"), and it is
  smooth in between, so the guidance does not jump when the animation crosses from one keyframe's
  span into the next. With no keyframes registered, ``t`` is ignored.
- **LoRA written here, not peft**: a ``LoRALinear`` wrapper around each attention projection
  (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) of the UNet; ``up`` starts at zero so wrapping does
  not change the model; ``remove_lora`` puts the very same original ``nn.Linear`` objects back.
- **VAE posterior mean**, not a sample: the noise SDS needs is added in step 2, a second draw only
  adds variance.

The components (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``) are injected, so
tests run with tiny random models; ``SDSGuidance.from_pretrained`` loads real ones from the local
Hugging Face cache only and never downloads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DynavatarError, InvalidParametersError, MissingDependencyError
from ..geometry.cameras import camera_centers

__all__ = [
    "DEFAULT_SD_MODEL",
    "SDSConfig",
    "SDSGuidance",
    "SDSOutput",
    "TextEmbeddings",
    "PersonaliseResult",
    "LoRALinear",
    "view_word",
    "view_angles",
    "timestep_range",
    "sds_weight",
    "keyframe_blend",
    "latent_mask",
    "sds_surrogate",
]

DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHTINGS = ("sds", "uniform")


# --------------------------------------------------------------------------------------- config
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
    front_deg: float = 45.0  # |yaw| <= this -> "front view"
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
        if self.weighting not in _WEIGHTINGS:
            bad(f"weighting must be one of {_WEIGHTINGS}, got {self.weighting!r}")
        if self.resolution <= 0:
            bad(f"resolution must be positive, got {self.resolution}")
        if self.lora_rank < 1 or self.lora_steps < 0 or self.lora_batch_size < 1:
            bad("lora_rank and lora_batch_size must be >= 1 and lora_steps >= 0")
        if not self.front_deg < self.back_deg:
            bad("front_deg must be smaller than back_deg")

    @classmethod
    def fast(cls) -> "SDSConfig":
        """No personalisation: SDS straight from the base model."""
        return cls(lora_steps=0)

    @classmethod
    def quality(cls) -> "SDSConfig":
        """A stronger personalisation (AvatarStudio-like) before distilling."""
        return cls(lora_rank=8, lora_alpha=8.0, lora_steps=400)

    @classmethod
    def dreamfusion(cls) -> "SDSConfig":
        """DreamFusion's original settings: CFG 100, no timestep annealing."""
        return cls(guidance_scale=100.0, t_max_final=None)


# ---------------------------------------------------------------------------------- outputs
@dataclasses.dataclass
class TextEmbeddings:
    """Conditional and unconditional (negative-prompt) CLIP embeddings for CFG."""

    cond: Tensor  # [B, L, D]
    uncond: Tensor  # [B, L, D]


@dataclasses.dataclass
class SDSOutput:
    """One SDS evaluation: the surrogate loss and what produced it (for logging and tests)."""

    loss: Tensor  # [] scalar; d loss / d latents == grad / B
    grad: Tensor  # [B, C, h, w] float32, w(t) * (eps_cfg - eps), masked
    timesteps: Tensor  # [B] long
    noise: Tensor  # [B, C, h, w] float32, the eps that was added
    weights: Tensor  # [B] float32, w(t)


@dataclasses.dataclass
class PersonaliseResult:
    """What LoRA personalisation did."""

    losses: list[float]  # noise-prediction loss per step
    trainable_parameters: int  # number of LoRA scalars trained
    rank: int


# ------------------------------------------------------------------------- pure functions
def view_word(yaw_deg: float, pitch_deg: float, front_deg: float = 45.0, back_deg: float = 135.0,
              overhead_deg: float = 60.0) -> str:
    """DreamFusion's view words from camera yaw (0 = facing the face) and pitch (elevation), degrees."""
    yaw = (float(yaw_deg) + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    if float(pitch_deg) >= overhead_deg:
        return "overhead view"
    if abs(yaw) <= front_deg:
        return "front view"
    if abs(yaw) >= back_deg:
        return "back view"
    return "side view"


def view_angles(viewmats: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Yaw and pitch (degrees) of cameras around a head at ``target`` (default the origin).

    viewmats: [C, 4, 4] world-to-camera (OpenCV); world axes are FLAME's: y up, the face looks
    along +z. yaw = atan2(x, z) of the camera centre relative to the head (0 = in front, +-90 =
    profile, 180 = behind; ``orbit_eyes`` azimuths), pitch = its elevation (positive = above).
    -> (yaw [C], pitch [C]).
    """
    d = camera_centers(viewmats)  # [C, 3]
    if target is not None:
        d = d - target.to(d).reshape(1, 3)
    yaw = torch.rad2deg(torch.atan2(d[..., 0], d[..., 2]))
    pitch = torch.rad2deg(torch.atan2(d[..., 1], torch.hypot(d[..., 0], d[..., 2])))
    return yaw, pitch


def timestep_range(config: SDSConfig, step: int, total_steps: int, num_train_timesteps: int) -> tuple[int, int]:
    """Inclusive integer timestep range at optimisation ``step`` of ``total_steps``.

    The upper end falls linearly from ``t_max`` to ``t_max_final``: early steps use heavy noise,
    which lets the diffusion model change the layout of the region; late steps use light noise,
    which only refines texture (the DreamTime/AvatarStudio observation that late large-t steps undo
    detail).
    """
    T = int(num_train_timesteps)
    t_hi = config.t_max
    if config.t_max_final is not None and total_steps > 0:
        frac = min(max(step / total_steps, 0.0), 1.0)
        t_hi = config.t_max + (config.t_max_final - config.t_max) * frac
    lo = min(max(int(config.t_min * T), 0), T - 1)
    hi = min(max(int(t_hi * T), lo), T - 1)
    return lo, hi


def sds_weight(alpha_bar: Tensor, kind: str) -> Tensor:
    """w(t) per sample.  alpha_bar: [B] -> [B]. "sds" = 1 - alpha_bar (DreamFusion), "uniform" = 1."""
    if kind == "sds":
        return 1.0 - alpha_bar
    if kind == "uniform":
        return torch.ones_like(alpha_bar)
    raise InvalidParametersError(f"unknown SDS weighting {kind!r}; use one of {_WEIGHTINGS}")


def keyframe_blend(times: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Piecewise-linear interpolation indices: t is between keyframes i0 and i1 with weight w on i1.

    times: [K] ascending, distinct; t: [B] -> (i0 [B] long, i1 [B] long, w [B] in [0, 1]).
    Exact at the keyframes (w = 0 on the left keyframe, or w = 1 at the last one); clamped outside.
    """
    K = times.numel()
    t = t.to(times).clamp(times[0], times[-1])
    if K == 1:
        zero = torch.zeros_like(t, dtype=torch.long)
        return zero, zero, torch.zeros_like(t)
    i1 = torch.searchsorted(times, t, right=True).clamp(1, K - 1)
    i0 = i1 - 1
    w = ((t - times[i0]) / (times[i1] - times[i0])).clamp(0.0, 1.0)
    return i0, i1, w


def latent_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Region mask at the latent resolution.  mask: [B, H, W] (bool or [0, 1]) -> [B, 1, h, w].

    Area averaging, so a latent cell is weighted by how much of it lies in the region: cells wholly
    outside get exactly zero (no push at all), border cells a partial push.
    """
    m = mask.float()[:, None]  # [B, 1, H, W]
    return F.interpolate(m, size=size, mode="area")


def sds_surrogate(latents: Tensor, grad: Tensor) -> Tensor:
    """Scalar whose gradient w.r.t. ``latents`` is ``grad / B``.  latents, grad: [B, C, h, w]."""
    target = (latents.float() - grad).detach()
    return 0.5 * F.mse_loss(latents.float(), target, reduction="sum") / latents.shape[0]


def _eps_from_prediction(pred: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """The noise estimate from a UNet output.  pred, x_t: [B, C, h, w]; alpha_bar: [B]."""
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":  # v = sqrt(ab) eps - sqrt(1-ab) x0  =>  eps = sqrt(ab) v + sqrt(1-ab) x_t
        ab = alpha_bar.view(-1, 1, 1, 1)
        return ab.sqrt() * pred + (1.0 - ab).sqrt() * x_t
    raise DynavatarError(f"SDS needs an epsilon or v_prediction scheduler, not {prediction_type!r}")


def _add_noise(x0: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """Forward diffusion q(x_t | x0).  x0, noise: [B, C, h, w]; alpha_bar: [B]."""
    ab = alpha_bar.view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def _as_batch(x: Tensor | float | Sequence[float] | None, B: int, name: str) -> Tensor | None:
    """A per-sample float vector [B] from a scalar, a sequence or a tensor (float32, CPU)."""
    if x is None:
        return None
    v = torch.as_tensor(x, dtype=torch.float32).detach().cpu().reshape(-1)
    if v.numel() == 1:
        v = v.expand(B)
    if v.numel() != B:
        raise InvalidParametersError(f"{name} must have one value per image ({B}), got {v.numel()}")
    return v


# ----------------------------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * up(down(x))`` around a frozen ``nn.Linear``.

    The adapter is kept in float32 even when the base runs in half precision (small updates would
    round away in fp16); ``up`` starts at zero so the wrapped layer is bit-identical to ``base`` until
    it is trained, and ``down`` starts small and random so ``up`` gets a non-zero gradient.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        self.base = base
        self.scale = float(alpha) / rank
        dev = base.weight.device
        self.down = nn.Parameter(torch.empty(rank, base.in_features, device=dev))  # [r, in]
        self.up = nn.Parameter(torch.zeros(base.out_features, rank, device=dev))  # [out, r]
        with torch.no_grad():
            init = torch.randn(rank, base.in_features, generator=generator)  # CPU generator: reproducible
            self.down.copy_(init / rank)

    # diffusers' attention processors read ``attn.to_q.weight.dtype``; answer for the base layer
    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:  # x: [..., in] -> [..., out]
        delta = F.linear(F.linear(x.to(self.down.dtype), self.down), self.up)
        return self.base(x) + (self.scale * delta).to(x.dtype)


@dataclasses.dataclass
class _LoRASite:
    """Where one adapter sits, so it can be taken out again: ``owner.<attr>`` or ``owner[index]``."""

    owner: nn.Module
    attr: str | int
    original: nn.Linear
    adapter: LoRALinear


def _attention_projections(unet: nn.Module) -> list[tuple[nn.Module, str | int, nn.Linear]]:
    """(owner, attribute or index, linear) of every to_q / to_k / to_v / to_out.0 of the UNet.

    Duck-typed on the attribute names of diffusers' ``Attention`` so no diffusers class is imported.
    """
    found = []
    for module in unet.modules():
        if not all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out")):
            continue
        for attr in ("to_q", "to_k", "to_v"):
            lin = getattr(module, attr)
            if isinstance(lin, nn.Linear):
                found.append((module, attr, lin))
        out = module.to_out
        if isinstance(out, nn.ModuleList) and len(out) and isinstance(out[0], nn.Linear):
            found.append((out, 0, out[0]))
    return found


def _inject_lora(unet: nn.Module, rank: int, alpha: float, seed: int) -> list[_LoRASite]:
    gen = torch.Generator().manual_seed(seed)
    sites = []
    for owner, attr, lin in _attention_projections(unet):
        adapter = LoRALinear(lin, rank, alpha, generator=gen)
        _set_child(owner, attr, adapter)
        sites.append(_LoRASite(owner, attr, lin, adapter))
    if not sites:
        raise DynavatarError("found no attention projections (to_q/to_k/to_v/to_out.0) in the UNet to adapt")
    return sites


def _set_child(owner: nn.Module, attr: str | int, child: nn.Module) -> None:
    if isinstance(attr, int):
        owner[attr] = child  # type: ignore[index]
    else:
        setattr(owner, attr, child)


# ------------------------------------------------------------------------------- guidance
class SDSGuidance:
    """View-and-time-aware score distillation with an optionally LoRA-personalised Stable Diffusion.

    Holds the diffusers components and freezes them (``requires_grad_(False)``, ``eval()``): SDS
    trains nothing of the diffusion model except the LoRA adapters that ``personalise`` adds. The
    working dtype and device are the UNet's unless given.
    """

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer: Any, scheduler: Any,
                 config: SDSConfig | None = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.config = config or SDSConfig()
        first = next(unet.parameters())
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = dtype or first.dtype
        self.unet, self.vae, self.text_encoder = (
            _frozen(m, self.device, self.dtype) for m in (unet, vae, text_encoder))
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        _check_tokenizer(tokenizer)
        if getattr(scheduler, "alphas_cumprod", None) is None:
            raise DynavatarError("the scheduler has no alphas_cumprod; use a DDPM/DDIM-style diffusers scheduler")
        self.alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32).to(self.device)  # [T]
        self.prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
        self._embed_cache: dict[str, Tensor] = {}
        self._keyframe_times: Tensor | None = None  # [K] ascending
        self._keyframe_tags: list[str] = []
        self._lora_sites: list[_LoRASite] = []
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.last: SDSOutput | None = None  # the latest loss() evaluation, for logging

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_SD_MODEL, config: SDSConfig | None = None, *,
                        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                        variant: str | None = None) -> "SDSGuidance":
        """Load the components of a Stable Diffusion checkpoint from the local cache (never downloads).

        ``model`` is a Hugging Face repo id (looked up in the hub cache) or a local folder with the
        diffusers layout. dtype defaults to float16 on CUDA, float32 elsewhere; ``variant="fp16"``
        loads the half-size weight files where the repo has them.
        """
        try:
            from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as exc:  # pragma: no cover - both are install requirements
            raise MissingDependencyError(
                "SDS needs diffusers and transformers: pip install diffusers transformers") from exc
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        dt = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
        kw: dict[str, Any] = dict(local_files_only=True)
        try:
            tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw)
            _check_tokenizer(tokenizer, model)
            # transformers renamed torch_dtype to dtype: load the text encoder as stored, cast in __init__
            text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", variant=variant, **kw)
            vae = AutoencoderKL.from_pretrained(model, subfolder="vae", variant=variant, torch_dtype=dt, **kw)
            unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", variant=variant, torch_dtype=dt, **kw)
            scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler", **kw)
        except DynavatarError:
            raise
        except (OSError, ValueError, EnvironmentError) as exc:
            raise DynavatarError(_missing_weights_message(model, exc)) from exc
        return cls(unet, vae, text_encoder, tokenizer, scheduler, config, device=dev, dtype=dt)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the timestep/noise draws (from ``config.seed`` by default) to replay a run."""
        self.generator.manual_seed(self.config.seed if seed is None else seed)

    # ---------------------------------------------------------------- sizes
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: the VAE halves the size between consecutive encoder blocks."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        f = self.vae_scale_factor
        if self.config.resolution % f:
            raise InvalidParametersError(
                f"resolution {self.config.resolution} is not a multiple of the VAE's scale factor {f}")
        return self.config.resolution // f

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    # ---------------------------------------------------------------- text
    def _embed(self, text: str) -> Tensor:
        """CLIP last hidden state of one prompt, cached.  -> [1, L, D] in the working dtype."""
        hit = self._embed_cache.get(text)
        if hit is not None:
            return hit
        max_len = min(int(self.tokenizer.model_max_length),
                      int(getattr(self.text_encoder.config, "max_position_embeddings", 77)))
        ids = self.tokenizer([text], padding="max_length", max_length=max_len, truncation=True,
                             return_tensors="pt").input_ids.to(self.device)  # [1, L]
        with torch.no_grad():
            emb = self.text_encoder(ids)[0].to(self.dtype)  # [1, L, D]
        self._embed_cache[text] = emb
        return emb

    def encode_prompts(self, prompt: str, negative: str | None = None) -> TextEmbeddings:
        """Embeddings of ``prompt`` and of the negative prompt (config's if None), each [1, L, D], cached."""
        neg = self.config.negative_prompt if negative is None else negative
        return TextEmbeddings(cond=self._embed(prompt), uncond=self._embed(neg))

    def view_prompt(self, base: str, yaw: float, pitch: float) -> str:
        """``base`` + ", front view" / ", side view" / ", back view" / ", overhead view" (degrees)."""
        if not self.config.view_dependent:
            return base
        c = self.config
        return f"{base}, {view_word(yaw, pitch, c.front_deg, c.back_deg, c.overhead_deg)}"

    def set_keyframes(self, times: Sequence[float] | Tensor, tags: Sequence[str] | None = None) -> None:
        """Register keyframe times in [0, 1] and their prompt tags (default "keyframe k") for ``condition``."""
        tv = torch.as_tensor(times, dtype=torch.float32).detach().cpu().reshape(-1)
        tags = [f"keyframe {k}" for k in range(tv.numel())] if tags is None else list(tags)
        if tv.numel() == 0 or len(tags) != tv.numel():
            raise InvalidParametersError(f"need one tag per keyframe time, got {tv.numel()} times and {len(tags)} tags")
        order = torch.argsort(tv)
        tv = tv[order]
        if tv.numel() > 1 and bool((tv[1:] <= tv[:-1]).any()):
            raise InvalidParametersError("keyframe times must be distinct")
        self._keyframe_times = tv
        self._keyframe_tags = [tags[int(i)] for i in order]

    def clear_keyframes(self) -> None:
        self._keyframe_times, self._keyframe_tags = None, []

    def condition(self, prompt: str, yaw: Tensor | float | Sequence[float], pitch: Tensor | float | Sequence[float],
                  t: Tensor | float | Sequence[float] | None = None, negative: str | None = None) -> TextEmbeddings:
        """Per-sample view-and-time-aware text embeddings (see the module doc).

        yaw, pitch: [B] degrees; t: [B] normalised time in [0, 1] or None. -> cond, uncond [B, L, D].
        """
        yaw_v = _as_batch(yaw, torch.as_tensor(yaw).numel(), "yaw")
        B = yaw_v.numel()
        pitch_v, t_v = _as_batch(pitch, B, "pitch"), _as_batch(t, B, "t")
        viewed = [self.view_prompt(prompt, float(y), float(p)) for y, p in zip(yaw_v, pitch_v)]
        if self._keyframe_times is None or t_v is None:
            cond = torch.cat([self._embed(v) for v in viewed])  # [B, L, D]
        else:
            i0, i1, w = keyframe_blend(self._keyframe_times, t_v)
            tags = self._keyframe_tags
            e0 = torch.cat([self._embed(f"{v}, {tags[int(i)]}") for v, i in zip(viewed, i0)]).float()
            e1 = torch.cat([self._embed(f"{v}, {tags[int(i)]}") for v, i in zip(viewed, i1)]).float()
            wv = w.to(self.device).view(-1, 1, 1)
            cond = ((1.0 - wv) * e0 + wv * e1).to(self.dtype)  # [B, L, D]
        uncond = self.encode_prompts(prompt, negative).uncond.expand(B, -1, -1)
        return TextEmbeddings(cond=cond, uncond=uncond)

    # ---------------------------------------------------------------- images
    def encode_images(self, images: Tensor) -> Tensor:
        """Differentiable VAE encoding.  images: [B, H, W, 3] in [0, 1] -> latents [B, C, h, w] (working dtype).

        Renders are resized (bilinear, antialiased when shrinking) to a ``resolution`` square;
        render square crops to keep the aspect ratio.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InvalidParametersError(f"images must be [B, H, W, 3], got {tuple(images.shape)}")
        side = self.latent_size * self.vae_scale_factor
        x = images.permute(0, 3, 1, 2).to(device=self.device)  # [B, 3, H, W]
        if x.shape[-2:] != (side, side):
            shrink = x.shape[-2] > side or x.shape[-1] > side
            x = F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)
        x = (x * 2.0 - 1.0).to(self.dtype)
        z = self.vae.encode(x).latent_dist.mean  # [B, C, h, w]
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (z - shift) * self.vae.config.scaling_factor

    # ---------------------------------------------------------------- score
    def predict_noise(self, x_t: Tensor, timesteps: Tensor, text: TextEmbeddings) -> Tensor:
        """Classifier-free-guided noise estimate, one batched UNet call (uncond first), no grad.

        x_t: [B, C, h, w]; timesteps: [B] long; text: cond/uncond [B, L, D] -> eps_cfg [B, C, h, w] float32.
        """
        s = self.config.guidance_scale
        ab = self.alphas_cumprod[timesteps]  # [B]
        with torch.no_grad():
            if s == 1.0:  # CFG with scale 1 is the conditional prediction alone
                pred = self.unet(x_t.to(self.dtype), timesteps, encoder_hidden_states=text.cond.to(self.dtype)).sample
                return _eps_from_prediction(pred.float(), x_t.float(), ab, self.prediction_type)
            x_in = torch.cat([x_t, x_t]).to(self.dtype)  # [2B, C, h, w]
            emb = torch.cat([text.uncond, text.cond]).to(self.dtype)  # [2B, L, D]
            pred = self.unet(x_in, torch.cat([timesteps, timesteps]), encoder_hidden_states=emb).sample.float()
            eps = _eps_from_prediction(pred, x_in.float(), torch.cat([ab, ab]), self.prediction_type)
            eps_u, eps_c = eps.chunk(2)
            return eps_u + s * (eps_c - eps_u)

    def sds_gradient(self, latents: Tensor, text: TextEmbeddings, timesteps: Tensor, noise: Tensor,
                     mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``w(t) * (eps_cfg(x_t) - eps)``, masked.  Deterministic given its inputs.

        latents, noise: [B, C, h, w]; timesteps: [B]; mask: [B, H, W] or None.
        -> (grad [B, C, h, w] float32, w [B] float32).
        """
        ab = self.alphas_cumprod[timesteps]  # [B]
        x_t = _add_noise(latents.detach().float(), noise, ab)
        eps_cfg = self.predict_noise(x_t, timesteps, text)
        w = sds_weight(ab, self.config.weighting)
        grad = w.view(-1, 1, 1, 1) * (eps_cfg - noise)
        if mask is not None:
            grad = grad * latent_mask(mask.to(self.device), tuple(latents.shape[-2:]))
        return grad, w

    def latent_loss(self, latents: Tensor, text: TextEmbeddings, step: int, total_steps: int,
                    mask: Tensor | None = None) -> SDSOutput:
        """SDS on latents [B, C, h, w] (requiring grad): sample t and eps, build the surrogate loss."""
        if not bool(torch.isfinite(latents).all()):
            raise DynavatarError("SDS got NaN/inf latents: the VAE overflowed (half precision? load the "
                                 "guidance with dtype=torch.float32 or bfloat16) or the latents were NaN")
        B = latents.shape[0]
        lo, hi = timestep_range(self.config, step, total_steps, self.num_train_timesteps)
        timesteps = torch.randint(lo, hi + 1, (B,), generator=self.generator, device=self.device)
        noise = torch.randn(latents.shape, generator=self.generator, device=self.device, dtype=torch.float32)
        grad, w = self.sds_gradient(latents, text, timesteps, noise, mask)
        if not bool(torch.isfinite(grad).all()):
            raise DynavatarError(
                f"SDS gradient is NaN/inf at timesteps {timesteps.tolist()} (half-precision overflow in the "
                "UNet? try dtype=torch.float32 or bfloat16, or a lower guidance_scale)")
        out = SDSOutput(loss=sds_surrogate(latents, grad), grad=grad, timesteps=timesteps, noise=noise, weights=w)
        self.last = out
        return out

    def loss(self, images: Tensor, yaw: Tensor | Sequence[float], pitch: Tensor | Sequence[float],
             t: Tensor | Sequence[float] | None, step: int, total_steps: int, mask: Tensor | None = None, *,
             prompt: str, negative: str | None = None) -> Tensor:
        """The SDS loss of renders.  images: [B, H, W, 3] in [0, 1] (requiring grad); yaw, pitch: [B]
        degrees; t: [B] in [0, 1] or None; mask: [B, H, W] or None; ``prompt`` describes the edited
        avatar ("a photo of sks person with red hair"). -> scalar; backward() pushes the renders.
        """
        B = images.shape[0]
        if not bool(torch.isfinite(images).all()):
            raise DynavatarError("SDS got renders containing NaN/inf: check the splats and the renderer")
        if mask is not None and tuple(mask.shape) != (B, *images.shape[1:3]):
            raise InvalidParametersError(f"mask must be [B, H, W] = {(B, *images.shape[1:3])}, got {tuple(mask.shape)}")
        text = self.condition(prompt, _as_batch(yaw, B, "yaw"), _as_batch(pitch, B, "pitch"),
                              _as_batch(t, B, "t"), negative)
        latents = self.encode_images(images)
        return self.latent_loss(latents, text, step, total_steps, mask).loss

    # ---------------------------------------------------------------- personalisation
    @property
    def has_lora(self) -> bool:
        return bool(self._lora_sites)

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for s in self._lora_sites for p in (s.adapter.down, s.adapter.up)]

    def add_lora(self, rank: int | None = None, alpha: float | None = None) -> list[nn.Parameter]:
        """Wrap every UNet attention projection with a zero-initialised LoRA adapter; -> its parameters."""
        if self.has_lora:
            raise DynavatarError("the UNet already has LoRA adapters; call remove_lora() first")
        rank = rank or self.config.lora_rank
        alpha = self.config.lora_alpha if alpha is None else alpha
        self._lora_sites = _inject_lora(self.unet, rank, alpha, self.config.seed)
        return self.lora_parameters()

    def remove_lora(self) -> None:
        """Put the original ``nn.Linear`` layers back: the UNet is exactly what it was before."""
        for site in reversed(self._lora_sites):
            _set_child(site.owner, site.attr, site.original)
        self._lora_sites = []

    def denoising_loss(self, latents: Tensor, cond: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        """The diffusion training objective (MSE to eps, or to v for v-prediction models).

        latents, noise: [N, C, h, w]; cond: [N, L, D]; timesteps: [N] -> scalar. Differentiable
        w.r.t. whatever in the UNet requires grad (the LoRA adapters).
        """
        ab = self.alphas_cumprod[timesteps]  # [N]
        x0 = latents.detach().float()
        x_t = _add_noise(x0, noise, ab)
        pred = self.unet(x_t.to(self.dtype), timesteps, encoder_hidden_states=cond.to(self.dtype)).sample.float()
        if self.prediction_type == "v_prediction":
            a = ab.view(-1, 1, 1, 1)
            target = a.sqrt() * noise - (1.0 - a).sqrt() * x0
        else:
            target = noise
        return F.mse_loss(pred, target)

    def personalise(self, images: Tensor, prompt: str, steps: int | None = None, rank: int | None = None, *,
                    times: Sequence[float] | Tensor | None = None, tags: Sequence[str] | None = None,
                    yaw: Sequence[float] | Tensor | None = None, pitch: Sequence[float] | Tensor | None = None,
                    lr: float | None = None) -> PersonaliseResult:
        """LoRA-fine-tune the UNet on the avatar's keyframes (AvatarStudio's personalised diffusion).

        images: [K, H, W, 3] in [0, 1]; prompt: the subject ("a photo of sks person"); times: [K] in
        [0, 1] registers the keyframes for time-aware conditioning (each is trained with its own tag);
        yaw/pitch: [K] degrees of each keyframe's camera (default 0 = front). Only the adapters train
        (plain DreamBooth-style noise-prediction loss, no prior preservation); later ``loss`` calls use
        the adapted UNet until ``remove_lora``. Adds adapters if there are none, else keeps training them.
        """
        c = self.config
        steps = c.lora_steps if steps is None else steps
        K = images.shape[0]
        zeros = torch.zeros(K)
        if times is not None:
            self.set_keyframes(times, tags)
        if steps == 0:  # nothing to train: keep the base model (and no idle adapters in the UNet)
            return PersonaliseResult(losses=[], trainable_parameters=0, rank=0)
        with torch.no_grad():
            latents = self.encode_images(images).float()  # [K, C, h, w]
            cond = self.condition(prompt, zeros if yaw is None else yaw, zeros if pitch is None else pitch,
                                  times).cond  # [K, L, D]
        if not self.has_lora:
            self.add_lora(rank)
        elif rank is not None and rank != self._lora_sites[0].adapter.down.shape[0]:
            raise DynavatarError("the UNet already has LoRA adapters of another rank; call remove_lora() first")
        params = self.lora_parameters()
        opt = torch.optim.AdamW(params, lr=c.lora_lr if lr is None else lr, weight_decay=0.0)
        losses = []
        with torch.enable_grad():
            for _ in range(steps):
                idx = torch.randperm(K, generator=self.generator, device=self.device)[: c.lora_batch_size]
                ts = torch.randint(0, self.num_train_timesteps, (idx.numel(),), generator=self.generator,
                                   device=self.device)
                noise = torch.randn((idx.numel(), *latents.shape[1:]), generator=self.generator, device=self.device)
                loss = self.denoising_loss(latents[idx], cond[idx], ts, noise)
                if not bool(torch.isfinite(loss)):
                    raise DynavatarError("LoRA personalisation loss became NaN/inf; lower lora_lr or use float32")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return PersonaliseResult(losses=losses, trainable_parameters=sum(p.numel() for p in params),
                                 rank=int(self._lora_sites[0].adapter.down.shape[0]))


# ---------------------------------------------------------------------------------- helpers
def _frozen(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move to device (and dtype, only when it differs: diffusers warns on needless casts), freeze."""
    first = next(module.parameters())
    if first.dtype != dtype:
        module = module.to(dtype=dtype)
    if first.device != device:
        module = module.to(device=device)
    return module.requires_grad_(False).eval()


def _check_tokenizer(tokenizer: Any, model: str | None = None) -> None:
    """Offline, ``CLIPTokenizer.from_pretrained`` can return a tokenizer with only its special
    tokens instead of raising (DESIGN.md §7): every prompt would then embed identically."""
    size = int(getattr(tokenizer, "vocab_size", 0) or 0)
    if size <= 3:
        where = f" loaded from {model!r}" if model else ""
        raise DynavatarError(
            f"the CLIP tokenizer{where} is empty (vocab_size={size}): its vocab.json/merges.txt were not found. "
            + (_download_hint(model) if model else "Pass a tokenizer built from real vocab files."))


def _download_hint(model: str) -> str:
    if Path(model).is_dir():
        return (f"The folder {model} needs the diffusers layout ({', '.join(_SD_SUBFOLDERS)} subfolders, "
                f"tokenizer/vocab.json and tokenizer/merges.txt included).")
    inc = " ".join(f"'{s}/*'" for s in _SD_SUBFOLDERS)
    return (f"Fetch the weights on a machine with internet access: "
            f"huggingface-cli download {model} --include model_index.json {inc} "
            f"(then copy the Hugging Face cache here, or pass a local folder as model=...).")


def _missing_weights_message(model: str, exc: BaseException) -> str:
    return (f"Stable Diffusion weights {model!r} are not available locally (SDS needs its "
            f"{', '.join(_SD_SUBFOLDERS)}; nothing is downloaded). {_download_hint(model)} "
            f"[{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}]")
