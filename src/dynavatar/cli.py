"""The ``dynavatar`` command line: a thin layer over the library (no algorithms here)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _fail(exc: Exception) -> None:
    """Print a project error as one clear line and exit non-zero, without a traceback."""
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dynavatar")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Animatable, text-editable 3D Gaussian head avatars from ordinary videos."""
    _setup_logging(verbose)


@main.command()
def info() -> None:
    """Versions, head model in use, CUDA/gsplat, and which optional weights are cached."""
    from .info import collect_info, format_info

    click.echo(format_info(collect_info()))


@main.group()
def flame() -> None:
    """FLAME-format head model files."""


@flame.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
def flame_convert(src: Path, dst: Path) -> None:
    """Convert a FLAME .pkl (chumpy or not) into a clean, pickle-free .npz with sha256s."""
    from .errors import DynavatarError
    from .flame import ensure_embedding, read_flame_file, write_flame_npz

    try:
        data = read_flame_file(src)
        out = write_flame_npz(data, dst, source=src)
        embedded = ensure_embedding(data, path=out)  # mediapipe/iBUG-68 landmarks + regions, cached beside OUT
    except DynavatarError as exc:
        _fail(exc)
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
    from .errors import DynavatarError
    from .flame import FlameModel

    try:
        model = FlameModel.load(path)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(f"{model.source}\n{model.extra_repr()}\nregions: {model.region_names}")


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--resolution", default=512, show_default=True, help="Side of the square head crop.")
@click.option("--max-frames", type=int, default=None, help="Keep at most this many frames.")
@click.option("--stride", default=1, show_default=True, help="Keep every n-th frame.")
@click.option("--fps", type=float, default=None, help="Subsample to about this frame rate instead.")
@click.option("--overwrite", is_flag=True, help="Recompute even if a matching cache exists.")
def preprocess(video: Path, out_dir: Path, resolution: int, max_frames: int | None, stride: int,
               fps: float | None, overwrite: bool) -> None:
    """Video (or image folder) -> head crops, mattes and landmarks, cached in OUT."""
    from .errors import DynavatarError
    from .perceive import PreprocessConfig
    from .perceive import preprocess as run

    cfg = PreprocessConfig(resolution=resolution, max_frames=max_frames, stride=stride, fps=fps)
    try:
        ds = run(video, out_dir, config=cfg, overwrite=overwrite)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(f"{len(ds)} frames -> {out_dir}" + (f"; no face in frames {ds.missing_frames}" if ds.missing_frames else ""))


@main.command("track")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Result folder (default: DATASET_DIR/tracking).")
@click.option("--head", type=click.Path(path_type=Path), default=None, help="FLAME-format file (default: resolved).")
@click.option("--preset", default="default", show_default=True, type=click.Choice(["tiny", "fast", "default", "quality"]))
@click.option("--device", default="auto", show_default=True)
@click.option("--no-video", is_flag=True, help="Skip the overlay video.")
def track_cmd(dataset_dir: Path, out_dir: Path | None, head: Path | None, preset: str, device: str, no_video: bool) -> None:
    """Track FLAME through a preprocessed clip; writes the result and an overlay video."""
    from .errors import DynavatarError
    from .flame import FlameModel
    from .io.video import write_video
    from .perceive import FrameDataset
    from .track import TrackerConfig, track
    from .track.cache import TRACKING_FOLDER
    from .track.overlay import overlay_frames

    out_dir = out_dir or dataset_dir / TRACKING_FOLDER
    try:
        ds = FrameDataset.load(dataset_dir)
        cfg = TrackerConfig.preset(preset, device=device)
        model = FlameModel.load(head, n_shape=None, n_expr=None)
        result = track(ds, head=model, config=cfg)
        result.save(out_dir)
        if not no_video:
            model = FlameModel.load(head, n_shape=result.head["n_shape"], n_expr=result.head["n_expr"])
            write_video(out_dir / "overlay.mp4", overlay_frames(ds, result, model), fps=ds.fps or 25.0)
    except DynavatarError as exc:
        _fail(exc)
    s = result.summary()
    click.echo(f"tracked {s['frames']} frames: landmark error mean {100 * s['lmk_error_mean']:.2f}% / worst "
               f"{100 * s['lmk_error_max']:.2f}% of the inter-ocular distance -> {out_dir}")


