"""A synthetic talking-head clip rendered from a head model, with known ground truth.

The head is drawn as shaded, region-coloured splats (one per triangle) under a fixed light while it
performs a short scripted sequence (turn, nod, talk, blink, smile). Because frames, mattes, cameras
and FLAME parameters are all known exactly, fitting an avatar to it measures the reconstruction
alone, without tracking error — and it needs no video, no weights and no GPU.
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

__all__ = ["REGION_COLOURS", "scripted_performance", "face_albedo", "shade_faces", "synthetic_clip"]

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


@torch.no_grad()
def render_head_frames(model: FlameModel, params: FlameParams, renderer, resolution: int,
                       background=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Shaded head frames and their alpha: uint8 [N, R, R, 3], uint8 [N, R, R]."""
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
                   eval_fraction: float = 0.1) -> TrainData:
    """Ground-truth frames/mattes/parsing/cameras/params of the scripted performance, as TrainData."""
    dev = model.v_template.device
    params = scripted_performance(model, n_frames)
    imgs, alphas = render_head_frames(model, params, renderer, resolution)
    # The frames are composited on white; un-composite so targets() re-composites exactly.
    a = alphas[..., None].astype(np.float64) / 255
    fg = np.where(a > 0, (imgs / 255 - (1 - a)) / np.maximum(a, 1e-6), 0).clip(0, 1)
    cams = crop_camera(resolution, device=dev)
    cams = Cameras(cams.viewmats.expand(n_frames, 4, 4).clone(), cams.Ks.expand(n_frames, 3, 3).clone(),
                   resolution, resolution)
    train_idx, eval_idx = split_train_eval(n_frames, eval_fraction)
    parsing = torch.from_numpy(render_label_maps(model, params, renderer, resolution)).to(dev)
    lmk = None
    if LANDMARK_SET in model.landmark_sets:  # a perfect detector: the true landmarks, projected
        with torch.no_grad():
            lmk, _ = project_points(model(params.to(dev), landmark_set=LANDMARK_SET).landmarks, cams.viewmats, cams.Ks)
    return TrainData(torch.from_numpy((fg * 255).round().astype(np.uint8)).to(dev), torch.from_numpy(alphas).to(dev),
                     cams, params.to(dev), np.arange(n_frames), train_idx.to(dev), eval_idx.to(dev), parsing,
                     lmk, None if lmk is None else torch.ones(n_frames, dtype=torch.bool, device=dev))


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
