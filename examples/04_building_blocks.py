# %% [markdown]
# # 04 · Building blocks for your own research code
#
# `Avatar` wires the stages together, but each stage is a plain importable piece with tensors in and
# dataclasses out. This notebook uses them one at a time, without fitting anything:
#
# 1. the FLAME layer — `FlameModel.load()`, a forward pass, vertices / joints / landmarks;
# 2. `bind()` — splats defined in their triangles' frames, placed on a posed mesh;
# 3. the two renderers — `TorchRenderer` (pure PyTorch, any device) and `GsplatRenderer` (CUDA);
# 4. the offline face parser — `LandmarkParser` on a frame;
# 5. masks through time and pose — the exact route and the learned `MaskMapper`.
#
# CPU, about a minute. Outputs go into `$DYNAVATAR_EXAMPLES_OUT/04_building_blocks`
# (default `example-output/...`).

# %%
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

OUT = Path(os.environ.get("DYNAVATAR_EXAMPLES_OUT", "example-output")) / "04_building_blocks"
OUT.mkdir(parents=True, exist_ok=True)


def show(image: np.ndarray, name: str, zoom: int = 2) -> None:
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


# %% [markdown]
# ## 1. The FLAME layer
#
# `FlameModel.load()` resolves the head model: `DYNAVATAR_FLAME` or a path you pass (FLAME 2020 /
# 2023 / 2023 Open, `.pkl` or `.npz`, loaded without chumpy), else the embedded default head. The
# model is stateless: it holds buffers, and a forward pass maps `FlameParams` [B] to a
# `FlameOutput` — posed vertices in metres, the five joints (global, neck, jaw, eyes) and, for a
# named landmark set, landmark points on the posed surface.

# %%
from dynavatar import FlameModel, FlameParams

model = FlameModel.load()
print(f"{model.source}: {model.v_template.shape[0]} vertices, {model.faces.shape[0]} triangles, "
      f"{model.n_shape} shape and {model.n_expr} expression components, landmark sets {list(model.landmark_sets)}")

params = FlameParams.zeros(2, model.n_shape, model.n_expr)  # two frames, all zero: the mean head at rest
params.jaw[1, 0] = 0.3  # frame 1: jaw open 0.3 rad
params.translation[:, 1] = 0.02  # the tracker's convention: camera at the origin, head 0.75 m in front
params.translation[:, 2] = -0.75
out = model(params, landmark_set="mediapipe")
print("vertices", tuple(out.vertices.shape), "joints", tuple(out.joints.shape),
      "landmarks", tuple(out.landmarks.shape))  # [2, V, 3], [2, 5, 3], [2, 478, 3]
chin = out.landmarks[:, 152]  # [2, 3]: mediapipe's point 152 is the tip of the chin
print(f"opening the jaw moves the chin {1000 * float((chin[1] - chin[0]).norm()):.1f} mm")

# %% [markdown]
# ## 2. Binding splats to triangles
#
# A `GaussianAvatar` keeps each splat in the local frame of the triangle it is bound to (position,
# rotation, log-scale, opacity, SH colour, semantic labels). `bind` places them on posed meshes:
# for triangle (v0, v1, v2) the frame is R = [e, n, e×n] with e along v1 − v0 and n the normal, the
# scale k follows the triangle's size, and a splat's world position is k R μ + centroid. Move the
# mesh and every splat follows; this is how the avatar animates. Here one splat per triangle, at its
# centroid, coloured by the head's regions.

# %%
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh
from dynavatar.gaussians.binding import bind
from dynavatar.reconstruct.synthetic import face_albedo

splats = GaussianAvatar.init_on_mesh(model.faces.shape[0], splats_per_face=1, init_scale=0.55, init_opacity=0.97)
splats.sh[:, 0] = rgb_to_sh(face_albedo(model))  # [N, 3] flat colour per region of the head
world = bind(splats, out.vertices, model.faces)  # WorldGaussians for both frames
print("means", tuple(world.means.shape), "quats", tuple(world.quats.shape), "scales", tuple(world.scales.shape))
centroids = out.vertices[:, model.faces].mean(2)  # [2, F, 3]
print("local origin = triangle centroid:", torch.allclose(world.means, centroids, atol=1e-6))

# %% [markdown]
# ## 3. Two renderers, one protocol
#
# Both take `WorldGaussians` and OpenCV-convention `Cameras` (world-to-camera `viewmats` [C, 4, 4],
# intrinsics `Ks` [C, 3, 3] in pixels) and return a `RenderOutput` (rgb [C, H, W, 3], alpha, screen
# positions, radii, optional extra feature channels). `TorchRenderer` reproduces gsplat's image
# formation in differentiable PyTorch, so the CPU — CI, laptops — runs everything; `GsplatRenderer`
# is gsplat's CUDA rasteriser. On a GPU the two agree to float rounding.

# %%
from dynavatar.geometry.cameras import Cameras
from dynavatar.reconstruct.synthetic import crop_camera
from dynavatar.render import TorchRenderer

