# %% [markdown]
# # 03 · Animate and export
#
# An avatar's splats ride on the FLAME mesh, so anything that produces FLAME parameters animates it:
# another person's tracked video (cross-reenactment), or numbers you set by hand — open the jaw,
# turn the head, dial in an expression component. Then export a posed frame as a standard 3DGS
# `.ply` for other viewers, and, on a GPU, time the animated render against raw gsplat.
#
# Runs on a CPU in about a minute: the avatar is a small one fitted to a synthetic clip of the
# embedded default head (notebook 01 shows the full `from_video` route). Outputs go into
# `$DYNAVATAR_EXAMPLES_OUT/03_animate_and_export` (default `example-output/...`).

# %%
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from dynavatar import Avatar, FlameModel
from dynavatar.device import resolve_device
from dynavatar.geometry.cameras import Cameras
from dynavatar.io.ply import export_ply, read_ply
from dynavatar.io.video import write_video
from dynavatar.reconstruct import ReconstructConfig, fit_avatar
from dynavatar.reconstruct.synthetic import render_head_frames, scripted_performance, synthetic_clip
from dynavatar.render import renderer_for

OUT = Path(os.environ.get("DYNAVATAR_EXAMPLES_OUT", "example-output")) / "03_animate_and_export"
OUT.mkdir(parents=True, exist_ok=True)


def show(image: np.ndarray, name: str, zoom: int = 3) -> None:
    """Save ``image`` (uint8 [H, W, 3]) as OUT/name.png, enlarged ``zoom`` times because the example
    renders are tiny; in Jupyter also show it inline."""
    path = OUT / f"{name}.png"
    iio.imwrite(path, image.repeat(zoom, 0).repeat(zoom, 1))
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # plain Python without IPython: the file is the output
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Image(filename=str(path)))
    else:
        print(f"wrote {path}")


def zoomed(camera: Cameras, factor: int = 2) -> Cameras:
    """``camera`` [1] with ``factor`` times the pixels over the same view. Splats are 3D, so an avatar
    fitted at 64 px renders at any size (sharper than an enlarged 64 px image)."""
    K = camera.Ks.clone()
    K[:, :2] *= factor  # focal lengths and principal point, in pixels
    return Cameras(camera.viewmats, K, camera.width * factor, camera.height * factor)


# %% [markdown]
# ## A small avatar
#
# `synthetic_clip` renders the default head's scripted performance together with everything the
# pipeline would otherwise estimate (mattes, exact FLAME parameters and cameras, parsing), and
# `fit_avatar` is the optimisation `Avatar.from_video` runs after tracking. 40 steps at 64 px: blurry,
# but enough to see it move.

# %%
device = resolve_device("auto")  # CUDA when present (gsplat renderer), else the CPU (TorchRenderer)
model = FlameModel.load().to(device)
renderer = renderer_for(device)
data = synthetic_clip(model, renderer, n_frames=16, resolution=64)
fit = fit_avatar(data, model, renderer, ReconstructConfig.preset("tiny", steps=40, resolution=64), progress=False)
avatar = Avatar(fit.avatar, fit.model, fit.params, data.cameras, {"source": "synthetic clip"}, data)
print(f"{avatar.gaussians.num_splats} splats; {avatar.params.batch_size} frames")

# %% [markdown]
# ## Driven by another clip's tracking
#
# A second video with different motion — the head turns the other way, talks more and does not
# smile — goes through the real preprocessing and tracker (`preprocess`, `track`), exactly as a
# video of another person would. `animate` keeps the avatar's identity (FLAME shape) and framing and
# takes the other clip's expressions, jaw and head pose, frame by frame.

# %%
from dynavatar.perceive import FrameDataset, PreprocessConfig, preprocess
from dynavatar.track import TrackerConfig, track

other = scripted_performance(model, n_frames=12, depth=0.75)  # FlameParams [12], on the CPU
t = torch.linspace(0, 1, 12)
other.rotation[:, 1] = -0.35 * torch.sin(2 * np.pi * t)  # turn the other way
other.jaw[:, 0] = 0.2 * torch.sin(4 * np.pi * t).abs()  # talk: the jaw opens and closes twice
other.expr.zero_()  # no blinks or smile
frames, _ = render_head_frames(model, other.to(device), renderer, resolution=128)
video = write_video(OUT / "other_clip.mp4", list(frames), fps=12)

