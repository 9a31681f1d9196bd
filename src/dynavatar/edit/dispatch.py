"""Which machinery applies a plan, and the record of what ran: the body of ``Avatar.edit``.

One plan (one clause of a prompt) goes to exactly one of:

- **expression** plans: new FLAME expression parameters, the same splats (``apply/expression.py``);
- **glasses** plans under ``editor="auto"|"geometry"``: new splats on rigid head triangles (``apply/glasses.py``);
- **makeup** (eyeshadow, blush, a tan) under ``editor="auto"|"palette"``: pigment on the skin's splats,
  placed from the face's landmarks (``apply/makeup.py``);
- every other plan: the region's splats re-optimised, by ``method="idu"`` (iterative dataset update
  with an image editor, ``apply/loop.py``) or ``method="sds"`` (view-and-time-aware score
  distillation, ``apply/sds_loop.py``). The region is the plan's labels, or a mask drawn on one
  frame (``apply.region.DrawnRegion``, built by ``Avatar.edit(mask=..., frame=...)``).

The facade passes the avatar's parts in (``AvatarParts``) and gets back the new splats, the new
parameters and a JSON-able record; it keeps no state here, so the dispatch is testable without an
``Avatar`` and ``api.py`` stays a thin shell.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any

import torch
from torch import Tensor

from ..errors import DynavatarError, RunInterrupted
from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar
from ..geometry.cameras import Cameras
from .plan import EditPlan

__all__ = ["AvatarParts", "apply_plan", "apply_clauses", "edit_avatar", "CapturedFrames", "METHODS"]

logger = logging.getLogger("dynavatar.edit")

METHODS = ("idu", "sds")


@dataclasses.dataclass
class AvatarParts:
    """What an edit reads of an avatar (the facade's fields, without the facade)."""

    gaussians: GaussianAvatar
    model: FlameModel
    params: FlameParams  # [N]
    cameras: Cameras  # [N]
    train_idx: Tensor  # [T] long
    renderer: Any
    background: Tensor  # [3]
    captured: Any = None  # the clip's frames by index ([H, W, 3] in [0, 1]; ``CapturedFrames``), or None


class CapturedFrames:
    """The clip's frames composited on the background, read one at a time (``frames[i]`` ->
    [H, W, 3] float), so an edit conditions on the captured images without holding the clip in memory."""

    def __init__(self, data, background: Tensor) -> None:
        self.data, self.background = data, background

    def __getitem__(self, i: int) -> Tensor:
        img, _ = self.data.targets(torch.tensor([int(i)]), self.background.cpu())
        return img[0].to(self.background.device)


def apply_plan(plan: EditPlan, parts: AvatarParts, editor: Any = "auto", method: str = "idu", config=None,
               guidance=None, progress: bool = True, drawn=None, **editor_kwargs
               ) -> tuple[GaussianAvatar, FlameParams, dict]:
    """Apply one validated plan. -> (gaussians, params, record); the inputs are not modified.

    ``drawn``: a ``DrawnRegion`` (the edit region from a drawn mask); expression and glasses plans
    do not use it (they change FLAME parameters / add geometry wherever the glasses go)."""
    from .apply.expression import apply_expression
    from .apply.glasses import glasses_edit, is_glasses_plan
    from .apply.makeup import makeup_edit, makeup_look

    plan = plan.validate()
    record: dict = {"prompt": plan.prompt, "plan": plan.to_dict(), "method": method}
    if drawn is not None:
        record["mask_route"] = drawn.route
    if plan.kind == "expression":  # a new face, same splats
        params = apply_expression(parts.params, parts.model, plan.expression or {}, plan.strength)
        record.update(editor="flame-expression")
        return parts.gaussians, params, record
    if is_glasses_plan(plan) and editor in ("auto", "geometry"):  # new splats on rigid head triangles
        g = glasses_edit(parts.gaussians, parts.model, parts.params, plan)
        record.update(editor="geometry", splats_added=g.num_splats - parts.gaussians.num_splats)
        return g, parts.params, record
    look = makeup_look(plan) if editor in ("auto", "palette") and drawn is None else None
    if look is not None:  # pigment on the skin's splats, placed from the face's landmarks
        g, info = makeup_edit(parts.gaussians, parts.model, parts.params, plan, look)
        record.update(editor="makeup", **info)
        return g, parts.params, record
    if editor == "geometry":
        raise DynavatarError(f"editor='geometry' builds glasses only; {plan.prompt!r} is a {plan.kind} edit")
    return _edit_splats(plan, parts, editor, method, config, guidance, progress, drawn, record, editor_kwargs)


def edit_avatar(avatar, plan: EditPlan, drawn=None, **kw):
    """``Avatar.edit`` of one plan: ``apply_plan`` on the avatar's parts, the record appended to a
    copy of its ``meta["edits"]``. -> a new avatar (``dataclasses.replace``); ``avatar`` is untouched.
    The clip's frames (when at hand) are the IDU loop's image guidance (``CapturedFrames``)."""
    t0 = time.perf_counter()
    bg = torch.tensor(avatar.background, device=avatar.device)
    data = avatar.frame_data(required=False) if kw.get("method", "idu") == "idu" else None
    parts = AvatarParts(avatar.gaussians, avatar.model, avatar.params, avatar.cameras, avatar.train_idx,
                        avatar.renderer, bg, CapturedFrames(data, bg) if data is not None else None)
    gaussians, params, record = apply_plan(plan, parts, drawn=drawn, **kw)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    meta = copy.deepcopy(avatar.meta)
    meta["edits"] = list(meta.get("edits", [])) + [record]
    logger.info("edit %r done in %.1f s (%s)", plan.prompt, record["seconds"], plan.summary())
    return dataclasses.replace(avatar, gaussians=gaussians, params=params, meta=meta)


def apply_clauses(start, plans: list[EditPlan], apply_one):
    """Apply a prompt's plans in turn (``apply_one(avatar, plan) -> avatar``), keeping the clauses that ran.

    A clause that cannot run (weights missing offline, no splat in its region...) is skipped with a
    warning when the prompt has several: "red hair and add a hat" without InstructPix2Pix returns
    the red hair, and the result's ``meta["skipped"]`` lists {"instruction", "kind", "error"} of the
    hat. A single clause, or a prompt none of whose clauses ran, raises (the first error). Why not
    all-or-nothing: the hair took a minute and is what was asked; the user reads what was left out."""
    out, skipped, first_error = start, [], None
    for plan in plans:
        try:
            out = apply_one(out, plan)
        except RunInterrupted:
            raise
        except DynavatarError as exc:
            if len(plans) == 1:
                raise
            first_error = first_error or exc
            skipped.append({"instruction": plan.instruction, "kind": plan.kind, "error": str(exc)})
            logger.warning("edit clause %r skipped: %s", plan.instruction, exc)
    if out is start:
        raise first_error
    if skipped:
        out.meta["skipped"] = list(out.meta.get("skipped", [])) + skipped
    return out


def _edit_splats(plan: EditPlan, parts: AvatarParts, editor, method: str, config, guidance, progress: bool,
                 drawn, record: dict, editor_kwargs: dict) -> tuple[GaussianAvatar, FlameParams, dict]:
    """Same motion, new splats, by ``method``; what ran is added to ``record``."""
    from .apply.loop import edit_splats
    from .apply.sds_loop import edit_splats_sds
    from .editors.base import get_editor

    p = parts
    if method == "idu":
        ed = get_editor(editor, plan=plan, **editor_kwargs) if isinstance(editor, str) else editor
        res = edit_splats(p.gaussians, p.model, p.params, p.cameras, p.train_idx, plan, ed, p.renderer,
                          p.background, config, progress=progress, drawn=drawn, captured=p.captured)
        record.update(editor=type(ed).__name__, editor_choice=getattr(ed, "auto_choice", None),
                      config=res.info["config"], image_guidance=res.info.get("image_guidance"),
                      loop=res.info["loop"], keyframes=sorted({v.frame for v in res.views}),
                      splats_edited=int(res.selected.sum()))
    elif method == "sds":
        res = edit_splats_sds(p.gaussians, p.model, p.params, p.cameras, p.train_idx, plan, guidance, p.renderer,
                              p.background, config, progress=progress, drawn=drawn)
        record.update(editor="sds", config=res.info["config"], keyframes=res.info["keyframes"],
                      prompts=res.info["prompts"][:16], personalised=bool(res.info.get("lora_losses")),
                      splats_edited=int(res.selected.sum()))
    else:
        raise DynavatarError(f"unknown edit method {method!r}; use 'idu' or 'sds'")
    return res.gaussians, p.params, record
