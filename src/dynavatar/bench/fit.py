"""``dynavatar bench fit CLIP [CLIP ...]``: time per stage (preprocess, track, optimise, label) and
held-out quality (PSNR / SSIM / LPIPS, and rendered label masks vs the parser's masks), per clip;
several clips give one table with the mean and the worst clip (``bench.fit_table``). A CLIP may be
a preprocessed folder (``dynavatar preprocess``), which is how clips reach a GPU machine without
mediapipe.

Held-out quality is reported three times: with the landmark tracker's motion alone; with the
pipeline's stored motion, which its photometric tracking stage fitted to every frame's pixels
(``ReconstructConfig.track_steps``); and after a further evaluation-time refinement of the held-out
frames with the avatar frozen (``reconstruct.refine_tracking``), which is how published
self-reenactment figures are produced (their trackers fit a textured model to every frame). The
landmark error (NME) of the first two motions shows what the photometric stage costs the landmarks. A third figure masks the clothes out, as the
head-and-neck datasets of those papers do. CUDA extension builds are timed on their own row."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import sync_cuda, warm_up_cuda

__all__ = ["run_fit_bench", "run_fit_benches", "format_fit_table", "save_held_out_grid", "save_label_grid"]

#: Shown instead of held-out figures when the clip is too short to hold frames out (fewer than 2
#: frames: ``reconstruct.data.split_train_eval`` then trains on every frame).
NO_HELD_OUT = "no held-out frames (the clip is too short to hold any out): held-out figures are n/a"


def run_fit_bench(video: str | Path, preset: str = "fast", device: str = "auto", max_frames: int | None = None,
                  work_dir: str | Path | None = None, head: str | None = None, progress: bool = False,
                  config=None) -> dict:
    """``config``: a ``ReconstructConfig`` to use instead of the preset's (ablations)."""
    from ..api import Avatar
    from ..config import PipelineConfig
    from ..device import resolve_device
    from ..perceive import FrameDataset, preprocess
    from ..perceive.dataset_parsing import refresh_parsing
    from ..reconstruct.landmark_anchor import landmark_nme
    from ..track import track
    from .error_regions import held_out_error_regions

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="dynavatar-bench-fit-"))
    pipe = PipelineConfig.preset(preset)  # the stages' settings `dynavatar fit --preset` uses
    t0 = time.perf_counter()
    if (Path(video) / "meta.json").is_file():  # a preprocessed dataset carried to a GPU machine
        data_dir, t_pre = Path(video), float("nan")
        refresh_parsing(data_dir, progress=progress)  # labelled by today's parser, as a video would be
    else:
        data_dir = work / "data"
        preprocess(video, data_dir, config=dataclasses.replace(pipe.preprocess, max_frames=max_frames),
                   progress=progress)
        t_pre = time.perf_counter() - t0
    ds = FrameDataset.load(data_dir)
    dev = resolve_device(device)
    t_compile = warm_up_cuda(dev)
    tcfg = dataclasses.replace(pipe.track, device=str(dev))
    sync_cuda()
    t1 = time.perf_counter()
    tracking = track(ds, head=head, config=tcfg, progress=progress)
    sync_cuda()
    t_track = time.perf_counter() - t1
    shutil.rmtree(work / "checkpoint", ignore_errors=True)  # a benchmark always trains from scratch
    tracking_dir = work / "tracking"
    tracking.save(tracking_dir)
    t2 = time.perf_counter()
    avatar = Avatar.from_dataset(data_dir, head=head, out_dir=work, preset=preset, device=str(dev), progress=progress,
                                 tracking=tracking, config=config)
    sync_cuda()
    t_total_fit = time.perf_counter() - t2
    t_opt = float(avatar.meta["fit_seconds"])
    landmarks_only = avatar.evaluate(landmarks_only=True)
    metrics = avatar.evaluate()
    nme_landmarks = landmark_nme(avatar.model, avatar.training_motion("tracked"), avatar.data)
    nme_tracked = landmark_nme(avatar.model, avatar.params, avatar.data)
    iou = _label_iou(avatar)
    sync_cuda()
    t3 = time.perf_counter()
    refined = avatar.evaluate(refine_tracking=True)  # keeps the refined held-out parameters
    sync_cuda()
    t_refine = time.perf_counter() - t3
    iou_refined = _label_iou(avatar)
    held = len(avatar.data.eval_idx) > 0
    psnr_head = _psnr_without_clothes(avatar) if held else None
    error_regions = held_out_error_regions(avatar) if held else None  # where the refined error lives
    grid = save_held_out_grid(avatar, work / "held_out.png") if held else None
    turn, flecks = _turned_heads(avatar, work) if held else (None, None)
    if held and avatar.data.parsing is not None and avatar.has_labels:
        save_label_grid(avatar, work / "labels_held_out.png")
    saved = avatar.save(work / "avatar")  # so `bench mask` / `edit` can follow on the very same fit
    return {"video": str(video), "frames": len(ds), "resolution": avatar.resolution, "preset": preset,
            "device": dev.type, "compile_s": t_compile, "preprocess_s": t_pre, "track_s": t_track, "optimise_s": t_opt,
            "label_and_load_s": t_total_fit - t_opt, "end_to_end_s": (0 if t_pre != t_pre else t_pre) + t_track + t_total_fit,
            "splats": avatar.gaussians.num_splats, "psnr": metrics["psnr"], "ssim": metrics["ssim"],
            "lpips": metrics["lpips"], "eval_frames": metrics["frames"], "label_iou": iou,
            "refine_s": t_refine, "psnr_refined": refined["psnr"], "ssim_refined": refined["ssim"],
            "lpips_refined": refined["lpips"], "psnr_refined_no_clothes": psnr_head,
            "psnr_refined_whole_crop": refined.get("psnr_whole_crop"), "label_iou_refined": iou_refined,
            "turn_psnr": turn, "turn_flecks": flecks, "error_regions": error_regions,
            "grid": str(grid) if grid else "none",
            "avatar_dir": str(saved), "torso": avatar.model.torso_vertices is not None, "avatar": avatar,
            "psnr_landmarks": landmarks_only["psnr"], "nme": nme_landmarks, "nme_tracked": nme_tracked,
            "note": "" if held else NO_HELD_OUT}


