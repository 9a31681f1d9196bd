"""The ``Avatar`` facade: thin, no algorithms — it wires perceive -> track -> reconstruct -> render.

>>> from dynavatar import Avatar
>>> avatar = Avatar.from_video("clip.mp4", out_dir="runs/clip", preset="fast")
>>> avatar.evaluate()            # held-out PSNR/SSIM (last 10 % of frames, never trained on)
>>> avatar.render_video("out.mp4")
>>> avatar.save("runs/clip/avatar"); Avatar.load("runs/clip/avatar")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .device import resolve_device as _device
from .errors import DynavatarError
from .flame import FlameModel, FlameParams
from .gaussians.avatar import GaussianAvatar
from .gaussians.binding import bind
from .geometry.cameras import Cameras

__all__ = ["Avatar"]

logger = logging.getLogger("dynavatar")


def _tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] with ``mask`` ([H, W] in [0, 1]) tinted red over it at half strength."""
    red = np.array([255.0, 40.0, 40.0], dtype=np.float32)
    a = 0.5 * np.asarray(mask, dtype=np.float32)[..., None]
    return np.clip(image.astype(np.float32) * (1 - a) + red * a, 0, 255).round().astype(np.uint8)


def _renderer_for(device: torch.device):
    if device.type == "cuda":
        from .render.gsplat_renderer import GsplatRenderer

        return GsplatRenderer()
    from .render.torch_renderer import TorchRenderer

    return TorchRenderer()


