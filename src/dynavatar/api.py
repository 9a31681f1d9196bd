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

from .device import resolve_device as _device
from .errors import DynavatarError
from .flame import FlameModel, FlameParams
from .gaussians.avatar import GaussianAvatar
from .gaussians.binding import bind
from .render.cameras import Cameras

__all__ = ["Avatar"]

logger = logging.getLogger("dynavatar")


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
                   progress: bool = True) -> "Avatar":
        """Preprocess (cached), track (cached), then fit. ``out_dir`` keeps all of it and lets a
        killed run resume from its last checkpoint."""
        from .perceive import PreprocessConfig, preprocess

        out = Path(out_dir) if out_dir else Path(str(path) + ".dynavatar")
        ds = preprocess(path, out / "data", config=PreprocessConfig(resolution=resolution, max_frames=max_frames),
                        progress=progress)
        return cls.from_dataset(out / "data", head=head, out_dir=out, preset=preset, device=device, progress=progress)

    @classmethod
    def from_dataset(cls, dataset_dir: str | os.PathLike, *, head=None, out_dir=None, preset: str = "fast",
                     device: str = "auto", progress: bool = True, config=None) -> "Avatar":
        """Fit to a preprocessed (or imported, e.g. VHAP) dataset; tracks it first if needed."""
        from .perceive import FrameDataset
        from .reconstruct import fit_avatar, load_train_data
        from .reconstruct import preset as get_preset
        from .track import TrackerConfig, TrackingResult, track

        dataset_dir = Path(dataset_dir)
        out = Path(out_dir) if out_dir else dataset_dir.parent
        dev = _device(device)
        ds = FrameDataset.load(dataset_dir)
        tracking_dir = dataset_dir / "tracking"
        if (tracking_dir / "tracking.json").is_file():
            tracking = TrackingResult.load(tracking_dir)
        else:
            tcfg = TrackerConfig.preset("tiny" if preset == "tiny" else "default")
            tcfg.device = str(dev)
            tracking = track(ds, head=head if isinstance(head, (FlameModel, type(None))) else str(head), config=tcfg,
                             progress=progress)
            tracking.save(tracking_dir)
        model = head if isinstance(head, FlameModel) else FlameModel.load(
            head, n_shape=tracking.head["n_shape"], n_expr=tracking.head["n_expr"])
        cfg = config or get_preset(preset)
        data = load_train_data(ds, tracking, cfg.resolution, cfg.eval_fraction, device=dev)
        fit = fit_avatar(data, model, _renderer_for(dev), cfg, out_dir=out, progress=progress)
        meta = {"source": str(dataset_dir), "preset": preset, "head": tracking.head, "fit_seconds": fit.seconds,
                "history": fit.history[-50:], "frame_index": [int(i) for i in data.frame_index]}
        avatar = cls(fit.avatar, model, fit.params, data.cameras, meta, data, tuple(cfg.background))
        avatar._save_training_plot(out)
        return avatar

    # ------------------------------------------------------------------ rendering
    @property
    def resolution(self) -> int:
        return int(self.cameras.width)

    @property
    def device(self) -> torch.device:
        return self.gaussians.means_local.device

    def _render(self, params: FlameParams, camera: Cameras) -> torch.Tensor:
        verts = self.model.to(self.device)(params.to(self.device), landmark_set=None).vertices
        bg = torch.tensor(self.background, device=self.device)
        g = bind(self.gaussians, verts, self.model.faces)
        return _renderer_for(self.device).render(g, camera.to(self.device), background=bg).rgb[0].clamp(0, 1)

    @torch.no_grad()
    def render(self, frame: int | None = None, params: FlameParams | None = None,
               camera: Cameras | None = None) -> np.ndarray:
        """Render one image, uint8 [H, W, 3]: a training frame by index, or any FLAME parameters."""
        if (frame is None) == (params is None):
            raise DynavatarError("give exactly one of frame= or params=")
        if frame is not None:
            if not 0 <= frame < self.params.batch_size:
                raise DynavatarError(f"frame {frame} out of range (the clip has {self.params.batch_size})")
            params = self.params[frame]
            camera = camera or self.cameras[frame]
        camera = camera or self.cameras[0]
        return (self._render(params, camera) * 255).round().byte().cpu().numpy()

    def eval_frames(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(frame_index, target_rgb, target_mask, rendered_rgb)`` for every held-out frame."""
        if self.data is None:
            raise DynavatarError("this avatar was loaded without its frames; evaluate right after fitting")
        bg = torch.tensor(self.background, device=self.device)
        for i in self.data.eval_idx.tolist():
            target, mask = self.data.targets(torch.tensor([i], device=self.device), bg)
            yield (int(self.data.frame_index[i]), (target[0].cpu().numpy() * 255).round().astype(np.uint8),
                   mask[0, ..., 0].cpu().numpy(), self.render(frame=i))

    def evaluate(self) -> dict:
        """Held-out PSNR / SSIM / LPIPS (None unless LPIPS weights are available locally)."""
        from .reconstruct import evaluate

        if self.data is None:
            raise DynavatarError("this avatar was loaded without its frames; evaluate right after fitting")
        return evaluate(self.gaussians, self.params, self.data, self.model, _renderer_for(self.device), self.background)

    def render_video(self, path: str | os.PathLike, frames=None, side_by_side: bool = True, fps: float = 25.0) -> Path:
        """Render the clip's frames (all by default); with the real frame on the left if known."""
        from .io.video import write_video

        frames = range(self.params.batch_size) if frames is None else frames

        def gen():
            for i in frames:
                img = self.render(frame=i)
                if side_by_side and self.data is not None:
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

    # ------------------------------------------------------------------ I/O
    def save(self, folder: str | os.PathLike) -> Path:
        from .reconstruct.checkpoint import save_state

        extra = {"cameras.viewmats": self.cameras.viewmats, "cameras.Ks": self.cameras.Ks}
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