def run_fit_benches(clips: list, preset: str = "fast", device: str = "auto", max_frames: int | None = None,
                    work_dir: str | Path | None = None, head: str | None = None, progress: bool = False,
                    json_path: str | Path | None = None, config=None, on_row=None, tag: str = "") -> list[dict]:
    """``run_fit_bench`` on each clip (a video or a preprocessed folder) in ``work_dir/<clip name>``;
    -> one row per clip (``bench.fit_table.fit_row``). A clip whose fit stops with a project error
    gets an error row and the others still run (one bad clip must not cost a GPU lease the rest).
    ``json_path``: the rows so far are rewritten after every clip, so a run cut off by a time limit
    still leaves the finished clips' rows. ``on_row(row)`` is called as each clip finishes; ``tag`` is
    appended to each row's clip name (which settings an ablation changed)."""
    from ..errors import DynavatarError
    from .fit_table import clip_name, error_row, fit_row, save_rows

    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="dynavatar-bench-fit-"))
    names = _unique_names([clip_name(c) for c in clips])
    rows = []
    for clip, name in zip(clips, names):
        try:
            r = run_fit_bench(clip, preset, device, max_frames, root / name, head=head, progress=progress, config=config)
            row = {**fit_row(r), "clip": name + tag}
            del r  # the avatar: free its memory before the next clip
        except DynavatarError as e:
            row = {**error_row(clip, str(e)), "clip": name + tag}
        rows.append(row)
        if json_path is not None:
            save_rows(rows, json_path)
        if on_row is not None:
            on_row(row)
    return rows


def _unique_names(names: list[str]) -> list[str]:
    """Clip names made unique (``a``, ``a-2``): each clip gets its own work folder."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _psnr_without_clothes(avatar) -> float | None:
    """Held-out PSNR with the parser's clothes pixels set to the background in both images: the
    head-and-neck protocol of the monocular avatar papers (their datasets cut the torso away)."""
    import torch

    from ..geometry.labels import label_index
    from ..geometry.photometric import psnr

    if avatar.data.parsing is None:
        return None
    bg = torch.tensor(avatar.background, device=avatar.device)
    vals = []
    for i in avatar.data.eval_idx.tolist():
        at = torch.tensor([i], device=avatar.device)
        target, _ = avatar.data.targets(at, bg)
        pred = torch.from_numpy(avatar.render(frame=i)).to(avatar.device).float()[None] / 255
        clothes = (avatar.data.parsing[i] == label_index("clothes"))[None, ..., None]
        vals.append(psnr(torch.where(clothes, bg, pred), torch.where(clothes, bg, target), avatar.data.seen(at)).item())
    return float(np.mean(vals))


def _label_iou(avatar) -> dict:
    """Mean over held-out frames of rendered-label vs parser IoU per label group."""
    from ..semantics.metrics import group_argmax, group_iou

    if avatar.data.parsing is None or not avatar.has_labels:
        return {}
    ious = [group_iou(group_argmax(avatar.render_masks(frame=i)), avatar.data.parsing[i].cpu().numpy())
            for i in avatar.data.eval_idx.tolist()]
    return {k: _nanmean([d[k] for d in ious]) for k in ious[0]} if ious else {}


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values; NaN (without numpy's warning) when a group was in no frame."""
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def _spread_held_out(avatar, n: int) -> list[int]:
    """``n`` held-out frames spread evenly from the first to the last (indices into the clip)."""
    ev = avatar.data.eval_idx.tolist()
    return [ev[j] for j in np.linspace(0, len(ev) - 1, min(n, len(ev))).round().astype(int)]


