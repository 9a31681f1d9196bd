"""The ``Avatar`` facade: thin, no algorithms — it wires perceive -> track -> reconstruct -> render.

>>> from dynavatar import Avatar
>>> avatar = Avatar.from_video("clip.mp4", out_dir="runs/clip", preset="fast")
>>> avatar.evaluate()            # held-out PSNR/SSIM (last 10 % of frames, never trained on)
>>> avatar.render_video("out.mp4")
>>> avatar.save("runs/clip/avatar"); Avatar.load("runs/clip/avatar")

Every method hands its work to a stage: the pipeline's settings are ``config.PipelineConfig``, the
tracking cache ``track.cache``, the motion that poses the clip ``reconstruct.motion``, labels and
masks ``semantics`` (``avatar_labels``, ``mask_video``), the folder layout ``io.avatar_files``, the
training curve ``bench.plots``. Editing (``dynavatar.edit``) loads only when an edit is asked for.

Importing this module is cheap (stdlib and numpy): torch and the stages load on the first method
call that needs them (``_Lazy``), so ``from dynavatar import Avatar`` takes a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .device import resolve_device
from .errors import AvatarFileError, DynavatarError
from .geometry.labels import LABEL_NAMES, label_index

if TYPE_CHECKING:
    from .flame import FlameModel, FlameParams
    from .gaussians.avatar import GaussianAvatar
    from .geometry.cameras import Cameras
    from .reconstruct import TrainData

__all__ = ["Avatar"]

logger = logging.getLogger("dynavatar")

_NO_DATASET = ("this avatar records no dataset (it was not fitted by Avatar.from_video / from_dataset), "
               "so it has no frames to compare with")


class _Lazy:
    """A module, or one name in a module, imported when first used (called or an attribute read).

    ``from dynavatar import Avatar`` must not import torch (a second or more) or any stage: the
    facade's own imports are stdlib and numpy, and every stage it wires is one of these stand-ins.
    Each is a module global, so a test can still replace ``api.preprocess`` with ``monkeypatch``."""

    __slots__ = ("_module", "_name", "_value")

    def __init__(self, module: str, name: str | None = None) -> None:
        self._module, self._name, self._value = module, name, None

    def _load(self):
        if self._value is None:
            mod = importlib.import_module(self._module, __package__)
            self._value = mod if self._name is None else getattr(mod, self._name)
        return self._value

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):  # introspection (inspect.unwrap, doctest, copy)
            raise AttributeError(attr)  # must not import anything
        return getattr(self._load(), attr)

    def __call__(self, *args, **kwargs):
        return self._load()(*args, **kwargs)


def _lazy(module: str, *names: str) -> tuple[_Lazy, ...]:
    """Several names of one module (unpacked in the same order)."""
    return tuple(_Lazy(module, n) for n in names)


torch = _Lazy("torch")
save_training_plot = _Lazy(".bench.plots", "save_training_plot")
PipelineConfig = _Lazy(".config", "PipelineConfig")
bind = _Lazy(".gaussians.binding", "bind")
atomic_path = _Lazy(".io.atomic", "atomic_path")
load_avatar, save_avatar = _lazy(".io.avatar_files", "load_avatar", "save_avatar")
write_video = _Lazy(".io.video", "write_video")
FrameDataset, overlay, preprocess = _lazy(".perceive", "FrameDataset", "overlay", "preprocess")
evaluate, fit_avatar, load_train_data, reenactment_params, training_motion = _lazy(
    ".reconstruct", "evaluate", "fit_avatar", "load_train_data", "reenactment_params", "training_motion")
split_train_eval = _Lazy(".reconstruct.data", "split_train_eval")
track_driving_clip = _Lazy(".reconstruct.drive", "track_driving_clip")
data_parallel = _Lazy(".reconstruct.distributed", "data_parallel")
check_dataset, dataset_record, reattach_frames, recorded_dataset = _lazy(
    ".reconstruct.reattach", "check_dataset", "dataset_record", "reattach_frames", "recorded_dataset")
RefineTrackingConfig, track_untrained_frames = _lazy(".reconstruct.refine_tracking", "RefineTrackingConfig",
                                                    "track_untrained_frames")
renderer_for = _Lazy(".render", "renderer_for")
MaskMapperConfig, fit_mask_mapper, render_label_masks, render_selection, selection_from_mask = _lazy(
    ".semantics", "MaskMapperConfig", "fit_mask_mapper", "render_label_masks", "render_selection",
    "selection_from_mask")
label_group_indices, labels_from_head_regions, labels_from_parsing = _lazy(
    ".semantics.avatar_labels", "label_group_indices", "labels_from_head_regions", "labels_from_parsing")
clip_frames, exact_route_masks, learned_route_masks, turned_clip, write_mask_video = _lazy(
    ".semantics.mask_video", "clip_frames", "exact_route_masks", "learned_route_masks", "turned_clip",
    "write_mask_video")
cached_tracking, tracked_head = _lazy(".track", "cached_tracking", "tracked_head")


def _no_grad(fn):
    """``@torch.no_grad()`` that imports torch when the method runs, not when the class is defined."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper


