"""Commands on a saved avatar (render, mask, export, edit) and the demo on the embedded head."""

from __future__ import annotations

from pathlib import Path

import click

from .app import main
from .options import DEGREES, DEVICE, NON_NEGATIVE, POSITIVE, RESOLUTION, settings_options


def _frame_in_range(frame: int, n_frames: int, option: str = "--frame") -> int:
    from ..errors import ConfigError

    if not 0 <= frame < n_frames:
        raise ConfigError(f"{option} {frame} is out of range: this avatar's clip has frames 0..{n_frames - 1}")
    return frame


@main.command()
@click.option("-o", "--out", "out_dir", default="dynavatar-demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--head", type=click.Path(path_type=Path), default=None, help="FLAME-format file (default: resolved).")
@click.option("--frames", default=48, show_default=True, type=click.IntRange(min=1, max=10_000))
@click.option("--resolution", default=256, show_default=True, type=RESOLUTION)
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--fit/--no-fit", default=False, show_default=True, help="Also fit an avatar to the synthetic clip.")
def demo(out_dir: Path, head: Path | None, frames: int, resolution: int, device: str, fit: bool) -> None:
    """Run the pipeline on the embedded default head (offline, CPU is fine)."""
    from ..demo import run_demo
    from ..io.output_dir import check_output_dir, mark_output_dir

    out_dir = check_output_dir(out_dir, "demo")
    r = run_demo(out_dir, head=head, n_frames=frames, resolution=resolution, device=device, fit=fit)
    mark_output_dir(out_dir, "demo")
    click.echo("dynavatar demo ran:\n" + "\n".join(f"  - {line}" for line in r.ran))
    click.echo(f"wrote {r.video} and {r.contact_sheet} in {r.seconds:.1f}s")
    if r.gallery:
        click.echo(f"edits: {r.gallery} and {r.gallery_video}; the whole demo in one picture: {r.overview}")


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--labels", is_flag=True, help="Beside each frame, its semantic labels in the parser's colours.")
@click.option("--drive", "drive_dir", type=click.Path(path_type=Path), default=None,
              help="Instead, drive the avatar with another clip of the same person (a `dynavatar preprocess` folder), "
                   "tracked photometrically; the video shows that clip's frame | the avatar.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=0, max=10_000),
              help="With --drive: the photometric tracking steps per chunk of frames (0: landmarks alone).")
def render(avatar_dir: Path, out_path: Path, device: str, labels: bool, drive_dir: Path | None, steps: int) -> None:
    """Render a saved avatar over its clip's frames to a video (or driven by another clip: --drive)."""
    from ..api import Avatar
    from ..io.output_dir import check_output_file

    out_path = check_output_file(out_path, inputs=[avatar_dir])
    avatar = Avatar.load(avatar_dir, device=device)
    if drive_dir is None:
        avatar.render_video(out_path, side_by_side=False, labels=labels)
        click.echo(f"wrote {out_path}")
        return
    from ..reconstruct.drive import driven_psnr

    clip = avatar.drive(drive_dir, path=out_path, steps=steps)
    scores = [driven_psnr(avatar.gaussians, avatar.model, clip, avatar.renderer, only, avatar.background)
              for only in (True, False)]
    click.echo(f"wrote {out_path}: {len(clip)} frames driven; PSNR against them {scores[1]:.2f} dB "
               f"({scores[0]:.2f} dB with the landmark fit alone)")


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


def _read_drawn_mask(path: Path):
    import imageio.v3 as iio
    import numpy as np

    from ..errors import DynavatarError

    if not path.is_file():
        raise DynavatarError(f"mask image not found: {path}")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable image gets the same clear message
        raise DynavatarError(f"cannot read {path} as an image ({type(exc).__name__}); draw it as a PNG") from None
    if img.ndim not in (2, 3) or img.size == 0:
        raise DynavatarError(f"{path} is not a 2-D image (shape {img.shape}); draw the mask as a PNG")
    return _drawn_mask(img)


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for mask.mp4 (each frame with the mask tinted) and masks.npz (masks uint8 [F, H, W], frames).")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="A mask drawn on FRAME's render (an image the render's size; white = inside).")
@click.option("--label", help="Or start from FRAME's rendered label: a label name or a group (lips, eyes, brows).")
@click.option("--frame", default=0, show_default=True, type=NON_NEGATIVE, help="The frame the mask was drawn on.")
@click.option("--yaw", default=0.0, show_default=True, type=DEGREES, help="Turn the head by this many degrees (left/right).")
@click.option("--pitch", default=0.0, show_default=True, type=DEGREES, help="... and this many (up/down).")
@click.option("--learned", is_flag=True, help="Use a MaskMapper trained for this mask instead of the exact route.")
@click.option("--stride", default=1, show_default=True, type=POSITIVE,
              help="Every STRIDE-th frame only (a quick look on a CPU, ~2 s a 512-px frame).")
