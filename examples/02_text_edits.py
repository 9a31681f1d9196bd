# %% [markdown]
# # 02 · Text edits: "red hair", "make her smile", "add a hat"
#
# An edit starts as words and becomes an `EditPlan` (`avatar.plan(...)`): which labelled regions it
# touches, what to do there, a colour, an expression, and which editor will run it and whether that
# editor can run on this machine. `avatar.edit(...)` then returns a **new** avatar (the original is
# untouched), so edits chain and you can always compare before with after:
#
# * colour/material edits ("red hair") recolour only the splats labelled with the region, so the
#   edit holds in every frame, expression and viewpoint;
# * expression edits ("make her smile") change FLAME's expression parameters, not the splats;
# * edits that add or reshape things ("add a hat") need an image-diffusion editor (InstructPix2Pix)
#   whose weights are not part of the install; the plan says so before anything runs.
#
# Runs offline on a CPU in about a minute, on a small avatar fitted to a synthetic clip of the
# embedded default head (notebook 01 shows the full `from_video` route). Outputs go into
# `$DYNAVATAR_EXAMPLES_OUT/02_text_edits` (default `example-output/...`).

# %%
import os

# Nothing in this notebook downloads: without this line the hat edit below would fetch
# InstructPix2Pix (~4 GB) on first use. Set HF_HUB_OFFLINE=0 to allow it (and run that edit on a GPU).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from dynavatar import Avatar, DynavatarError, FlameModel
from dynavatar.device import resolve_device
from dynavatar.edit import EditConfig
from dynavatar.geometry.cameras import Cameras
from dynavatar.reconstruct import ReconstructConfig, fit_avatar
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render import renderer_for

OUT = Path(os.environ.get("DYNAVATAR_EXAMPLES_OUT", "example-output")) / "02_text_edits"
OUT.mkdir(parents=True, exist_ok=True)


def show(image: np.ndarray, name: str, zoom: int = 1) -> None:
    """Save ``image`` (uint8 [H, W, 3]) as OUT/name.png, enlarged ``zoom`` times; in Jupyter also show
    it inline."""
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


def zoomed(camera: Cameras, factor: int = 3) -> Cameras:
    """``camera`` [1] with ``factor`` times the pixels over the same view. Splats are 3D, so an avatar
    fitted at 64 px renders at any size (sharper than an enlarged 64 px image)."""
    K = camera.Ks.clone()
    K[:, :2] *= factor  # focal lengths and principal point, in pixels
    return Cameras(camera.viewmats, K, camera.width * factor, camera.height * factor)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """bool or [0, 1] mask [H, W] -> uint8 [H, W, 3], white where set."""
    return np.repeat((np.asarray(mask, dtype=np.float32)[..., None] * 255).round().astype(np.uint8), 3, axis=2)


# %% [markdown]
# ## A small, labelled avatar
#
# `synthetic_clip` renders the default head's scripted performance with everything the pipeline would
# otherwise estimate (mattes, FLAME parameters, cameras and a face parsing per frame), and
# `fit_avatar` is the optimisation `Avatar.from_video` runs after tracking. `label_splats` then gives
# every splat a soft label (hair, skin, lips, eyes, ...) from the parsed frames — that is what the
# edits address. 30 fitting and 20 label-refinement steps keep it CPU-sized (`from_video` refines
# the labels for 300).

# %%
device = resolve_device("auto")  # CUDA when present (gsplat renderer), else the CPU (TorchRenderer)
model = FlameModel.load().to(device)
renderer = renderer_for(device)
data = synthetic_clip(model, renderer, n_frames=10, resolution=64)
fit = fit_avatar(data, model, renderer, ReconstructConfig.preset("tiny", steps=30, resolution=64), progress=False)
avatar = Avatar(fit.avatar, fit.model, fit.params, data.cameras, {"source": "synthetic clip"}, data)
avatar.label_splats(refine_steps=20, progress=False)
print(f"{avatar.gaussians.num_splats} splats; {int(avatar.select('hair').sum())} labelled hair, "
      f"{int(avatar.select(['left_eye', 'right_eye']).sum())} eyes")

# %% [markdown]
# ## Labels and masks
#
# `render_labels` draws each pixel's most likely label over the render, `render_masks` gives the
# label probabilities ([17, H, W], names in `avatar.label_names`) and `label_mask` one label or group
# ("hair", "lips", "eyes"...) as a boolean image — at any frame, or at any FLAME parameters and camera.