@main.command()
@click.option("-o", "--out", "out_dir", default="dynavatar-demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--head", type=click.Path(path_type=Path), default=None, help="FLAME-format file (default: resolved).")
@click.option("--frames", default=48, show_default=True)
@click.option("--resolution", default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--fit/--no-fit", default=False, show_default=True, help="Also fit an avatar to the synthetic clip.")
def demo(out_dir: Path, head: Path | None, frames: int, resolution: int, device: str, fit: bool) -> None:
    """Run the pipeline on the embedded default head (offline, CPU is fine)."""
    from .demo import run_demo
    from .errors import DynavatarError

    try:
        r = run_demo(out_dir, head=head, n_frames=frames, resolution=resolution, device=device, fit=fit)
    except DynavatarError as exc:
        _fail(exc)
    click.echo("dynavatar demo ran:\n" + "\n".join(f"  - {line}" for line in r.ran))
    click.echo(f"wrote {r.video} and {r.contact_sheet} in {r.seconds:.1f}s")


@main.group()
def bench() -> None:
    """Benchmarks that print a table (not tests)."""


@bench.command("render")
@click.option("--splats", default="10000,50000,100000,300000", show_default=True, help="Comma-separated counts.")
@click.option("--batches", default="1,16", show_default=True)
@click.option("--resolution", default=512, show_default=True)
def bench_render(splats: str, batches: str, resolution: int) -> None:
    """Animated frame time (FLAME + bind + gsplat) vs raw gsplat rasterization (needs CUDA)."""
    import torch

    if not torch.cuda.is_available():
        _fail(RuntimeError("bench render needs a CUDA GPU and gsplat (it compares against raw gsplat)"))
    from .bench.render import format_table, run_render_bench

    rows = run_render_bench(tuple(int(s) for s in splats.split(",")), tuple(int(b) for b in batches.split(",")),
                            resolution)
    click.echo(format_table(rows))


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--preset", default="fast", show_default=True, type=click.Choice(["tiny", "fast", "quality"]))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--max-frames", type=int, default=None)
@click.option("--steps", type=int, default=None, help="Override the preset's optimisation steps.")
@click.option("--batch-size", type=int, default=None,
              help="Override the preset's frames per step (split over the processes of `accelerate launch`).")
