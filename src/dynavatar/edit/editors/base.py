"""The image-editor protocol and the choice between editors.

An image editor turns keyframes plus region masks into edited keyframes, following an
:class:`~dynavatar.edit.plan.EditPlan`. Three ship with the project:

- :class:`~dynavatar.edit.editors.palette.PaletteEditor` ("palette"): colour/material edits in
  OKLab, offline, milliseconds, consistent across views. The offline default.
- :class:`~dynavatar.edit.editors.diffusion.InstructPix2PixEditor` ("ip2p"): any instruction, needs
  the InstructPix2Pix weights.
- :class:`~dynavatar.edit.editors.diffusion.InpaintEditor` ("inpaint"): repaints the region from the
  plan's description, needs SD-1.5 inpainting weights (+ optionally a ControlNet).

All of them honour one contract: pixels outside the editor's feathered mask (see
``dynavatar.edit.editors.masks``) come back bit-identical.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ...weights import find_hub_weights, missing_weights_message
from ..plan import EditPlan
from .diffusion import InpaintEditor, InstructPix2PixEditor
from .palette import PaletteEditor, is_palette_plan
from .pipeline_loading import MissingWeightsError

__all__ = ["ImageEditor", "EDITOR_NAMES", "get_editor"]

EDITOR_NAMES = ("auto", "palette", "ip2p", "inpaint")


@runtime_checkable
class ImageEditor(Protocol):
    name: str

    def edit(self, images: torch.Tensor, masks: torch.Tensor, plan: EditPlan, seed: int | None = None) -> torch.Tensor:
        """images [B, H, W, 3] float in [0, 1], masks [B, H, W] in [0, 1] -> edited [B, H, W, 3].

        out = alpha * edited + (1 - alpha) * images with alpha the editor's dilated+feathered mask;
        where alpha == 0 the input pixel is returned unchanged.
        """
        ...


def get_editor(name: str = "auto", plan: EditPlan | None = None, **kw: Any) -> ImageEditor:
    """An editor by name; ``kw`` go to its constructor.

    "auto": the palette editor for colour/material plans (it gives the same edit in every view and
    frame, which is what a 3D avatar needs, in milliseconds); InstructPix2Pix for other plans when its
    weights are in the local Hugging Face cache; otherwise an error that says which weights to fetch.
    """
    if name == "palette":
        return PaletteEditor(**kw)
    if name == "ip2p":
        return InstructPix2PixEditor(**kw)
    if name == "inpaint":
        return InpaintEditor(**kw)
    if name != "auto":
        raise ValueError(f"unknown editor {name!r}; choose one of {', '.join(EDITOR_NAMES)}")

    model = kw.get("model", "timbrooks/instruct-pix2pix")
    if (plan is None or is_palette_plan(plan)) and kw.get("pipe") is None:
        palette_kw = {k: v for k, v in kw.items() if k in ("feather", "edge_aware", "min_detail")}
        return PaletteEditor(**palette_kw)
    if kw.get("pipe") is not None or find_hub_weights(model) is not None:
        return InstructPix2PixEditor(**kw)
    raise MissingWeightsError(
        f"{plan.prompt!r} (kind {plan.kind!r}) is not a colour/material edit, so the offline palette editor "
        "cannot do it; " + missing_weights_message(model, "InstructPix2Pix editor"))
