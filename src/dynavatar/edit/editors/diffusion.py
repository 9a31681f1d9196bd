"""Diffusion image editors: InstructPix2Pix and SD inpainting (optionally with a ControlNet).

Both share one shell (:class:`CropDiffusionEditor`), because the hard parts are the same:

1. **Crop.** Each image is cropped to a square around the feathered region mask and resized to
   ``work_resolution`` (``crops.py`` says why and how). Crops of equal work size go through the
   pipeline in one call.
2. **Edit.** The pipeline runs on the crops with the plan's prompt, guidance and steps, and one
   ``torch.Generator`` per image seeded ``seed + index`` (same seed -> same output).
3. **Composite.** The edited crop is resized back and composited inside the feathered region mask
   (``masks.feather_mask``: dilation ``plan.mask_dilation``, Gaussian feather ``feather``, both
   pixels at 512); pixels where that alpha is 0 come back bit-identical.

Pipelines are injected (tests pass tiny random ones built from configs) or loaded lazily
(``pipeline_loading.py``): from a folder, the Hugging Face cache, or fetched on first use at the
pinned revision like any Hugging Face library; with ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``
absent weights raise :class:`MissingWeightsError` naming them and the command that fetches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...errors import MissingDependencyError
from ..plan import EditPlan, EditPlanError
from .crops import crop_box, crop_resize, uncrop_resize, work_size
from .masks import composite, dilate_mask, feather_mask, plan_scale
from .pipeline_loading import load_pipeline

__all__ = ["canny_control", "inpaint_control", "CropDiffusionEditor", "InstructPix2PixEditor", "InpaintEditor",
           "ip2p_from_current"]


# ----------------------------------------------------------------------------- control images
def canny_control(crops: torch.Tensor, masks: torch.Tensor, low: int = 100, high: int = 200) -> torch.Tensor:
    """Canny edge maps of crops [N, 3, h, w] in [0, 1] -> [N, 3, h, w] in {0, 1} (for a canny ControlNet)."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("canny control images need OpenCV: pip install opencv-python-headless") from exc
    import numpy as np

    u8 = (crops.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    edges = np.stack([cv2.Canny(cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY), low, high) for im in u8])
    e = torch.from_numpy(edges).float().div(255.0)[:, None].expand(-1, 3, -1, -1)  # [N, 3, h, w]
    return e.contiguous().to(crops.device)


def inpaint_control(crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The inpainting ControlNet's input (control_v11p_sd15_inpaint): the crop with masked pixels set to -1."""
    return torch.where(masks > 0.5, torch.full_like(crops, -1.0), crops)


_CONTROLS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "canny": canny_control, "inpaint": inpaint_control,
}


