"""Commands that turn inputs into the project's data: head model files, preprocessed clips,
tracking and fitted avatars. Each validates its paths and numbers before any work starts."""

from __future__ import annotations

from pathlib import Path

import click

from .app import main
from .options import DEVICE, FPS, POSITIVE, RESOLUTION, settings_options


@main.group()
def flame() -> None:
    """FLAME-format head model files."""


@flame.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
def flame_convert(src: Path, dst: Path) -> None:
    """Convert a FLAME .pkl (chumpy or not) into a clean, pickle-free .npz with sha256s."""
    from ..flame import ensure_embedding, read_flame_file, write_flame_npz
    from ..io.output_dir import check_output_file

    check_output_file(dst, inputs=[src])
    data = read_flame_file(src)
    out = write_flame_npz(data, dst, source=src)
    embedded = ensure_embedding(data, path=out)  # mediapipe/iBUG-68 landmarks + regions, cached beside OUT
    click.echo(f"wrote {out} ({data.n_vertices} vertices, {data.n_shape_total} shape + "
               f"{data.n_expr_total} expression components)")
    info = embedded.meta.get("embedding")
    if info:
        d = {k: float(v) for k, v in info["diagnostics"].items()}
        mm = lambda key: f"{d.get(key, float('nan')):.2f}"  # noqa: E731
        how = (f"loaded from {info['cache']}" if info["source"] == "cache" else
               f"computed, cached in {info['cache']}" if info.get("cache") else "computed, not cached")
        click.echo(f"landmark embedding + regions from the default head ({how}): user surface to "
                   f"registered default head {mm('registration_mean_mm')} mm mean / {mm('registration_p95_mm')} mm "
                   f"p95 / {mm('registration_max_mm')} mm max; mediapipe landmarks moved "
                   f"{mm('landmarks_mediapipe_shift_mean_mm')} mm mean / {mm('landmarks_mediapipe_shift_max_mm')} mm "
                   "max onto the surface")


@flame.command("show")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def flame_show(path: Path | None) -> None:
    """Describe a head model file (default: the one that resolves)."""
    from ..flame import FlameModel

    model = FlameModel.load(path)
    click.echo(f"{model.source}\n{model.extra_repr()}\nregions: {model.region_names}")


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--resolution", default=512, show_default=True, type=RESOLUTION, help="Side of the square head crop.")
@click.option("--max-frames", type=POSITIVE, default=None, help="Keep at most this many frames.")
@click.option("--stride", default=1, show_default=True, type=POSITIVE, help="Keep every n-th frame.")
@click.option("--fps", type=FPS, default=None, help="Subsample to about this frame rate instead.")
@click.option("--overwrite", is_flag=True,
              help="Recompute even if a matching cache exists (and write into a folder dynavatar did not create).")
def preprocess(video: Path, out_dir: Path, resolution: int, max_frames: int | None, stride: int,
               fps: float | None, overwrite: bool) -> None:
    """Video (or image folder) -> head crops, mattes and landmarks, cached in OUT."""
    from ..perceive import PreprocessConfig
    from ..perceive import preprocess as run

    cfg = PreprocessConfig(resolution=resolution, max_frames=max_frames, stride=stride, fps=fps)
    ds = run(video, out_dir, config=cfg, overwrite=overwrite)
    click.echo(f"{len(ds)} frames -> {out_dir}" + (f"; no face in frames {ds.missing_frames}" if ds.missing_frames else ""))


@main.command("track")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Result folder (default: DATASET_DIR/tracking).")
@click.option("--head", type=click.Path(path_type=Path), default=None, help="FLAME-format file (default: resolved).")
@click.option("--preset", default="default", show_default=True, type=click.Choice(["tiny", "fast", "default", "quality"]))
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--no-video", is_flag=True, help="Skip the overlay video.")
@settings_options("TrackerConfig")
def track_cmd(dataset_dir: Path, out_dir: Path | None, head: Path | None, preset: str, device: str, no_video: bool,
              settings: tuple[str, ...], config_file: str | None) -> None:
    """Track FLAME through a preprocessed clip; writes the result and an overlay video."""
    from ..flame import FlameModel
    from ..io.output_dir import check_output_dir, mark_output_dir
    from ..io.video import write_video
    from ..perceive import FrameDataset
    from ..track import TrackerConfig, track
    from ..track.cache import TRACKING_FOLDER
    from ..track.overlay import overlay_frames
    from .settings import apply_settings

    cfg = apply_settings(TrackerConfig.preset(preset, device=device), settings, config_file)
    ds = FrameDataset.load(dataset_dir)
    out_dir = out_dir or dataset_dir / TRACKING_FOLDER
    legacy = (out_dir / "tracking.json").is_file()  # a tracking result written before folders were marked
    out_dir = check_output_dir(out_dir, "tracking", overwrite=legacy)
    model = FlameModel.load(head, n_shape=None, n_expr=None)
    result = track(ds, head=model, config=cfg)
    result.save(out_dir)
    mark_output_dir(out_dir, "tracking")
    if not no_video:
        model = FlameModel.load(head, n_shape=result.head["n_shape"], n_expr=result.head["n_expr"])
        write_video(out_dir / "overlay.mp4", overlay_frames(ds, result, model), fps=ds.fps or 25.0)
    s = result.summary()
    click.echo(f"tracked {s['frames']} frames: landmark error mean {100 * s['lmk_error_mean']:.2f}% / worst "
               f"{100 * s['lmk_error_max']:.2f}% of the inter-ocular distance -> {out_dir}")


