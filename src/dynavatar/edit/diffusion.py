"""Diffusion image editors: InstructPix2Pix and SD inpainting (optionally with a ControlNet).

Both share one shell (:class:`CropDiffusionEditor`), because the hard parts are the same:

1. **Crop.** A head region is small in a keyframe (eyes: ~40 px of 512), and SD-1.5 models edit
   well only near 512 px. Each image is cropped to a square around the *feathered* mask (so
   everything the composite may touch is inside), enlarged by ``crop_margin`` on each side for
   context and never smaller than ``min_crop_fraction`` of the image's short side (an 8x upscale
   of a tiny crop gives the model nothing to work with), then resized to ``work_resolution``
   (rounded to a multiple of 8). Crops of equal work size go through the pipeline in one call.
2. **Edit.** The pipeline runs on the crops with the plan's prompt, guidance and steps, and one
   ``torch.Generator`` per image seeded ``seed + index`` (same seed -> same output).
3. **Composite.** The edited crop is resized back and composited inside the feathered region mask
   (``masks.feather_mask``: dilation ``plan.mask_dilation``, Gaussian feather ``feather``, both
   pixels at 512); pixels where that alpha is 0 come back bit-identical.

Pipelines are injected (tests pass tiny random ones built from configs) or loaded lazily from the
local Hugging Face cache with ``local_files_only``; absent weights raise
:class:`MissingWeightsError` naming them and the command that fetches them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DynavatarError, MissingDependencyError
from .masks import composite, dilate_mask, feather_mask, plan_scale, support_box
from .plan import EditPlan, EditPlanError

__all__ = ["MissingWeightsError", "CropBox", "crop_box", "work_size", "crop_resize", "uncrop_resize",
           "canny_control", "inpaint_control", "load_pipeline", "CropDiffusionEditor", "InstructPix2PixEditor",
           "InpaintEditor"]


class MissingWeightsError(DynavatarError, FileNotFoundError):
    """Model weights a backend needs are not on this machine; the message says how to fetch them."""


# ----------------------------------------------------------------------------- crop geometry
@dataclasses.dataclass(frozen=True)
class CropBox:
    """A pixel box, half-open: columns x0..x1-1, rows y0..y1-1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def crop_box(mask: torch.Tensor, margin: float = 0.25, min_fraction: float = 0.25) -> CropBox | None:
    """Square box around the pixels where ``mask`` [H, W] > 0, or None when there are none.

    side = max(ceil(max(bbox w, bbox h) * (1 + 2 margin)), ceil(min_fraction * min(H, W))),
    clipped to the image per axis; centred on the bbox (x0 = floor(cx - side / 2)) and shifted to
    lie inside the image. The box always contains the whole bbox.
    """
    H, W = mask.shape
    box = support_box(mask[None])
    if box is None:
        return None
    by0, by1, bx0, bx1 = box
    side = math.ceil(max(bx1 - bx0, by1 - by0) * (1.0 + 2.0 * margin))
    side = max(side, math.ceil(min_fraction * min(H, W)), 1)
    sx, sy = min(side, W), min(side, H)
    x0 = min(max(math.floor((bx0 + bx1) / 2 - sx / 2), 0), W - sx)
    y0 = min(max(math.floor((by0 + by1) / 2 - sy / 2), 0), H - sy)
    return CropBox(x0, y0, x0 + sx, y0 + sy)