@click.option("--device", default="auto", show_default=True, type=DEVICE)
def mask(avatar_dir: Path, out_dir: Path, mask_path: Path | None, label: str | None, frame: int, yaw: float,
         pitch: float, learned: bool, stride: int, device: str) -> None:
    """Carry a mask drawn on one frame to every frame of the clip (and any head turn)."""
    import math

    import numpy as np

    from ..api import Avatar
    from ..errors import DynavatarError
    from ..io.atomic import atomic_path
    from ..io.output_dir import check_output_dir, mark_output_dir

    if (mask_path is None) == (label is None):
        raise DynavatarError("give exactly one of --mask PNG or --label NAME")
    out_dir = check_output_dir(out_dir, "mask", inputs=[avatar_dir] + ([mask_path] if mask_path else []))
    drawn = _read_drawn_mask(mask_path) if mask_path is not None else None
    avatar = Avatar.load(avatar_dir, device=device)
    _frame_in_range(frame, avatar.params.batch_size)
    if drawn is None:
        drawn = avatar.label_mask(label, frame)
    yaw, pitch = math.radians(yaw), math.radians(pitch)
    frames = list(range(0, avatar.params.batch_size, stride))
    masks, info = avatar.map_mask(drawn, frame, yaw, pitch, learned=learned, frames=frames,
                                  video=out_dir / "mask.mp4")
    with atomic_path(out_dir / "masks.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, masks=(masks * 255).round().astype(np.uint8), frames=np.array(frames))
    mark_output_dir(out_dir, "mask")
    extra = f", IoU vs the exact route {info['iou_mean']:.3f}" if learned else f", {info['splats']} splats"
    click.echo(f"wrote {out_dir / 'mask.mp4'} and masks.npz ({info['route']} route{extra})")


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(path_type=Path))
@click.option("--frame", default=0, show_default=True, type=NON_NEGATIVE, help="Which frame's pose to export.")
def export(avatar_dir: Path, out_path: Path, frame: int) -> None:
    """Export one posed frame of a saved avatar as a standard 3DGS .ply."""
    from ..api import Avatar
    from ..io.output_dir import check_output_file
    from ..io.ply import export_ply

    out_path = check_output_file(out_path, inputs=[avatar_dir])
    a = Avatar.load(avatar_dir, device="cpu")
    _frame_in_range(frame, a.params.batch_size)
    verts = a.model(a.params[frame], landmark_set=None).vertices[0]
    export_ply(a.gaussians, out_path, vertices=verts, faces=a.model.faces)
    click.echo(f"wrote {out_path}")


@main.command()
@click.argument("avatar_dir", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
              help="Edited avatar folder (required unless --plan-only).")
@click.option("--editor", default="auto", show_default=True, type=click.Choice(["auto", "palette", "ip2p", "inpaint", "geometry"]))
@click.option("--method", default="idu", show_default=True, type=click.Choice(["idu", "sds"]))
@click.option("--refiner", default="auto", show_default=True, type=click.Choice(["auto", "rule", "transformers", "openai"]))
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="Edit only the region drawn in this image on FRAME's render (white = inside; labels not needed).")
@click.option("--frame", default=None, type=NON_NEGATIVE, help="The frame --mask was drawn on (required with --mask).")
@click.option("--mask-route", default="exact", show_default=True, type=click.Choice(["exact", "learned"]),
              help="Carry the mask to other frames and views by the splats under it, or by a trained MaskMapper.")
@click.option("--device", default="auto", show_default=True, type=DEVICE)
@click.option("--plan-only", is_flag=True, help="Print the edit plan and stop (no GPU time spent).")
@settings_options("EditConfig (SDSEditConfig with --method sds)")
def edit(avatar_dir: Path, prompt: str, out_dir: Path | None, editor: str, method: str, refiner: str, mask_path: Path | None,
         frame: int | None, mask_route: str, device: str, plan_only: bool, settings: tuple[str, ...],
         config_file: str | None) -> None:
    """Edit a saved avatar by text ("red hair"); writes OUT and OUT/before_after.mp4.

    A prompt with several clauses ("red hair and add a hat") keeps the clauses that ran: one line
    per skipped clause says why, the result is still written, and the exit code is 0 when at least
    one clause ran (2 when none could)."""
    from ..api import Avatar
    from ..edit import EditConfig, SDSEditConfig, get_refiner
    from ..edit import runs_here
    from ..errors import ConfigError
    from ..io.output_dir import check_output_dir, mark_output_dir
    from .settings import apply_settings

    if (mask_path is None) != (frame is None):
        raise ConfigError("--mask and --frame go together: give the mask image and the frame it was drawn on")
    config = None
    if settings or config_file:  # the loop's settings: EditConfig for idu, SDSEditConfig for sds
        config = apply_settings(SDSEditConfig() if method == "sds" else EditConfig(), settings, config_file)
    if not plan_only:
        if out_dir is None:
            raise click.UsageError("Missing option '-o' / '--out': the folder the edited avatar goes to "
                                   "(or --plan-only to print the plan alone).")
        out_dir = check_output_dir(out_dir, "avatar", inputs=[avatar_dir] + ([mask_path] if mask_path else []))
    drawn = _read_drawn_mask(mask_path) if mask_path is not None else None
    a = Avatar.load(avatar_dir, device=device)
    r = get_refiner(refiner)
    plans = r.refine_all(prompt) if hasattr(r, "refine_all") else [r.refine(prompt)]
    for p in plans:  # each plan, then what would run it here (editor, weights cached / fetchable / neither)
        p.with_backend(editor, method)
        where = f" [region: the mask drawn on frame {frame}, {mask_route} route]" if drawn is not None else ""
        click.echo("plan: " + p.summary() + where + ("" if runs_here(p.backend) or len(plans) == 1 else
                                                      "  (this clause would be skipped)"))
    if plan_only:
        return
    if drawn is not None:
        _frame_in_range(frame, a.params.batch_size)
    edited = a.edit(prompt, editor=editor, method=method, refiner=r, config=config, mask=drawn, frame=frame,
                    mask_route=mask_route)
    edited.save(out_dir)
    video = edited.render_video(out_dir / "before_after.mp4", compare=a)
    mark_output_dir(out_dir, "avatar")
    for s in edited.meta.get("skipped", [])[len(a.meta.get("skipped", [])):]:
        click.echo(f"skipped {s['instruction']!r} ({s['kind']}): {s['error']}")
    click.echo(f"edited avatar in {out_dir}; before/after video {video}")