def _turned_heads(avatar, work: Path, n: int = 2) -> tuple[float, float]:
    """``n`` held-out frames turned +-0.5 rad (``turned_heads.png``) -> their mean turn consistency [dB]
    and the mean share of the turned skin's vertices on a fleck [%] (``turn_consistency``)."""
    from .turn_consistency import save_turned_heads

    figures = save_turned_heads(avatar, _spread_held_out(avatar, n), work / "turned_heads.png")
    return float(np.mean([r["psnr"] for r in figures])), 100 * float(np.mean([r["flecks"] for r in figures]))


def save_held_out_grid(avatar, path: Path, n: int = 3) -> Path:
    """Three held-out frames: ground truth over render, side by side, as one PNG."""
    import imageio.v3 as iio

    cols = [np.concatenate([gt, pred], 0) for _, gt, _, pred in avatar.eval_frames(_spread_held_out(avatar, n))]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.concatenate(cols, 1))
    return path


def save_label_grid(avatar, path: Path, n: int = 4) -> Path:
    """``n`` held-out frames x (frame, parser, render, skin / hair / lips agreement) as one PNG."""
    import imageio.v3 as iio

    from ..semantics.overlay import label_comparison_grid

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, label_comparison_grid(avatar, _spread_held_out(avatar, n)))
    return path


def format_fit_table(r: dict) -> str:
    from .error_regions import format_error_regions

    f = lambda v, d=1: "n/a" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    rows = [("video", Path(r["video"]).name), ("frames", r["frames"]), ("resolution", r["resolution"]),
            ("preset", r["preset"]), ("device", r["device"]),
            ("CUDA kernels build/load, once per machine [s]", f(r.get("compile_s"))),
            ("preprocess [s]", f(r["preprocess_s"]) if r["preprocess_s"] == r["preprocess_s"] else "cached"),
            ("track [s]", f(r["track_s"])), ("optimise [s]", f(r["optimise_s"])),
            ("load + label splats [s]", f(r["label_and_load_s"])), ("end to end [s]", f(r["end_to_end_s"])),
            ("splats", r["splats"]), ("held-out frames", r["eval_frames"]),
            ("held-out PSNR [dB] (tracked params)", f(r["psnr"], 2)), ("held-out SSIM", f(r["ssim"], 4)),
            ("held-out LPIPS", f(r["lpips"], 4) if r["lpips"] is not None else "n/a (lpips package or its AlexNet weights unavailable)"),
            ("torso sheet", "yes" if r.get("torso") else "no"),
            ("held-out tracking refinement [s]", f(r["refine_s"])),
            ("  then held-out PSNR [dB]", f(r["psnr_refined"], 2)), ("  then held-out SSIM", f(r["ssim_refined"], 4)),
            ("  then held-out LPIPS", f(r["lpips_refined"], 4) if r["lpips_refined"] is not None else "n/a"),
            ("  then held-out PSNR, clothes masked out [dB]", f(r.get("psnr_refined_no_clothes"), 2)),
            ("  then held-out PSNR, the crop's padding as background [dB]", f(r.get("psnr_refined_whole_crop"), 2)),
            ("  then held-out squared error by region", format_error_regions(r.get("error_regions"))),
            ("turned +-0.5 rad: the face's colours against as tracked [dB]", f(r.get("turn_psnr"), 1)),
            ("turned +-0.5 rad: skin points on a fleck [%]", f(r.get("turn_flecks"), 2))]
    rows += [(f"label IoU {k} (render vs parser)", f(v, 3) + (f"  (refined tracking: {r['label_iou_refined'][k]:.3f})"
                                                             if k in r.get("label_iou_refined", {}) else ""))
             for k, v in r["label_iou"].items()]
    rows.append(("held-out renders", r["grid"]))
    if r.get("avatar_dir"):
        rows.append(("avatar (for bench mask / edit)", r["avatar_dir"]))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
