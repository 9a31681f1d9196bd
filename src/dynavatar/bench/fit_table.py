"""One table for ``dynavatar bench fit CLIP [CLIP ...]``: a row per clip, then the mean and the worst.

A clip's full result (``bench.fit.run_fit_bench``) holds the avatar and paths; a *row* is its
JSON-safe summary, so rows written with ``--json`` on one machine (a GPU lease, one call per few
clips) can be read back and printed as one table with the rows of other runs. The worst clip is
the one with the lowest held-out PSNR after the tracking refinement: the issue's bar is "every
clip", so the table names the clip to work on next."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError

__all__ = ["fit_row", "error_row", "clip_name", "format_clips_table", "bar_lines", "save_rows", "load_rows", "COLUMNS",
           "BARS"]

#: (row key, column title, decimals; None = text/int). Order is the table's.
COLUMNS = (("clip", "clip", None), ("frames", "frames", None), ("eval_frames", "held", None),
           ("optimise_s", "optimise s", 1), ("end_to_end_s", "end-to-end s", 1),
           ("nme", "NME lmk %", 2), ("nme_tracked", "NME trk %", 2), ("psnr_landmarks", "PSNR lmk", 2),
           ("psnr", "PSNR tracked", 2), ("psnr_refined", "PSNR refined", 2),
           ("ssim_refined", "SSIM", 4), ("turn_psnr", "turn dB", 1),
           ("turn_flecks", "flecks %", 2),
           ("splats", "splats", None), ("iou_skin", "IoU skin", 3), ("iou_hair", "IoU hair", 3),
           ("iou_lips", "IoU lips", 3))
_NUMERIC = [k for k, _, d in COLUMNS if d is not None] + ["frames", "eval_frames", "splats"]


def clip_name(video: str | Path) -> str:
    """A short name for a clip: the video's stem, or for a preprocessed folder the stem of the video
    it was made from (its ``meta.json`` records it), else the folder's own name."""
    p = Path(video)
    meta = p / "meta.json"
    if meta.is_file():
        try:
            src = json.loads(meta.read_text()).get("source", {})
            if isinstance(src, dict) and src.get("path"):
                return Path(str(src["path"])).stem
        except (OSError, ValueError):
            pass
        return p.resolve().parent.name if p.name == "data" else p.name
    return p.stem


def _num(v) -> float | None:
    return None if v is None else float(v)


def fit_row(r: dict) -> dict:
    """The JSON-safe summary of one ``run_fit_bench`` result (no avatar, plain numbers)."""
    iou = r.get("label_iou") or {}
    row = {"clip": clip_name(r["video"]), "video": str(r["video"]), "frames": int(r["frames"]),
           "eval_frames": int(r["eval_frames"]), "preset": r["preset"], "device": r["device"],
           "splats": int(r["splats"]), "torso": bool(r.get("torso"))}
    for k in ("compile_s", "preprocess_s", "track_s", "optimise_s", "label_and_load_s", "end_to_end_s", "refine_s",
              "psnr_landmarks", "psnr", "ssim", "lpips", "psnr_refined", "ssim_refined", "lpips_refined", "psnr_refined_no_clothes",
              "psnr_refined_whole_crop", "turn_psnr", "turn_flecks"):  # the figure of earlier versions (the crop's padding as background)
        row[k] = _num(r.get(k))
    for k in ("nme", "nme_tracked"):  # landmark error of the landmark / the stored motion, % inter-ocular
        row[k] = None if r.get(k) is None else 100 * float(r[k])
    for k in ("skin", "hair", "lips"):
        row[f"iou_{k}"] = _num(iou.get(k))
        row[f"iou_{k}_refined"] = _num((r.get("label_iou_refined") or {}).get(k))
    row["note"], row["grid"] = r.get("note", ""), str(r.get("grid", ""))
    if r.get("error_regions"):  # {region: {"share", "psnr_without"}} (``bench.error_regions``)
        row["error_regions"] = {k: {m: None if x is None or not math.isfinite(x) else float(x) for m, x in v.items()}
                                for k, v in r["error_regions"].items()}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def error_row(video: str | Path, message: str) -> dict:
    """The row of a clip whose fit stopped with a project error: the table keeps going."""
    return {"clip": clip_name(video), "video": str(video), "error": message}


def _cell(v, decimals) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{decimals}f}" if decimals is not None else str(v)


def _mean_row(rows: list[dict]) -> dict:
    out = {"clip": f"mean ({len(rows)})"}
    for k in _NUMERIC:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = sum(vals) / len(vals) if vals else None
    for k in ("frames", "eval_frames", "splats"):
        out[k] = None if out[k] is None else int(round(out[k]))
    return out


def worst_row(rows: list[dict]) -> dict | None:
    """The fitted clip with the lowest refined held-out PSNR (None when none has one)."""
    scored = [r for r in rows if "error" not in r and r.get("psnr_refined") is not None]
    return min(scored, key=lambda r: r["psnr_refined"]) if scored else None


