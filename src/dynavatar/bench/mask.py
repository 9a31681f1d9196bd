"""``dynavatar bench mask AVATAR``: the two mask routes of a saved avatar, side by side.

A label group (``--group lips``) rendered on one training frame is the user's mask. The exact route
(the splats under it, rendered at (t, pose)) is the reference; a MaskMapper is trained from it
(``Avatar.mask_mapper``) and scored on ``n_eval`` random held-out (t, pose) (IoU against the exact
route at full resolution), overall and by how far the head is turned. Both routes are timed per
mask on the same points after a warm-up: the learned route's point is being quick where the exact
one must render every splat. This is the judged figure of dual tracking (MaskMapper IoU >= 0.9)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import sync_cuda, warm_up_cuda

__all__ = ["run_mask_bench", "format_mask_table", "save_route_grid", "exact_route_vs_labels"]

#: |yaw| bins (radians) the held-out IoU is broken down by
YAW_BINS = ((0.0, 0.2), (0.2, 0.4), (0.4, 10.0))


def run_mask_bench(avatar_dir: str | Path, group: str = "lips", frame: int | None = None, preset: str | None = None,
                   device: str = "auto", n_eval: int = 48, progress: bool = False, overrides: dict | None = None,
                   out_dir: str | Path | None = None) -> dict:
    """Train and score a MaskMapper for ``group`` drawn on ``frame`` (default: the middle training
    frame) of the avatar saved in ``avatar_dir``; ``preset`` defaults to the avatar's own choice
    (``quality`` on a GPU, ``fast`` on a CPU), ``overrides`` change its fields (ablations).
    ``out_dir``: also write ``mask_routes.png``, the held-out points from worst to best (``save_route_grid``)."""
    from ..api import Avatar
    from ..semantics import MaskMapperConfig
    from ..semantics.mapping import exact_route_sampler

    avatar = Avatar.load(avatar_dir, device=device)
    t_compile = warm_up_cuda(avatar.device)
    if frame is None:
        train = avatar.train_idx
        frame = int(train[len(train) // 2])
    mask = avatar.label_mask(group, frame)
    preset = preset or ("quality" if avatar.device.type == "cuda" else "fast")
    sync_cuda()
    t0 = time.perf_counter()
    mapper, score = avatar.mask_mapper(mask, frame, config=MaskMapperConfig.preset(preset, **(overrides or {})),
                                         progress=progress,
                                         n_eval=n_eval)
    sync_cuda()
    total = time.perf_counter() - t0
    hist = score["history"]

    # per-mask time of both routes on the same 16 held-out points, after one warm-up call each
    n = avatar.params.batch_size
    sel = score["selected"]  # the exact route's splats, as the mapper was trained on them
    exact = exact_route_sampler(avatar.gaussians, avatar.model, avatar.params, avatar.cameras, sel, avatar.renderer)
    ts = torch.tensor(score["eval_t"][:16])
    poses = torch.tensor(score["eval_pose"][:16])
    dev = next(mapper.parameters()).device
    timings = {}
    for name, fn in (("exact", lambda: exact(ts, poses)),
                     ("learned", lambda: mapper.predict(ts.to(dev), poses.to(dev), out_size=(avatar.resolution,) * 2))):
        fn()
        sync_cuda()
        t = time.perf_counter()
        fn()
        sync_cuda()
        timings[name] = (time.perf_counter() - t) / len(ts)

    agreement = exact_route_vs_labels(avatar, group, frame, mask, sel, ts, poses)
    ious, yaw = np.array(score["eval_iou"]), np.abs(np.array(score["eval_pose"])[:, 0])
    by_yaw = {}  # bin name -> (mean IoU or None, points)
    for lo, hi in YAW_BINS:
        inside = (yaw >= lo) & (yaw < hi)
        by_yaw[f"{lo:.1f}-{hi:.1f}" if hi < 10 else f">{lo:.1f}"] = (
            float(ious[inside].mean()) if inside.any() else None, int(inside.sum()))
    worst = int(np.argmin(ious))
    grid = save_route_grid(Path(out_dir) / "mask_routes.png", avatar, mapper, exact, score) if out_dir else None
    if overrides:
        preset += " + " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return {"avatar": str(avatar_dir), "group": group, "frame": frame, "frames": n, "preset": preset,
            "device": str(avatar.device), "compile_s": t_compile, "selected_splats": int(sel.sum()),
            "splats": avatar.gaussians.num_splats, "bank_masks": int(mapper.config.bank_total),
            "bank_s": hist.bank_seconds, "box_s": hist.box_seconds, "train_s": hist.train_seconds,
            "total_s": total, "iou_mean": score["iou_mean"], "iou_min": score["iou_min"], "n_eval": len(ious),
            "iou_by_yaw": by_yaw, "worst": (float(ious[worst]), score["eval_t"][worst], score["eval_pose"][worst]),
            "exact_ms": 1e3 * timings["exact"], "learned_ms": 1e3 * timings["learned"], "grid": grid,
            "route_vs_labels": agreement}


def exact_route_vs_labels(avatar, group: str, frame: int, mask: np.ndarray, selected: torch.Tensor, ts: torch.Tensor,
                          poses: torch.Tensor) -> dict:
    """How well the exact route carries a label mask: IoU of its masks at (ts, poses) against the
    avatar's own rendered labels for ``group`` there (the selection's independent check: the labels
    come from the parser over all frames, the selection from one drawn frame), for the selection
    ``selected`` and for the same mask selected without labels (``splats_under_mask(use_labels=False)``).
    -> {"with labels": (mean, min, splats), "without labels": (mean, min, splats), "points": n}."""
    from ..flame.pose import rotate_head
    from ..semantics.mapping import exact_route_sampler, route_frames
    from ..semantics.mask_mapper import mask_iou

    refs = []
    for f, pose in zip(route_frames(ts, avatar.params.batch_size), poses.tolist()):
        refs.append(avatar.label_mask(group, params=rotate_head(avatar.params[f].to(avatar.device), *pose),
                                      camera=avatar.cameras[f]))
    refs = torch.from_numpy(np.stack(refs)).float()
    plain = avatar.splats_under_mask(mask, frame=frame, use_labels=False)
    out = {"points": len(refs)}
    for name, sel in (("with labels", selected), ("without labels", plain)):
        route = exact_route_sampler(avatar.gaussians, avatar.model, avatar.params, avatar.cameras, sel, avatar.renderer)
        iou = mask_iou(route(ts, poses).cpu(), refs)
        out[name] = (float(iou.mean()), float(iou.min()), int(sel.sum()))
    return out


def format_mask_table(r: dict) -> str:
    f = lambda v, d=1: "n/a" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    _, wt, wp = r["worst"]
    rows = [("avatar", Path(r["avatar"]).name), ("device", r["device"]), ("preset", r["preset"]),
            ("CUDA kernels build/load, once per machine [s]", f(r.get("compile_s"))),
            ("mask", f"{r['group']} on frame {r['frame']} of {r['frames']}"),
            ("splats selected / all", f"{r['selected_splats']} / {r['splats']}"),
            ("bank (exact-route masks)", r["bank_masks"]),
            ("bank render [s]", f(r["bank_s"])), ("box head fit [s]", f(r["box_s"])),
            ("decoder training [s]", f(r["train_s"])), ("total incl. held-out scoring [s]", f(r["total_s"])),
            (f"IoU vs exact route, {r['n_eval']} held-out (t, pose): mean", f(r["iou_mean"], 3)),
            ("  min", f(r["iou_min"], 3) + f"  (frame t={wt:.3f}, yaw {wp[0]:+.2f}, pitch {wp[1]:+.2f} rad)")]
    rows += [(f"  |yaw| {k} rad", f"{f(v, 3)}  ({c} points)") for k, (v, c) in r["iou_by_yaw"].items()]
    agree = r.get("route_vs_labels")
    if agree:
        for name in ("with labels", "without labels"):
            m, lo, k = agree[name]
            rows.append((f"exact route vs {r['group']} labels, {agree['points']} points: {name}",
                         f"{f(m, 3)}  (min {f(lo, 3)}, {k} splats)"))
    rows += [("exact route [ms / mask]", f(r["exact_ms"], 2)), ("learned route [ms / mask]", f(r["learned_ms"], 2)),
             ("learned speed-up", f"{r['exact_ms'] / max(r['learned_ms'], 1e-9):.1f}x")]
    if r.get("grid"):
        rows.append(("held-out points, worst first", r["grid"]))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def save_route_grid(path: Path, avatar, mapper, exact, score: dict, n: int = 8, per_row: int = 4) -> str:
    """The ``n`` held-out points spread from the worst IoU to the best, each the learned mask
    against the exact route's over the turned head's render (``semantics.overlay.mask_route_tile``)."""
    import imageio.v3 as iio

    from ..flame.pose import rotate_head
    from ..io.atomic import atomic_path
    from ..semantics.mapping import route_frames
    from ..semantics.overlay import mask_route_tile

    order = np.argsort(score["eval_iou"])
    picks = order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)]
    frames = avatar.params.batch_size
    dev = next(mapper.parameters()).device
    tiles = []
    for i in picks.tolist():
        t, pose = score["eval_t"][i], score["eval_pose"][i]
        f = route_frames(torch.tensor([t]), frames)[0]
        image = avatar.render(params=rotate_head(avatar.params[f].to(avatar.device), *pose), camera=avatar.cameras[f])
        truth = exact(torch.tensor([t]), torch.tensor([pose]))[0].cpu().numpy() > 0.5
        pred = mapper.predict(torch.tensor([t], device=dev), torch.tensor([pose], device=dev),
                              out_size=truth.shape)[0].cpu().numpy() > 0.5
        tiles.append(mask_route_tile(image, truth, pred, f"f{f} yaw {pose[0]:+.2f} IoU {score['eval_iou'][i]:.2f}"))
    while len(tiles) % per_row:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.concatenate([np.concatenate(tiles[k:k + per_row], 1) for k in range(0, len(tiles), per_row)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        iio.imwrite(tmp, grid, extension=".png")
    return str(path)
