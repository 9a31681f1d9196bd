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
- **VAE posterior mean**, not a sample: the noise SDS needs is added in step 2, a second draw only
  adds variance.

The settings are ``SDSConfig`` (``sds_config.py``: why guidance 7.5), the pure maths are in
``sds_maths.py`` and the LoRA adapters in ``lora.py``. The components (``unet``, ``vae``,
``text_encoder``, ``tokenizer``, ``scheduler``) are injected, so tests run with tiny random models;
``SDSGuidance.from_pretrained`` loads real ones from the local Hugging Face cache only
(``sds_loading.py``) and never downloads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import DynavatarError, InvalidParametersError
from .lora import LoRASite, inject_lora, lora_parameters, remove_lora
from .sds_config import SDSConfig
from .sds_loading import DEFAULT_SD_MODEL, check_tokenizer, load_sd_components
from .sds_maths import (add_noise, eps_from_prediction, keyframe_blend, latent_mask, sds_surrogate, sds_weight,
                        timestep_range, view_word)

__all__ = ["SDSGuidance", "SDSOutput", "TextEmbeddings", "PersonaliseResult"]


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
        check_tokenizer(tokenizer)
        if getattr(scheduler, "alphas_cumprod", None) is None:
            raise DynavatarError("the scheduler has no alphas_cumprod; use a DDPM/DDIM-style diffusers scheduler")
        self.alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32).to(self.device)  # [T]
        self.prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
        self._embed_cache: dict[str, Tensor] = {}
        self._keyframe_times: Tensor | None = None  # [K] ascending
        self._keyframe_tags: list[str] = []
        self._lora_sites: list[LoRASite] = []
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
        components, dev, dt = load_sd_components(model, device, dtype, variant)
        return cls(**components, config=config, device=dev, dtype=dt)

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

    def condition_texts(self, prompt: str, yaw: Sequence[float], pitch: Sequence[float],
                        t: Sequence[float] | None = None) -> list[tuple[str, str, float]]:
        """The prompts ``condition`` embeds for each sample, readable: (text of the keyframe before
        t, text of the one after, weight of the latter); without keyframes or t, (text, text, 0).
        What the view and time tokens are at a pose and time, for the record and for tests."""
        yaw_v = _as_batch(yaw, torch.as_tensor(yaw).numel(), "yaw")
        B = yaw_v.numel()
        pitch_v, t_v = _as_batch(pitch, B, "pitch"), _as_batch(t, B, "t")
        viewed = [self.view_prompt(prompt, float(y), float(p)) for y, p in zip(yaw_v, pitch_v)]
        if self._keyframe_times is None or t_v is None:
            return [(v, v, 0.0) for v in viewed]
        i0, i1, w = keyframe_blend(self._keyframe_times, t_v)
        tags = self._keyframe_tags
        return [(f"{v}, {tags[int(a)]}", f"{v}, {tags[int(b)]}", float(x)) for v, a, b, x in zip(viewed, i0, i1, w)]

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
                return eps_from_prediction(pred.float(), x_t.float(), ab, self.prediction_type)
            x_in = torch.cat([x_t, x_t]).to(self.dtype)  # [2B, C, h, w]
            emb = torch.cat([text.uncond, text.cond]).to(self.dtype)  # [2B, L, D]
            pred = self.unet(x_in, torch.cat([timesteps, timesteps]), encoder_hidden_states=emb).sample.float()
            eps = eps_from_prediction(pred, x_in.float(), torch.cat([ab, ab]), self.prediction_type)
            eps_u, eps_c = eps.chunk(2)
            return eps_u + s * (eps_c - eps_u)

    def sds_gradient(self, latents: Tensor, text: TextEmbeddings, timesteps: Tensor, noise: Tensor,
                     mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``w(t) * (eps_cfg(x_t) - eps)``, masked.  Deterministic given its inputs.

        latents, noise: [B, C, h, w]; timesteps: [B]; mask: [B, H, W] or None.
        -> (grad [B, C, h, w] float32, w [B] float32).
        """
        ab = self.alphas_cumprod[timesteps]  # [B]
        x_t = add_noise(latents.detach().float(), noise, ab)
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
        return lora_parameters(self._lora_sites)

    def add_lora(self, rank: int | None = None, alpha: float | None = None) -> list[nn.Parameter]:
        """Wrap every UNet attention projection with a zero-initialised LoRA adapter; -> its parameters."""
        if self.has_lora:
            raise DynavatarError("the UNet already has LoRA adapters; call remove_lora() first")
        rank = rank or self.config.lora_rank
        alpha = self.config.lora_alpha if alpha is None else alpha
        self._lora_sites = inject_lora(self.unet, rank, alpha, self.config.seed)
        return self.lora_parameters()

    def remove_lora(self) -> None:
        """Put the original ``nn.Linear`` layers back: the UNet is exactly what it was before."""
        remove_lora(self._lora_sites)
        self._lora_sites = []

    def denoising_loss(self, latents: Tensor, cond: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        """The diffusion training objective (MSE to eps, or to v for v-prediction models).

        latents, noise: [N, C, h, w]; cond: [N, L, D]; timesteps: [N] -> scalar. Differentiable
        w.r.t. whatever in the UNet requires grad (the LoRA adapters).
        """
        ab = self.alphas_cumprod[timesteps]  # [N]
        x0 = latents.detach().float()
        x_t = add_noise(x0, noise, ab)
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
                    lr: float | None = None, t: Sequence[float] | Tensor | None = None) -> PersonaliseResult:
        """LoRA-fine-tune the UNet on the avatar's keyframes (AvatarStudio's personalised diffusion).

        images: [K, H, W, 3] in [0, 1]; prompt: the subject ("a photo of sks person"); times: [K] in
        [0, 1] registers the keyframes for time-aware conditioning (each is trained with its own tag);
        yaw/pitch: [K] degrees of each keyframe's camera (default 0 = front). Only the adapters train
        (plain DreamBooth-style noise-prediction loss, no prior preservation); later ``loss`` calls use
        the adapted UNet until ``remove_lora``. Adds adapters if there are none, else keeps training them.
        ``t``: [K] each image's time when several images share a keyframe time (views of one frame
        under several head turns: register the distinct times with ``set_keyframes`` first); default
        ``times``.
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
                                  times if t is None else t).cond  # [K, L, D]
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


def _frozen(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move to device (and dtype, only when it differs: diffusers warns on needless casts), freeze."""
    first = next(module.parameters())
    if first.dtype != dtype:
        module = module.to(dtype=dtype)
    if first.device != device:
        module = module.to(device=device)
    return module.requires_grad_(False).eval()
