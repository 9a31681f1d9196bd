# %% [markdown]
# # 01 · Quickstart: from a video to an animatable avatar
#
# dynavatar turns a video of a head into an avatar made of Gaussian splats bound to the triangles of
# the FLAME head model, so it moves wherever FLAME's parameters move the mesh. This notebook runs the
# whole chain — `Avatar.from_video` (preprocess → track → fit), `evaluate`, a turn-around render,
# `save` and `load` — on a CPU in about a minute. To be that quick it takes two short cuts:
#
# * the **embedded default head** (a FLAME-format head that ships with dynavatar, so no FLAME licence
#   is needed) performs a short scripted sequence, and we render that as the input video;
# * the `tiny` preset at 64 px with 40 optimisation steps, where a real fit uses `preset="fast"`
#   (512 px, 9k steps: a few minutes on one GPU).
#
# On your own video it is one line:
#
# ```python
# avatar = Avatar.from_video("clip.mp4", out_dir="runs/clip", preset="fast")
# ```
#
# Every file this notebook writes goes into `$DYNAVATAR_EXAMPLES_OUT/01_quickstart`
# (default `example-output/01_quickstart`).

# %%
import dataclasses
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from dynavatar import Avatar, FlameModel, PipelineConfig
from dynavatar.io.video import write_video
from dynavatar.reconstruct.synthetic import render_head_frames, scripted_performance
from dynavatar.render import TorchRenderer

OUT = Path(os.environ.get("DYNAVATAR_EXAMPLES_OUT", "example-output")) / "01_quickstart"
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


# %% [markdown]
# ## A video to start from
#
# `scripted_performance` gives FLAME parameters for 20 frames of the default head turning, nodding,
# talking, blinking and smiling; `render_head_frames` draws the head as shaded splats, one per
# triangle. The result is an ordinary mp4, the same kind of file as a phone video (the pipeline does
# not know where it came from).

# %%
model = FlameModel.load()  # the embedded default head; DYNAVATAR_FLAME=path/to/flame.pkl selects a real FLAME
performance = scripted_performance(model, n_frames=20, depth=0.75)  # FlameParams [20], head 0.75 m away
frames, _ = render_head_frames(model, performance, TorchRenderer(), resolution=128)  # uint8 [20, 128, 128, 3]
clip = write_video(OUT / "clip.mp4", list(frames), fps=24)
show(np.concatenate(list(frames[::4]), axis=1), "clip", zoom=1)

# %% [markdown]
# ## The pipeline's settings
#
# `PipelineConfig` holds one config per stage (preprocessing, tracking, reconstruction) and named
# presets; `dataclasses.replace` changes single fields. Two changes make this run CPU-sized:
#
# * 64 px crops and 40 steps instead of the `tiny` preset's 512 px crops and 300 steps;
# * `parse=False`: face parsing labels every pixel (hair, lips, eyes...) so that the splats get
#   semantic labels, which text edits use (notebook 02). Without it the splats are labelled from
#   the head model's regions, and `from_dataset` skips the few hundred label-refinement steps that
#   would take most of this notebook's time on a CPU.

# %%
pipe = PipelineConfig.preset("tiny")
pipe = dataclasses.replace(
    pipe,
    preprocess=dataclasses.replace(pipe.preprocess, resolution=64, parse=False),
    reconstruct=dataclasses.replace(pipe.reconstruct, resolution=64, steps=40),
)
print(pipe.reconstruct.steps, "steps at", pipe.reconstruct.resolution, "px;", "tracker:", pipe.track.steps, "steps")

# %% [markdown]
# ## Video → avatar
#
# `from_video` crops the head in every frame, finds 478 landmarks and a matte (mediapipe, offline),
# tracks FLAME parameters and a camera per frame, then optimises the splats against the frames.
# `out_dir` keeps all of it: the preprocessed frames and the tracking are cached there, and a killed
# fit resumes from its last checkpoint. `resume=False` makes every run of this notebook fit afresh.

# %%
avatar = Avatar.from_video(clip, out_dir=OUT / "run", config=pipe, resume=False, progress=False)
print(f"{avatar.gaussians.num_splats} splats on {avatar.model.faces.shape[0]} triangles, "
      f"fitted in {avatar.meta['fit_seconds']:.0f} s; labels from {avatar.meta['labels']['source']}")

# %% [markdown]
# ## How good is it?
#
# The last 10 % of the frames were held out of the fit. `evaluate()` renders the avatar at those
# frames' tracked poses and compares with the video (PSNR, SSIM; LPIPS when its weights are cached).
# 40 steps give a blurry avatar; the `fast` preset on a GPU reaches 30+ dB on real clips
# (docs/benchmarks.md).

# %%
metrics = avatar.evaluate()
print({k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()})
for index, target, matte, rendered in avatar.eval_frames():
    show(np.concatenate([target, rendered], axis=1), f"held_out_{index}")  # video frame | avatar

# %% [markdown]
# ## Render any pose
#
# `render(params=...)` takes any FLAME parameters. Here the first frame's parameters with the head
# turned about the vertical axis (`rotation[:, 1]`, radians): a turn-around no camera ever saw.
# `render_video` writes the clip itself, the real frame beside the avatar's.

# %%
def turned(params, yaw: float):
    """``params`` [1] with the head turned by ``yaw`` radians (left/right)."""
    rotation = params.rotation.clone()
    rotation[:, 1] += yaw
    return params.replace(rotation=rotation)


first = avatar.params[0]  # FlameParams [1]: the clip's first frame
turn = [avatar.render(params=turned(first, float(yaw))) for yaw in np.linspace(-0.6, 0.6, 13)]
write_video(OUT / "turnaround.mp4", turn, fps=12)
show(np.concatenate(turn[::3], axis=1), "turnaround")
avatar.render_video(OUT / "side_by_side.mp4")

# %% [markdown]
# ## Save and load
#
# `save` writes safetensors + JSON (no pickle). A loaded avatar remembers the dataset it was fitted
# to and reads those frames back when it needs them, so `evaluate()` after `load` gives the same
# figures; `Avatar.load(folder, data=...)` points it at a dataset folder that has moved.

# %%
folder = avatar.save(OUT / "avatar")
loaded = Avatar.load(folder)
again = loaded.evaluate()
print(f"saved in {folder}; held-out PSNR {metrics['psnr']:.2f} dB before, {again['psnr']:.2f} dB after loading")
assert abs(again["psnr"] - metrics["psnr"]) < 0.01, "the loaded avatar should evaluate like the fitted one"