def work_size(box: CropBox, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """(height, width) a crop is resized to: the long side -> ``resolution``, both multiples of ``multiple``."""
    scale = resolution / max(box.width, box.height)
    h = max(multiple, int(round(box.height * scale / multiple)) * multiple)
    w = max(multiple, int(round(box.width * scale / multiple)) * multiple)
    return h, w


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """[N, C, h, w] -> [N, C, *size]; antialiased when shrinking, so small crops stay clean."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    kw: dict[str, Any] = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kw["align_corners"] = False
    return F.interpolate(x, size=size, mode=mode, **kw)


def crop_resize(image: torch.Tensor, box: CropBox, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """image [H, W, C] -> the crop resized to ``size``, channels first [C, h, w], clamped to [0, 1]."""
    crop = image[box.y0:box.y1, box.x0:box.x1].permute(2, 0, 1)[None].float()  # [1, C, ch, cw]
    return _resize(crop, size, mode)[0].clamp(0.0, 1.0)


def uncrop_resize(crop: torch.Tensor, box: CropBox, mode: str = "bicubic") -> torch.Tensor:
    """An edited crop [C, h, w] -> the box's pixels [box.height, box.width, C], clamped to [0, 1]."""
    return _resize(crop[None].float(), (box.height, box.width), mode)[0].permute(1, 2, 0).clamp(0.0, 1.0)


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


# ----------------------------------------------------------------------------- loading
_PIPELINES = {
    "ip2p": "StableDiffusionInstructPix2PixPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "controlnet-inpaint": "StableDiffusionControlNetInpaintPipeline",
}


def _weights_label(model: str) -> str:
    from ..weights import KNOWN_WEIGHTS

    for w in KNOWN_WEIGHTS:
        if w.hub_repo == model:
            return f"{w.name} weights ({model!r})"
    return f"weights {model!r}"


def missing_weights_message(model: str, what: str) -> str:
    from ..weights import hf_hub_cache

    return (f"the {what} needs the {_weights_label(model)}, which are not in the Hugging Face cache at "
            f"{hf_hub_cache()} (nothing is downloaded here). Fetch them once on a machine with internet: "
            f"`hf download {model}` (older huggingface_hub: `huggingface-cli download {model}`), or pass a "
            "local folder as model=..., or set HF_HUB_CACHE to where they are.")


def broken_weights_message(model: str, what: str, exc: BaseException) -> str:
    return (f"the {what} found {_weights_label(model)} but could not load them ({type(exc).__name__}: {exc}). "
            f"The copy may be incomplete: fetch it again with `hf download {model}` (older huggingface_hub: "
            f"`huggingface-cli download {model}`), or pass a complete local folder as model=....")


def _is_cached(model: str) -> bool:
    from ..weights import find_hub_weights

    return Path(model).is_dir() or find_hub_weights(model) is not None


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise MissingDependencyError("the diffusion editors need diffusers: pip install 'diffusers>=0.30' "
                                     "transformers accelerate") from exc
    return diffusers


def _dtype_key() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype`` (and warns on the old name)."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def load_pipeline(kind: str, model: str, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                  local_files_only: bool = True, controlnet: Any = None, what: str = "editor") -> Any:
    """Load a diffusers pipeline of ``kind`` (``_PIPELINES``) from a local folder or the HF cache.

    Weights are looked up (``dynavatar.weights``) before diffusers is even imported, so a missing
    model fails in milliseconds with a message that names it. The tokenizer is checked for a
    non-empty vocabulary (offline, ``CLIPTokenizer.from_pretrained`` can return an empty one).
    """
    from ..device import resolve_device
    from ..weights import hf_hub_cache

    if local_files_only and not _is_cached(model):
        raise MissingWeightsError(missing_weights_message(model, what))
    diffusers = _import_diffusers()
    dev = resolve_device(device)
    dtype = dtype or _default_dtype(dev)
    common = {_dtype_key(): dtype, "local_files_only": local_files_only, "cache_dir": str(hf_hub_cache())}
    extra: dict[str, Any] = {}
    if kind == "controlnet-inpaint":
        if isinstance(controlnet, str):
            if local_files_only and not _is_cached(controlnet):
                raise MissingWeightsError(missing_weights_message(controlnet, what + "'s ControlNet"))
            try:
                controlnet = diffusers.ControlNetModel.from_pretrained(controlnet, **common)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise MissingWeightsError(broken_weights_message(controlnet, what + "'s ControlNet", exc)) from exc
        extra["controlnet"] = controlnet
    cls = getattr(diffusers, _PIPELINES[kind])
    try:
        pipe = cls.from_pretrained(model, safety_checker=None, requires_safety_checker=False, **common, **extra)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingWeightsError(broken_weights_message(model, what, exc)) from exc
    tok = getattr(pipe, "tokenizer", None)
    if tok is not None and not getattr(tok, "vocab_size", 0):
        raise MissingWeightsError(f"the tokenizer of {model!r} loaded empty (vocab_size 0): the tokenizer files "
                                  f"are missing from the cache. {missing_weights_message(model, what)}")
    return pipe.to(dev)


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
             generators: list[torch.Generator] | None) -> torch.Tensor:
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
    def edit(self, images: torch.Tensor, masks: torch.Tensor, plan: EditPlan, seed: int | None = None) -> torch.Tensor:
        """images [B, H, W, 3] in [0, 1], masks [B, H, W] in [0, 1] -> edited images [B, H, W, 3]."""
        self.check(plan)
        if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
            raise ValueError(f"expected images [B, H, W, 3] and masks [B, H, W], got {tuple(images.shape)} "
                             f"and {tuple(masks.shape)}")
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
                out = self._run(crops, cmasks, plan, gens).to(device=images.device, dtype=torch.float32)
                for j, i in enumerate(chunk):
                    b = boxes[i]
                    edited[i, b.y0:b.y1, b.x0:b.x1] = uncrop_resize(out[j], b).to(images.dtype)
        return composite(images, edited, alpha * gain)