#: the bars a clip is held to (issues 22-23): (row key, title, ">=" or "<=", bar, decimals); a bar
#: that is a row key is the clip's own figure (the tracked motion's landmark error against the
#: landmark fit's)
BARS = (("psnr_refined", "refined PSNR", ">=", 27.0, 2), ("ssim_refined", "SSIM", ">=", 0.90, 3),
        ("psnr", "tracked PSNR", ">=", 24.0, 2), ("nme_tracked", "NME trk %", "<=", "nme", 2),
        ("iou_hair", "hair IoU", ">=", 0.85, 3))
MEAN_PSNR_BAR = 28.5


def bar_lines(rows: list[dict]) -> list[str]:
    """One line per bar: how many fitted clips meet it, and the ones that miss it with their figure
    (clips without the figure are left out), then the mean refined PSNR against its bar."""
    ok = [r for r in rows if "error" not in r]
    out = []
    for key, title, op, bar, d in BARS:
        own = isinstance(bar, str)
        scored = [r for r in ok if r.get(key) is not None and (not own or r.get(bar) is not None)]
        if not scored:
            continue
        limit = (lambda r: r[bar]) if own else (lambda r: bar)
        miss = [r for r in scored if not (r[key] >= limit(r) if op == ">=" else r[key] <= limit(r))]
        against = "the landmark fit's" if own else str(bar)
        line = f"bar {title} {op} {against}: {len(scored) - len(miss)} of {len(scored)} clips"
        if miss:
            vs = (lambda r: f" vs {r[bar]:.{d}f}") if own else (lambda r: "")
            line += " (missed: " + ", ".join(f"{r['clip']} {r[key]:.{d}f}{vs(r)}" for r in miss) + ")"
        out.append(line)
    means = [r["psnr_refined"] for r in ok if r.get("psnr_refined") is not None]
    if means:
        m = sum(means) / len(means)
        out.append(f"bar mean refined PSNR >= {MEAN_PSNR_BAR}: {m:.2f}, " + ("met" if m >= MEAN_PSNR_BAR else "missed"))
    return out


def format_clips_table(rows: list[dict]) -> str:
    """Rows (``fit_row`` / ``error_row``) as a fixed-width table, then the mean and worst rows and
    one line per failed clip."""
    ok = [r for r in rows if "error" not in r]
    body = [[_cell(r.get(k), d) for k, _, d in COLUMNS] for r in ok]
    tail = []
    if ok:
        tail.append([_cell(v, d) for v, d in ((_mean_row(ok).get(k), d) for k, _, d in COLUMNS)])
        worst = worst_row(ok)
        if worst is not None:
            tail.append([f"worst: {worst['clip']}"] + [_cell(worst.get(k), d) for k, _, d in COLUMNS[1:]])
    head = [t for _, t, _ in COLUMNS]
    widths = [max(len(x[i]) for x in [head] + body + tail) for i in range(len(COLUMNS))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])] + [line(c) for c in body]
    if tail:
        out += [line(["-" * w for w in widths])] + [line(c) for c in tail]
    out += [f"{r['clip']}: {r['note']}" for r in ok if r.get("note")]
    out += [f"{r['clip']}: FAILED: {r['error']}" for r in rows if "error" in r]
    out += bar_lines(rows)
    worst = worst_row(ok)
    if worst is not None and worst.get("error_regions"):
        from .error_regions import format_error_regions

        out.append(f"worst clip's held-out squared error by region: {format_error_regions(worst['error_regions'])}")
    if ok:
        out.append("end-to-end: preprocess (unless the CLIP was a preprocessed folder) + track + optimise + label. "
                   "NME: mean landmark error, % of the inter-ocular distance, of the landmark tracker's motion "
                   "('lmk') and of the stored motion after the photometric tracking stage ('trk'). PSNR/SSIM: "
                   "held-out frames, over the pixels the video shows (not a crop's padding past its frame); "
                   "'lmk' = landmark motion, 'tracked' = the stored motion (landmarks + photometric "
                   "stage), 'refined' (and SSIM) = after a further evaluation-time refinement of those frames; "
                   "IoU: rendered labels vs parser, stored motion; turn: the face's colours with the head turned "
                   "+-0.5 rad against as tracked (``bench.turn_consistency``; splats off the skin lower it); flecks: "
                   "share of the turned skin's points on a small bright or dark spot")
    return "\n".join(out)


def save_rows(rows: list[dict], path: str | Path) -> Path:
    """Write the rows as a JSON list (atomically: a run stopped mid-write leaves the previous file)."""
    from ..io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(rows, indent=1))
    return path


def load_rows(path: str | Path) -> list[dict]:
    """Rows written by ``save_rows`` (``bench fit --json``), checked to be a list of clip rows."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read bench rows ({e}); give a file written by `dynavatar bench fit --json`") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "clip" in r for r in rows):
        raise ConfigError(f"{path}: not a list of bench fit rows; give a file written by `dynavatar bench fit --json`")
    return rows