def fit(video: Path, out_dir: Path, preset: str, head: Path | None, device: str, max_frames: int | None,
        steps: int | None, batch_size: int | None) -> None:
    """Fit an avatar to VIDEO (preprocess + track + optimise; resumes from OUT's checkpoint).

    VIDEO may also be a preprocessed dataset folder (`dynavatar preprocess`, an import).
    Several GPUs: `accelerate launch --num_processes 2 -m dynavatar fit VIDEO -o OUT` trains
    data-parallel over frames (each step's frames are split between the GPUs)."""
    from .api import Avatar
    from .errors import DynavatarError
    from .reconstruct import ReconstructConfig
    from .reconstruct.distributed import data_parallel

    cfg = ReconstructConfig.preset(preset, **{k: v for k, v in (("steps", steps), ("batch_size", batch_size))
                                              if v is not None})
    dp = data_parallel()
    try:
        if (video / "meta.json").is_file():
            avatar = Avatar.from_dataset(video, head=head, out_dir=out_dir, preset=preset, device=device, config=cfg)
        else:
            avatar = Avatar.from_video(video, head=head, out_dir=out_dir, preset=preset, device=device,
                                       max_frames=max_frames, resolution=512, config=cfg)
        if not dp.is_main:
            return
        avatar.save(out_dir / "avatar")
        tracked = avatar.evaluate()
        refined = avatar.evaluate(refine_tracking=True)
    except (DynavatarError, ValueError) as exc:
        _fail(exc)
    procs = f" on {dp.world_size} processes" if dp.active else ""
    click.echo(f"optimised in {avatar.meta['fit_seconds']:.1f}s{procs}; held-out PSNR {tracked['psnr']:.2f} dB with the "
               f"tracked motion, {refined['psnr']:.2f} dB (SSIM {refined['ssim']:.4f}) with it refined "
               f"photometrically; avatar in {out_dir / 'avatar'}")
    try:
        avatar.render_video(out_dir / "before_after.mp4")
    except (DynavatarError, ImportError, OSError) as exc:  # the avatar is saved; only the preview is missing
        click.secho(f"warning: no before/after video ({type(exc).__name__}: {exc})", fg="yellow", err=True)


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True)
@click.option("--labels", is_flag=True, help="Beside each frame, its semantic labels in the parser's colours.")
def render(avatar_dir: Path, out_path: Path, device: str, labels: bool) -> None:
    """Render a saved avatar over its clip's frames to a video."""
    from .api import Avatar
    from .errors import DynavatarError

    try:
        Avatar.load(avatar_dir, device=device).render_video(out_path, side_by_side=False, labels=labels)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(f"wrote {out_path}")


def _drawn_mask(img):
    """bool [H, W] from a drawn mask image: bright pixels of a grey or RGB image; of an RGBA image
    (a stroke on a transparent layer), bright pixels that are also opaque."""
    import numpy as np

    img = np.asarray(img)
    thr = 127 if img.dtype == np.uint8 else 0.5
    if img.ndim == 2:
        return img > thr
    inside = img[..., :3].max(-1) > thr
    return inside & (img[..., 3] > thr) if img.shape[-1] == 4 else inside


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for mask.mp4 (each frame with the mask tinted) and masks.npz (masks uint8 [F, H, W], frames).")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="A mask drawn on FRAME's render (an image the render's size; white = inside).")
@click.option("--label", help="Or start from FRAME's rendered label: a label name or a group (lips, eyes, brows).")
@click.option("--frame", default=0, show_default=True, help="The frame the mask was drawn on.")
@click.option("--yaw", default=0.0, show_default=True, help="Turn the head by this many degrees (left/right).")
@click.option("--pitch", default=0.0, show_default=True, help="... and this many (up/down).")
@click.option("--learned", is_flag=True, help="Use a MaskMapper trained for this mask instead of the exact route.")
@click.option("--stride", default=1, show_default=True, type=click.IntRange(min=1),
              help="Every STRIDE-th frame only (a quick look on a CPU, ~2 s a 512-px frame).")