_RUN_FILES = ("checkpoint/avatar.json", "data/meta.json")


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--preset", default="fast", show_default=True, type=click.Choice(["tiny", "fast", "quality"]))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--max-frames", type=POSITIVE, default=None)
@click.option("--steps", type=POSITIVE, default=None, help="Override the preset's optimisation steps.")
@click.option("--batch-size", type=POSITIVE, default=None,
              help="Override the preset's frames per step (split over the processes of `accelerate launch`).")
@click.option("--restart", is_flag=True, help="Start over instead of resuming OUT's checkpoint.")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True,
              help="Score the held-out frames and write the before/after video (later: Avatar.load(...).evaluate()).")
@settings_options("PipelineConfig (preprocess.*, track.*, reconstruct.*)")
def fit(video: Path, out_dir: Path, preset: str, head: Path | None, device: str, max_frames: int | None,
        steps: int | None, batch_size: int | None, restart: bool, evaluate: bool, settings: tuple[str, ...],
        config_file: str | None) -> None:
    """Fit an avatar to VIDEO (preprocess + track + optimise; resumes from OUT's checkpoint).

    VIDEO may also be a preprocessed dataset folder (`dynavatar preprocess`, an import).
    Several GPUs: `accelerate launch --num_processes 2 -m dynavatar fit VIDEO -o OUT` trains
    data-parallel over frames (each step's frames are split between the GPUs)."""
    import dataclasses

    from ..api import Avatar
    from ..config import PipelineConfig
    from ..io.output_dir import check_output_dir, mark_output_dir
    from ..reconstruct.distributed import data_parallel
    from .settings import apply_settings

    pipe = PipelineConfig.preset(preset)
    fields = {k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None}
    pipe = dataclasses.replace(pipe, reconstruct=dataclasses.replace(pipe.reconstruct, **fields))
    if max_frames is not None:
        pipe = dataclasses.replace(pipe, preprocess=dataclasses.replace(pipe.preprocess, max_frames=max_frames))
    pipe = apply_settings(pipe, settings, config_file)
    is_dataset = (video / "meta.json").is_file()
    if not is_dataset and not video.exists():
        raise click.BadParameter(f"{video} does not exist (a video file, an image folder or a preprocessed "
                                 "dataset folder)", param_hint="VIDEO")
    dp = data_parallel()
    legacy = any((out_dir / p).is_file() for p in _RUN_FILES)  # a run from before folders were marked
    out_dir = check_output_dir(out_dir, "run", overwrite=legacy, inputs=[video])
    mark_output_dir(out_dir, "run")
    kwargs = dict(head=head, out_dir=out_dir, device=device, config=pipe, resume=not restart)
    if is_dataset:
        avatar = Avatar.from_dataset(video, **kwargs)
    else:
        avatar = Avatar.from_video(video, **kwargs)
    if not dp.is_main:
        return
    avatar.save(out_dir / "avatar")
    if not evaluate:
        click.echo(f"optimised in {avatar.meta['fit_seconds']:.1f}s; avatar in {out_dir / 'avatar'}")
        return
    tracked = avatar.evaluate()
    refined = avatar.evaluate(refine_tracking=True)
    procs = f" on {dp.world_size} processes" if dp.active else ""
    click.echo(f"optimised in {avatar.meta['fit_seconds']:.1f}s{procs}; held-out PSNR {tracked['psnr']:.2f} dB with the "
               f"tracked motion, {refined['psnr']:.2f} dB (SSIM {refined['ssim']:.4f}) with it refined "
               f"photometrically; avatar in {out_dir / 'avatar'}")
    from ..errors import DynavatarError

    try:
        avatar.render_video(out_dir / "before_after.mp4")
    except (DynavatarError, ImportError, OSError) as exc:  # the avatar is saved; only the preview is missing
        click.secho(f"warning: no before/after video ({type(exc).__name__}: {exc})", fg="yellow", err=True)
