"""``dynavatar bench ...``: benchmarks that print a table (DESIGN.md §5), not tests."""

from __future__ import annotations

from pathlib import Path

import click

from .app import fail, main
from .options import DEVICE, POSITIVE, RESOLUTION


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: comma-separated whole numbers, e.g. 10000,50000", param_hint=option) from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: give positive numbers", param_hint=option)
    return values


@main.group()
def bench() -> None:
    """Benchmarks that print a table (not tests)."""


@bench.command("render")
@click.option("--splats", default="10000,50000,100000,300000", show_default=True, help="Comma-separated counts.")
@click.option("--batches", default="1,16", show_default=True)
@click.option("--resolution", default=512, show_default=True, type=RESOLUTION)
def bench_render(splats: str, batches: str, resolution: int) -> None:
    """Animated frame time (FLAME + bind + gsplat) vs raw gsplat rasterization (needs CUDA)."""
    counts, sizes = _int_list(splats, "--splats"), _int_list(batches, "--batches")
    import torch

    if not torch.cuda.is_available():
        fail("bench render needs a CUDA GPU and gsplat (it compares against raw gsplat); "
             "`dynavatar bench torch-render` times the CPU renderer")
    from ..bench.render import format_table, run_render_bench

    click.echo(format_table(run_render_bench(counts, sizes, resolution)))


@bench.command("edit")
@click.argument("avatar_dir", required=False, type=click.Path(path_type=Path))
@click.option("--prompt", "prompts", multiple=True,
              help="A prompt to judge (repeatable; default: the fixed set red, auburn, blonde, platinum, black, "
                   "pink hair; blue, green eyes; red lipstick; smile; round glasses; sunglasses).")
@click.option("--editor", default="palette", show_default=True, type=click.Choice(["palette", "ip2p-random"]),
              help="ip2p-random: the full-size SD-1.5 InstructPix2Pix architecture with random weights (timing).")
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Optimisation steps per plan (default: EditConfig's; 0: the splat-space recolour alone).")
@click.option("--frames", type=POSITIVE, default=3, show_default=True, help="Held-out frames judged (+ 2 head turns).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write the gallery sheet (prompts x poses, before over after).")
def bench_edit(avatar_dir: Path | None, prompts: tuple[str, ...], editor: str, device: str, steps: int | None,
               frames: int, out_dir: Path | None) -> None:
    """Per prompt: coverage, spill, structure, sclera change, their spread over poses, time per edit."""
    from ..bench.edit import PROMPTS, format_edit_table, run_edit_bench
    from ..io.output_dir import check_output_dir, mark_output_dir

    if out_dir is not None:
        out_dir = check_output_dir(out_dir, "bench-edit")
    r = run_edit_bench(avatar_dir, prompts or PROMPTS, editor, device, steps, out_dir=out_dir, frames=frames,
                       progress=False)
    if out_dir is not None:
        mark_output_dir(out_dir, "bench-edit")
    click.echo(format_edit_table(r))


@bench.command("torch-render")
@click.option("--splats", default=20000, show_default=True, type=POSITIVE)
@click.option("--resolution", default=128, show_default=True, type=RESOLUTION)
def bench_torch_render(splats: int, resolution: int) -> None:
    """Forward + backward time of the pure-PyTorch renderer (the CPU reference)."""
    from ..bench.torch_render import run_torch_render_bench

    r = run_torch_render_bench(splats, resolution)
    w = max(len(k) for k in r)
    click.echo("\n".join(f"{k:<{w}}  {v:.3f}" if isinstance(v, float) else f"{k:<{w}}  {v}" for k, v in r.items()))


@bench.command("track")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--preset", default="default", show_default=True, type=click.Choice(["tiny", "fast", "default", "quality"]))
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--max-frames", type=POSITIVE, default=None)
def bench_track(video: Path, head: Path | None, preset: str, device: str, max_frames: int | None) -> None:
    """Preprocess + track VIDEO; print time per stage and landmark error."""
    from ..bench.track import format_track_table, run_track_bench

    click.echo(format_track_table(run_track_bench(video, head, preset, device, max_frames)))


@bench.command("fit")
@click.argument("clips", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--preset", default="fast", show_default=True, type=click.Choice(["tiny", "fast", "quality"]))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--max-frames", type=POSITIVE, default=None)
@click.option("-o", "--out", "work_dir", type=click.Path(path_type=Path), default=None,
              help="Keep the run here (several clips: a folder per clip in it).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the rows as JSON (rewritten after every clip).")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Change one ReconstructConfig setting of the preset, e.g. --set w_landmark_budget=1 "
                   "(repeatable); the rows' clip names say which.")