preprocess(video, OUT / "other_data", config=PreprocessConfig(resolution=64, parse=False), progress=False)
tracking = track(FrameDataset.load(OUT / "other_data"), config=TrackerConfig.preset("tiny"), progress=False)
print(tracking.summary())

driven = avatar.animate(tracking)  # list of uint8 [H, W, 3], one per frame of the other clip
write_video(OUT / "reenacted.mp4", driven, fps=12)
small = [frame[::2, ::2] for frame in frames[::3]]  # the driving clip, at the avatar's 64 px
show(np.concatenate([np.concatenate(small, 1), np.concatenate(driven[::3], 1)], 0), "reenacted")

# %% [markdown]
# ## FLAME parameters by hand
#
# `FlameParams` holds per-frame `shape` (identity), `expr` (expression components), `rotation`
# (the head's global rotation, axis-angle in radians), `neck`, `jaw`, `eyes` and `translation`.
# Start from one frame's parameters and change a field: `render(params=...)` draws any of them.
# The default head names its expression components (`model.expr_names`); a real FLAME file's are
# anonymous PCA components, set by index.

# %%
neutral = avatar.params[0].replace(expr=torch.zeros_like(avatar.params.expr[:1]))  # FlameParams [1]
names = avatar.model.expr_names[: neutral.expr.shape[1]]
print(len(names), "expression components, e.g.", names[:6])


def with_expression(params, **weights: float):
    """``params`` [1] with the named expression components set (e.g. smile_L=1.0)."""
    expr = params.expr.clone()
    for name, weight in weights.items():
        expr[:, names.index(name)] = weight
    return params.replace(expr=expr)


def with_jaw(params, opening: float):
    jaw = params.jaw.clone()
    jaw[:, 0] = opening  # radians about the jaw joint's x axis: positive opens the mouth
    return params.replace(jaw=jaw)


def turned(params, yaw: float):
    rotation = params.rotation.clone()
    rotation[:, 1] += yaw  # radians about the vertical axis
    return params.replace(rotation=rotation)


poses = {
    "neutral": neutral,
    "jaw open": with_jaw(neutral, 0.3),
    "head turned": turned(neutral, 0.6),
    "smile": with_expression(neutral, smile_L=1.0, smile_R=1.0),
    "brows up, eyes shut": with_expression(neutral, brow_inner_up_L=1.0, brow_inner_up_R=1.0,
                                           blink_L=1.0, blink_R=1.0),
}
print(" | ".join(poses))
close = zoomed(avatar.cameras[0])  # 128 px: small expressions are easier to see
show(np.concatenate([avatar.render(params=p, camera=close) for p in poses.values()], axis=1), "by_hand", zoom=2)

# %% [markdown]
# ## Export a posed frame as .ply
#
# `export_ply` binds the splats to one posed mesh and writes world-space splats in the standard 3DGS
# layout (positions, log-scales, rotations, opacity logits, SH colour) that 3DGS viewers and tools
# read. `dynavatar export AVATAR -o avatar.ply --frame N` does the same for a saved avatar.

# %%
pose = poses["jaw open"]
vertices = avatar.model(pose.to(avatar.device), landmark_set=None).vertices[0]  # [V, 3] posed mesh
ply = export_ply(avatar.gaussians, OUT / "jaw_open.ply", vertices=vertices, faces=avatar.model.faces)
back = read_ply(ply)
print(f"{ply}: {back.means.shape[0]} splats, SH degree {back.sh_degree}, {ply.stat().st_size / 1e6:.1f} MB")
assert back.means.shape[0] == avatar.gaussians.num_splats

# %% [markdown]
# ## Render speed (CUDA only)
#
# An animated frame is FLAME + `bind` + rasterisation. `dynavatar bench render` times that path
# against gsplat's raw `rasterization()` on the same splats (the ratio is the share of raw gsplat
# speed the whole path keeps). gsplat has no CPU rasteriser, so on a CPU there is nothing to compare.

# %%
if torch.cuda.is_available():
    from dynavatar.bench.render import format_table, run_render_bench

    print(format_table(run_render_bench(splat_counts=(100_000,), batches=(1,), resolution=512, iters=20)))
else:
    print("no CUDA device: the render benchmark (FLAME + bind + gsplat vs raw gsplat) needs a GPU; skipped")
