"""``dynavatar bench edit``: figures a person would agree with, per prompt of a fixed set.

For each prompt (default: ``PROMPTS``, the issue's set) the saved avatar is edited afresh and
judged on held-out frames and at +-0.5 rad head turns (``edit_metrics_frames``): coverage of the
target shade on the region, spill off it, lightness structure kept, the sclera's change for eye
edits, their spread over the poses, and the time per edit. ``-o DIR`` writes the gallery sheet
(``edit_gallery``): prompts x poses, before over after.

An avatar labelled before iris, sclera and teeth existed gets them here by colour
(``semantics.avatar_labels.split_eye_and_mouth_labels``; said in the table), so the sclera can be
judged. With no avatar given, one is fitted here to the default head's synthetic clip.
``--editor ip2p-random`` uses the full-size Stable Diffusion 1.5 InstructPix2Pix architecture with
random weights: the same compute as the real weights (the time is real), without needing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from . import sync_cuda

__all__ = ["PROMPTS", "run_edit_bench", "format_edit_table"]

PROMPTS = ("red hair", "auburn hair", "blonde hair", "platinum blonde hair", "black hair", "pink hair",
           "blue eyes", "green eyes", "red lipstick", "make her smile", "add round glasses", "add sunglasses")


def _synthetic_avatar(device, resolution: int, steps: int, progress: bool):
    from ..api import Avatar
    from ..flame import FlameModel
    from ..reconstruct import ReconstructConfig, fit_avatar
    from ..reconstruct.synthetic import synthetic_clip
    from ..render import renderer_for

    model = FlameModel.load().to(device)
    renderer = renderer_for(device)
    data = synthetic_clip(model, renderer, n_frames=40, resolution=resolution)
    cfg = ReconstructConfig.preset("tiny", steps=steps, resolution=resolution)
    fit = fit_avatar(data, model, renderer, cfg, progress=progress)
    return Avatar(fit.avatar, fit.model, fit.params, data.cameras, {"source": "synthetic"}, data).label_splats(progress=False)


def _with_eye_labels(avatar) -> str:
    """Give an avatar labelled before iris/sclera/teeth those labels by colour (in place); -> a note."""
    from ..gaussians.avatar import sh_to_rgb
    from ..semantics.avatar_labels import has_iris_labels, split_eye_and_mouth_labels

    g = avatar.gaussians
    if not avatar.has_labels or has_iris_labels(g.labels):
        return "from the avatar"
    g.labels = split_eye_and_mouth_labels(g.labels, sh_to_rgb(g.sh[:, 0]).clamp(0, 1), g.opacities)
    return "iris/sclera/teeth split by colour here (labelled before they existed)"


def _editor(editor: str, dev):
    if editor != "ip2p-random":
        return editor
    import torch

    from ..edit import InstructPix2PixEditor, random_ip2p_pipeline

    size = "sd15" if dev.type == "cuda" else "tiny"
    pipe = random_ip2p_pipeline(size, dev, torch.float16 if dev.type == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return InstructPix2PixEditor(pipe=pipe, work_resolution=512 if size == "sd15" else 64)


def _plan_editor(plan, editor: str, ed):
    """The editor one plan runs with: the offline bench (``--editor palette``) gives glasses plans to
    the geometry editor, as ``editor="auto"`` does offline; the palette would refuse them and their
    rows would show no glasses. Other editors get every plan as chosen."""
    from ..edit import is_glasses_plan

    return "geometry" if editor == "palette" and is_glasses_plan(plan) else ed


def run_edit_bench(avatar_dir: str | Path | None = None, prompts: tuple[str, ...] | str = PROMPTS,
                   editor: str = "palette", device: str = "auto", steps: int | None = None, resolution: int = 128,
                   fit_steps: int = 300, out_dir: str | Path | None = None, frames: int = 3,
                   progress: bool = False) -> dict:
    """Edit the avatar once per prompt and judge each edit (see the module docstring). ``steps``:
    the edit loop's optimisation steps per plan (None: ``EditConfig``'s; 0: the splat-space
    recolour alone). -> {"avatar", "device", "rows": [per-prompt figures], "sheet": path or None}"""
    from ..device import resolve_device

    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    dev = resolve_device(device)
    with _cpu_threads(dev):
        return _run(avatar_dir, prompts, editor, dev, steps, resolution, fit_steps, out_dir, frames, progress)


def _edit_config(EditConfig, steps: int | None):
    """The loop's settings for ``steps``. With 0 steps only the splat-space recolour runs, and its
    region statistics need a few views, not the plan's 8 keyframes and their head turns (16 views
    to render and vote on: minutes on a CPU for nothing)."""
    if steps is None:
        return EditConfig()
    if steps == 0:
        return EditConfig(steps=0, keyframes=3, novel_yaws=())
    return EditConfig(steps=steps, reedit_every=max(steps // 3, 1))


@contextlib.contextmanager
def _cpu_threads(dev):
    """One intra-op thread on a CPU whose cores are already busy (restored afterwards).

    Why: the CPU renderer is thousands of small tensor operations; with another process on a core,
    a second thread makes each of them wait for it (the demo measured the same: 6.5 min on two
    threads under load, 84 s on one). On the project's 2 shared cores one 'red hair' edit's
    statistics views took 17 s each on two threads and 3 s on one."""
    import os

    import torch

    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if dev.type == "cpu" and before > 1 and load >= cores - 0.5:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(avatar_dir, prompts, editor, dev, steps, resolution, fit_steps, out_dir, frames, progress) -> dict:
    """``run_edit_bench``'s body, on the device and thread count chosen."""
    import numpy as np

    from ..api import Avatar
    from ..edit import EditConfig, RuleRefiner
    from ..reconstruct.data import split_train_eval
    from .edit_metrics_frames import edit_figures, edit_poses

    t0 = time.perf_counter()
    avatar = (Avatar.load(avatar_dir, device=str(dev)) if avatar_dir else
              _synthetic_avatar(dev, resolution, fit_steps, progress))
    t_load = time.perf_counter() - t0
    labels_note = _with_eye_labels(avatar)
    ed = _editor(editor, dev)
    cfg = _edit_config(EditConfig, steps)
    n = avatar.params.batch_size
    data = avatar.frame_data(required=False)  # a loaded avatar reads its frames back here
    eval_idx = data.eval_idx.tolist() if data is not None else split_train_eval(n, 0.1)[1].tolist()
    pick = sorted({eval_idx[int(j)] for j in np.linspace(0, len(eval_idx) - 1, min(frames, len(eval_idx))).round()})
    poses = edit_poses(avatar, pick)
    rows, gallery = [], []
    for prompt in prompts:
        row = {"prompt": prompt}
        try:
            plans = RuleRefiner().refine_all(prompt)
            if editor == "ip2p-random":  # a plan the diffusion editor (not the palette) must do
                plans = [dataclasses.replace(p, kind="appearance", colour=None, colour_name=None) for p in plans]
            sync_cuda()
            t1 = time.perf_counter()
            edited = avatar
            for p in plans:
                edited = edited.edit(p, editor=_plan_editor(p, editor, ed), config=cfg, progress=progress)
            sync_cuda()
            row.update(seconds=time.perf_counter() - t1, plans=[p.summary() for p in plans],
                       editors=[e.get("editor") for e in edited.meta.get("edits", [])[-len(plans):]])
        except Exception as exc:  # noqa: BLE001 - one failing prompt is a row of the table, not the end of it
            row.update(error=str(exc).splitlines()[0])
            rows.append(row)
            continue
        figs = edit_figures(avatar, edited, plans, poses)
        gallery.append((prompt, figs.pop("images")))
        row.update({k: v for k, v in figs.items() if k != "titles"})
        rows.append(row)
    sheet = None
    if out_dir is not None and gallery:
        import imageio.v3 as iio

        from .edit_gallery import gallery_sheet

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sheet = out / f"edit_gallery_{Path(str(avatar_dir or 'synthetic')).resolve().parent.name or 'avatar'}.png"
        iio.imwrite(sheet, gallery_sheet(gallery, [p["title"] for p in poses]))
    return {"avatar": str(avatar_dir or "synthetic default-head clip"), "device": dev.type,
            "resolution": avatar.resolution, "splats": avatar.gaussians.num_splats, "labels": labels_note,
            "steps": cfg.steps, "load_s": t_load, "poses": [p["title"] for p in poses], "rows": rows,
            "sheet": str(sheet) if sheet else None}