# ----------------------------------------------------------------------------- the shared shell
class CropDiffusionEditor:
    """Crop -> pipeline -> composite, shared by the diffusion editors (see the module docstring).

    Subclasses implement ``_run(crops [N, 3, h, w], crop_masks [N, 1, h, w], plan, generators)
    -> [N, 3, h, w]`` and may override ``_alpha_gain``.
    """

    name = "diffusion"

    def __init__(self, pipe: Any, crop_margin: float = 0.25, min_crop_fraction: float = 0.25,
                 work_resolution: int = 512, feather: float = 3.0, max_batch: int = 4, progress: bool = False) -> None:
        if work_resolution % 8:
            raise ValueError(f"work_resolution must be a multiple of 8, got {work_resolution}")
        self.pipe = pipe
        self.crop_margin = crop_margin
        self.min_crop_fraction = min_crop_fraction
        self.work_resolution = work_resolution
        self.feather = feather
        self.max_batch = max(1, max_batch)
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=not progress)

    # -- hooks
    def _run(self, crops: torch.Tensor, crop_masks: torch.Tensor, plan: EditPlan,
             generators: list[torch.Generator] | None, originals: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _alpha_gain(self, plan: EditPlan) -> float:
        return 1.0

    def check(self, plan: EditPlan) -> None:
        if plan.kind == "expression":
            raise EditPlanError(f"{plan.prompt!r} is an expression edit: it changes FLAME expression "
                                "parameters, not images; no image editor applies")
        if not plan.regions:
            raise EditPlanError(f"the plan for {plan.prompt!r} names no region to edit")

    # -- the edit
    def edit(self, images: torch.Tensor, masks: torch.Tensor, plan: EditPlan, seed: int | None = None,
             originals: torch.Tensor | None = None) -> torch.Tensor:
        """images [B, H, W, 3] in [0, 1], masks [B, H, W] in [0, 1] -> edited images [B, H, W, 3].

        ``originals`` [B, H, W, 3]: the unedited views (the edit loop's captured frames or unedited
        renders); an editor with image guidance conditions on them and starts from ``images``."""
        self.check(plan)
        if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
            raise ValueError(f"expected images [B, H, W, 3] and masks [B, H, W], got {tuple(images.shape)} "
                             f"and {tuple(masks.shape)}")
        if originals is not None and originals.shape != images.shape:
            raise ValueError(f"originals must match images {tuple(images.shape)}, got {tuple(originals.shape)}")
        gain = self._alpha_gain(plan)
        if gain == 0.0:
            return images.clone()
        m = masks.to(device=images.device, dtype=torch.float32).clamp(0, 1)
        alpha = feather_mask(m, plan.mask_dilation, self.feather)  # [B, H, W]
        grown = dilate_mask(m, int(round(plan.mask_dilation * plan_scale(*m.shape[-2:]))))  # the inpaint region
        boxes = [crop_box(alpha[i], self.crop_margin, self.min_crop_fraction) for i in range(len(images))]
        edited = images.clone()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, box in enumerate(boxes):
            if box is not None:
                groups.setdefault(work_size(box, self.work_resolution), []).append(i)
        for size, idx in groups.items():
            for k in range(0, len(idx), self.max_batch):
                chunk = idx[k:k + self.max_batch]
                crops = torch.stack([crop_resize(images[i], boxes[i], size) for i in chunk])  # [n, 3, h, w]
                cmasks = torch.stack([crop_resize(grown[i][..., None], boxes[i], size, "bilinear")
                                      for i in chunk])  # [n, 1, h, w]
                gens = None if seed is None else [torch.Generator("cpu").manual_seed(seed + i) for i in chunk]
                orig = (None if originals is None else
                        torch.stack([crop_resize(originals[i].to(images), boxes[i], size) for i in chunk]))
                out = self._run(crops, cmasks, plan, gens, orig).to(device=images.device, dtype=torch.float32)
                for j, i in enumerate(chunk):
                    b = boxes[i]
                    edited[i, b.y0:b.y1, b.x0:b.x1] = uncrop_resize(out[j], b).to(images.dtype)
        return composite(images, edited, alpha * gain)


def _text_embeddings(pipe: Any, texts: list[str]) -> torch.Tensor:
    """CLIP last hidden states of ``texts``.  -> [len(texts), L, D]"""
    tok = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt")
    return pipe.text_encoder(tok.input_ids.to(pipe.device))[0]


@torch.no_grad()
def ip2p_from_current(pipe: Any, current: torch.Tensor, original: torch.Tensor, plan: EditPlan, start: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """One Instruct-NeRF2NeRF edit with an InstructPix2Pix pipeline's components: the UNet's image
    channels carry the ``original`` view's latents (the image guidance), and the denoised latents
    start from the ``current`` render noised to the timestep ``start`` of the way into the
    schedule. Three-way classifier-free guidance, as InstructPix2Pix:
    ``eps = eps_uncond + s_img (eps_img - eps_uncond) + s_txt (eps_full - eps_img)``.

    current, original: [1, 3, h, w] in [0, 1] -> [1, 3, h, w] in [0, 1]."""
    unet, vae, sched = pipe.unet, pipe.vae, pipe.scheduler
    dev, dt = unet.device, unet.dtype
    text = _text_embeddings(pipe, [plan.instruction, plan.negative_prompt or ""]).to(dt)  # [2, L, D]
    emb = torch.cat([text[:1], text[1:], text[1:]])  # full, image-only, unconditional
    orig_lat = vae.encode((original.to(dev, dt) * 2 - 1)).latent_dist.mode()  # [1, 4, h/8, w/8], unscaled
    image_lat = torch.cat([orig_lat, orig_lat, torch.zeros_like(orig_lat)])
    x = vae.encode((current.to(dev, dt) * 2 - 1)).latent_dist.mean * vae.config.scaling_factor
    sched.set_timesteps(plan.num_steps, device=dev)
    first = min(int(round(plan.num_steps * (1.0 - start))), plan.num_steps - 1)
    timesteps = sched.timesteps[first:]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(first)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(dev, dt)
    x = sched.add_noise(x, noise, timesteps[:1])
    for t in timesteps:
        x_in = sched.scale_model_input(torch.cat([x] * 3), t)
        eps = unet(torch.cat([x_in, image_lat], 1), t, encoder_hidden_states=emb).sample
        e_full, e_img, e_unc = eps.chunk(3)
        eps = e_unc + plan.image_guidance * (e_img - e_unc) + plan.text_guidance * (e_full - e_img)
        x = sched.step(eps, t, x, generator=generator).prev_sample
    out = vae.decode(x / vae.config.scaling_factor).sample
    return (out.float() / 2 + 0.5).clamp(0, 1)


def _prompts(text: str, n: int) -> list[str]:
    return [text] * n


class InstructPix2PixEditor(CropDiffusionEditor):
    """InstructPix2Pix ("turn her hair red") on region crops; ``plan.strength`` scales the composite alpha.

    Given ``originals`` (the edit loop always gives them), it edits as Instruct-NeRF2NeRF does: the
    image guidance is the ORIGINAL view (``plan.image_guidance`` pulls towards it, so identity is
    kept), and denoising starts from the CURRENT render noised to ``start_strength`` of the schedule
    (``ip2p_from_current``), so the re-edits converge instead of restarting from noise. Without
    them, the pipeline edits ``images`` from pure noise, as ``diffusers`` does.

    pipe: a ``StableDiffusionInstructPix2PixPipeline`` (used as is) or None to load ``model`` (a
    folder, hub id or short name) from the HF cache, fetching it on first use unless offline
    (``local_files_only`` None follows ``HF_HUB_OFFLINE``). device "auto" = CUDA when available;
    dtype None = float16 on CUDA, float32 on CPU.
    """

    name = "ip2p"

    def __init__(self, pipe: Any = None, model: str = "timbrooks/instruct-pix2pix", device: str | torch.device = "auto",
                 dtype: torch.dtype | None = None, local_files_only: bool | None = None, crop_margin: float = 0.25,
                 min_crop_fraction: float = 0.25, work_resolution: int = 512, feather: float = 3.0,
                 max_batch: int = 4, progress: bool = False, start_strength: float = 0.7) -> None:
        if not 0.0 < start_strength <= 1.0:
            raise ValueError(f"start_strength must be in (0, 1], got {start_strength}")
        if pipe is None:
            pipe = load_pipeline("ip2p", model, device, dtype, local_files_only, what="InstructPix2Pix editor")
        self.start_strength = float(start_strength)
        super().__init__(pipe, crop_margin, min_crop_fraction, work_resolution, feather, max_batch, progress)

    def _alpha_gain(self, plan: EditPlan) -> float:
        return float(plan.strength)

    def _run(self, crops, crop_masks, plan, generators, originals=None):
        n = len(crops)
        if originals is not None:
            gens = generators or [None] * n
            return torch.cat([ip2p_from_current(self.pipe, crops[i:i + 1], originals[i:i + 1], plan,
                                                self.start_strength, gens[i]) for i in range(n)])
        return self.pipe(prompt=_prompts(plan.instruction, n), image=crops,
                         negative_prompt=_prompts(plan.negative_prompt, n) if plan.negative_prompt else None,
                         num_inference_steps=plan.num_steps, guidance_scale=plan.text_guidance,
                         image_guidance_scale=plan.image_guidance, generator=generators, output_type="pt").images


class InpaintEditor(CropDiffusionEditor):
    """SD inpainting of the grown region mask with ``plan.positive_prompt``, optionally ControlNet-guided.

    ``plan.strength`` is the denoising strength (1 = repaint from noise; at least one step runs).
    controlnet: None, a ``ControlNetModel``, or a hub id / folder to load one from (resolved like
    ``model``). ``control`` makes the control image from the crops: "canny" (edge map,
    for a canny ControlNet), "inpaint" (masked pixels = -1, for control_v11p_sd15_inpaint) or a
    callable ``(crops [N, 3, h, w], masks [N, 1, h, w]) -> [N, 3, h, w]``. An injected ``pipe``
    with a ``controlnet`` component is driven as a ControlNet pipeline.
    """

    name = "inpaint"

    def __init__(self, pipe: Any = None, model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
                 controlnet: Any = None, control: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "canny",
                 control_scale: float = 1.0, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                 local_files_only: bool | None = None, crop_margin: float = 0.25, min_crop_fraction: float = 0.25,
                 work_resolution: int = 512, feather: float = 3.0, max_batch: int = 4, progress: bool = False) -> None:
        if pipe is None:
            kind = "inpaint" if controlnet is None else "controlnet-inpaint"
            pipe = load_pipeline(kind, model, device, dtype, local_files_only, controlnet=controlnet,
                                 what="inpainting editor")
        if isinstance(control, str) and control not in _CONTROLS:
            raise ValueError(f"control must be one of {sorted(_CONTROLS)} or a callable, got {control!r}")
        self.control = _CONTROLS[control] if isinstance(control, str) else control
        self.control_scale = control_scale
        super().__init__(pipe, crop_margin, min_crop_fraction, work_resolution, feather, max_batch, progress)

    def _alpha_gain(self, plan: EditPlan) -> float:
        return 0.0 if plan.strength == 0.0 else 1.0

    @property
    def uses_controlnet(self) -> bool:
        return getattr(self.pipe, "controlnet", None) is not None

    def _run(self, crops, crop_masks, plan, generators, originals=None):  # repaints: no image guidance
        n, _, h, w = crops.shape
        strength = min(1.0, max(float(plan.strength), 1.001 / plan.num_steps))  # >= 1 denoising step
        kw: dict[str, Any] = {}
        if self.uses_controlnet:
            kw["control_image"] = self.control(crops, crop_masks)
            kw["controlnet_conditioning_scale"] = self.control_scale
        return self.pipe(prompt=_prompts(plan.positive_prompt or plan.instruction, n), image=crops,
                         mask_image=crop_masks, height=h, width=w, strength=strength,
                         negative_prompt=_prompts(plan.negative_prompt, n) if plan.negative_prompt else None,
                         num_inference_steps=plan.num_steps, guidance_scale=plan.text_guidance,
                         generator=generators, output_type="pt", **kw).images
