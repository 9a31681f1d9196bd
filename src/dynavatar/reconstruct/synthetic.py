"""A synthetic talking-head clip rendered from a head model, with known ground truth.

The head performs a short scripted sequence (turn, nod, talk, blink, smile) under a fixed light.
Because frames, mattes, cameras and FLAME parameters are all known exactly, fitting an avatar to it
measures the reconstruction alone, without tracking error — and it needs no video, no weights and
no GPU. It is drawn one of two ways:

- plain (the default, what the tests fit): shaded, region-coloured splats, one per triangle, and
  ``scripted_performance``;
- as the demo head (``appearance=``, a ``head_appearance.HeadAppearance``): skin, eyes, teeth, hair,
  brows and shoulders re-shaded in every frame, performing ``demo_performance`` (the head turns on
  its neck while the eyes keep looking at the camera, talks, blinks, glances aside and smiles) with
  the ``demo_identity`` face, framed head and shoulders (``DEMO_DEPTH``, ``DEMO_LIFT``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar, rgb_to_sh
from ..gaussians.binding import bind
from ..geometry.cameras import project_points
from ..geometry.cameras import Cameras
from .data import TrainData, split_train_eval
from .landmark_anchor import LANDMARK_SET

__all__ = ["REGION_COLOURS", "scripted_performance", "demo_performance", "demo_identity", "face_albedo", "shade_faces",
           "synthetic_clip", "render_appearance", "DEMO_DEPTH", "DEMO_LIFT", "DEMO_MOMENTS"]

#: The demo's framing: the head this far in front of the camera (m) and lifted this much, so the
#: square crop shows the top of the hair and the shoulders.
DEMO_DEPTH, DEMO_LIFT = 0.9, 0.04

#: Moments of ``demo_performance`` (fraction of the clip, what happens) the contact sheet shows.
DEMO_MOMENTS = ((0.0, "neutral"), (0.1, "blink"), (0.2, "turn, talk"), (0.3, "brows up"), (0.49, "glance"),
                (0.62, "blink"), (0.8, "smile, turn"), (1.0, "smile"))

#: The demo head's face, in the embedded default head's named identity components (~3 mm a unit):
#: a narrower jaw and face, a finer nose, a smaller mouth, a softer brow, fuller cheeks and a slimmer neck.
DEMO_IDENTITY = {"jaw_width": -3.0, "jaw_angle": -2.0, "face_width": -2.0, "face_length": -1.0, "nose_width": -2.0,
                 "nose_length": -1.5, "nose_tip": -1.0, "mouth_width": -1.5, "brow_ridge": -2.5, "neck_width": -3.0,
                 "cheek_fullness": 1.0, "chin_height": -1.0, "temple_hollow": -1.0, "eye_spacing": 0.5}

#: Flat albedo per region of the default head, for a readable picture without a fitted avatar.
REGION_COLOURS = {
    "skin": (0.86, 0.67, 0.55), "scalp": (0.30, 0.20, 0.13), "left_brow": (0.25, 0.17, 0.11),
    "right_brow": (0.25, 0.17, 0.11), "left_eye": (0.93, 0.93, 0.92), "right_eye": (0.93, 0.93, 0.92),
    "nose": (0.87, 0.64, 0.53), "upper_lip": (0.72, 0.36, 0.36), "lower_lip": (0.74, 0.38, 0.38),
    "mouth_interior": (0.30, 0.08, 0.08), "left_ear": (0.84, 0.62, 0.52), "right_ear": (0.84, 0.62, 0.52),
    "neck": (0.80, 0.60, 0.50),
}


def _expr_index(names: list[str] | None, *keys: str) -> list[int]:
    return [i for i, n in enumerate(names or []) if all(k in n.lower() for k in keys)]


def scripted_performance(model: FlameModel, n_frames: int = 48, depth: float = 0.62) -> FlameParams:
    """FlameParams [n_frames]: turn, nod, talk, blinks, smile; head ``depth`` m in front of the
    camera at the origin (the tracker's convention)."""
    p = FlameParams.zeros(n_frames, model.n_shape, model.n_expr)
    t = torch.linspace(0, 1, n_frames)
    p.rotation[:, 1] = 0.45 * torch.sin(2 * math.pi * t)
    p.rotation[:, 0] = 0.12 * torch.sin(4 * math.pi * t)
    p.jaw[:, 0] = 0.18 * torch.sin(6 * math.pi * t).clamp_min(0)
    blink = torch.exp(-((t - 0.3) / 0.03) ** 2) + torch.exp(-((t - 0.75) / 0.03) ** 2)
    for i in _expr_index(model.expr_names, "blink"):
        p.expr[:, i] = blink
    for i in _expr_index(model.expr_names, "smile"):
        p.expr[:, i] = 0.8 * torch.sigmoid((t - 0.5) * 12)
    p.translation[:, 1] = 0.02
    p.translation[:, 2] = -depth
    return p


def demo_identity(model: FlameModel) -> torch.Tensor:
    """Identity coefficients [n_shape] of the demo face: ``DEMO_IDENTITY`` on the embedded default
    head (whose components are named in its file), zero on any other head."""
    shape = torch.zeros(model.n_shape)
    if model.meta.get("name") != "dynavatar-default-head":
        return shape
    from ..flame.resolve import default_head_path

    with np.load(default_head_path(), allow_pickle=False) as f:
        names = [str(n) for n in f["shape_names"]] if "shape_names" in f.files else []
    for name, value in DEMO_IDENTITY.items():
        if name in names and names.index(name) < model.n_shape:
            shape[names.index(name)] = value
    return shape


def _window(t: torch.Tensor, start: float, end: float, soft: float = 0.03) -> torch.Tensor:
    return torch.sigmoid((t - start) / soft) * torch.sigmoid((end - t) / soft)


def _set_expr(p: FlameParams, names: list[str] | None, name: str, value: torch.Tensor) -> None:
    if names and name in names and names.index(name) < p.expr.shape[1]:
        p.expr[:, names.index(name)] += value


def demo_performance(model: FlameModel, n_frames: int = 48, shape: torch.Tensor | None = None,
                     depth: float = DEMO_DEPTH, lift: float = DEMO_LIFT) -> FlameParams:
    """FlameParams [n_frames] of the demo: the head turns left and right on its neck and nods while
    the eyes stay on the camera, talks (jaw and lips), blinks four times, glances aside, and ends
    on a smile; identity ``shape`` [n_shape]; ``depth`` m in front of the camera, lifted by ``lift``."""
    p = FlameParams.zeros(n_frames, model.n_shape, model.n_expr)
    if shape is not None:
        p.shape[:] = shape.to(p.shape)
    t = torch.linspace(0, 1, n_frames)
    yaw = 0.42 * torch.sin(2 * math.pi * t)
    p.neck[:, 1] = yaw
    p.neck[:, 0] = 0.08 * torch.sin(4 * math.pi * t + 0.5)
    glance = 0.3 * _window(t, 0.44, 0.54, 0.015)
    p.eyes[:, 1] = p.eyes[:, 4] = -0.75 * yaw + glance  # eyes on the camera, then a glance aside
    talk = _window(t, 0.12, 0.5)
    syllables = torch.sin(math.pi * 11 * t).abs()
    p.jaw[:, 0] = 0.2 * talk * syllables
    names = model.expr_names
    _set_expr(p, names, "lips_part", 0.6 * talk * syllables)
    _set_expr(p, names, "funnel", 0.5 * talk * torch.relu(torch.sin(math.pi * 7 * t)))
    _set_expr(p, names, "mouth_stretch_L", 0.4 * talk * torch.relu(-torch.sin(math.pi * 7 * t)))
    _set_expr(p, names, "mouth_stretch_R", 0.4 * talk * torch.relu(-torch.sin(math.pi * 7 * t)))
    for b in ("brow_inner_up_L", "brow_inner_up_R", "brow_outer_up_L", "brow_outer_up_R"):
        _set_expr(p, names, b, 0.7 * _window(t, 0.25, 0.36, 0.02))
    blink = sum(torch.exp(-((t - c) / 0.018) ** 2) for c in (0.1, 0.34, 0.62, 0.9)).clamp(max=1.0)
    for side in ("L", "R"):
        _set_expr(p, names, f"blink_{side}", blink)
        _set_expr(p, names, f"eye_wide_{side}", 0.35 * (1 - blink))  # a wakeful look between blinks
    smile = torch.sigmoid((t - 0.68) / 0.04)
    for name, w in (("smile_L", 0.9), ("smile_R", 0.9), ("cheek_squint_L", 0.3), ("cheek_squint_R", 0.3)):
        _set_expr(p, names, name, w * smile)
    p.translation[:, 1] = lift
    p.translation[:, 2] = -depth
    return p


def face_albedo(model: FlameModel) -> torch.Tensor:
    """RGB per triangle from its vertices' majority region.  -> [F, 3]"""
    if model.vertex_region is None or model.region_names is None:
        return torch.full((model.faces.shape[0], 3), 0.7)
    palette = torch.tensor([REGION_COLOURS.get(n, (0.7, 0.7, 0.7)) for n in model.region_names])
    return palette[torch.mode(model.vertex_region.cpu()[model.faces.cpu()], dim=1).values]


def shade_faces(albedo: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Lambertian shading per triangle, key light from the upper front-left.  -> [F, 3]"""
    tri = verts[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    light = torch.tensor([0.4, 0.5, 0.77], device=verts.device)
    return albedo * (0.35 + 0.65 * (n @ (light / light.norm())).clamp_min(0))[:, None]


def crop_camera(resolution: int, focal: float = 2.2, device=None) -> Cameras:
    from ..track.tracker import camera_viewmat

    f = focal * resolution
    K = torch.tensor([[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1.0]], device=device)
    return Cameras(camera_viewmat(device=device)[None], K[None], resolution, resolution)


def _subset(g, keep: torch.Tensor):
    """WorldGaussians restricted to the splats ``keep`` (bool [N]); colours are RGB [(B,) N, D] or
    SH [(B,) N, K, 3]."""
    colors = g.colors[..., keep, :] if g.sh_degree is None else g.colors[..., keep, :, :]
    return dataclasses.replace(g, means=g.means[:, keep], quats=g.quats[:, keep], scales=g.scales[:, keep],
                               opacities=g.opacities[..., keep], colors=colors)


@torch.no_grad()
def render_appearance(appearance, params: FlameParams, renderer, cameras: Cameras, background=(1.0, 1.0, 1.0),
                      features: torch.Tensor | None = None):
    """Render the demo head ``appearance`` (``HeadAppearance``) in every frame of ``params`` [N],
    re-shaded for that pose, with the splats facing away from the camera left out (hidden anyway).
    ``cameras``: one camera, or one per frame. Yields each frame's RenderOutput (batch of one);
    ``features`` [N_splats, D] are blended too."""
    model = appearance.model
    dev = model.v_template.device
    bg = torch.tensor(background, device=dev)
    for i in range(params.batch_size):
        cam = cameras[i if len(cameras) > 1 else 0].to(dev)
        verts = model(params[i].to(dev), landmark_set=None).vertices
        centre = cam.centers[0]
        colours = appearance.shade(verts[0], centre)
        keep = appearance.facing(verts[0], centre)
        g = dataclasses.replace(bind(appearance.gaussians, verts, model.faces), sh_degree=None, colors=colours[None])
        yield renderer.render(_subset(g, keep), cam, background=bg,
                              features=None if features is None else features[keep])


def _as_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().cpu().numpy()


@torch.no_grad()
def render_head_frames(model: FlameModel, params: FlameParams, renderer, resolution: int,
                       background=(1.0, 1.0, 1.0), appearance=None) -> tuple[np.ndarray, np.ndarray]:
    """Shaded head frames and their alpha: uint8 [N, R, R, 3], uint8 [N, R, R]. With ``appearance``
    (the demo head, bound to ``appearance.model``), that is what is drawn; else one region-coloured
    splat per triangle of ``model``."""
    if appearance is not None:
        cam = crop_camera(resolution, device=model.v_template.device)
        outs = list(render_appearance(appearance, params, renderer, cam, background))
        return (np.stack([_as_uint8(o.rgb[0]) for o in outs]), np.stack([_as_uint8(o.alpha[0, ..., 0]) for o in outs]))
    dev = model.v_template.device
    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.55, init_opacity=0.97, device=dev)
    albedo = face_albedo(model).to(dev)
    avatar.sh[:, 0] = rgb_to_sh(albedo)
    cams = crop_camera(resolution, device=dev)
    bg = torch.tensor(background, device=dev)
    imgs, alphas = [], []
    for i in range(params.batch_size):
        verts = model(params[i].to(dev), landmark_set=None).vertices
        g = dataclasses.replace(bind(avatar, verts, model.faces), sh_degree=None,
                                colors=shade_faces(albedo, verts[0], model.faces)[None])
        out = renderer.render(g, cams, background=bg)
        imgs.append((out.rgb[0].clamp(0, 1) * 255).round().byte().cpu().numpy())
        alphas.append((out.alpha[0, ..., 0].clamp(0, 1) * 255).round().byte().cpu().numpy())
    return np.stack(imgs), np.stack(alphas)


def synthetic_clip(model: FlameModel, renderer, n_frames: int = 48, resolution: int = 128,
                   eval_fraction: float = 0.1, appearance=None) -> TrainData:
    """Ground-truth frames/mattes/parsing/cameras/params of the scripted performance, as TrainData.
    With ``appearance`` (the demo head on ``model``): its ``demo_performance``, and the parsing drawn
    from its splats' labels (the hair's volume is hair, the shoulders are clothes)."""
    dev = model.v_template.device
    if appearance is not None:
        params = demo_performance(model, n_frames, appearance.shape)
    else:
        params = scripted_performance(model, n_frames)
    imgs, alphas = render_head_frames(model, params, renderer, resolution, appearance=appearance)
    # The frames are composited on white; un-composite so targets() re-composites exactly.
    a = alphas[..., None].astype(np.float64) / 255
    fg = np.where(a > 0, (imgs / 255 - (1 - a)) / np.maximum(a, 1e-6), 0).clip(0, 1)
    cams = crop_camera(resolution, device=dev)
    cams = Cameras(cams.viewmats.expand(n_frames, 4, 4).clone(), cams.Ks.expand(n_frames, 3, 3).clone(),
                   resolution, resolution)
    train_idx, eval_idx = split_train_eval(n_frames, eval_fraction)
    maps = render_label_maps(model, params, renderer, resolution) if appearance is None else \
        appearance_label_maps(appearance, params, renderer, resolution)
    parsing = torch.from_numpy(maps).to(dev)
    lmk = None
    if LANDMARK_SET in model.landmark_sets:  # a perfect detector: the true landmarks, projected
        with torch.no_grad():
            lmk, _ = project_points(model(params.to(dev), landmark_set=LANDMARK_SET).landmarks, cams.viewmats, cams.Ks)
    return TrainData(torch.from_numpy((fg * 255).round().astype(np.uint8)).to(dev), torch.from_numpy(alphas).to(dev),
                     cams, params.to(dev), np.arange(n_frames), train_idx.to(dev), eval_idx.to(dev), parsing,
                     lmk, None if lmk is None else torch.ones(n_frames, dtype=torch.bool, device=dev))


@torch.no_grad()
def appearance_label_maps(appearance, params: FlameParams, renderer, resolution: int) -> np.ndarray:
    """Ground-truth parsing of the demo head's frames: the label blended most at each pixel of its
    splats' one-hot labels, background where alpha < 0.5.  -> uint8 [N, R, R]"""
    from ..geometry.labels import label_index

    cams = crop_camera(resolution, device=appearance.model.v_template.device)
    maps = []
    for out in render_appearance(appearance, params, renderer, cams, features=appearance.gaussians.labels):
        lab = out.features[0].argmax(-1)
        lab[out.alpha[0, ..., 0] < 0.5] = label_index("background")
        maps.append(lab.byte().cpu().numpy())
    return np.stack(maps)


def face_labels(model: FlameModel) -> torch.Tensor:
    """Label index (LABEL_NAMES) per triangle from its vertices' majority region.  -> [F] long"""
    from ..geometry.labels import REGION_TO_LABEL, label_index

    if model.vertex_region is None or model.region_names is None:
        return torch.full((model.faces.shape[0],), label_index("skin"), dtype=torch.long)
    to_label = torch.tensor([label_index(REGION_TO_LABEL.get(r, "skin")) for r in model.region_names])
    return to_label[torch.mode(model.vertex_region.cpu()[model.faces.cpu()], dim=1).values]


@torch.no_grad()
def render_label_maps(model: FlameModel, params: FlameParams, renderer, resolution: int) -> np.ndarray:
    """Ground-truth parsing of the synthetic frames: the label of the triangle that covers each
    pixel (most blending weight), background where the head leaves it uncovered.  -> uint8 [N, R, R]"""
    from ..geometry.labels import NUM_LABELS, label_index

    dev = model.v_template.device
    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], 1, init_scale=0.55, init_opacity=0.97, device=dev)
    onehot = torch.nn.functional.one_hot(face_labels(model).to(dev), NUM_LABELS).float()
    cams = crop_camera(resolution, device=dev)
    maps = []
    for i in range(params.batch_size):
        verts = model(params[i].to(dev), landmark_set=None).vertices
        out = renderer.render(bind(avatar, verts, model.faces), cams, features=onehot)
        lab = out.features[0].argmax(-1)
        lab[out.alpha[0, ..., 0] < 0.5] = label_index("background")
        maps.append(lab.byte().cpu().numpy())
    return np.stack(maps)
