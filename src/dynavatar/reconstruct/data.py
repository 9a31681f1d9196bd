"""Training frames in memory: crops + mattes (uint8), cameras and tracked FLAME parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from ..flame import FlameParams
from ..perceive.dataset import FrameDataset
from ..geometry.cameras import Cameras
from ..track.result import TrackingResult

__all__ = ["TrainData", "load_train_data", "split_train_eval"]


@dataclasses.dataclass
class TrainData:
    images: Tensor  # [N, R, R, 3] uint8
    mattes: Tensor  # [N, R, R] uint8
    cameras: Cameras  # [N] at resolution R
    params: FlameParams | None  # [N] tracked (None: frames re-attached to a saved avatar whose tracking is gone)
    frame_index: np.ndarray  # [N] source video frames
    train_idx: Tensor  # [T] long
    eval_idx: Tensor  # [E] long (the last frames; never trained on)
    parsing: Tensor | None = None  # [N, R, R] uint8 label indices (LABEL_NAMES), when the dataset has them
    landmarks: Tensor | None = None  # [N, L, 2] float detected face-mesh points in training pixels (the
    #                                  photometric motion refinement's anchor, ``landmark_anchor``)
    landmarks_valid: Tensor | None = None  # [N] bool: False where the detector found no face (interpolated)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def targets(self, idx: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
        """Matted images composited on ``background`` [3] and mattes: [B,R,R,3], [B,R,R,1] float."""
        img = self.images[idx].float() / 255.0
        m = self.mattes[idx].float()[..., None] / 255.0
        return img * m + background * (1 - m), m


def split_train_eval(n: int, eval_fraction: float) -> tuple[Tensor, Tensor]:
    """Last ``eval_fraction`` of the frames (at least 1 when n > 1) are held out."""
    n_eval = 0 if n < 2 or eval_fraction <= 0 else max(1, int(round(n * eval_fraction)))
    return torch.arange(0, n - n_eval), torch.arange(n - n_eval, n)


def load_train_data(dataset: FrameDataset, tracking: TrackingResult | None, resolution: int,
                    eval_fraction: float = 0.1, device: torch.device | str = "cpu", *, cameras: Cameras | None = None,
                    split: tuple[list[int], list[int]] | None = None) -> TrainData:
    """The dataset's frames at ``resolution`` with the tracking's cameras and parameters.

    Re-attaching the frames of a saved avatar (``reattach``) passes what the fit recorded instead:
    ``split`` (train_idx, eval_idx) rather than one recomputed from ``eval_fraction``, and the saved
    ``cameras`` [N] (exactly those the avatar was fitted with) rather than the tracking's; the
    tracking may then be None (gone or redone), which leaves ``params`` None."""
    n = len(dataset)
    if tracking is not None and len(tracking) != n:
        raise ValueError(f"dataset has {n} frames but the tracking has {len(tracking)}")
    if cameras is not None and len(cameras) != n:
        raise ValueError(f"dataset has {n} frames but {len(cameras)} cameras were given")
    if tracking is None and cameras is None:
        raise ValueError("give the tracking or the frames' cameras")
    imgs, mattes, parsing = _read_frames(dataset, resolution)
    cams = cameras if cameras is not None else _crop_cameras(tracking.cameras, resolution)
    train_idx, eval_idx = split_train_eval(n, eval_fraction) if split is None else (
        torch.as_tensor(split[0], dtype=torch.long), torch.as_tensor(split[1], dtype=torch.long))
    # Landmarks scale like the principal point (pixel-edge convention).
    lmk = torch.as_tensor(dataset.lmk_crop[..., :2] * (resolution / dataset.resolution), dtype=torch.float32)
    return TrainData(torch.from_numpy(imgs).to(device), torch.from_numpy(mattes).to(device), cams.to(device),
                     None if tracking is None else tracking.params.to(device), dataset.frame_index.copy(),
                     train_idx.to(device), eval_idx.to(device),
                     None if parsing is None else torch.from_numpy(parsing).to(device),
                     lmk.to(device), torch.as_tensor(dataset.detected, dtype=torch.bool).to(device))


def _crop_cameras(cameras: Cameras, resolution: int) -> Cameras:
    """The tracking's crop cameras [N] at ``resolution`` (pixel-edge convention: scaling the principal
    point scales the image exactly)."""
    s = resolution / cameras.width
    Ks = cameras.Ks.clone()
    Ks[:, :2] *= s
    return Cameras(cameras.viewmats.clone(), Ks, resolution, resolution)


def _read_frames(dataset: FrameDataset, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every crop, matte and (when complete) parsing map at ``resolution``:
    uint8 [N, R, R, 3], [N, R, R], [N, R, R] or None."""
    import cv2

    n = len(dataset)
    imgs = np.empty((n, resolution, resolution, 3), np.uint8)
    mattes = np.empty((n, resolution, resolution), np.uint8)
    has_parsing = (dataset.root / "parsing").is_dir()
    parsing = np.empty((n, resolution, resolution), np.uint8) if has_parsing else None
    interp = cv2.INTER_AREA if resolution < dataset.resolution else cv2.INTER_LINEAR
    for i in range(n):
        img, m = dataset.image(i), (dataset.matte(i) * 255).round().astype(np.uint8)
        if img.shape[0] != resolution:
            img = cv2.resize(img, (resolution, resolution), interpolation=interp)
            m = cv2.resize(m, (resolution, resolution), interpolation=interp)
        imgs[i], mattes[i] = img, m
        if parsing is not None:
            lab = dataset.parsing(i)
            if lab is None:  # an incomplete parsing folder: use none rather than a partial one
                parsing = None
            else:
                parsing[i] = lab if lab.shape[0] == resolution else cv2.resize(
                    lab, (resolution, resolution), interpolation=cv2.INTER_NEAREST)
    return imgs, mattes, parsing