def _mark(key: str, stat: dict | None) -> str:
    from .edit_metrics_frames import THRESHOLDS

    if stat is None:
        return "-"
    op, bar = THRESHOLDS.get(key, ("", None))
    worst = stat["worst"]
    ok = "" if bar is None else (" ok" if (worst >= bar if op == ">=" else worst <= bar) else " FAIL")
    d = 1 if key in ("sclera",) else (3 if key == "spill_pct" else 2)
    return f"{stat['median']:.{d}f} ({worst:.{d}f}, +-{stat['spread']:.{d}f}){ok}"


def format_edit_table(r: dict) -> str:
    """The bench's one table: a header, then one line per prompt. Figures are "median (worst pose,
    +- spread over poses)" with ok/FAIL against the issue's bars on the worst pose."""
    head = [f"avatar      {r['avatar']}  ({r['resolution']} px, {r['splats']} splats, {r['device']})",
            f"labels      {r['labels']}",
            f"edit steps  {r['steps']} per plan; poses: {', '.join(r['poses'])}",
            "figures: median (worst pose, +- spread over poses); bars: coverage >= 0.95, spill <= 0.3 % of the "
            "frame, structure >= 0.9, sclera <= 3/255"]
    cols = ("prompt", "time s", "coverage", "spill %", "structure", "sclera /255", "changed %")
    lines = []
    for row in r["rows"]:
        if "error" in row:
            lines.append((row["prompt"], "-", f"error: {row['error']}", "", "", "", ""))
            continue
        changed = row.get("changed_pct")
        lines.append((row["prompt"], f"{row['seconds']:.1f}", _mark("coverage", row.get("coverage")),
                      _mark("spill_pct", row.get("spill_pct")), _mark("structure", row.get("structure")),
                      _mark("sclera", row.get("sclera")), f"{changed['median']:.1f}" if changed else "-"))
    widths = [max(len(str(x[i])) for x in [cols] + lines) for i in range(len(cols))]
    fmt = lambda x: "  ".join(f"{str(v):<{w}}" for v, w in zip(x, widths)).rstrip()  # noqa: E731
    out = head + [fmt(cols)] + [fmt(x) for x in lines]
    if r.get("sheet"):
        out.append(f"gallery     {r['sheet']}")
    return "\n".join(out)