def _image(rgb: "torch.Tensor") -> np.ndarray:
    """float [H, W, 3] in [0, 1] -> uint8 [H, W, 3]"""
    return (rgb.clamp(0, 1) * 255).round().byte().cpu().numpy()


@dataclasses.dataclass
class Avatar:
    """A FLAME-bound Gaussian avatar with the clip it was fitted to (if any)."""

    gaussians: GaussianAvatar
    model: FlameModel
    params: FlameParams  # [N] per-frame parameters of the training clip (tracked + refined)
    cameras: Cameras  # [N] the clip's cameras, at ``resolution``
    meta: dict
    data: object | None = None  # TrainData when the frames are at hand (evaluation, side-by-side videos);
    #                             a loaded avatar reads them back from its dataset on first use (``frame_data``)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    # ------------------------------------------------------------------ construction and I/O
    @classmethod
    def from_video(cls, path: str | os.PathLike, *, head=None, out_dir=None, preset: str = "fast",
                   device: str = "auto", max_frames: int | None = None, resolution: int | None = None,
                   progress: bool = True, config=None, resume: bool = True) -> "Avatar":
        """Preprocess (cached), track (cached), then fit. ``out_dir`` keeps all of it and lets a
        killed run resume from its last checkpoint (``resume=False`` starts over). ``config``: a ``PipelineConfig`` for every stage,
        or a ``ReconstructConfig`` that replaces the preset's reconstruction; ``resolution`` (crop
        side, default 512) and ``max_frames`` override its preprocessing. Under ``accelerate launch``
        the processes train data-parallel over frames (``reconstruct/distributed.py``); only the main
        one preprocesses, tracks and labels."""
        pipe = PipelineConfig.resolve(config, preset, resolution=resolution, max_frames=max_frames)
        out = Path(out_dir) if out_dir else Path(str(path) + ".dynavatar")
        with data_parallel().main_first():  # the main process fills the cache, the others read it
            preprocess(path, out / "data", config=pipe.preprocess, progress=progress)
        return cls.from_dataset(out / "data", head=head, out_dir=out, device=device, progress=progress, config=pipe,
                                resume=resume)

    @classmethod
    def from_dataset(cls, dataset_dir: str | os.PathLike, *, head=None, out_dir=None, preset: str = "fast",
                     device: str = "auto", progress: bool = True, config=None, tracking=None,
                     resume: bool = True) -> "Avatar":
        """Fit to a preprocessed (or imported, e.g. VHAP) dataset; tracks it first unless its tracking
        is cached (``tracking`` passes a TrackingResult in instead). ``config`` as in ``from_video``;
        the resolved settings are written to ``OUT/config.json``, and the avatar's metadata records
        the dataset and the frames it was fitted to, so a saved avatar finds them again (``load``)."""
        pipe = PipelineConfig.resolve(config, preset)
        dataset_dir = Path(dataset_dir)
        out = Path(out_dir) if out_dir else dataset_dir.parent
        dp = data_parallel()
        dev = dp.device if dp.active and device == "auto" else resolve_device(device)
        ds = FrameDataset.load(dataset_dir)
        if dp.is_main:
            pipe.save(out / "config.json")
        with dp.main_first():
            if tracking is None:
                tracking = cached_tracking(ds, pipe.track, head=head, device=dev, progress=progress)
        cfg = pipe.reconstruct
        data = load_train_data(ds, tracking, cfg.resolution, cfg.eval_fraction, dev, foreground=cfg.foreground_colours, despill=cfg.despill)
        fit = fit_avatar(data, tracked_head(tracking, head), renderer_for(dev), cfg, out_dir=out, progress=progress,
                         resume=resume)
        meta = {"source": str(dataset_dir.resolve()), "preset": pipe.name, "head": tracking.head,
                "fit_seconds": fit.seconds, "history": fit.history, "frame_index": [int(i) for i in data.frame_index],
                # how a loaded avatar finds its frames
                "dataset": dataset_record(ds, data, cfg.eval_fraction, cfg.foreground_colours, cfg.despill)}
        avatar = cls(fit.avatar, fit.model, fit.params, data.cameras, meta, data, tuple(cfg.background))
        if not dp.is_main:  # the other processes' copies are identical; labelling/plots are the main's job
            return avatar
        if cfg.track_steps > 0 and len(data.eval_idx):  # photometric tracking of the frames the fit left out
            avatar.params = track_untrained_frames(fit.avatar, fit.model, fit.params, data, avatar.renderer,
                                                   cfg.track_steps, tuple(cfg.background), progress,
                                                   cfg.w_landmark_budget)
            meta["held_out_tracking"] = f"photometric tracking stage ({cfg.track_steps} steps)"
        try:
            avatar.label_splats(progress=progress)
        except DynavatarError as exc:  # a head without regions and no parsing: usable, just unlabelled
            logger.warning("splats left unlabelled: %s", exc)
        save_training_plot(meta["history"], out)
        return avatar

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the avatar into ``folder`` (``io.avatar_files``: safetensors + JSON, no pickle)."""
        return save_avatar(folder, self.gaussians, self.model, self.params, self.cameras, self.meta, self.background)

    @classmethod
    def load(cls, folder: str | os.PathLike, head=None, device: str = "auto",
             data: str | os.PathLike | None = None) -> "Avatar":
        """An avatar saved by ``save``; ``head``: the head model it was fitted to, if not the one that resolves.

        Its frames (for ``evaluate``, ``eval_frames``, side-by-side videos, labelling) are read back
        from its dataset on first use, not here: from the folder the fit recorded, or from ``data``,
        the dataset folder where it moved to, which is checked at once (``attach``)."""
        s = load_avatar(folder, head=head, device=resolve_device(device))
        avatar = cls(s.gaussians, s.model, s.params, s.cameras, s.meta, None, s.background)
        return avatar if data is None else avatar.attach(data)

    def attach(self, dataset_dir: str | os.PathLike) -> "Avatar":
        """Point this avatar at its dataset folder (moved since the fit): checked against what the
        fit recorded (frame count, crop size, source frames; AvatarFileError saying what differs) and
        recorded in ``meta``, so ``save`` keeps the new place. The frames load on first use. -> self"""
        record = recorded_dataset(self.meta)
        if record is None:
            raise DynavatarError(_NO_DATASET)
        ds = check_dataset(record, self.meta.get("frame_index"), dataset_dir)
        self.meta["dataset"] = {**record, "path": str(Path(ds.root).resolve())}
        self.meta["source"], self.data = self.meta["dataset"]["path"], None
        return self

    def frame_data(self, required: bool = True) -> "TrainData | None":
        """The clip's frames (TrainData): those the fit used, or for a loaded avatar, read back from
        its dataset the first time they are needed (``reconstruct.reattach``: the same frames, targets,
        cameras and split). Code outside the facade asks here rather than reading ``data``, which
        stays None on a loaded avatar until then. ``required``: raise a one-line error when the
        frames cannot be had; otherwise log it and return None."""
        record = recorded_dataset(self.meta) if self.data is None else None
        if self.data is None and record is None and required:
            raise DynavatarError(_NO_DATASET)
        if record is not None:
            try:
                self.data = reattach_frames(record, self.meta.get("frame_index"), self.cameras, self.device)
            except AvatarFileError as exc:
                if required:
                    raise
                logger.warning("%s", exc)
        return self.data

    def view(self, port: int = 8080, host: str = "127.0.0.1", device: str = "auto", block: bool = True, **kw):
        """Open this avatar in the browser viewer (``dynavatar.view.serve``; ``pip install 'dynavatar[view]'``)."""
        from .view import serve

        return serve(self, port=port, host=host, device=device, block=block, **kw)

    # ------------------------------------------------------------------ the clip
    @property
    def resolution(self) -> int:
        return int(self.cameras.width)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means_local.device

    @property
    def renderer(self):
        """The renderer for the avatar's device (``render.renderer_for``)."""
        return renderer_for(self.device)

    @property
    def train_idx(self) -> torch.Tensor:
        """Indices of the clip's training frames [T] (for a loaded avatar, the split its fit recorded,
        without reading the frames)."""
        if self.data is not None:
            return self.data.train_idx
        record = recorded_dataset(self.meta) or {}
        if isinstance(record.get("train_idx"), list):
            return torch.tensor(record["train_idx"], dtype=torch.long)
        return split_train_eval(self.params.batch_size, float(record.get("eval_fraction", 0.1)))[0]

    def training_motion(self, motion: str = "tracked") -> FlameParams:
        """The clip's parameters [N] with the landmark tracker's ``"tracked"`` motion (the fitted
        identity kept) or the photometrically ``"refined"`` one (``reconstruct.motion``). The tracked
        motion of a loaded avatar comes from its dataset's tracking (read with the frames)."""
        tracked = None
        if motion == "tracked":
            data = self.frame_data()
            if data.params is None:
                raise DynavatarError(f"the tracked motion needs the tracking the avatar was fitted with "
                                     f"({self.meta.get('source')}/tracking), which is missing or was redone; "
                                     "use motion='refined'")
            tracked = data.params
        return training_motion(self.params, tracked, self.model, motion, self.device)

    # ------------------------------------------------------------------ rendering
    def _world(self, params: FlameParams):
        verts = self.model.to(self.device)(params.to(self.device), landmark_set=None).vertices
        return bind(self.gaussians, verts, self.model.faces)

    def _render_output(self, params: FlameParams, camera: Cameras, features: torch.Tensor | None = None):
        """The renderer's output for one pose, over the avatar's background (``features`` [N, D]: extra
        per-splat channels blended in the same pass)."""
        bg = torch.tensor(self.background, device=self.device)
        return self.renderer.render(self._world(params), camera.to(self.device), background=bg, features=features)

    def _pose(self, frame: int | None, params: FlameParams | None, camera: Cameras | None):
        """Resolve ``frame=`` / ``params=`` (+ optional camera) into (params [1], camera [1])."""
        if (frame is None) == (params is None):
            raise DynavatarError("give exactly one of frame= or params=")
        if frame is not None:
            if not 0 <= frame < self.params.batch_size:
                raise DynavatarError(f"frame {frame} out of range (the clip has {self.params.batch_size})")
            params = self.params[frame]
            camera = camera or self.cameras[frame]
        return params, (camera or self.cameras[0]).to(self.device)

    @_no_grad
    def render(self, frame: int | None = None, params: FlameParams | None = None,
               camera: Cameras | None = None) -> np.ndarray:
        """Render one image, uint8 [H, W, 3]: a training frame by index, or any FLAME parameters."""
        params, camera = self._pose(frame, params, camera)
        return _image(self._render_output(params, camera).rgb[0])

    @_no_grad
    def render_with_coverage(self, selected: torch.Tensor, frame: int | None = None, params: FlameParams | None = None,
                             camera: Cameras | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One pass: the render, uint8 [H, W, 3], and the ``selected`` splats' coverage, float32 [H, W]
        (a feature channel blended beside RGB)."""
        params, camera = self._pose(frame, params, camera)
        out = self._render_output(params, camera, features=selected.to(self.device).float()[:, None])
        return _image(out.rgb[0]), out.features[0, ..., 0].clamp(0, 1).cpu().numpy()

    def eval_frames(self, frames: list[int] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(frame_index, target_rgb, target_mask, rendered_rgb)`` for every held-out frame
        (or for ``frames``, indices into the clip)."""
        data = self.frame_data()
        for i in data.eval_idx.tolist() if frames is None else frames:
            target, mask = self._target(i)
            yield int(data.frame_index[i]), _image(target), mask[..., 0].cpu().numpy(), self.render(frame=i)

    def _target(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame ``i`` of the clip matted over the background, [H, W, 3], and its matte [H, W, 1]."""
        target, mask = self.frame_data().targets(torch.tensor([i], device=self.device),
                                              torch.tensor(self.background, device=self.device))
        return target[0], mask[0]

    def evaluate(self, refine_tracking: bool = False, landmarks_only: bool = False) -> dict:
        """Held-out PSNR / SSIM / LPIPS (None unless the ``lpips`` package and its weights are available),
        with the avatar's stored motion: photometric for every frame after ``from_dataset``'s tracking
        stage (``ReconstructConfig.track_steps``).

        ``refine_tracking=True``: first refine the held-out frames' expression/pose/translation
        photometrically with the avatar frozen (an evaluation-time refinement on top of the stored
        motion, as published self-reenactment figures do); the refined parameters are kept, so renders
        of those frames match the reported figures. ``landmarks_only=True``: the landmark tracker's
        motion instead (what the photometric stages start from). A loaded avatar is evaluated on the
        frames its fit held out, read back from its dataset (``load``)."""
        from .hub import lpips_function

        params = self.training_motion("tracked") if landmarks_only else self.params
        res = evaluate(self.gaussians, params, self.frame_data(), self.model, self.renderer, self.background,
                       lpips_fn=lpips_function(self.device), refine_tracking=RefineTrackingConfig() if refine_tracking else None)
        if "params" in res:
            self.params = res.pop("params")
            self.meta["held_out_tracking"] = "photometrically refined"
        return res

    def render_video(self, path: str | os.PathLike, frames=None, side_by_side: bool = True, fps: float = 25.0,
                     compare: "Avatar | None" = None, labels: bool = False) -> Path:
        """Render the clip's frames (all by default); on the left, the real frame if known, or
        ``compare``'s render (e.g. the avatar before an edit); ``labels`` adds ``render_labels``
        on the right."""
        frames = range(self.params.batch_size) if frames is None else frames
        if labels:
            self._labels()  # a clear error before any frame is written
        real = side_by_side and compare is None and self.frame_data(required=False) is not None

        def gen():
            for i in frames:
                img = self.render(frame=i)
                if labels:  # render_labels, reusing this frame's render
                    img = np.concatenate([img, overlay(img, self.render_masks(frame=i).argmax(0))], 1)
                if compare is not None:
                    img = np.concatenate([compare.render(frame=i), img], 1)
                elif real:
                    img = np.concatenate([_image(self._target(i)[0]), img], 1)
                yield img
        return write_video(path, gen(), fps=fps)

    def animate(self, tracking, path: str | os.PathLike | None = None, fps: float = 25.0):
        """Drive this avatar with another clip's tracked expressions/poses (cross-reenactment).
        Identity (shape) stays this avatar's. Returns frames, or writes a video to ``path``."""
        frames = (self.render(params=reenactment_params(tracking.params[i], self.params, self.model.n_expr),
                              camera=self.cameras[0]) for i in range(len(tracking)))
        return list(frames) if path is None else write_video(path, frames, fps=fps)

    def drive(self, dataset_dir: str | os.PathLike, path: str | os.PathLike | None = None, steps: int = 100,
              fps: float = 25.0, progress: bool = True):
        """Drive this avatar with another clip of the same person (a folder from ``dynavatar preprocess``):
        its frames are tracked with this avatar's head (cached in the folder), each frame's motion is
        fitted to its pixels with the avatar frozen (``reconstruct.drive``; ``steps=0``: the landmark fit
        alone), and the avatar is posed in that clip's cameras. -> DrivenClip; ``path``: also a video,
        driving frame | avatar."""
        ds = FrameDataset.load(dataset_dir)
        preset = self.meta.get("preset") if self.meta.get("preset") in ("tiny", "fast", "quality") else "fast"
        tracking = cached_tracking(ds, PipelineConfig.preset(preset).track, head=self.model, device=self.device,
                                   progress=progress)
        clip = track_driving_clip(self.gaussians, self.model, self.params, ds, tracking, self.resolution,
                                  self.renderer, steps, self.background, self.device, progress)
        if path is not None:
            bg = torch.tensor(self.background, device=self.device)
            write_video(path, (np.concatenate([_image(clip.data.targets(torch.tensor([i], device=self.device), bg)[0][0]),
                                               self.render(params=clip.params[i], camera=clip.cameras[i])], 1)
                               for i in range(len(clip))), fps=fps)
        return clip

    # ------------------------------------------------------------------ semantics (dual tracking)
    @property
    def label_names(self) -> list[str]:
        return list(LABEL_NAMES)

    @property
    def has_labels(self) -> bool:
        return self.gaussians.labels.shape[1] > 0

    def label_splats(self, progress: bool = True, refine_steps: int = 300, motion: str = "tracked",
                     **kw) -> "Avatar":
        """Give every splat a soft label from the parsed training frames, fused with the head
        model's regions, then ``refine_steps`` steps fitting the rendered labels to the parsed
        frames; without parsed frames, from the head model's regions alone (``semantics.avatar_labels``).
        In place; returns self. ``motion`` poses the training frames (``training_motion``): the
        landmark parser draws the face parts from the landmarks the tracker fitted, so under the
        ``"tracked"`` default the mesh and the parsed lips line up without the refinement's drift."""
        data = self.frame_data(required=False)
        if data is not None and data.parsing is not None:
            labels, info = labels_from_parsing(self.gaussians, self.model, self.training_motion(motion), data.cameras,
                                               data.parsing, self.train_idx.tolist(), self.renderer,
                                               refine_steps=refine_steps, progress=progress, seen=data.seen, **kw)
            info["motion"] = motion
        else:
            labels, info = labels_from_head_regions(self.gaussians.binding, self.model)
            logger.warning("labelling splats from the head model's regions only (the frames were not parsed)")
        self.gaussians.labels, self.meta["labels"] = labels, info
        return self

    def _labels(self) -> torch.Tensor:
        if not self.has_labels:
            raise DynavatarError("this avatar has no semantic labels yet; call avatar.label_splats() "
                                 "(needs parsed frames or a head model with regions)")
        return self.gaussians.labels

    def select(self, name: str | list[str], threshold: float = 0.5) -> torch.Tensor:
        """Splats whose label probability for ``name`` (or the sum over a list of names) exceeds
        ``threshold``.  -> bool [N]"""
        idx = [label_index(n) for n in ([name] if isinstance(name, str) else name)]
        return self._labels()[:, idx].sum(1) > threshold

    @_no_grad
    def render_masks(self, frame: int | None = None, params: FlameParams | None = None,
                     camera: Cameras | None = None) -> np.ndarray:
        """Label probability images at any frame or pose, float32 [K, H, W] summing to 1 per pixel
        (index with ``avatar.label_names``)."""
        params, camera = self._pose(frame, params, camera)
        return render_label_masks(self._world(params), camera, self._labels(), self.renderer).cpu().numpy()

    @_no_grad
    def render_labels(self, frame: int | None = None, params: FlameParams | None = None,
                      camera: Cameras | None = None, alpha: float = 0.5) -> np.ndarray:
        """The render with each pixel's most likely label blended over it in the parser's colours
        (background left as rendered), uint8 [H, W, 3]: what ``select`` and the edits will address."""
        labels = self.render_masks(frame=frame, params=params, camera=camera).argmax(0)
        return overlay(self.render(frame=frame, params=params, camera=camera), labels, alpha)

    def label_mask(self, name: str, frame: int | None = None, params: FlameParams | None = None,
                   camera: Cameras | None = None) -> np.ndarray:
        """bool [H, W]: where the labels rendered at ``frame`` (or at any ``params`` + ``camera``, as
        ``render_masks``) say ``name`` (a label, or a group of ``semantics.metrics.LABEL_GROUPS`` such
        as "lips") has probability above one half."""
        idx = label_group_indices(name)
        masks = self.render_masks(frame, params, camera)
        return sum(masks[i] for i in idx) > 0.5

    # ------------------------------------------------------------------ masks through time and pose
    @_no_grad
    def splats_under_mask(self, mask: np.ndarray, frame: int | None = None, params: FlameParams | None = None,
                          camera: Cameras | None = None, threshold: float = 0.5, use_labels: bool = True
                          ) -> torch.Tensor:
        """Exact mask route, first half: the splats a user mask ([H, W], drawn on this frame's
        render) covers; with labels (and ``use_labels``), barely visible splats only where their label
        is the mask's (``semantics.selection_from_mask``).  -> bool [N]"""
        params, camera = self._pose(frame, params, camera)
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=self.device)
        if m.shape != (camera.height, camera.width):
            raise DynavatarError(f"mask is {tuple(m.shape)} but the frame renders at {camera.height}x{camera.width}")
        return selection_from_mask(self._world(params), camera, m, self.renderer, threshold,
                                   labels=self.gaussians.labels if use_labels and self.has_labels else None)

    @_no_grad
    def render_selection(self, selected: torch.Tensor, frame: int | None = None, params: FlameParams | None = None,
                         camera: Cameras | None = None) -> np.ndarray:
        """Exact mask route, second half: the coverage of ``selected`` splats at any time and
        pose, float32 [H, W] in [0, 1]."""
        params, camera = self._pose(frame, params, camera)
        return render_selection(self._world(params), camera, selected.to(self.device), self.renderer).cpu().numpy()

    def _covered_splats(self, mask: np.ndarray, frame: int) -> torch.Tensor:
        """``splats_under_mask``, refusing a mask that selects nothing (both mask routes need some)."""
        sel = self.splats_under_mask(mask, frame=frame)
        if not sel.any():
            raise DynavatarError("the mask covers no visible splat on that frame")
        return sel

    def mask_mapper(self, mask: np.ndarray, frame: int, config=None, progress: bool = True, n_eval: int = 48):
        """The learned mask route: a MaskMapper trained (from the exact route) for a mask drawn on
        ``frame``'s render; ``mapper.predict(t, pose)`` then gives it at any time t in [0, 1] and head
        turn (yaw, pitch). Returns (mapper, {"iou_mean", "iou_min", "history", and per held-out point
        "eval_t", "eval_pose", "eval_iou"}: IoU against the exact route on ``n_eval`` held-out (t, pose);
        "selected": the splats under the mask, bool [N]). ``config``: by default the ``quality`` preset
        on a GPU, where its minutes of training are affordable, ``fast`` on a CPU (``dynavatar bench mask``)."""
        if config is None:
            config = MaskMapperConfig.preset("quality" if self.device.type == "cuda" else "fast")
        sel = self._covered_splats(mask, frame)
        mapper, score = fit_mask_mapper(self.gaussians, self.model, self.params, self.cameras, sel, self.renderer,
                                        frame, config, n_eval=n_eval, progress=progress)
        return mapper, {**score, "selected": sel}

    def map_mask(self, mask: np.ndarray, frame: int, yaw: float = 0.0, pitch: float = 0.0, learned: bool = False,
                 config=None, frames=None, video: str | os.PathLike | None = None, fps: float = 25.0,
                 progress: bool = True) -> tuple[np.ndarray, dict]:
        """A mask drawn on ``frame``'s render, carried to every frame of the clip (or to ``frames``)
        with the head turned by (``yaw``, ``pitch``) radians: by the exact route (the splats under
        it, rendered), or ``learned`` by a MaskMapper trained for it (``mask_mapper``). Returns
        (masks float32 [F, H, W] in [0, 1], info: the splats selected, and for the learned route its
        IoU against the exact route on held-out (t, pose)).

        ``video``: also write the turned clip with the masks tinted over it (as ``mask_video``); the
        exact route then renders each frame once for both (``semantics.mask_video``)."""
        frames = clip_frames(frames, self.params.batch_size)
        if learned:
            mapper, score = self.mask_mapper(mask, frame, config=config, progress=progress)
            masks = learned_route_masks(mapper, frames, self.params.batch_size, yaw, pitch, (self.resolution,) * 2)
            if video is not None:
                self.mask_video(video, masks, yaw, pitch, frames=frames, fps=fps)
            return masks, {"route": "learned", "iou_mean": score["iou_mean"], "iou_min": score["iou_min"],
                           "splats": int(score["selected"].sum())}
        sel = self._covered_splats(mask, frame)
        masks = exact_route_masks(turned_clip(self.params, self.cameras, frames, yaw, pitch, self.device),
                                  lambda p, c: self.render_selection(sel, params=p, camera=c),
                                  lambda p, c: self.render_with_coverage(sel, params=p, camera=c),
                                  video=video, fps=fps, progress=progress)
        return masks, {"route": "exact", "splats": int(sel.sum())}

    def mask_video(self, path: str | os.PathLike, masks: np.ndarray, yaw: float = 0.0, pitch: float = 0.0,
                   frames=None, fps: float = 25.0) -> Path:
        """Write the clip (or ``frames``) rendered with the head turned by (yaw, pitch) radians and
        ``masks`` ([F, H, W] in [0, 1], e.g. from ``map_mask``) tinted red over it."""
        frames = clip_frames(frames, self.params.batch_size)
        return write_mask_video(path, lambda p, c: self.render(params=p, camera=c),
                                turned_clip(self.params, self.cameras, frames, yaw, pitch, self.device), masks, fps)

    # ------------------------------------------------------------------ text editing
    def plan(self, prompt: str, refiner="auto", editor="auto", method: str = "idu"):
        """The structured plan an edit would follow (regions, instruction, colour, strengths), so it
        can be checked before any GPU time is spent. ``refiner``: "auto" | "rule" | "transformers" |
        "openai" or a PromptRefiner. Its ``summary()`` also says what ``edit(prompt, editor, method)``
        would run and whether its weights are cached, fetchable or neither (``EditPlan.with_backend``)."""
        return self._refiner(refiner).refine(prompt).with_backend(editor, method)

    @staticmethod
    def _refiner(refiner):
        from .edit import get_refiner  # the edit machinery loads when an edit is asked for

        return get_refiner(refiner) if isinstance(refiner, str) else refiner

    def edit(self, prompt, editor="auto", method: str = "idu", refiner="auto", config=None, guidance=None,
             progress: bool = True, mask=None, frame: int | None = None, mask_route: str = "exact",
             **editor_kwargs) -> "Avatar":
        """A new avatar with the edit applied in every frame; this one is untouched.

        prompt: words ("red hair") or an EditPlan. editor: "auto" | "palette" | "ip2p" | "inpaint" |
        "geometry" or an ImageEditor. method: "idu" (iterative dataset update) or "sds" (VT-SDS;
        ``guidance`` injects an SDSGuidance). ``mask`` ([H, W], drawn on ``frame``'s render): the
        region instead of the plan's labels, carried to every view by the "exact" or "learned"
        ``mask_route``. Clauses that cannot run are skipped when another ran (``meta["skipped"]``).
        The work is ``edit.dispatch`` (``apply_plan``, ``apply_clauses``)."""
        from .edit import EditPlan, apply_clauses, edit_avatar

        if mask_route not in ("exact", "learned"):
            raise DynavatarError(f"mask_route must be 'exact' or 'learned', got {mask_route!r}")
        drawn = None if mask is None else self._drawn_region(mask, frame, mask_route, progress)
        kw = dict(editor=editor, method=method, config=config, guidance=guidance, progress=progress, drawn=drawn,
                  **editor_kwargs)
        if isinstance(prompt, EditPlan):
            return edit_avatar(self, prompt, **kw)
        r = self._refiner(refiner)
        plans = r.refine_all(prompt) if hasattr(r, "refine_all") else [r.refine(prompt)]
        return apply_clauses(self, plans, lambda a, p: edit_avatar(a, p, **kw))

    def _drawn_region(self, mask, frame: int | None, route: str, progress: bool):
        """The edit region of a mask drawn on ``frame``'s render (``edit.apply.region.DrawnRegion``)."""
        from .edit import DrawnRegion

        if frame is None or not 0 <= int(frame) < self.params.batch_size:
            raise DynavatarError(f"a drawn mask needs the frame it was drawn on, 0..{self.params.batch_size - 1}: "
                                 f"edit(..., mask=m, frame=k), got frame={frame}")
        sel = self._covered_splats(mask, int(frame))
        mapper = self.mask_mapper(mask, int(frame), progress=progress)[0] if route == "learned" else None
        return DrawnRegion(sel, self.params.batch_size, mapper)