@dataclasses.dataclass
class Avatar:
    """A FLAME-bound Gaussian avatar with the clip it was fitted to (if any)."""

    gaussians: GaussianAvatar
    model: FlameModel
    params: FlameParams  # [N] per-frame parameters of the training clip (tracked + refined)
    cameras: Cameras  # [N] the clip's cameras, at ``resolution``
    meta: dict
    data: object | None = None  # TrainData when the frames are at hand (evaluation, side-by-side videos)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_video(cls, path: str | os.PathLike, *, head=None, out_dir=None, preset: str = "fast",
                   device: str = "auto", max_frames: int | None = None, resolution: int = 512,
                   progress: bool = True, config=None) -> "Avatar":
        """Preprocess (cached), track (cached), then fit. ``out_dir`` keeps all of it and lets a
        killed run resume from its last checkpoint. ``config`` (a ``ReconstructConfig``) replaces
        the preset's. Under ``accelerate launch`` the processes train data-parallel over frames
        (``reconstruct/distributed.py``); only the main one preprocesses, tracks and labels."""
        from .perceive import PreprocessConfig, preprocess
        from .reconstruct.distributed import data_parallel

        out = Path(out_dir) if out_dir else Path(str(path) + ".dynavatar")
        with data_parallel().main_first():  # the main process fills the cache, the others read it
            preprocess(path, out / "data", config=PreprocessConfig(resolution=resolution, max_frames=max_frames),
                       progress=progress)
        return cls.from_dataset(out / "data", head=head, out_dir=out, preset=preset, device=device, progress=progress,
                                config=config)

    @classmethod
    def from_dataset(cls, dataset_dir: str | os.PathLike, *, head=None, out_dir=None, preset: str = "fast",
                     device: str = "auto", progress: bool = True, config=None, tracking=None) -> "Avatar":
        """Fit to a preprocessed (or imported, e.g. VHAP) dataset; tracks it first if needed
        (``tracking`` passes a TrackingResult in instead)."""
        from .perceive import FrameDataset
        from .reconstruct import fit_avatar, load_train_data
        from .reconstruct import preset as get_preset
        from .reconstruct.distributed import data_parallel
        from .track import TrackerConfig, TrackingResult, track

        dataset_dir = Path(dataset_dir)
        out = Path(out_dir) if out_dir else dataset_dir.parent
        dp = data_parallel()
        dev = dp.device if dp.active and device == "auto" else _device(device)
        ds = FrameDataset.load(dataset_dir)
        tracking_dir = dataset_dir / "tracking"
        with dp.main_first():
            if tracking is not None:
                pass
            elif (tracking_dir / "tracking.json").is_file():
                tracking = TrackingResult.load(tracking_dir)
            else:
                tcfg = TrackerConfig.preset("tiny" if preset == "tiny" else "default")
                tcfg.device = str(dev)
                tracking = track(ds, head=head if isinstance(head, (FlameModel, type(None))) else str(head),
                                 config=tcfg, progress=progress)
                tracking.save(tracking_dir)
        model = head if isinstance(head, FlameModel) else FlameModel.load(
            head, n_shape=tracking.head["n_shape"], n_expr=tracking.head["n_expr"])
        cfg = config or get_preset(preset)
        data = load_train_data(ds, tracking, cfg.resolution, cfg.eval_fraction, device=dev)
        fit = fit_avatar(data, model, _renderer_for(dev), cfg, out_dir=out, progress=progress)
        meta = {"source": str(dataset_dir), "preset": preset, "head": tracking.head, "fit_seconds": fit.seconds,
                "history": fit.history, "frame_index": [int(i) for i in data.frame_index]}
        avatar = cls(fit.avatar, fit.model, fit.params, data.cameras, meta, data, tuple(cfg.background))
        if not dp.is_main:  # the other processes' copies are identical; labelling/plots are the main's job
            return avatar
        try:
            avatar.label_splats(progress=progress)
        except DynavatarError as exc:  # a head without regions and no parsing: usable, just unlabelled
            logger.warning("splats left unlabelled: %s", exc)
        avatar._save_training_plot(out)
        return avatar

    # ------------------------------------------------------------------ rendering
    @property
    def resolution(self) -> int:
        return int(self.cameras.width)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means_local.device

    def _world(self, params: FlameParams):
        verts = self.model.to(self.device)(params.to(self.device), landmark_set=None).vertices
        return bind(self.gaussians, verts, self.model.faces)

    def _render_output(self, params: FlameParams, camera: Cameras, features: torch.Tensor | None = None):
        """The renderer's output for one pose, over the avatar's background (``features`` [N, D]: extra
        per-splat channels blended in the same pass)."""
        bg = torch.tensor(self.background, device=self.device)
        return _renderer_for(self.device).render(self._world(params), camera.to(self.device), background=bg,
                                                 features=features)

    def _render(self, params: FlameParams, camera: Cameras) -> torch.Tensor:
        return self._render_output(params, camera).rgb[0].clamp(0, 1)

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

    @torch.no_grad()
    def render(self, frame: int | None = None, params: FlameParams | None = None,
               camera: Cameras | None = None) -> np.ndarray:
        """Render one image, uint8 [H, W, 3]: a training frame by index, or any FLAME parameters."""
        params, camera = self._pose(frame, params, camera)
        return (self._render(params, camera) * 255).round().byte().cpu().numpy()

    # ------------------------------------------------------------------ semantics (dual tracking)
    @property
    def label_names(self) -> list[str]:
        from .geometry.labels import LABEL_NAMES

        return list(LABEL_NAMES)

    @property
    def has_labels(self) -> bool:
        return self.gaussians.labels.shape[1] > 0

    def label_splats(self, progress: bool = True, refine_steps: int = 300, motion: str = "tracked",
                     **kw) -> "Avatar":
        """Give every splat a soft label from the parsed training frames, fused with the head
        model's regions, then ``refine_steps`` steps fitting the rendered labels to the parsed
        frames (see ``dynavatar.semantics.labelling``). Without parsed frames the labels come from
        the head model's regions alone. In place; returns self.

        ``motion``: pose the training frames with the landmark tracker's ``"tracked"`` motion (the
        default) or with the photometrically ``"refined"`` motion the splats were fitted under. The
        landmark parser draws the face parts from the same landmarks the tracker fitted, so under
        tracked motion the mesh and the parsed lips line up without the refinement's 1-2 px drift.
        Held-out lips IoU against the parser (fast avatars, parser v2, one H200): wojtek 0.856 ->
        0.876, liveportrait 0.867 -> 0.875; skin and hair within +-0.004."""
        from .semantics import label_splats, refine_labels, region_prior

        if self.data is not None and self.data.parsing is not None:
            params = self._training_motion(motion)
            renderer, frames = _renderer_for(self.device), self.data.train_idx.tolist()
            res = label_splats(self.gaussians, self.model, params, self.data.cameras, self.data.parsing,
                               renderer, frames=frames, progress=progress, **kw)
            self.gaussians.labels = refine_labels(self.gaussians, self.model, params, self.data.cameras,
                                                  self.data.parsing, res.labels, renderer, frames=frames,
                                                  steps=refine_steps, progress=progress)
            self.meta["labels"] = {"source": "parsing", "frames": int(len(self.data.train_idx)),
                                   "visible_splats": int((res.visibility > 1).sum()), "refine_steps": refine_steps,
                                   "motion": motion}
        else:
            prior = region_prior(self.gaussians.binding, self.model)
            if prior.sum() == 0:
                raise DynavatarError("no parsed frames and the head model has no vertex regions: nothing to label "
                                     "from; preprocess with parsing (the default) or use a head with regions")
            logger.warning("labelling splats from the head model's regions only (the frames were not parsed)")
            self.gaussians.labels = prior
            self.meta["labels"] = {"source": "head regions"}
        return self

    def _training_motion(self, motion: str) -> FlameParams:
        """The clip's per-frame parameters with the ``"refined"`` or ``"tracked"`` motion: tracked
        keeps the fitted identity and takes expression, pose and translation from the tracker, with
        the torso shift the head's motion predicts.  -> FlameParams [N]"""
        if motion == "refined":
            return self.params
        if motion != "tracked":
            raise DynavatarError(f"motion must be 'refined' or 'tracked', not {motion!r}")
        from .reconstruct.refine_tracking import MOTION_FIELDS

        tracked = self.data.params.to(self.device)
        params = self.params.to(self.device)
        params = params.replace(**{k: getattr(tracked, k) for k in MOTION_FIELDS if k != "torso"})
        if params.torso is not None:
            params = params.replace(torso=self.model.to(self.device).predict_torso(params))
        return params

    def _labels(self) -> torch.Tensor:
        if not self.has_labels:
            raise DynavatarError("this avatar has no semantic labels yet; call avatar.label_splats() "
                                 "(needs parsed frames or a head model with regions)")
        return self.gaussians.labels

    def select(self, name: str | list[str], threshold: float = 0.5) -> torch.Tensor:
        """Splats whose label probability for ``name`` (or the sum over a list of names) exceeds
        ``threshold``.  -> bool [N]"""
        from .geometry.labels import label_index

        names = [name] if isinstance(name, str) else list(name)
        idx = [label_index(n) for n in names]
        return self._labels()[:, idx].sum(1) > threshold

    @torch.no_grad()
    def render_masks(self, frame: int | None = None, params: FlameParams | None = None,
                     camera: Cameras | None = None) -> np.ndarray:
        """Label probability images at any frame or pose, float32 [K, H, W] summing to 1 per pixel
        (index with ``avatar.label_names``)."""
        from .semantics import render_label_masks

        params, camera = self._pose(frame, params, camera)
        return render_label_masks(self._world(params), camera, self._labels(), _renderer_for(self.device)).cpu().numpy()

    @torch.no_grad()
    def splats_under_mask(self, mask: np.ndarray, frame: int | None = None, params: FlameParams | None = None,
                          camera: Cameras | None = None, threshold: float = 0.5, use_labels: bool = True
                          ) -> torch.Tensor:
        """Exact mask route, first half: the splats a user mask ([H, W], drawn on this frame's
        render) covers; with labels (and ``use_labels``), barely visible splats only where their label
        is the mask's (``semantics.selection_from_mask``).  -> bool [N]"""
        from .semantics import selection_from_mask

        params, camera = self._pose(frame, params, camera)
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=self.device)
        if m.shape != (camera.height, camera.width):
            raise DynavatarError(f"mask is {tuple(m.shape)} but the frame renders at {camera.height}x{camera.width}")
        return selection_from_mask(self._world(params), camera, m, _renderer_for(self.device), threshold,
                                   labels=self.gaussians.labels if use_labels and self.has_labels else None)

    @torch.no_grad()
    def render_selection(self, selected: torch.Tensor, frame: int | None = None, params: FlameParams | None = None,
                         camera: Cameras | None = None) -> np.ndarray:
        """Exact mask route, second half: the coverage of ``selected`` splats at any time and
        pose, float32 [H, W] in [0, 1]."""
        from .semantics import render_selection

        params, camera = self._pose(frame, params, camera)
        return render_selection(self._world(params), camera, selected.to(self.device),
                                _renderer_for(self.device)).cpu().numpy()

    def eval_frames(self, frames: list[int] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(frame_index, target_rgb, target_mask, rendered_rgb)`` for every held-out frame
        (or for ``frames``, indices into the clip)."""
        if self.data is None:
            raise DynavatarError("this avatar was loaded without its frames; evaluate right after fitting")
        bg = torch.tensor(self.background, device=self.device)
        for i in self.data.eval_idx.tolist() if frames is None else frames:
            target, mask = self.data.targets(torch.tensor([i], device=self.device), bg)
            yield (int(self.data.frame_index[i]), (target[0].cpu().numpy() * 255).round().astype(np.uint8),
                   mask[0, ..., 0].cpu().numpy(), self.render(frame=i))

    def evaluate(self, refine_tracking: bool = False) -> dict:
        """Held-out PSNR / SSIM / LPIPS (None unless LPIPS weights are available locally).

        ``refine_tracking=True``: first refine the held-out frames' expression/pose/translation
        photometrically with the avatar frozen (the landmark tracker alone leaves 1-2 px of
        misalignment, which the training frames lose through joint refinement); the refined
        parameters are kept, so renders of those frames match the reported figures."""
        from .reconstruct import evaluate
        from .reconstruct.refine_tracking import RefineTrackingConfig

        if self.data is None:
            raise DynavatarError("this avatar was loaded without its frames; evaluate right after fitting")
        res = evaluate(self.gaussians, self.params, self.data, self.model, _renderer_for(self.device), self.background,
                       refine_tracking=RefineTrackingConfig() if refine_tracking else None)
        if "params" in res:
            self.params = res.pop("params")
            self.meta["held_out_tracking"] = "photometrically refined"
        return res

    @torch.no_grad()
    def render_labels(self, frame: int | None = None, params: FlameParams | None = None,
                      camera: Cameras | None = None, alpha: float = 0.5) -> np.ndarray:
        """The render with each pixel's most likely label blended over it in the parser's colours
        (background left as rendered), uint8 [H, W, 3]: what ``select`` and the edits will address."""
        from .perceive.parsing import overlay

        labels = self.render_masks(frame=frame, params=params, camera=camera).argmax(0)
        return overlay(self.render(frame=frame, params=params, camera=camera), labels, alpha)

    def render_video(self, path: str | os.PathLike, frames=None, side_by_side: bool = True, fps: float = 25.0,
                     compare: "Avatar | None" = None, labels: bool = False) -> Path:
        """Render the clip's frames (all by default); on the left, the real frame if known, or
        ``compare``'s render (e.g. the avatar before an edit); ``labels`` adds ``render_labels``
        on the right."""
        from .io.video import write_video
        from .perceive.parsing import overlay

        frames = range(self.params.batch_size) if frames is None else frames
        if labels:
            self._labels()  # a clear error before any frame is written

        def gen():
            for i in frames:
                img = self.render(frame=i)
                if labels:  # render_labels, reusing this frame's render
                    img = np.concatenate([img, overlay(img, self.render_masks(frame=i).argmax(0))], 1)
                if compare is not None:
                    img = np.concatenate([compare.render(frame=i), img], 1)
                elif side_by_side and self.data is not None:
                    bg = torch.tensor(self.background, device=self.device)
                    target, _ = self.data.targets(torch.tensor([i], device=self.device), bg)
                    img = np.concatenate([(target[0].cpu().numpy() * 255).round().astype(np.uint8), img], 1)
                yield img
        return write_video(path, gen(), fps=fps)

    def animate(self, tracking, path: str | os.PathLike | None = None, fps: float = 25.0):
        """Drive this avatar with another clip's tracked expressions/poses (cross-reenactment).
        Identity (shape) stays this avatar's. Returns frames, or writes a video to ``path``."""
        from .io.video import write_video

        own_shape = self.params.shape[:1]
        n_expr = self.model.n_expr

        def gen():
            for i in range(len(tracking)):
                p = tracking.params[i]
                expr = torch.zeros(1, n_expr)
                k = min(n_expr, p.expr.shape[1])
                expr[:, :k] = p.expr[:, :k]
                q = p.replace(shape=own_shape.cpu(), expr=expr)
                q = q.replace(translation=self.params.translation[:1].cpu())  # keep our framing
                yield self.render(params=q, camera=self.cameras[0])
        if path is None:
            return list(gen())
        return write_video(path, gen(), fps=fps)

    def mask_mapper(self, mask: np.ndarray, frame: int, config=None, progress: bool = True, n_eval: int = 48):
        """The learned mask route: a MaskMapper trained (from the exact route) for a mask drawn on
        ``frame``'s render; ``mapper.predict(t, pose)`` then gives it at any time t in [0, 1] and head
        turn (yaw, pitch). Returns (mapper, {"iou_mean", "iou_min", "history", and per held-out point
        "eval_t", "eval_pose", "eval_iou"}: IoU against the exact route on ``n_eval`` held-out (t, pose);
        "selected": the splats under the mask, bool [N]).
        ``config`` defaults to ``MaskMapperConfig.preset("quality")`` on a GPU (lips vs the exact route
        with the label-aware selection: 0.922 / 0.909 on H100-fitted wojtek / liveportrait avatars,
        about 130 s on an H100; 0.921 / 0.935 on CPU-fitted ones, 20-25 min on 2 CPU cores) and to
        ``preset("fast")`` on the CPU (0.893 on the CPU wojtek avatar, 9 min on 2 cores for 400 frames).
        ``dynavatar bench mask`` prints these figures for a saved avatar."""
        from .semantics import MaskMapperConfig, fit_mask_mapper

        if config is None:
            config = MaskMapperConfig.preset("quality" if self.device.type == "cuda" else "fast")
        sel = self._covered_splats(mask, frame)
        mapper, score = fit_mask_mapper(self.gaussians, self.model, self.params, self.cameras, sel,
                                        _renderer_for(self.device), frame, config, n_eval=n_eval, progress=progress)
        return mapper, {**score, "selected": sel}

    def _covered_splats(self, mask: np.ndarray, frame: int) -> torch.Tensor:
        """``splats_under_mask``, refusing a mask that selects nothing (both mask routes need some)."""
        sel = self.splats_under_mask(mask, frame=frame)
        if not sel.any():
            raise DynavatarError("the mask covers no visible splat on that frame")
        return sel

    def label_mask(self, name: str, frame: int | None = None, params: FlameParams | None = None,
                   camera: Cameras | None = None) -> np.ndarray:
        """bool [H, W]: where the labels rendered at ``frame`` (or at any ``params`` + ``camera``, as
        ``render_masks``) say ``name`` (a label, or a group of ``semantics.metrics.LABEL_GROUPS`` such
        as "lips") has probability above one half."""
        from .geometry.labels import LABEL_NAMES, label_index
        from .semantics.metrics import LABEL_GROUPS

        names = LABEL_GROUPS.get(name, (name,))
        if any(n not in LABEL_NAMES for n in names):
            raise DynavatarError(f"unknown label {name!r}; choose from {list(LABEL_NAMES)} or the groups "
                                 f"{sorted(LABEL_GROUPS)}")
        masks = self.render_masks(frame, params, camera)
        return sum(masks[label_index(n)] for n in names) > 0.5

    def map_mask(self, mask: np.ndarray, frame: int, yaw: float = 0.0, pitch: float = 0.0, learned: bool = False,
                 config=None, frames=None, video: str | os.PathLike | None = None, fps: float = 25.0,
                 progress: bool = True) -> tuple[np.ndarray, dict]:
        """A mask drawn on ``frame``'s render, carried to every frame of the clip (or to ``frames``)
        with the head turned by (``yaw``, ``pitch``) radians: by the exact route (the splats under
        it, rendered), or ``learned`` by a MaskMapper trained for it (``mask_mapper``). Returns
        (masks float32 [F, H, W] in [0, 1], info: the splats selected, and for the learned route its
        IoU against the exact route on held-out (t, pose)).

        ``video``: also write the turned clip with the masks tinted over it (as ``mask_video``). The
        exact route then renders each frame once for both: the coverage is a feature channel of the
        RGB pass (half the time of a second render on a CPU)."""
        from .flame.pose import rotate_head

        n = self.params.batch_size
        frames = self._frame_list(frames)
        if not learned:
            sel = self._covered_splats(mask, frame)
            turned = lambda i: rotate_head(self.params[i].to(self.device), yaw, pitch)  # noqa: E731
            bar = tqdm(frames, desc="exact mask route", disable=not progress)
            if video is None:
                out = [self.render_selection(sel, params=turned(i), camera=self.cameras[i]) for i in bar]
            else:
                from .io.video import write_video

                out = []

                def tinted():
                    for i in bar:
                        rgb, coverage = self._render_with_coverage(turned(i), self.cameras[i], sel)
                        out.append(coverage)
                        yield _tint(rgb, coverage)
                write_video(video, tinted(), fps=fps)
            return np.stack(out).astype(np.float32), {"route": "exact", "splats": int(sel.sum())}
        mapper, score = self.mask_mapper(mask, frame, config=config, progress=progress)
        t = torch.tensor(frames, dtype=torch.float32) / max(n - 1, 1)
        pose = torch.tensor([[yaw, pitch]], dtype=torch.float32).expand(len(frames), 2)
        dev = next(mapper.parameters()).device
        with torch.no_grad():
            out = torch.cat([mapper.predict(t[i:i + 64].to(dev), pose[i:i + 64].to(dev),
                                            out_size=(self.resolution, self.resolution)).cpu()
                             for i in range(0, len(frames), 64)])
        masks = out.numpy().astype(np.float32)
        if video is not None:
            self.mask_video(video, masks, yaw, pitch, frames=frames, fps=fps)
        return masks, {"route": "learned", "iou_mean": score["iou_mean"], "iou_min": score["iou_min"],
                       "splats": int(score["selected"].sum())}

    def _render_with_coverage(self, params: FlameParams, camera: Cameras,
                              selected: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One pass: the render, uint8 [H, W, 3], and the ``selected`` splats' coverage, float32 [H, W]."""
        out = self._render_output(params, camera, features=selected.to(self.device).float()[:, None])
        rgb = (out.rgb[0].clamp(0, 1) * 255).round().byte().cpu().numpy()
        return rgb, out.features[0, ..., 0].clamp(0, 1).cpu().numpy()

    def _frame_list(self, frames) -> list[int]:
        n = self.params.batch_size
        frames = list(range(n)) if frames is None else [int(i) for i in frames]
        if not frames or min(frames) < 0 or max(frames) >= n:
            raise DynavatarError(f"frames must be a non-empty list of indices below {n}")
        return frames

    def mask_video(self, path: str | os.PathLike, masks: np.ndarray, yaw: float = 0.0, pitch: float = 0.0,
                   frames=None, fps: float = 25.0) -> Path:
        """Write the clip (or ``frames``) rendered with the head turned by (yaw, pitch) radians and
        ``masks`` ([F, H, W] in [0, 1], e.g. from ``map_mask``) tinted red over it."""
        from .flame.pose import rotate_head
        from .io.video import write_video

        frames = self._frame_list(frames)
        if len(masks) != len(frames):
            raise DynavatarError(f"{len(masks)} masks for {len(frames)} frames")

        def gen():
            for i, m in zip(frames, masks):
                yield _tint(self.render(params=rotate_head(self.params[i].to(self.device), yaw, pitch),
                                        camera=self.cameras[i]), m)
        return write_video(path, gen(), fps=fps)

    # ------------------------------------------------------------------ text editing
    def plan(self, prompt: str, refiner="auto"):
        """The structured plan an edit would follow (regions, instruction, colour, strengths), so it
        can be checked before any GPU time is spent. ``refiner``: "auto" | "rule" | "transformers" |
        "openai" or a PromptRefiner."""
        return self._refiner(refiner).refine(prompt)

    @staticmethod
    def _refiner(refiner):
        from .edit.refine import get_refiner

        return get_refiner(refiner) if isinstance(refiner, str) else refiner

    def _train_idx(self) -> torch.Tensor:
        if self.data is not None:
            return self.data.train_idx
        from .reconstruct.data import split_train_eval

        return split_train_eval(self.params.batch_size, float(self.meta.get("eval_fraction", 0.1)))[0]

    def edit(self, prompt, editor="auto", method: str = "idu", refiner="auto", config=None, guidance=None,
             progress: bool = True, **editor_kwargs) -> "Avatar":
        """A new avatar with the edit applied in every frame; this one is untouched.

        prompt: words ("red hair") or an EditPlan. editor: "auto" | "palette" | "ip2p" | "inpaint" or
        an ImageEditor. method: "idu" (edit keyframes, re-optimise the region's splats, re-edit) or
        "sds" (score distillation with a diffusion model; ``guidance`` injects an SDSGuidance).
        Expression plans ("make her smile") change the FLAME expressions instead of the splats.
        """
        import copy
        import time

        from .edit import EditPlan
        from .edit.expression import apply_expression

        if not isinstance(prompt, EditPlan):  # "red hair and blue eyes": one plan per clause, chained
            r = self._refiner(refiner)
            plans = r.refine_all(prompt) if hasattr(r, "refine_all") else [r.refine(prompt)]
            out = self
            for p in plans:
                out = out.edit(p, editor=editor, method=method, config=config, guidance=guidance, progress=progress,
                               **editor_kwargs)
            return out
        t0 = time.perf_counter()
        plan = prompt.validate()
        record = {"prompt": plan.prompt, "plan": plan.to_dict(), "method": method}
        gaussians, params = self.gaussians, self.params
        if plan.kind == "expression":
            params = apply_expression(self.params, self.model, plan.expression or {}, plan.strength)
            record.update(editor="flame-expression")
        else:
            bg = torch.tensor(self.background, device=self.device)
            renderer = _renderer_for(self.device)
            if method == "idu":
                from .edit.loop import EditConfig, edit_splats

                ed = editor
                if isinstance(editor, str):
                    from .edit.editors import get_editor

                    ed = get_editor(editor, plan=plan, **editor_kwargs)
                cfg = config or EditConfig()
                res = edit_splats(self.gaussians, self.model, self.params, self.cameras, self._train_idx(), plan, ed,
                                  renderer, bg, cfg, progress=progress)
                record.update(editor=type(ed).__name__, config=dataclasses.asdict(cfg),
                              keyframes=sorted({v.frame for v in res.views}), splats_edited=int(res.selected.sum()))
            elif method == "sds":
                from .edit.sds_loop import SDSEditConfig, edit_splats_sds

                cfg = config or SDSEditConfig()
                res = edit_splats_sds(self.gaussians, self.model, self.params, self.cameras, self._train_idx(), plan,
                                      guidance, renderer, bg, cfg, progress=progress)
                record.update(editor="sds", config=dataclasses.asdict(cfg), splats_edited=int(res.selected.sum()))
            else:
                raise DynavatarError(f"unknown edit method {method!r}; use 'idu' or 'sds'")
            gaussians = res.gaussians
        record["seconds"] = round(time.perf_counter() - t0, 2)
        meta = copy.deepcopy(self.meta)
        meta["edits"] = list(meta.get("edits", [])) + [record]
        logger.info("edit %r done in %.1f s (%s)", plan.prompt, record["seconds"], plan.summary())
        return Avatar(gaussians, self.model, params, self.cameras, meta, self.data, self.background)

    # ------------------------------------------------------------------ I/O
    def save(self, folder: str | os.PathLike) -> Path:
        from .reconstruct.checkpoint import save_state

        extra = {"cameras.viewmats": self.cameras.viewmats, "cameras.Ks": self.cameras.Ks}
        if self.model.torso_vertices is not None:
            extra.update({"torso.vertices": self.model.torso_vertices, "torso.faces": self.model.torso_faces})
            if self.model.torso_motion is not None:
                extra.update(dict(zip(("torso.motion_ref", "torso.motion_map"), self.model.torso_motion)))
        meta = {**self.meta, "resolution": self.resolution, "background": list(self.background),
                "head_source": getattr(self.model, "source", None), "n_shape": self.model.n_shape,
                "n_expr": self.model.n_expr}
        return save_state(folder, self.gaussians, self.params, meta, extra)

    @classmethod
    def load(cls, folder: str | os.PathLike, head=None, device: str = "auto") -> "Avatar":
        from .reconstruct.checkpoint import load_state

        dev = _device(device)
        gaussians, params, meta, extra = load_state(folder, device=dev)
        if params is None:
            raise DynavatarError(f"{folder} is a training checkpoint, not a saved avatar; use Avatar.from_dataset to resume")
        model = head if isinstance(head, FlameModel) else FlameModel.load(head, n_shape=meta["n_shape"], n_expr=meta["n_expr"])
        if "torso.vertices" in extra:
            motion = (extra["torso.motion_ref"], extra["torso.motion_map"]) if "torso.motion_map" in extra else None
            model = model.with_torso(extra["torso.vertices"], extra["torso.faces"], motion=motion)
        if int(gaussians.binding.max()) >= model.faces.shape[0]:
            raise DynavatarError(f"{folder}: the splats are bound to {int(gaussians.binding.max()) + 1}+ triangles but "
                                 f"the head model has {model.faces.shape[0]}; load it with the head it was fitted to")
        res = int(meta["resolution"])
        cams = Cameras(extra["cameras.viewmats"], extra["cameras.Ks"], res, res)
        return cls(gaussians, model.to(dev), params.to(dev), cams, meta, None, tuple(meta.get("background", (1, 1, 1))))

    def _save_training_plot(self, out: Path) -> None:
        hist = self.meta.get("history") or []
        if not hist:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # pragma: no cover
            return
        out.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(1, 2, figsize=(9, 3))
        steps = [h["step"] for h in hist]
        ax[0].plot(steps, [h["loss"] for h in hist]); ax[0].set_title("loss"); ax[0].set_yscale("log")  # noqa: E702
        ax[1].plot(steps, [h["psnr"] for h in hist]); ax[1].set_title("train PSNR [dB]")  # noqa: E702
        fig.tight_layout()
        fig.savefig(out / "training_curve.png", dpi=100)
        plt.close(fig)
        (out / "history.json").write_text(json.dumps(self.meta.get("history", []), indent=1))