# %%
frame = int(data.eval_idx[0])  # a held-out frame: the fit never saw it
view = zoomed(avatar.cameras[frame])
masks = avatar.render_masks(frame=frame)  # float32 [17, 64, 64], sums to 1 over the labels
print("most common labels:", [avatar.label_names[i] for i in np.argsort(-masks.sum((1, 2)))[:5]])
show(np.concatenate([avatar.render(frame=frame, camera=view), avatar.render_labels(frame=frame, camera=view),
                     mask_image(avatar.label_mask("hair", frame=frame, camera=view))], axis=1), "labels")

# %% [markdown]
# ## "red hair": plan, then edit
#
# `plan` runs only the prompt refiner: the offline rules here (`refiner="auto"` would use a local LLM
# or an OpenAI-compatible endpoint when one is configured). Read it before spending compute: a typo
# shows up as an ignored word.
#
# The palette editor recolours the region's splats in a perceptual colour space (OKLab), keeping
# their shading. By default 300 optimisation steps then refine the region against edited keyframes
# (`EditConfig()`, meant for a GPU); `steps=0` keeps the recolouring alone, which is what a CPU
# affords in a notebook. A 30-step avatar is unsure about some splats along the hairline, so here
# only splats at least 80 % sure to be hair are recoloured (`region_threshold`, default 0.5).

# %%
quick = EditConfig(steps=0, region_threshold=0.8)
print(avatar.plan("red hair", refiner="rule").summary())
red = avatar.edit("red hair", refiner="rule", config=quick, progress=False)
before, after = avatar.render(frame=frame, camera=view), red.render(frame=frame, camera=view)
outside = ~avatar.label_mask("hair", frame=frame, camera=view)
print(f"pixels outside the hair moved by {np.abs(after.astype(int) - before)[outside].mean():.2f}/255 on average")
show(np.concatenate([before, after], axis=1), "red_hair")

# %% [markdown]
# ## Chaining: red hair, then blue eyes
#
# `edit` returns a new avatar, so edits chain; the edited avatar keeps its labels and records every
# edit in `meta["edits"]`. (One prompt with two requests, "red hair and blue eyes", is split into the
# same two edits.) The irises are a few pixels wide, hence the close-up camera.

# %%
print(red.plan("blue eyes", refiner="rule").summary())
red_blue = red.edit("blue eyes", refiner="rule", config=quick, progress=False)
print([e["prompt"] for e in red_blue.meta["edits"]])
show(np.concatenate([before, after, red_blue.render(frame=frame, camera=view)], axis=1), "red_hair_blue_eyes")

# %% [markdown]
# ## "make her smile": an expression edit
#
# Expression plans add FLAME expression components (and jaw) to every frame's parameters; the splats
# are the same. Frame 0 is neutral in the clip. The default head's smile is a small movement of the
# mouth corners, so the third image shows the change, four times amplified.

# %%
print(avatar.plan("make her smile", refiner="rule").summary())
smiling = avatar.edit("make her smile", refiner="rule", progress=False)
close = zoomed(avatar.cameras[0])
neutral, smile = avatar.render(frame=0, camera=close), smiling.render(frame=0, camera=close)
change = np.clip(4 * np.abs(smile.astype(int) - neutral), 0, 255).astype(np.uint8)
show(np.concatenate([neutral, smile, change], axis=1), "smile")

# %% [markdown]
# ## "add a hat": what the offline install cannot do
#
# Adding an object is not a recolouring: it needs InstructPix2Pix (or SD inpainting). The plan says
# which editor would run and whether its weights are here; offline and uncached, `edit` stops at once
# with a one-line `DynavatarError` that names the weights and the command that fetches them
# (`dynavatar download ip2p`) — no half-finished edit. `plan` takes the same `editor=` and `method=`
# as `edit`, so you can ask about the other backends too.

# %%
from dynavatar.hub import weights_status

hat = avatar.plan("add a hat", refiner="rule")  # an EditPlan; edit() takes it as well as words
print(hat.summary())
if weights_status("ip2p", probe=False).state == "present":
    print("InstructPix2Pix is cached here: avatar.edit(hat) would run it (give it a GPU)")
else:
    try:
        hatted = avatar.edit(hat, progress=False)
        print("edited offline by", hatted.meta["edits"][-1]["editor"])
    except DynavatarError as exc:
        print(f"{type(exc).__name__}: {exc}")