@click.option("--device", default="auto", show_default=True)
def mask(avatar_dir: Path, out_dir: Path, mask_path: Path | None, label: str | None, frame: int, yaw: float,
         pitch: float, learned: bool, stride: int, device: str) -> None:
    """Carry a mask drawn on one frame to every frame of the clip (and any head turn)."""
    import math

    import imageio.v3 as iio
    import numpy as np

    from .api import Avatar
    from .errors import DynavatarError
    from .io.atomic import atomic_path

    try:
        if (mask_path is None) == (label is None):
            raise DynavatarError("give exactly one of --mask PNG or --label NAME")
        avatar = Avatar.load(avatar_dir, device=device)
        if mask_path is not None:
            if not mask_path.is_file():
                raise DynavatarError(f"mask image not found: {mask_path}")
            try:
                img = np.asarray(iio.imread(mask_path))
            except Exception as exc:  # noqa: BLE001 - any unreadable image gets the same clear message
                raise DynavatarError(f"cannot read {mask_path} as an image ({exc})") from exc
            drawn = _drawn_mask(img)
        else:
            drawn = avatar.label_mask(label, frame)
        yaw, pitch = math.radians(yaw), math.radians(pitch)
        frames = list(range(0, avatar.params.batch_size, stride))
        masks, info = avatar.map_mask(drawn, frame, yaw, pitch, learned=learned, frames=frames,
                                      video=out_dir / "mask.mp4")
        with atomic_path(out_dir / "masks.npz", suffix=".npz") as tmp:
            np.savez_compressed(tmp, masks=(masks * 255).round().astype(np.uint8), frames=np.array(frames))
    except DynavatarError as exc:
        _fail(exc)
    extra = f", IoU vs the exact route {info['iou_mean']:.3f}" if learned else f", {info['splats']} splats"
    click.echo(f"wrote {out_dir / 'mask.mp4'} and masks.npz ({info['route']} route{extra})")


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option("--frame", default=0, show_default=True, help="Which frame's pose to export.")
def export(avatar_dir: Path, out_path: Path, frame: int) -> None:
    """Export one posed frame of a saved avatar as a standard 3DGS .ply."""
    from .api import Avatar
    from .errors import DynavatarError
    from .io.ply import export_ply

    try:
        a = Avatar.load(avatar_dir, device="cpu")
        verts = a.model(a.params[frame], landmark_set=None).vertices[0]
        export_ply(a.gaussians, out_path, vertices=verts, faces=a.model.faces)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(f"wrote {out_path}")


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Edited avatar folder.")
@click.option("--editor", default="auto", show_default=True, type=click.Choice(["auto", "palette", "ip2p", "inpaint"]))
@click.option("--method", default="idu", show_default=True, type=click.Choice(["idu", "sds"]))
@click.option("--refiner", default="auto", show_default=True, type=click.Choice(["auto", "rule", "transformers", "openai"]))
@click.option("--device", default="auto", show_default=True)
@click.option("--plan-only", is_flag=True, help="Print the edit plan and stop (no GPU time spent).")
def edit(avatar_dir: Path, prompt: str, out_dir: Path, editor: str, method: str, refiner: str, device: str,
         plan_only: bool) -> None:
    """Edit a saved avatar by text ("red hair"); writes OUT and OUT/before_after.mp4."""
    from .api import Avatar
    from .errors import DynavatarError

    try:
        from .edit import get_refiner

        a = Avatar.load(avatar_dir, device=device)
        r = get_refiner(refiner)
        plans = r.refine_all(prompt) if hasattr(r, "refine_all") else [r.refine(prompt)]
        for p in plans:
            click.echo("plan: " + p.summary())
        if plan_only:
            return
        edited = a.edit(prompt, editor=editor, method=method, refiner=r)
        edited.save(out_dir)
        video = edited.render_video(out_dir / "before_after.mp4", compare=a)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(f"edited avatar in {out_dir}; before/after video {video}")


@bench.command("edit")
@click.argument("avatar_dir", required=False, type=click.Path(path_type=Path))
@click.option("--prompt", default="red hair", show_default=True)
@click.option("--editor", default="palette", show_default=True, type=click.Choice(["palette", "ip2p-random"]),
              help="ip2p-random: the full-size SD-1.5 InstructPix2Pix architecture with random weights (timing).")
@click.option("--device", default="auto", show_default=True)
@click.option("--steps", type=int, default=None, help="Optimisation steps per plan (default: EditConfig's).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Write before/after stills.")
def bench_edit(avatar_dir: Path | None, prompt: str, editor: str, device: str, steps: int | None,
               out_dir: Path | None) -> None:
    """Time per edit, locality, region colour and temporal spread (default avatar: the synthetic clip's)."""
    from .bench.edit import format_edit_table, run_edit_bench
    from .errors import DynavatarError

    try:
        r = run_edit_bench(avatar_dir, prompt, editor, device, steps, out_dir=out_dir, progress=True)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(format_edit_table(r))


