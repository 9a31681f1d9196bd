"""What an edit will run, said before anything loads: which editor (the one ``get_editor("auto")``
would pick, or the one asked for), whether it can run on this machine now, and on which regions.

"Can run" is the weights' state (``dynavatar.hub.weights_status``): present (cached), fetchable
(downloads allowed and the hub answers a metadata request within a few seconds: the first edit
downloads them) or neither (offline, or the hub unreachable: the edit would fail, and the line
says what fetches them). ``EditPlan.with_backend`` attaches the line to a plan, so
``Avatar.plan(...).summary()`` and ``dynavatar edit --plan-only`` print it.

The choice mirrors ``editors.base.get_editor`` and ``Avatar.edit``: expression plans change FLAME
parameters (no image editor, no weights); ``method="sds"`` distils Stable Diffusion 1.5; under
"auto", colour/material plans go to the palette editor (offline, the same edit in every view) and
every other plan to InstructPix2Pix. The palette test is the editors' own ``is_palette_plan``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..hub import WeightsStatus, weights_status
from .plan import EditPlan

__all__ = ["Backend", "choose_backend", "describe_backend", "runs_here"]

CANNOT = "cannot run here"  # the words a backend line carries when the edit would fail on this machine

# editor name -> (what a person calls it, the weights it needs by KNOWN_WEIGHTS name; None = none)
_EDITORS = {"palette": ("palette", None), "ip2p": ("InstructPix2Pix", "ip2p"),
            "inpaint": ("SD 1.5 inpainting", "sd15-inpaint")}


@dataclasses.dataclass(frozen=True)
class Backend:
    label: str  # "palette", "InstructPix2Pix", "SDS (Stable Diffusion 1.5)", "FLAME expression"
    weights: str | None  # the KNOWN_WEIGHTS name it needs, None when it needs none
    note: str = ""  # why this one (under "auto") or why it cannot do the plan


def choose_backend(plan: EditPlan, editor: Any = "auto", method: str = "idu") -> Backend:
    """The backend ``Avatar.edit(plan, editor, method)`` would run, decided from the plan alone."""
    if plan.kind == "expression":
        return Backend("FLAME expression", None, "expression edits change FLAME parameters, not splats")
    if method == "sds":
        return Backend("SDS (Stable Diffusion 1.5)", "sd15")
    if not isinstance(editor, str):
        return Backend(getattr(editor, "name", type(editor).__name__), None, "the editor given")
    from .apply.glasses import is_glasses_plan
    from .apply.makeup import makeup_look
    from .editors.palette import is_palette_plan

    if is_glasses_plan(plan) and editor in ("auto", "geometry"):  # as Avatar.edit routes it
        return Backend("glasses as geometry", None, "auto: glasses are built as splats on the head")
    look = makeup_look(plan) if editor in ("auto", "palette") else None
    if look is not None:  # as Avatar.edit routes it
        return Backend("makeup on the skin's splats", None, f"auto: {look.name} is painted on the skin")
    palette_plan = is_palette_plan(plan)
    if editor == "auto":
        return Backend(*_EDITORS["palette" if palette_plan else "ip2p"],
                       "auto: colour/material plan" if palette_plan else f"auto: a {plan.kind!r} plan")
    label, weights = _EDITORS.get(editor, (editor, None))
    note = "" if editor != "palette" or palette_plan else f"the palette editor cannot do {plan.kind!r} edits"
    return Backend(label, weights, note)


def describe_backend(plan: EditPlan, editor: Any = "auto", method: str = "idu", probe: bool = True) -> str:
    """One line: ``"editor: InstructPix2Pix (weights not cached; will download ~4.3 GB on first use)
    on hair, headwear"`` or ``"editor: palette (offline) on hair"``. ``probe=False`` asks no host."""
    b = choose_backend(plan, editor, method)
    regions = ", ".join(plan.regions) or "FLAME expression parameters"
    if b.weights is None:
        state = ("offline" if not b.note or b.note.startswith(("auto", "expression")) else
                 b.note if b.note == "the editor given" else f"{CANNOT}: {b.note}")
        if b.label == "palette" and state == "offline" and _recolour_is_the_edit(plan):
            state += "; the splat recolour is the whole edit, no loop"
        return f"editor: {b.label} ({state}) on {regions}"
    return f"editor: {b.label} ({_state(weights_status(b.weights, probe=probe))}) on {regions}"


def _recolour_is_the_edit(plan: EditPlan) -> bool:
    """Whether the palette editor's splat recolour ends the edit (``apply.loop._splat_recolour_is_final``):
    eye colours and colour plans recoloured through one colour map skip the keyframe loop."""
    from .apply.loop import _splat_recolour_is_final
    from .editors.palette import PaletteEditor

    return _splat_recolour_is_final(plan, PaletteEditor())


def runs_here(line: str) -> bool:
    """Whether a ``describe_backend`` line says the edit can run on this machine now (offline, cached
    or fetchable weights), so ``--plan-only`` can say which clauses an edit would skip."""
    return CANNOT not in line


def _state(st: WeightsStatus) -> str:
    if st.state == "present":
        return f"weights cached at {st.path}"
    if st.state == "fetchable":
        return st.detail.replace("not cached;", "weights not cached;")
    return (f"{CANNOT}: weights {st.detail} (or fetch them with `dynavatar download {st.weights.key}` "
            "where there is internet)")
