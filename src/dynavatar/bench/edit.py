"""``dynavatar bench edit``: time per edit, locality, the region's colour and temporal consistency.

Runs on a saved avatar (``dynavatar fit ... -o OUT`` writes OUT/avatar), or, with none given, on an
avatar fitted here to the default head's synthetic clip. ``--editor ip2p-random`` uses the full-size
Stable Diffusion 1.5 InstructPix2Pix architecture with random weights: the same compute as the real
weights (so the time is the real time), without needing them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from . import sync_cuda

__all__ = ["run_edit_bench", "format_edit_table"]


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


def run_edit_bench(avatar_dir: str | Path | None = None, prompt: str = "red hair", editor: str = "palette",
                   device: str = "auto", steps: int | None = None, resolution: int = 128, fit_steps: int = 300,
                   out_dir: str | Path | None = None, progress: bool = False) -> dict:
    import torch

    from ..api import Avatar
    from ..device import resolve_device
    from ..edit import EditConfig, RuleRefiner
    from ..reconstruct.data import split_train_eval
    from .edit_metrics_frames import held_out_comparison

    dev = resolve_device(device)
    t0 = time.perf_counter()
    avatar = (Avatar.load(avatar_dir, device=str(dev)) if avatar_dir else
              _synthetic_avatar(dev, resolution, fit_steps, progress))
    t_load = time.perf_counter() - t0
    ed = editor
    if editor == "ip2p-random":
        from ..edit import InstructPix2PixEditor, random_ip2p_pipeline

        size = "sd15" if dev.type == "cuda" else "tiny"
        pipe = random_ip2p_pipeline(size, dev, torch.float16 if dev.type == "cuda" else torch.float32)
        pipe.set_progress_bar_config(disable=True)
        ed = InstructPix2PixEditor(pipe=pipe, work_resolution=512 if size == "sd15" else 64)
    plans = RuleRefiner().refine_all(prompt)
    if editor == "ip2p-random":  # a plan the diffusion editor (not the palette) must do
        plans = [dataclasses.replace(p, kind="appearance", colour=None, colour_name=None) for p in plans]
    cfg = EditConfig() if steps is None else EditConfig(steps=steps, reedit_every=max(steps // 3, 1))
    sync_cuda()
    t1 = time.perf_counter()
    edited = avatar
    for p in plans:
        edited = edited.edit(p, editor=ed, config=cfg, progress=progress)
    sync_cuda()
    t_edit = time.perf_counter() - t1
    n = avatar.params.batch_size
    data = avatar.frame_data(required=False)  # a loaded avatar reads its frames back here
    eval_idx = data.eval_idx.tolist() if data is not None else split_train_eval(n, 0.1)[1].tolist()
    cmp = held_out_comparison(avatar, edited, plans, eval_idx, out_dir)
    return {"avatar": str(avatar_dir or "synthetic default-head clip"), "prompt": prompt,
            "plans": [p.summary() for p in plans], "editor": type(ed).__name__ if not isinstance(ed, str) else ed,
            "device": dev.type, "resolution": avatar.resolution, "splats": avatar.gaussians.num_splats,
            "steps": cfg.steps, "load_s": t_load, "edit_s": t_edit, **cmp}


def format_edit_table(r: dict) -> str:
    f = lambda v, d=2: "n/a" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    rows = [("avatar", r["avatar"]), ("prompt", r["prompt"])] + [("plan", p) for p in r["plans"]] + [
        ("editor", r["editor"]), ("device", r["device"]), ("resolution", r["resolution"]), ("splats", r["splats"]),
        ("optimisation steps per plan", r["steps"]), ("time per edit [s]", f(r["edit_s"], 1)),
        ("held-out frames", r["frames"]),
        ("outside-region change, mean [1/255] (<= 2)", f(r["outside_change_mean"])),
        ("outside-region change, worst frame [1/255]", f(r["outside_change_max"])),
    ]
    if r.get("hue_error_max") is not None:
        rows += [("region hue error vs target, median frame [deg]", f(r["hue_error_median"], 1)),
                 ("region hue error vs target, worst frame/pose [deg] (<= 20)", f(r["hue_error_max"], 1))]
    rows += [("region chroma spread over frames x1000, before", f(r["spread_before"])),
             ("region chroma spread over frames x1000, after", f(r["spread_after"])),
             ("region median-hue spread over frames [deg], before", f(r["hue_spread_before"], 1)),
             ("region median-hue spread over frames [deg], after", f(r["hue_spread_after"], 1))]
    if "chroma_cv_before" in r:  # colour-fair temporal consistency (edit.metrics.region_colour_consistency)
        rows += [("region median-chroma CV over frames (2 px eroded), before", f(r["chroma_cv_before"], 4)),
                 ("region median-chroma CV over frames (2 px eroded), after (<= before)", f(r["chroma_cv_after"], 4)),
                 ("region median-hue circular std over frames [deg], before", f(r["hue_std_before"], 2)),
                 ("region median-hue circular std over frames [deg], after (<= before)", f(r["hue_std_after"], 2))]
    clip = r.get("clip")
    rows.append(("CLIP direction similarity / consistency",
                 f"{clip['clip_direction_similarity']:.3f} / {clip['clip_direction_consistency']:.3f}" if clip
                 else "skipped: CLIP ViT-L/14 weights not in the local Hugging Face cache"))
    if r.get("stills"):
        rows.append(("before/after stills", r["stills"]))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
