"""Drive an avatar with another clip of the same person, tracked photometrically.

Cross-reenactment (``motion.reenactment_params``) hands an avatar another clip's landmark-tracked
expression and pose: right for a different person, whose pixels say nothing about this avatar. A
clip of the *same* person says more: each of its frames' motion is fitted to the frame's pixels with
the avatar frozen, as the pipeline's photometric tracking stage does for the frames a fit held out
(``refine_tracking.track_untrained_frames``), starting from the landmark fit with the avatar's
identity. The avatar is posed in the driving clip's own crop cameras, so its renders line up with
the driving frames and can be judged against them (``psnr``).
"""

from __future__ import annotations

import dataclasses

import torch

from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar
from ..geometry.cameras import Cameras
from .data import TrainData, load_train_data
from .motion import pad_expression
from .refine_tracking import track_untrained_frames
from .trainer import evaluate

__all__ = ["DrivenClip", "track_driving_clip", "driven_psnr"]


@dataclasses.dataclass
class DrivenClip:
    params: FlameParams  # [N] the driving clip's motion (photometric), the avatar's identity
    landmark_params: FlameParams  # [N] the same before the photometric stage (landmark fit)
    cameras: Cameras  # [N] the driving clip's crop cameras at the avatar's resolution
    data: TrainData  # the driving frames (every frame "untrained": eval_idx is all of them)

    def __len__(self) -> int:
        return self.params.batch_size


def track_driving_clip(gaussians: GaussianAvatar, model: FlameModel, identity: FlameParams, dataset, tracking,
                       resolution: int, renderer, steps: int = 100, background=(1.0, 1.0, 1.0),
                       device: torch.device | str = "cpu", progress: bool = False) -> DrivenClip:
    """The motion that makes the avatar match each frame of ``dataset`` (a FrameDataset of the same
    person) tracked as ``tracking`` (a TrackingResult with ``model``'s head). ``identity``: the
    avatar's parameters, whose ``shape`` replaces the driving clip's. ``steps``: the photometric
    stage's Adam steps per chunk (0: the landmark fit alone)."""
    n = len(dataset)
    data = load_train_data(dataset, tracking, resolution, device=device, split=([], list(range(n))))
    start = data.params
    expr = pad_expression(start.expr, model.n_expr).to(start.expr)  # the tracker may fit fewer components
    start = start.replace(shape=identity.shape[:1].to(device).expand(n, -1).clone(), expr=expr)
    if model.torso_vertices is not None:
        start = start.replace(torso=model.predict_torso(start))
    params = track_untrained_frames(gaussians, model, start, data, renderer, steps, background, progress)
    return DrivenClip(params, start, data.cameras, data)


def driven_psnr(gaussians: GaussianAvatar, model: FlameModel, clip: DrivenClip, renderer, landmarks_only: bool = False,
                background=(1.0, 1.0, 1.0)) -> float:
    """Mean PSNR (dB) of the avatar driven by ``clip`` against the driving frames (matted over
    ``background``), with the photometric motion or (``landmarks_only``) the landmark fit: the
    held-out evaluation, every driving frame being held out."""
    params = clip.landmark_params if landmarks_only else clip.params
    return evaluate(gaussians, params, clip.data, model, renderer, background)["psnr"]