one = crop_camera(96)  # the crop camera the synthetic clips use, 96 x 96 px
cameras = Cameras(one.viewmats.expand(2, 4, 4), one.Ks.expand(2, 3, 3), 96, 96)  # one camera per frame
white = torch.ones(3)
cpu_render = TorchRenderer().render(world, cameras, background=white)
print("rgb", tuple(cpu_render.rgb.shape), "alpha", tuple(cpu_render.alpha.shape))
images = (cpu_render.rgb.clamp(0, 1) * 255).round().byte().numpy()  # uint8 [2, 96, 96, 3]
show(np.concatenate(list(images), axis=1), "torch_renderer")

if torch.cuda.is_available():
    from dynavatar.render import GsplatRenderer

    gpu_render = GsplatRenderer().render(bind(splats.to("cuda"), out.vertices.cuda(), model.faces.cuda()),
                                         cameras.to("cuda"), background=white.cuda())
    print("gsplat vs TorchRenderer, largest pixel difference:",
          float((gpu_render.rgb.cpu() - cpu_render.rgb).abs().max()))
else:
    print("no CUDA device: GsplatRenderer (gsplat's CUDA rasteriser) skipped")

# %% [markdown]
# ## 4. The offline face parser
#
# `LandmarkParser` labels every pixel with the project's 17 labels (skin, brows, eyes, nose, lips,
# mouth interior, hair, ears, neck, clothes...) from mediapipe's 478-point face mesh, a matte and
# colour statistics, all offline (`FacerParser` is the learned FaRL backend). It finds the landmarks
# itself; here it gets the matte the renderer already knows (on a real photo, mediapipe's selfie
# segmentation makes one). We parse a frame of the default head's synthetic clip, whose true labels
# are known, and count how often the parser agrees.

# %%
from dynavatar.perceive import LandmarkParser, colourise, parse_to_labels
from dynavatar.reconstruct.synthetic import render_head_frames, render_label_maps, scripted_performance

clip = scripted_performance(model, n_frames=8, depth=0.75)  # FlameParams [8]: turn, nod, talk, blink, smile
frames, mattes = render_head_frames(model, clip[2:3], TorchRenderer(), resolution=128)  # uint8 [1, 128, 128, 3]
probs = LandmarkParser().parse(frames, mattes=mattes / 255.0)  # float32 [1, 17, 128, 128], sums to 1
labels = parse_to_labels(probs)[0]  # uint8 [128, 128]
truth = render_label_maps(model, clip[2:3], TorchRenderer(), resolution=128)[0]
face = truth > 0
print(f"the parser agrees with the true labels on {(labels == truth)[face].mean():.0%} of the head's pixels")
show(np.concatenate([frames[0], colourise(labels), colourise(truth)], axis=1), "parser", zoom=1)  # frame | parser | truth

# %% [markdown]
# ## 5. A mask drawn once, carried through time and pose
#
# The pieces above make an `Avatar` without any fitting: the region-coloured splats, the head model,
# the clip's parameters and cameras, and labels from the head model's regions. A mask drawn on one
# frame (here: the lips, from the labels) then maps to any frame and head turn:
#
# * **exact route** (`map_mask`): the splats under the mask, rendered at the new time and pose;
# * **learned route** (`map_mask(..., learned=True)` or `semantics.fit_mask_mapper`): a small
#   `MaskMapper` network trained on exact-route masks, which then predicts a mask for any
#   (t, yaw, pitch) without rendering. The config below is the smallest that runs in seconds on a
#   CPU, so its IoU against the exact route is modest; `MaskMapperConfig.preset("fast")` or
#   `"quality"` (on a GPU) is what `dynavatar bench mask` measures.

# %%
from dynavatar import Avatar
from dynavatar.semantics import MaskMapperConfig
from dynavatar.semantics.avatar_labels import labels_from_head_regions

clip_cams = crop_camera(64)
clip_cams = Cameras(clip_cams.viewmats.expand(8, 4, 4), clip_cams.Ks.expand(8, 3, 3), 64, 64)
splats.labels, info = labels_from_head_regions(splats.binding, model)  # [N, 17] soft labels
head = Avatar(splats, model, clip, clip_cams, {"labels": info})

lips = head.label_mask("lips", frame=4)  # bool [64, 64]: drawn on frame 4 (any painted mask works too)
exact, exact_info = head.map_mask(lips, frame=4, yaw=0.4, video=OUT / "lips_exact.mp4", progress=False)
print(f"exact route: {exact_info['splats']} splats under the mask; masks {exact.shape}")  # [8, 64, 64]

config = MaskMapperConfig.preset("tiny", mask_size=32, steps=120, bank_size=96, box_steps=200, val_size=0)
learned, learned_info = head.map_mask(lips, frame=4, yaw=0.4, learned=True, config=config,
                                      video=OUT / "lips_learned.mp4", progress=False)
print(f"learned route: IoU against the exact route on held-out (t, pose): mean {learned_info['iou_mean']:.2f}")

# the clip turned by 0.4 rad with each route's masks tinted red: exact (top), learned (bottom)
rows = [np.concatenate(list(iio.imread(OUT / name)[[0, 4, 7]]), axis=1) for name in ("lips_exact.mp4", "lips_learned.mp4")]
show(np.concatenate(rows, axis=0), "mask_routes")
