"""``dynavatar demo``: the toolkit on the embedded default head, offline, in a couple of minutes on a CPU.

1. The demo head (``reconstruct.demo_head``: skin, eyes that follow the gaze, teeth, combed hair,
   brows, lashes, shoulders in a dark top; all splats bound to the head model's triangles, made by
   the project) performs a short scripted sequence: it turns on its neck while its eyes stay on the
   camera, talks, raises its brows, blinks, glances aside and smiles (``demo.mp4`` and a contact
   sheet of its moments, ``contact_sheet.png``).
2. Those splats, with their known labels, are the demo avatar: saved in ``OUT/avatar`` (``Avatar.load``,
   ``dynavatar render / edit / export`` open it).
3. A gallery of text edits on it, through the public API, each before and after at a frontal and a
   turned view (``gallery.png``) and while the head turns (``gallery.mp4``): "auburn hair", "blue
   eyes" (the iris only), "red lipstick", "round glasses", "make her smile". ``overview.png`` puts
   moments of the performance above the edits: the picture the README opens with.
4. With ``fit=True``, the reconstruction round trip as well: an avatar fitted to the synthetic clip
   (``tiny`` preset) with its held-out PSNR/SSIM, saved in ``OUT/fitted_avatar``, labelled from the
   clip's parsing and edited ("red hair"). It takes several minutes on a CPU, said up front.
The summary (``DemoResult.ran``) says exactly what ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

__all__ = ["DemoResult", "run_demo", "FIT_MINUTES"]

logger = logging.getLogger("dynavatar")

#: What ``fit=True`` adds on 2 CPU cores (the synthetic clip and its parsing, the tiny fit, a side-by-side
#: video, labelling, one edit): measured 8 minutes on a shared 2-core machine before labelling and the
#: edit were shortened (100 label-refinement steps, a splat-space edit), which saves about 3.
FIT_MINUTES = "5-6"


@dataclasses.dataclass
class DemoResult:
    video: Path
    contact_sheet: Path
    frames: int
    resolution: int
    renderer: str
    seconds: float
    ran: list[str]
    metrics: dict | None = None
    avatar: Path | None = None  # the saved demo avatar
    gallery: Path | None = None  # gallery.png (None when the gallery was skipped)
    gallery_video: Path | None = None
    overview: Path | None = None  # overview.png: the performance's moments above the edits (the README's picture)


def _check_settings(n_frames: int, resolution: int) -> None:
    from .errors import ConfigError

    if int(n_frames) < 1:
        raise ConfigError(f"n_frames={n_frames}: the demo needs at least 1 frame; pass n_frames=1 or more "
                          "(48 by default)")
    if int(resolution) < 32:
        raise ConfigError(f"resolution={resolution}: the demo draws at least 32x32 pixels; pass resolution=32 or more")


def _renderer(dev):
    """The device's renderer; on a CPU, TorchRenderer compositing 32 splats per tile and step
    (measured fastest for the demo head's mix of skin discs and long hair splats)."""
    from .render import renderer_for
    from .render.torch_renderer import TorchRenderer

    r = renderer_for(dev)
    return dataclasses.replace(r, chunk=32) if isinstance(r, TorchRenderer) else r


@contextlib.contextmanager
def _cpu_threads(dev, ran: list[str]):
    """On a CPU whose cores are already busy, render on one thread (restored afterwards).

    The CPU renderer is thousands of small tensor operations a frame; when another process holds a
    core, a second intra-op thread makes every one of them wait for it (measured on a 2-core machine
    under a load of 4-5: the default demo took 6.5 minutes on two threads, 84 s on one)."""
    import os

    import torch

    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = dev.type == "cpu" and before > 1 and load >= cores - 0.5
    if busy:
        torch.set_num_threads(1)
        ran.append(f"rendered on 1 thread: the CPU is shared (load {load:.1f} on {cores} cores)")
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _parts(app) -> str:
    """What the demo head is made of, with splat counts (parts a head without regions lacks are not named)."""
    from .geometry.labels import label_index

    lab = app.gaussians.labels.argmax(1)
    strands = app.tangent_local.norm(dim=-1) > 0.5
    count = lambda *names: int(sum((lab == label_index(n)).sum() for n in names))  # noqa: E731
    lashes = int((strands & (lab == label_index("skin"))).sum())
    parts = [("skin", count("skin", "nose", "neck", "left_ear", "right_ear") - lashes), ("lashes", lashes),
             ("lips", count("upper_lip", "lower_lip")), ("eyes", count("left_eye", "right_eye")),
             ("mouth and teeth", count("mouth_interior")),
             ("hair strands", int((strands & (lab == label_index("hair"))).sum())),
             ("brows", count("left_brow", "right_brow")), ("shoulders", count("clothes"))]
    return ", ".join(f"{n} {name}" for name, n in parts if n)


def _moments(frames: np.ndarray, n_frames: int) -> list[np.ndarray]:
    """The performance's moments (``DEMO_MOMENTS``), captioned.  -> 8 images"""
    from .demo_gallery import _caption
    from .reconstruct.synthetic import DEMO_MOMENTS

    return [_caption(frames[int(round(t * (n_frames - 1)))], name) for t, name in DEMO_MOMENTS]


def _contact_sheet(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """Eight moments of the performance, captioned, in two rows of four."""
    cells = _moments(frames, n_frames)
    return np.concatenate([np.concatenate(cells[:4], 1), np.concatenate(cells[4:], 1)], 0)


def run_demo(out_dir: str | Path = "dynavatar-demo", head: str | None = None, n_frames: int = 48,
             resolution: int = 256, device: str = "auto", fit: bool = False, progress: bool = True,
             gallery: bool = True, gallery_resolution: int | None = None, gallery_frames: int | None = None
             ) -> DemoResult:
    """Run the demo into ``out_dir`` (see the module docstring). ``gallery=False`` skips the edits;
    ``gallery_resolution`` (default ``resolution``) sizes the gallery's pictures, and
    ``gallery_frames`` (default: a sixth of ``n_frames``, 2 to 8) the turn each edit shows in its video."""
    from .device import resolve_device
    from .flame import FlameModel

    _check_settings(n_frames, resolution)
    gallery_resolution = int(gallery_resolution or resolution)
    _check_settings(n_frames, gallery_resolution)
    gallery_frames = int(gallery_frames or min(8, max(2, n_frames // 6)))
    t0 = time.perf_counter()
    if fit:
        logger.info("dynavatar demo --fit: the fit adds about %s minutes on 2 CPU cores (a GPU: well under one)",
                    FIT_MINUTES)
    dev = resolve_device(device)
    model = FlameModel.load(head).to(dev)
    renderer = _renderer(dev)
    notes: list[str] = []
    with _cpu_threads(dev, notes):
        result, base, app, frames = _perform(Path(out_dir), model, head, renderer, dev, n_frames, resolution)
        result.ran += notes
        if gallery:
            frontal = _gallery(result, Path(out_dir), base, app, model, renderer, gallery_resolution, gallery_frames,
                               progress)
            if frontal is not None:
                result.overview = _overview(Path(out_dir), _moments(frames, n_frames), frontal)
        else:
            result.ran.append("the gallery of edits skipped (gallery=False)")
        if fit:
            _fit_and_edit(result, Path(out_dir), model, renderer, n_frames, app, progress)
        else:
            result.ran.append("avatar fitting and the text edit skipped (add --fit: an avatar fitted to the clip, "
                              f"labelled and edited; about {FIT_MINUTES} more minutes on 2 CPU cores)")
    result.seconds = time.perf_counter() - t0
    return result


def _perform(out: Path, model, head, renderer, dev, n_frames: int, resolution: int):
    """The demo head performing (``demo.mp4``, ``contact_sheet.png``) and saved as an avatar
    (``out/avatar``). -> (DemoResult so far, the Avatar, the HeadAppearance, frames uint8 [N, R, R, 3])"""
    import imageio.v3 as iio
    import torch

    from .api import Avatar
    from .io.atomic import atomic_path
    from .io.video import write_video
    from .reconstruct.demo_head import demo_head_appearance
    from .reconstruct.synthetic import crop_camera, demo_identity, demo_performance, render_head_frames

    t0 = time.perf_counter()
    renderer_name = "gsplat (CUDA)" if dev.type == "cuda" else "TorchRenderer (CPU)"
    shape = demo_identity(model)
    app = demo_head_appearance(model, shape)
    params = demo_performance(model, n_frames, shape)
    with torch.no_grad():
        frames, _ = render_head_frames(model, params, renderer, resolution, appearance=app)
    video = write_video(out / "demo.mp4", list(frames), fps=24)
    sheet_path = out / "contact_sheet.png"
    with atomic_path(sheet_path, suffix=".png") as tmp:
        iio.imwrite(tmp, _contact_sheet(frames, n_frames))
    ran = [f"head model: {getattr(model, 'source', '?')}",
           f"the demo head: {app.num_splats} splats bound to its triangles ({_parts(app)}), performing "
           f"{n_frames} frames (turn, talk, brows, blinks, glance, smile) at {resolution}x{resolution}, "
           f"{renderer_name}, {time.perf_counter() - t0:.0f}s"]
    cams = crop_camera(resolution, device=dev)
    cams = type(cams)(cams.viewmats.expand(n_frames, 4, 4).clone(), cams.Ks.expand(n_frames, 3, 3).clone(),
                      resolution, resolution)
    meta = {"source": "dynavatar demo: the generated demo head (no fitting)", "preset": None,
            "labels": {"source": "known: the demo head's appearance splats"}}
    # the rest pose's shading becomes the splats' colour: what the saved avatar (and every edit) shows
    base = Avatar(app.bake(params[0]), app.model, params.to(dev), cams, meta, None, (1.0, 1.0, 1.0))
    saved = base.save(out / "avatar")
    ran.append(f"saved it as an avatar in {saved}; open it with " + (
        f"Avatar.load({str(saved)!r}) or `dynavatar render {saved} -o avatar.mp4`" if head is None
        else f"Avatar.load({str(saved)!r}, head={str(head)!r})"))
    return DemoResult(video, sheet_path, n_frames, resolution, renderer_name, 0.0, ran, avatar=saved), base, app, frames


def _fit_and_edit(result: DemoResult, out: Path, model, renderer, n_frames: int, app, progress: bool) -> None:
    """The reconstruction round trip on the clip (``_fit_demo``, ``_edit_demo``), into ``result``."""
    from .reconstruct import ReconstructConfig

    cfg = ReconstructConfig.preset("tiny")
    avatar, result.metrics, fitted = _fit_demo(model, renderer, n_frames, out, cfg, progress, appearance=app,
                                               folder="fitted_avatar")
    m = result.metrics
    result.ran.append(f"fitted an avatar to the clip (tiny preset, {cfg.steps} steps, "
                      f"{avatar.meta['fit_seconds']:.0f}s): "
                      f"held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f} on {m['frames']} unseen frames; "
                      f"saved in {fitted}")
    result.ran.append(_edit_demo(avatar, out, fitted, progress))


def _overview(out: Path, moments: list[np.ndarray], frontal) -> Path:
    """``out/overview.png``: six moments of the performance above the frontal before and afters."""
    import imageio.v3 as iio

    from .demo_gallery import overview_sheet
    from .io.atomic import atomic_path

    path = out / "overview.png"
    with atomic_path(path, suffix=".png") as tmp:
        iio.imwrite(tmp, overview_sheet([moments[i] for i in (0, 1, 2, 4, 6, 7)], frontal))
    return path


def _gallery(result: DemoResult, out: Path, base, app, model, renderer, resolution: int, frames: int,
             progress: bool):
    """The edits, their sheet and video (into ``result``) and one summary line per edit; -> the
    frontal pictures (``demo_gallery.write_gallery``)."""
    from .demo_gallery import edit_gallery, write_gallery
    from .reconstruct.synthetic import DEMO_DEPTH, DEMO_LIFT

    t0 = time.perf_counter()
    rest = model.zero_params(1)
    if app.shape is not None:
        rest.shape[0] = app.shape.to(rest.shape)
    rows = edit_gallery(base, rest, progress=progress)
    for r in rows:
        result.ran.append(f'edit "{r.prompt}": {r.note}' + (f" ({r.seconds:.1f}s)" if r.avatar is not None else ""))
    if not any(r.avatar is not None for r in rows):  # e.g. a head file without hair, eyes or lips
        result.ran.append("gallery skipped: none of its edits applies to this head")
        return None
    result.gallery, result.gallery_video, frontal = write_gallery(out, base, app, rows, resolution, renderer,
                                                                  DEMO_DEPTH, DEMO_LIFT, video_frames=frames)
    done = sum(r.avatar is not None for r in rows)
    result.ran.append(f"gallery: before/after of {done} edit{'' if done == 1 else 's'} in "
                      f"{result.gallery} and {result.gallery_video}, the performance above them in "
                      f"{out / 'overview.png'} ({time.perf_counter() - t0:.0f}s)")
    return frontal


def _fit_demo(model, renderer, n_frames: int, out: Path, cfg, progress: bool, appearance=None,
              folder: str = "avatar"):
    """Fit ``cfg`` to the synthetic clip of ``model`` (drawn as ``appearance``, the demo head, when
    given; checkpoints in ``out/fit``, always from scratch), report its held-out metrics, write
    ``out/fit_side_by_side.mp4`` and save the avatar in ``out/folder``, so the demo leaves a folder
    that ``Avatar.load`` opens.  -> (Avatar, metrics, folder)"""
    from .api import Avatar
    from .reconstruct import evaluate, fit_avatar
    from .reconstruct.synthetic import synthetic_clip

    data = synthetic_clip(model, renderer, n_frames=n_frames, resolution=cfg.resolution, appearance=appearance)
    res = fit_avatar(data, model, renderer, cfg, out_dir=out / "fit", progress=progress, resume=False)
    metrics = evaluate(res.avatar, res.params, data, res.model, renderer)
    meta = {"source": "dynavatar demo (synthetic clip)", "preset": "tiny", "fit_seconds": res.seconds,
            "history": res.history}
    avatar = Avatar(res.avatar, res.model, res.params, data.cameras, meta, data, tuple(cfg.background))
    avatar.render_video(out / "fit_side_by_side.mp4")
    return avatar, metrics, avatar.save(out / folder)


def _edit_demo(avatar, out: Path, saved: Path, progress: bool) -> str:
    """Label the splats (and save the labelled avatar over ``saved``), apply "red hair", write
    before/after held-out frames; -> a summary line."""
    import imageio.v3 as iio

    from .edit import EditConfig
    from .geometry.labels import label_index

    t0 = time.perf_counter()
    avatar.label_splats(progress=progress, refine_steps=100)
    avatar.save(saved)  # the same avatar, now with its splats' labels (``dynavatar render --labels``)
    hair = avatar.select("hair")
    # the palette edit recolours the hair splats directly (every one of them, seen or not); the
    # keyframe fine-tune would add minutes on a CPU for little change, so the demo leaves it out
    edited = avatar.edit("red hair", editor="palette", refiner="rules", config=EditConfig(steps=0),
                         progress=progress)
    frames = avatar.data.eval_idx.tolist()[:4]
    before = [avatar.render(frame=i) for i in frames]
    after = [edited.render(frame=i) for i in frames]
    iio.imwrite(out / "edit_red_hair.png", np.concatenate([np.concatenate(before, 1), np.concatenate(after, 1)], 0))
    masks = [avatar.render_masks(frame=i) for i in frames]
    outside = [np.abs(a.astype(float) - b.astype(float))[m[label_index("hair")] < 0.05].mean()
               for a, b, m in zip(before, after, masks)]
    return (f'fitted avatar: text edit "red hair" (rule refiner, palette editor in splat space) on '
            f"{int(hair.sum())} hair splats in "
            f"{time.perf_counter() - t0:.0f}s: pixels outside the hair moved {np.mean(outside):.2f}/255 on "
            f"average; before/after in {out / 'edit_red_hair.png'}")