def bench_fit(clips: tuple[Path, ...], preset: str, head: Path | None, device: str, max_frames: int | None,
              work_dir: Path | None, json_path: Path | None, settings: tuple[str, ...]) -> None:
    """Preprocess + track + fit each CLIP (a video or a preprocessed folder); one table of held-out
    quality and times per clip, with the mean and the worst clip.

    A CLIP ending in .json is a file of rows written by --json earlier (e.g. on another machine):
    its rows join the table without fitting again."""
    from ..bench.fit import format_fit_table, run_fit_bench, run_fit_benches
    from ..bench.fit_table import fit_row, format_clips_table, load_rows, save_rows
    from ..io.output_dir import check_output_dir, mark_output_dir
    from ..reconstruct.config import ReconstructConfig
    from .settings import apply_settings

    config = apply_settings(ReconstructConfig.preset(preset), settings) if settings else None
    tag = f" [{', '.join(settings)}]" if settings else ""  # an ablation's rows say what changed
    saved = [c for c in clips if c.suffix.lower() == ".json" and c.is_file()]
    videos = [c for c in clips if c not in saved]
    if json_path is not None and json_path.resolve() in {c.resolve() for c in saved}:
        fail(f"--json {json_path} is also a CLIP of saved rows; write the new rows to another file")
    if work_dir is not None and videos:
        work_dir = check_output_dir(work_dir, "bench-fit", inputs=videos)
        mark_output_dir(work_dir, "bench-fit")
    rows = [r for c in saved for r in load_rows(c)]
    head_path = str(head) if head else None
    if len(videos) == 1 and not saved:  # one clip: its stage-by-stage table too
        r = run_fit_bench(videos[0], preset, device, max_frames, work_dir, head=head_path, progress=True,
                          config=config)
        click.echo(format_fit_table(r) + "\n")
        row = fit_row(r)
        rows.append({**row, "clip": row["clip"] + tag})
        if json_path is not None:
            save_rows(rows, json_path)
    elif videos:
        done = lambda row: click.echo(f"{row['clip']}: " + (f"failed: {row['error']}" if "error" in row else  # noqa: E731
                                      f"refined held-out PSNR {row['psnr_refined'] or float('nan'):.2f} dB"), err=True)
        rows += run_fit_benches(videos, preset, device, max_frames, work_dir, head=head_path, progress=True,
                                json_path=json_path, config=config, tag=tag, on_row=done)
    click.echo(format_clips_table(rows))
    failed = [r["clip"] for r in rows if "error" in r]
    if failed:
        fail(f"{len(failed)} of {len(rows)} clips failed ({', '.join(failed)}); their errors are under the table",
             code=1)


@bench.command("mask")
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("--group", default="lips", show_default=True, help="Label or label group drawn as the user's mask.")
@click.option("--frame", type=click.IntRange(min=0), default=None,
              help="Frame it is drawn on (default: the middle training frame).")
@click.option("--preset", default=None, type=click.Choice(["tiny", "fast", "quality"]),
              help="MaskMapper preset (default: quality on a GPU, fast on a CPU).")
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--eval", "n_eval", default=48, show_default=True, type=POSITIVE, help="Held-out (t, pose) points scored.")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Change a MaskMapperConfig field of the preset, e.g. --set bank_per_frame=20 (repeatable).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Also write mask_routes.png: held-out points, learned vs exact, worst first.")
def bench_mask(avatar_dir: Path, group: str, frame: int | None, preset: str | None, device: str, n_eval: int,
               overrides: tuple[str, ...], out_dir: Path | None) -> None:
    """MaskMapper vs the exact mask route on a saved avatar: IoU on held-out (t, pose), time per mask."""
    from ..bench.mask import format_mask_table, run_mask_bench
    from ..semantics import MaskMapperConfig
    from .settings import parse_settings

    changes = parse_settings(MaskMapperConfig(), overrides)
    r = run_mask_bench(avatar_dir, group, frame, preset, device, n_eval, progress=True, overrides=changes,
                       out_dir=out_dir)
    click.echo(format_mask_table(r))
