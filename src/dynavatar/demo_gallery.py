"""The demo's gallery: text edits on the demo avatar, before and after, as one picture and one video.

The demo avatar is built straight from the demo head's appearance splats, whose labels are known
(hair, eyes, lips...), so editing needs no fitting: each prompt goes through the public API
(``Avatar.edit``: the rule refiner and the palette editor for colours, FLAME expressions for "make
her smile"; ``edit.apply.glasses.add_glasses`` for the glasses), exactly as a user's avatar would.

The palette edits run in splat space (``EditConfig(steps=0)``: the region's splat colours are
recoloured in OKLab, every splat of the region, seen or not) with one keyframe for the region's
statistics, so an edit takes a second or two on a CPU instead of minutes of keyframe fine-tuning.

Renders leave out the appearance splats that face away from the camera (``HeadAppearance.facing``:
hidden anyway), which halves the CPU renderer's work; added splats (the glasses) are always drawn.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

__all__ = ["GALLERY_PROMPTS", "GalleryRow", "edit_gallery", "gallery_camera", "gallery_views", "render_view",
           "gallery_sheet", "overview_sheet", "write_gallery"]

logger = logging.getLogger("dynavatar")

#: The gallery's rows, in order.
GALLERY_PROMPTS = ("auburn hair", "blue eyes", "red lipstick", "round glasses", "make her smile")
#: How far the turned view turns the head (radians; positive: towards the subject's left).
TURN = 0.55


@dataclasses.dataclass
class GalleryRow:
    prompt: str
    avatar: object | None  # the edited Avatar; None when the row was left out
    note: str  # what ran, or why the row was left out
    seconds: float = 0.0


def _glasses(avatar, rest):
    """``avatar`` with round glasses (``edit.apply.glasses``), or the ImportError's message."""
    try:
        from .edit import add_glasses
    except ImportError as exc:
        return None, f"left out: the glasses editor is not available ({exc})"
    g = add_glasses(avatar.gaussians, avatar.model, style="round", rest_params=rest)
    meta = dict(avatar.meta, edits=list(avatar.meta.get("edits", [])) + [{"prompt": "round glasses",
                                                                        "editor": "geometry (add_glasses)"}])
    out = dataclasses.replace(avatar, gaussians=g, meta=meta)
    return out, f"{g.num_splats - avatar.gaussians.num_splats} glasses splats bound to rigid head triangles"


def _edit(avatar, prompt: str, cfg, progress: bool):
    """``avatar.edit(prompt)`` (rule refiner, palette editor) and what it did; a region the avatar
    has no splats of (a test head has no hair) is an error rather than an edit that changes nothing."""
    from .edit import get_refiner
    from .errors import DynavatarError

    plan = get_refiner("rule").refine(prompt)
    if plan.kind != "expression" and not bool(avatar.select(list(plan.regions)).any()):
        raise DynavatarError(f"no splats are labelled {'/'.join(plan.regions)}")
    edited = avatar.edit(plan, editor="palette", config=cfg, progress=progress)
    rec = edited.meta["edits"][-1]
    if rec.get("editor") == "flame-expression":
        return edited, f"FLAME expression {rec['plan']['expression']}"
    return edited, (f"{rec.get('editor')} on {rec.get('splats_edited', 0)} splats of "
                    f"{'/'.join(rec['plan']['regions'])}")


def edit_gallery(avatar, rest, prompts=GALLERY_PROMPTS, progress: bool = False) -> list[GalleryRow]:
    """Each prompt applied to ``avatar`` (an ``api.Avatar`` with labelled splats) on its own.

    ``rest``: FlameParams [1] of the neutral head (the demo identity), where glasses are fitted."""
    from .edit import EditConfig
    from .errors import DynavatarError

    cfg = EditConfig(steps=0, keyframes=1, novel_yaws=())  # splat-space palette edit, one view for its statistics
    rows = []
    for prompt in prompts:
        t0 = time.perf_counter()
        try:
            edited, note = _glasses(avatar, rest) if "glasses" in prompt else _edit(avatar, prompt, cfg, progress)
        except DynavatarError as exc:  # e.g. a head without the region (a test head has no hair)
            edited, note = None, f"left out: {str(exc).splitlines()[0]}"
        rows.append(GalleryRow(prompt, edited, note, time.perf_counter() - t0))
        logger.info("gallery: %r %s (%.1fs)", prompt, note, rows[-1].seconds)
    return rows


def gallery_camera(resolution: int, depth: float, lift: float, device=None, zoom: float = 1.3,
                   centre_y: float = 0.0):
    """A closer crop than the performance's (``reconstruct.synthetic.crop_camera``): the camera
    at the same place with a longer focal length, centred on the head (``centre_y`` m above the
    head's origin) so the eyes, lips and hair fill the picture."""
    import torch

    from .geometry.cameras import Cameras
    from .reconstruct.synthetic import crop_camera

    cam = crop_camera(resolution, device=device)
    K = cam.Ks.clone()
    f = float(K[0, 0, 0]) * zoom
    K[0, 0, 0] = K[0, 1, 1] = f
    K[0, 1, 2] = resolution / 2 + f * (lift + centre_y) / depth  # image y grows downwards
    return Cameras(cam.viewmats, K.to(torch.float32), resolution, resolution)