def _prompts(text: str, n: int) -> list[str]:
    return [text] * n


class InstructPix2PixEditor(CropDiffusionEditor):
    """InstructPix2Pix ("turn her hair red") on region crops; ``plan.strength`` scales the composite alpha.

    pipe: a ``StableDiffusionInstructPix2PixPipeline`` (used as is) or None to load ``model`` from
    a local folder or the HF cache (``local_files_only``). device "auto" = CUDA when available;
    dtype None = float16 on CUDA, float32 on CPU.
    """

    name = "ip2p"

    def __init__(self, pipe: Any = None, model: str = "timbrooks/instruct-pix2pix", device: str | torch.device = "auto",
                 dtype: torch.dtype | None = None, local_files_only: bool = True, crop_margin: float = 0.25,
                 min_crop_fraction: float = 0.25, work_resolution: int = 512, feather: float = 3.0,
                 max_batch: int = 4, progress: bool = False) -> None:
        if pipe is None:
            pipe = load_pipeline("ip2p", model, device, dtype, local_files_only, what="InstructPix2Pix editor")
        super().__init__(pipe, crop_margin, min_crop_fraction, work_resolution, feather, max_batch, progress)

    def _alpha_gain(self, plan: EditPlan) -> float:
        return float(plan.strength)

    def _run(self, crops, crop_masks, plan, generators):
        n = len(crops)
        return self.pipe(prompt=_prompts(plan.instruction, n), image=crops,
                         negative_prompt=_prompts(plan.negative_prompt, n) if plan.negative_prompt else None,
                         num_inference_steps=plan.num_steps, guidance_scale=plan.text_guidance,
                         image_guidance_scale=plan.image_guidance, generator=generators, output_type="pt").images


class InpaintEditor(CropDiffusionEditor):
    """SD inpainting of the grown region mask with ``plan.positive_prompt``, optionally ControlNet-guided.

    ``plan.strength`` is the denoising strength (1 = repaint from noise; at least one step runs).
    controlnet: None, a ``ControlNetModel``, or a hub id / folder to load one from (with
    ``local_files_only``). ``control`` makes the control image from the crops: "canny" (edge map,
    for a canny ControlNet), "inpaint" (masked pixels = -1, for control_v11p_sd15_inpaint) or a
    callable ``(crops [N, 3, h, w], masks [N, 1, h, w]) -> [N, 3, h, w]``. An injected ``pipe``
    with a ``controlnet`` component is driven as a ControlNet pipeline.
    """

    name = "inpaint"

    def __init__(self, pipe: Any = None, model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
                 controlnet: Any = None, control: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "canny",
                 control_scale: float = 1.0, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                 local_files_only: bool = True, crop_margin: float = 0.25, min_crop_fraction: float = 0.25,
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

    def _run(self, crops, crop_masks, plan, generators):
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
