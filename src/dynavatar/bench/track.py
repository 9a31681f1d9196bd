"""``dynavatar bench track VIDEO``: time per stage and landmark error of preprocessing + tracking."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from . import sync_cuda

__all__ = ["run_track_bench", "format_track_table"]


def run_track_bench(video: str | Path, head: str | None = None, preset: str = "default", device: str = "auto",
                    max_frames: int | None = None, work_dir: str | Path | None = None) -> dict:
    from ..device import resolve_device
    from ..perceive import FrameDataset, PreprocessConfig, preprocess
    from ..track import TrackerConfig, track

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="dynavatar-bench-"))
    t0 = time.perf_counter()
    if (Path(video) / "meta.json").is_file():  # an already preprocessed dataset (e.g. carried to a GPU box)
        ds, t_pre = FrameDataset.load(video), float("nan")
    else:
        ds = preprocess(video, work / "data", config=PreprocessConfig(max_frames=max_frames), overwrite=True,
                        progress=False)
        t_pre = time.perf_counter() - t0
    cfg = TrackerConfig.preset(preset, device=device)
    sync_cuda()
    t1 = time.perf_counter()
    result = track(ds, head=head, config=cfg, progress=False)
    sync_cuda()
    t_track = time.perf_counter() - t1
    err = result.lmk_error[np.isfinite(result.lmk_error)]
    dev = resolve_device(device).type
    return {"video": str(video), "frames": len(ds), "resolution": ds.resolution, "device": dev,
            "preprocess_s": t_pre, "track_s": t_track, "total_s": (t_pre if t_pre == t_pre else 0.0) + t_track,
            "lmk_err_mean_pct": 100 * float(err.mean()), "lmk_err_p95_pct": 100 * float(np.percentile(err, 95)),
            "lmk_err_max_pct": 100 * float(err.max()), "missing_frames": len(ds.missing_frames),
            "head": result.head["source"], "result": result, "dataset": ds}


def format_track_table(r: dict) -> str:
    rows = [("video", Path(r["video"]).name), ("frames", r["frames"]), ("resolution", r["resolution"]),
            ("device (tracking)", r["device"]), ("head model", r["head"]),
            ("preprocess [s]", f"{r['preprocess_s']:.1f}" if r["preprocess_s"] == r["preprocess_s"] else "cached"), ("track [s]", f"{r['track_s']:.1f}"),
            ("total [s]", f"{r['total_s']:.1f}"), ("frames without face", r["missing_frames"]),
            ("landmark error mean [% IOD]", f"{r['lmk_err_mean_pct']:.2f}"),
            ("landmark error p95 [% IOD]", f"{r['lmk_err_p95_pct']:.2f}"),
            ("landmark error worst frame [% IOD]", f"{r['lmk_err_max_pct']:.2f}")]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
