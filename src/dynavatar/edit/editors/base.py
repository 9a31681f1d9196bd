"""The image-editor protocol and the choice between editors.

An image editor turns keyframes plus region masks into edited keyframes, following an
:class:`~dynavatar.edit.plan.EditPlan`. Three ship with the project:

- :class:`~dynavatar.edit.editors.palette.PaletteEditor` ("palette"): colour/material edits in
  OKLab, offline, milliseconds, consistent across views. The offline default.
- :class:`~dynavatar.edit.editors.diffusion.InstructPix2PixEditor` ("ip2p"): any instruction, needs
  the InstructPix2Pix weights (fetched on first use unless offline).
- :class:`~dynavatar.edit.editors.diffusion.InpaintEditor` ("inpaint"): repaints the region from the
  plan's description, needs SD-1.5 inpainting weights (+ optionally a ControlNet).

What "auto" will choose, and whether it can run here, is said before anything loads by
``dynavatar.edit.backends`` (``EditPlan.with_backend``).

All of them honour one contract: pixels outside the editor's feathered mask (see
``dynavatar.edit.editors.masks``) come back bit-identical.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import torch

from ..plan import EditPlan
from .diffusion import InpaintEditor, InstructPix2PixEditor
from .palette import PaletteEditor, is_palette_plan
from .pipeline_loading import MissingWeightsError

__all__ = ["ImageEditor", "EDITOR_NAMES", "get_editor"]

logger = logging.getLogger("dynavatar.edit")

EDITOR_NAMES = ("auto", "palette", "ip2p", "inpaint")
IP2P_MODEL = "timbrooks/instruct-pix2pix"


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
    frame, which is what a 3D avatar needs, in milliseconds, offline); InstructPix2Pix for other
    plans, from the local cache or fetched on first use (like any Hugging Face library) unless
    ``HF_HUB_OFFLINE=1`` / ``local_files_only=True``; then absent weights are an error that says which
    to fetch, since the palette editor cannot add or reshape anything. The choice and its reason
    are logged (``dynavatar.edit``, INFO) and kept on the editor as ``auto_choice`` for the record.
    """
    if name == "palette":
        return PaletteEditor(**kw)
    if name == "ip2p":
        return InstructPix2PixEditor(**kw)
    if name == "inpaint":
        return InpaintEditor(**kw)
    if name != "auto":
        raise ValueError(f"unknown editor {name!r}; choose one of {', '.join(EDITOR_NAMES)}")

    if (plan is None or is_palette_plan(plan)) and kw.get("pipe") is None:
        palette_kw = {k: v for k, v in kw.items() if k in ("feather", "edge_aware", "min_detail")}
        return _chosen(PaletteEditor(**palette_kw), "palette (offline): a colour/material plan, the same edit in "
                                                    "every view")
    if kw.get("pipe") is not None:
        return _chosen(InstructPix2PixEditor(**kw), "InstructPix2Pix: the pipeline given")
    model = kw.get("model", IP2P_MODEL)
    try:
        editor = InstructPix2PixEditor(**kw)
    except MissingWeightsError as exc:
        raise type(exc)(f"{plan.prompt!r} (kind {plan.kind!r}) is not a colour/material edit, so the "
                                  f"offline palette editor cannot do it; {exc}") from exc
    return _chosen(editor, f"InstructPix2Pix: a {plan.kind!r} plan, weights {model!r} resolved")


def _chosen(editor: Any, why: str) -> Any:
    """Log and keep what "auto" chose (``editor.auto_choice``), so the edit's record can say it."""
    logger.info("editor 'auto': %s", why)
    editor.auto_choice = why
    return editor
