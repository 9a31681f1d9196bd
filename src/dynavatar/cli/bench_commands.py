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
@click.option("--prompt", default="red hair", show_default=True)
@click.option("--editor", default="palette", show_default=True, type=click.Choice(["palette", "ip2p-random"]),
              help="ip2p-random: the full-size SD-1.5 InstructPix2Pix architecture with random weights (timing).")
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--steps", type=POSITIVE, default=None, help="Optimisation steps per plan (default: EditConfig's).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Write before/after stills.")
def bench_edit(avatar_dir: Path | None, prompt: str, editor: str, device: str, steps: int | None,
               out_dir: Path | None) -> None:
    """Time per edit, locality, region colour and temporal spread (default avatar: the synthetic clip's)."""
    from ..bench.edit import format_edit_table, run_edit_bench
    from ..io.output_dir import check_output_dir, mark_output_dir

    if out_dir is not None:
        out_dir = check_output_dir(out_dir, "bench-edit")
    r = run_edit_bench(avatar_dir, prompt, editor, device, steps, out_dir=out_dir, progress=True)
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
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--preset", default="fast", show_default=True, type=click.Choice(["tiny", "fast", "quality"]))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--max-frames", type=POSITIVE, default=None)
@click.option("-o", "--out", "work_dir", type=click.Path(path_type=Path), default=None, help="Keep the run here.")
def bench_fit(video: Path, preset: str, head: Path | None, device: str, max_frames: int | None,
              work_dir: Path | None) -> None:
    """Preprocess + track + fit VIDEO (or a preprocessed folder); time per stage, held-out quality."""
    from ..bench.fit import format_fit_table, run_fit_bench
    from ..io.output_dir import check_output_dir, mark_output_dir

    if work_dir is not None:
        work_dir = check_output_dir(work_dir, "bench-fit", inputs=[video])
        mark_output_dir(work_dir, "bench-fit")
    r = run_fit_bench(video, preset, device, max_frames, work_dir, head=str(head) if head else None, progress=True)
    click.echo(format_fit_table(r))


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