def gallery_views(params, yaws=(0.0, TURN)):
    """FlameParams [1] per view: the clip's first frame (frontal, neutral), turned by each yaw."""
    from .flame.pose import rotate_head

    return [params[0] if y == 0 else rotate_head(params[0], y) for y in yaws]


def render_view(avatar, appearance, params, camera, renderer, features=None):
    """One frame of ``avatar`` at ``params`` [1] through ``camera``, leaving out its first
    ``appearance.num_splats`` splats where they face away. -> RenderOutput (batch of one)"""
    import torch

    from .gaussians.binding import bind
    from .reconstruct.synthetic import _subset

    dev = avatar.device
    verts = avatar.model(params.to(dev), landmark_set=None).vertices
    g = bind(avatar.gaussians, verts, avatar.model.faces)
    keep = torch.ones(avatar.gaussians.num_splats, dtype=torch.bool, device=dev)
    keep[:appearance.num_splats] = appearance.facing(verts[0], camera.centers[0].to(dev))
    bg = torch.tensor(avatar.background, device=dev)
    return renderer.render(_subset(g, keep), camera.to(dev), background=bg,
                           features=None if features is None else features[keep])


def _image(out) -> np.ndarray:
    return (out.rgb[0].clamp(0, 1) * 255).round().byte().cpu().numpy()


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    """``img`` with ``text`` on a light band along its bottom (sized to the image; the top holds
    the hair)."""
    import cv2

    out = img.copy()
    h = img.shape[0]
    band = max(11, round(0.08 * h))
    out[h - band:] = (0.25 * out[h - band:] + 0.75 * 255).astype(np.uint8)
    pad = max(3, band // 4)
    cv2.putText(out, text, (pad, h - pad), cv2.FONT_HERSHEY_SIMPLEX, band / 34, (25, 25, 25), 1, cv2.LINE_AA)
    return out


def gallery_sheet(before: list[np.ndarray], rows: list[GalleryRow], after: list[list[np.ndarray]]) -> np.ndarray:
    """rows = prompts, columns = before / after at the frontal view, before / after turned.
    before: [V] images; after: per row, [V] images.  -> uint8 [H, W, 3]"""
    lines = []
    for row, imgs in zip(rows, after):
        cells = []
        for b, a in zip(before, imgs):
            cells += [_caption(b, "before"), _caption(a, row.prompt)]
        lines.append(np.concatenate(cells, 1))
    return np.concatenate(lines, 0)


def overview_sheet(moments: list[np.ndarray], frontal: list[tuple[str, np.ndarray]], cell: int = 200) -> np.ndarray:
    """The one-picture summary (the README's): captioned moments of the performance on top, the
    frontal before and every edit's after below, ``cell`` pixels a picture.  -> uint8 [2 cell, W, 3]"""
    import cv2

    def fit(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA) if img.shape[0] != cell else img

    top = [fit(m) for m in moments]
    bottom = [_caption(fit(img), text) for text, img in frontal]
    width = max(len(top), len(bottom))
    blank = np.full((cell, cell, 3), 255, np.uint8)
    rows = [np.concatenate(r + [blank] * (width - len(r)), 1) for r in (top, bottom)]
    return np.concatenate(rows, 0)


def write_gallery(out: Path, base, appearance, rows: list[GalleryRow], resolution: int, renderer, depth: float,
                  lift: float, video_frames: int = 8) -> tuple[Path, Path, list[tuple[str, np.ndarray]]]:
    """``out/gallery.png`` (the sheet) and ``out/gallery.mp4`` (each edit while the head turns,
    before beside after) for the rows that ran; ``base`` is the unedited avatar. Also returns the
    frontal pictures, ``[("before", image), (prompt, image), ...]``, for ``overview_sheet``."""
    import imageio.v3 as iio

    from .flame.pose import rotate_head
    from .io.atomic import atomic_path
    from .io.video import write_video

    rows = [r for r in rows if r.avatar is not None]
    cam = gallery_camera(resolution, depth, lift, device=base.device)
    views = gallery_views(base.params)
    before = [_image(render_view(base, appearance, v, cam, renderer)) for v in views]
    after = [[_image(render_view(r.avatar, appearance, v, cam, renderer)) for v in gallery_views(r.avatar.params)]
             for r in rows]
    sheet = gallery_sheet(before, rows, after)
    png = out / "gallery.png"
    with atomic_path(png, suffix=".png") as tmp:
        iio.imwrite(tmp, sheet)
    vres = min(resolution, 192)
    vcam = gallery_camera(vres, depth, lift, device=base.device)
    yaws = np.linspace(-TURN, TURN, video_frames)
    turn = [rotate_head(base.params[0], float(y)) for y in yaws]
    plain = [_image(render_view(base, appearance, p, vcam, renderer)) for p in turn]

    def frames():
        for r in rows:
            p0 = r.avatar.params[0]
            for i, y in enumerate(yaws):
                edited = _image(render_view(r.avatar, appearance, rotate_head(p0, float(y)), vcam, renderer))
                yield np.concatenate([_caption(plain[i], "before"), _caption(edited, r.prompt)], 1)
    frontal = [("before", before[0])] + [(r.prompt, a[0]) for r, a in zip(rows, after)]
    return png, write_video(out / "gallery.mp4", frames(), fps=8), frontal