@bench.command("torch-render")
@click.option("--splats", default=20000, show_default=True)
@click.option("--resolution", default=128, show_default=True)
def bench_torch_render(splats: int, resolution: int) -> None:
    """Forward + backward time of the pure-PyTorch renderer (the CPU reference)."""
    from .bench.torch_render import run_torch_render_bench

    r = run_torch_render_bench(splats, resolution)
    w = max(len(k) for k in r)
    click.echo("\n".join(f"{k:<{w}}  {v:.3f}" if isinstance(v, float) else f"{k:<{w}}  {v}" for k, v in r.items()))


@bench.command("track")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--preset", default="default", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--max-frames", type=int, default=None)
def bench_track(video: Path, head: Path | None, preset: str, device: str, max_frames: int | None) -> None:
    """Preprocess + track VIDEO; print time per stage and landmark error."""
    from .bench.track import format_track_table, run_track_bench

    click.echo(format_track_table(run_track_bench(video, head, preset, device, max_frames)))


@bench.command("fit")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--preset", default="fast", show_default=True, type=click.Choice(["tiny", "fast", "quality"]))
@click.option("--head", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="auto", show_default=True)
@click.option("--max-frames", type=int, default=None)
@click.option("-o", "--out", "work_dir", type=click.Path(path_type=Path), default=None, help="Keep the run here.")
def bench_fit(video: Path, preset: str, head: Path | None, device: str, max_frames: int | None,
              work_dir: Path | None) -> None:
    """Preprocess + track + fit VIDEO (or a preprocessed folder); time per stage, held-out quality."""
    from .bench.fit import format_fit_table, run_fit_bench
    from .errors import DynavatarError

    try:
        r = run_fit_bench(video, preset, device, max_frames, work_dir, head=str(head) if head else None, progress=True)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(format_fit_table(r))


def _config_overrides(config_cls, items: tuple[str, ...]) -> dict:
    """``("steps=8000", "lr=1e-3")`` -> {"steps": 8000, "lr": 0.001}, typed by the dataclass's scalar
    fields; an unknown field or a value of the wrong type is a DynavatarError naming it."""
    import dataclasses

    from .errors import DynavatarError

    types = {f.name: type(f.default) for f in dataclasses.fields(config_cls) if isinstance(f.default, (bool, int, float))}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise DynavatarError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(types)}")
        kind = types[key]
        try:
            out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise DynavatarError(f"--set {item!r}: {key} takes {'an integer' if kind is int else 'a number'}") from None
    return out


@bench.command("mask")
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("--group", default="lips", show_default=True, help="Label or label group drawn as the user's mask.")
@click.option("--frame", type=int, default=None, help="Frame it is drawn on (default: the middle training frame).")
@click.option("--preset", default=None, type=click.Choice(["tiny", "fast", "quality"]),
              help="MaskMapper preset (default: quality on a GPU, fast on a CPU).")
@click.option("--device", default="auto", show_default=True)
@click.option("--eval", "n_eval", default=48, show_default=True, help="Held-out (t, pose) points scored.")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Change a MaskMapperConfig field of the preset, e.g. --set bank_per_frame=20 (repeatable).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Also write mask_routes.png: held-out points, learned vs exact, worst first.")
def bench_mask(avatar_dir: Path, group: str, frame: int | None, preset: str | None, device: str, n_eval: int,
               overrides: tuple[str, ...], out_dir: Path | None) -> None:
    """MaskMapper vs the exact mask route on a saved avatar: IoU on held-out (t, pose), time per mask."""
    from .bench.mask import format_mask_table, run_mask_bench
    from .errors import DynavatarError
    from .semantics import MaskMapperConfig

    try:
        changes = _config_overrides(MaskMapperConfig, overrides)
        r = run_mask_bench(avatar_dir, group, frame, preset, device, n_eval, progress=True, overrides=changes,
                           out_dir=out_dir)
    except DynavatarError as exc:
        _fail(exc)
    click.echo(format_mask_table(r))


if __name__ == "__main__":  # pragma: no cover
    main()
