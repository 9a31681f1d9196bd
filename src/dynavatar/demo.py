"""``dynavatar demo``: run what exists of the pipeline on the embedded default head, offline.

Today that is: the head model animated through a short performance (head turn, jaw, blinks, a
smile), Gaussian splats bound to its triangles and coloured by its vertex regions, rendered with
the CPU renderer (or gsplat on CUDA) into a video and a contact sheet. Fitting an avatar to a video
and text editing join the demo as they land; the summary says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["DemoResult", "demo_performance", "run_demo", "REGION_COLOURS"]

#: Flat albedo per region of the default head, for a readable picture without a fitted avatar.
REGION_COLOURS = {
    "skin": (0.86, 0.67, 0.55), "scalp": (0.30, 0.20, 0.13), "left_brow": (0.25, 0.17, 0.11),
    "right_brow": (0.25, 0.17, 0.11), "left_eye": (0.93, 0.93, 0.92), "right_eye": (0.93, 0.93, 0.92),
    "nose": (0.87, 0.64, 0.53), "upper_lip": (0.72, 0.36, 0.36), "lower_lip": (0.74, 0.38, 0.38),
    "mouth_interior": (0.30, 0.08, 0.08), "left_ear": (0.84, 0.62, 0.52), "right_ear": (0.84, 0.62, 0.52),
    "neck": (0.80, 0.60, 0.50),
}


@dataclasses.dataclass
class DemoResult:
    video: Path
    contact_sheet: Path
    frames: int
    resolution: int
    renderer: str
    seconds: float
    ran: list[str]


def _expr_index(names: list[str] | None, *keys: str) -> list[int]:
    if not names:
        return []
    return [i for i, n in enumerate(names) if all(k in n.lower() for k in keys)]


def demo_performance(model, n_frames: int = 48):
    """A short scripted performance as FlameParams [n_frames]: turn, nod, talk, blink, smile."""
    from .flame import FlameParams

    p = FlameParams.zeros(n_frames, model.n_shape, model.n_expr)
    t = torch.linspace(0, 1, n_frames)
    p.rotation[:, 1] = 0.45 * torch.sin(2 * math.pi * t)  # turn left-right
    p.rotation[:, 0] = 0.12 * torch.sin(4 * math.pi * t)  # nod
    p.jaw[:, 0] = 0.18 * torch.sin(6 * math.pi * t).clamp_min(0)  # talk
    blink = torch.exp(-((t - 0.3) / 0.03) ** 2) + torch.exp(-((t - 0.75) / 0.03) ** 2)
    for i in _expr_index(model.expr_names, "blink"):
        p.expr[:, i] = blink
    smile = torch.sigmoid((t - 0.5) * 12)
    for i in _expr_index(model.expr_names, "smile"):
        p.expr[:, i] = 0.8 * smile
    return p


def _face_colours(model) -> torch.Tensor:
    """RGB per triangle from the majority vertex region, [F, 3]."""
    if model.vertex_region is None or model.region_names is None:
        return torch.full((model.faces.shape[0], 3), 0.7)
    palette = torch.tensor([REGION_COLOURS.get(n, (0.7, 0.7, 0.7)) for n in model.region_names])
    regions = model.vertex_region[model.faces]  # [F, 3]
    majority = torch.mode(regions, dim=1).values
    return palette[majority]


def _shade(albedo: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Lambertian shading per triangle under a key light from the upper front-left.  -> [F, 3]"""
    tri = verts[faces]  # [F, 3, 3]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    light = torch.tensor([0.4, 0.5, 0.77], device=verts.device)
    light = light / light.norm()
    return albedo * (0.35 + 0.65 * (n @ light).clamp_min(0))[:, None]


def run_demo(out_dir: str | Path = "dynavatar-demo", head: str | None = None, n_frames: int = 48,
             resolution: int = 256, device: str = "auto", progress: bool = True) -> DemoResult:
    from tqdm.auto import tqdm

    from .flame import FlameModel
    from .gaussians.avatar import GaussianAvatar, rgb_to_sh
    from .gaussians.binding import bind
    from .io.video import write_video
    from .render.cameras import Cameras
    from .render.torch_renderer import TorchRenderer
    from .track.tracker import camera_viewmat

    t0 = time.perf_counter()
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    out = Path(out_dir)
    model = FlameModel.load(head).to(dev)
    params = demo_performance(model.cpu(), n_frames).to(dev)
    model = model.to(dev)
    params.translation[:, 2] = -0.62  # in front of the camera at the origin (tracker convention)
    params.translation[:, 1] = 0.02
    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], splats_per_face=1, init_scale=0.55, init_opacity=0.97,
                                         device=dev)
    albedo = _face_colours(model.cpu()).to(dev)  # [F, 3]; one splat per face
    avatar.sh[:, 0] = rgb_to_sh(albedo)
    focal = 2.2 * resolution
    K = torch.tensor([[focal, 0, resolution / 2], [0, focal, resolution / 2], [0, 0, 1.0]], device=dev)
    cams = Cameras(camera_viewmat(device=dev)[None], K[None], resolution, resolution)
    if dev.type == "cuda":
        from .render.gsplat_renderer import GsplatRenderer

        renderer, renderer_name = GsplatRenderer(), "gsplat (CUDA)"
    else:
        renderer, renderer_name = TorchRenderer(), "TorchRenderer (CPU)"
    background = torch.tensor([0.92, 0.92, 0.95], device=dev)
    frames = []
    with torch.no_grad():
        for i in tqdm(range(n_frames), desc="demo render", disable=not progress, unit="frame"):
            verts = model(params[i], landmark_set=None).vertices
            g = bind(avatar, verts, model.faces)
            g = dataclasses.replace(g, colors=_shade(albedo, verts[0], model.faces)[None], sh_degree=None)
            img = renderer.render(g, cams, background=background).rgb[0]
            frames.append((img.clamp(0, 1) * 255).round().byte().cpu().numpy())
    video = write_video(out / "demo.mp4", frames, fps=24)
    sheet_idx = np.linspace(0, n_frames - 1, 8).round().astype(int)
    sheet = np.concatenate([np.concatenate([frames[i] for i in sheet_idx[:4]], 1),
                            np.concatenate([frames[i] for i in sheet_idx[4:]], 1)], 0)
    import imageio.v3 as iio

    sheet_path = out / "contact_sheet.png"
    iio.imwrite(sheet_path, sheet)
    ran = [f"head model: {getattr(model, 'source', '?')}",
           f"FLAME animation of {n_frames} frames (turn, nod, jaw, blinks, smile)",
           f"{avatar.num_splats} Gaussian splats bound to the mesh triangles, region colours",
           f"rendered at {resolution}x{resolution} with {renderer_name}",
           "not yet in the demo: fitting an avatar to a video, text editing (in development)"]
    return DemoResult(video, sheet_path, n_frames, resolution, renderer_name, time.perf_counter() - t0, ran)
