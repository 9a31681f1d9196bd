"""Training frames in memory: crops + mattes (uint8), cameras and tracked FLAME parameters."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import torch
from torch import Tensor

from ..flame import FlameParams
from ..perceive.dataset import FrameDataset
from ..perceive.matting import despill, foreground_colours
from ..geometry.cameras import Cameras
from ..track.result import TrackingResult

__all__ = ["TrainData", "load_train_data", "split_train_eval", "without_faceless", "MIN_FRAMES_TO_HOLD_OUT"]

logger = logging.getLogger("dynavatar.reconstruct")


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
    frame_bottom: Tensor | None = None  # [N] long: the row (training pixels) where the source video frame ends
    #                                   inside each crop, R when it reaches the crop's bottom or beyond. A
    #                                   tight video's crop runs past its frame; the matte is 0 there (padding)
    seen_rows: Tensor | None = None  # [N, R] bool: the crop's rows that show the source video's picture
    seen_cols: Tensor | None = None  # [N, R] bool: ... and its columns (None: the whole crop, older datasets)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def targets(self, idx: Tensor, background: Tensor) -> tuple[Tensor, Tensor]:
        """Matted images composited on ``background`` [3] and mattes: [B,R,R,3], [B,R,R,1] float."""
        img = self.images[idx].float() / 255.0
        m = self.mattes[idx].float()[..., None] / 255.0
        return img * m + background * (1 - m), m

    def seen(self, idx: Tensor) -> Tensor | None:
        """Which pixels of frames ``idx`` show the video's picture rather than the padding past its
        edges (``photometric``'s ``seen``): [B, R, R, 1] bool; None when unrecorded (every pixel is).
        No check on the host whether all are: the training step would wait for the GPU."""
        if self.seen_rows is None or self.seen_cols is None:
            return None
        rows, cols = self.seen_rows[idx], self.seen_cols[idx]  # [B, R] each
        return (rows[:, :, None] & cols[:, None, :])[..., None]


#: Below this many frames nothing is held out: the one frame trains, and held-out figures are NaN
#: with ``frames == 0`` (``trainer.evaluate`` logs why; ``bench fit`` prints "n/a" and says so).
MIN_FRAMES_TO_HOLD_OUT = 2


def split_train_eval(n: int, eval_fraction: float) -> tuple[Tensor, Tensor]:
    """The last ``eval_fraction`` of the frames are held out: at least 1 once the clip has
    ``MIN_FRAMES_TO_HOLD_OUT`` frames, and always at least 1 training frame.

    Why a contiguous tail, also on short clips: it is the self-reenactment protocol of the monocular
    avatar papers, and it judges motion the avatar never saw. Frames interleaved with the training
    frames (every 10th, say) sit 40 ms from a trained neighbour at 25 fps, so they measure
    interpolation and flatter the figures most on exactly the short clips where little motion is
    seen. Why not more on short clips: a 78-frame (3 s) clip keeps 70 training frames and holds out
    8 (0.3 s); holding out a fixed second instead would take a third of what the avatar learns from.
    n -> (train_idx [n - E], eval_idx [E])"""
    if n < MIN_FRAMES_TO_HOLD_OUT or eval_fraction <= 0:
        n_eval = 0
    else:
        n_eval = min(n - 1, max(1, int(round(n * eval_fraction))))
    return torch.arange(0, n - n_eval), torch.arange(n - n_eval, n)


def without_faceless(train_idx: Tensor, eval_idx: Tensor, detected) -> tuple[Tensor, Tensor]:
    """The split without the frames where no face was found (the face left the frame, turned away or
    was covered: preprocessing interpolated its landmarks across the gap, so its tracked head sits
    where no head is). Training on them teaches the avatar to vanish; judging on them scores a head
    against an empty frame. They stay in the clip (renders, motion) but are neither trained on nor
    held out. When no training frame would be left, the split is kept as it is.
    detected: bool [N]. -> (train_idx, eval_idx)"""
    det = torch.as_tensor(np.asarray(detected, dtype=bool))
    if bool(det.all()) or not bool(det[train_idx].any()):
        return train_idx, eval_idx
    train, held = train_idx[det[train_idx]], eval_idx[det[eval_idx]]
    logger.warning("no face in %d of %d frames: they are neither trained on nor held out (%d training, %d held-out "
                   "frames left)", int((~det).sum()), len(det), len(train), len(held))
    return train, held


def load_train_data(dataset: FrameDataset, tracking: TrackingResult | None, resolution: int,
                    eval_fraction: float = 0.1, device: torch.device | str = "cpu", *, cameras: Cameras | None = None,
                    split: tuple[list[int], list[int]] | None = None, foreground: bool = True,
                    despill: bool = True) -> TrainData:
    """The dataset's frames at ``resolution`` with the tracking's cameras and parameters.

    Re-attaching the frames of a saved avatar (``reattach``) passes what the fit recorded instead:
    ``split`` (train_idx, eval_idx) rather than one recomputed from ``eval_fraction``, and the saved
    ``cameras`` [N] (exactly those the avatar was fitted with) rather than the tracking's; the
    tracking may then be None (gone or redone), which leaves ``params`` None. ``foreground``: the
    crops' edges carry the person's colour alone (``_read_frames``); ``despill``: and, with it, a green
    or blue screen's light is taken off the person (``matting.despill``)."""
    n = len(dataset)
    if tracking is not None and len(tracking) != n:
        raise ValueError(f"dataset has {n} frames but the tracking has {len(tracking)}")
    if cameras is not None and len(cameras) != n:
        raise ValueError(f"dataset has {n} frames but {len(cameras)} cameras were given")
    if tracking is None and cameras is None:
        raise ValueError("give the tracking or the frames' cameras")
    pictures = _picture_rows_cols(dataset, resolution)  # [N, R] rows, [N, R] columns that show the video
    imgs, mattes, parsing = _read_frames(dataset, resolution, pictures if foreground else None, despill)
    cams = cameras if cameras is not None else _crop_cameras(tracking.cameras, resolution)
    if split is None:
        train_idx, eval_idx = without_faceless(*split_train_eval(n, eval_fraction), dataset.detected)
    else:
        train_idx, eval_idx = torch.as_tensor(split[0], dtype=torch.long), torch.as_tensor(split[1], dtype=torch.long)
    # Landmarks scale like the principal point (pixel-edge convention).
    lmk = torch.as_tensor(dataset.lmk_crop[..., :2] * (resolution / dataset.resolution), dtype=torch.float32)
    rows, cols = (torch.from_numpy(a).to(device) for a in pictures)
    return TrainData(torch.from_numpy(imgs).to(device), torch.from_numpy(mattes).to(device), cams.to(device),
                     None if tracking is None else tracking.params.to(device), dataset.frame_index.copy(),
                     train_idx.to(device), eval_idx.to(device),
                     None if parsing is None else torch.from_numpy(parsing).to(device),
                     lmk.to(device), torch.as_tensor(dataset.detected, dtype=torch.bool).to(device),
                     _frame_bottom(dataset, resolution).to(device), rows, cols)


def _video_frame(dataset: FrameDataset) -> tuple[float, float] | None:
    """The source video's (width, height) in original pixels, when the dataset records it and a crop
    window for every frame (older datasets do not: None)."""
    size = dataset.meta.get("original_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, (int, float)) and v > 0
                                                                       for v in size)):
        return None
    return (float(size[0]), float(size[1])) if dataset.crop.shape == (len(dataset), 3) else None


def _letterbox(dataset: FrameDataset) -> tuple[float, float, float, float]:
    """The black bars baked into the video (top, bottom, left, right) in original pixels; 0 unrecorded."""
    bars = dataset.meta.get("letterbox")
    return tuple(float(v) for v in bars) if isinstance(bars, (list, tuple)) and len(bars) == 4 else (0.0,) * 4


def _frame_bottom(dataset: FrameDataset, resolution: int) -> Tensor:
    """Per crop, the first training-pixel row below the source video frame (``TrainData.frame_bottom``),
    from the crop windows (x0, y0, side) and the video's size; R where unknown (older datasets).
    -> [N] long"""
    size = _video_frame(dataset)
    if size is None:
        return torch.full((len(dataset),), resolution, dtype=torch.long)
    bottom_bar = _letterbox(dataset)[1]  # a black bar at the bottom ends the picture above the frame's edge
    y0, side = dataset.crop[:, 1].astype(np.float64), np.maximum(dataset.crop[:, 2].astype(np.float64), 1e-6)
    rows = np.floor((float(size[1]) - bottom_bar - y0) * resolution / side)
    return torch.as_tensor(np.clip(rows, 0, resolution), dtype=torch.long)


def _crop_cameras(cameras: Cameras, resolution: int) -> Cameras:
    """The tracking's crop cameras [N] at ``resolution`` (pixel-edge convention: scaling the principal
    point scales the image exactly)."""
    s = resolution / cameras.width
    Ks = cameras.Ks.clone()
    Ks[:, :2] *= s
    return Cameras(cameras.viewmats.clone(), Ks, resolution, resolution)


def _read_frames(dataset: FrameDataset, resolution: int, pictures: tuple[np.ndarray, np.ndarray] | None = None,
                 despill_key: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every crop, matte and (when complete) parsing map at ``resolution``:
    uint8 [N, R, R, 3], [N, R, R], [N, R, R] or None.

    With ``pictures`` (``_picture_rows_cols``: the rows and columns of each crop that show the video)
    the crops' partly transparent pixels carry the person's colour alone
    (``matting.foreground_colours``), so a composite is the person over the new background, not
    over a mix of it and the room's wall; with ``despill_key`` too, a chroma-key backdrop's light is
    taken off the person (``matting.despill``). Frames are read in threads (decoding and the box filters
    release the GIL); each frame's result depends on that frame only."""
    import cv2
    from concurrent.futures import ThreadPoolExecutor

    n = len(dataset)
    imgs = np.empty((n, resolution, resolution, 3), np.uint8)
    mattes = np.empty((n, resolution, resolution), np.uint8)
    has_parsing = (dataset.root / "parsing").is_dir()
    parsing = np.empty((n, resolution, resolution), np.uint8) if has_parsing else None
    interp = cv2.INTER_AREA if resolution < dataset.resolution else cv2.INTER_LINEAR

    def read(i: int) -> bool:
        img, m = dataset.image(i), (dataset.matte(i) * 255).round().astype(np.uint8)
        if img.shape[0] != resolution:
            img = cv2.resize(img, (resolution, resolution), interpolation=interp)
            m = cv2.resize(m, (resolution, resolution), interpolation=interp)
        if pictures is not None:
            rows, cols = pictures[0][i], pictures[1][i]
            inside, alpha = rows[:, None] & cols[None, :], m.astype(np.float32) / 255.0
            img = foreground_colours(img, alpha, inside)
            if despill_key:
                img = despill(img, alpha, inside)
        imgs[i], mattes[i] = img, m
        if parsing is None:
            return True
        lab = dataset.parsing(i)
        if lab is None:
            return False
        parsing[i] = lab if lab.shape[0] == resolution else cv2.resize(
            lab, (resolution, resolution), interpolation=cv2.INTER_NEAREST)
        return True

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        complete = all(list(pool.map(read, range(n))))
    if not complete:  # an incomplete parsing folder: use none rather than a partial one
        parsing = None
    return imgs, mattes, parsing


#: Original-video pixels next to the picture's edges that are not trusted: a video's outermost rows are often
#: dark or smeared by the encoder, and a letterbox bar's edge is soft or a pixel off what was detected (d0's last
#: picture row is black: the avatar learned a black line along the frame's bottom and thin splats fanning past it)
EDGE_MARGIN_PX = 2.0


def _picture_rows_cols(dataset: FrameDataset, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Per crop, which training-pixel rows and columns show the source video's picture (not the
    black padding past its edges or its letterbox bars): bool [N, R], [N, R]; all True where the
    video's size is unknown (older datasets). A training pixel shows it when its whole footprint lies
    inside the picture, ``EDGE_MARGIN_PX`` away from the edges: one that straddles an edge is the
    resize's mix of picture and padding."""
    size = _video_frame(dataset)
    if size is None:
        return np.ones((len(dataset), resolution), bool), np.ones((len(dataset), resolution), bool)
    top, bottom, left, right = _letterbox(dataset)
    x0, y0, side = (dataset.crop[:, k:k + 1].astype(np.float64) for k in range(3))
    starts = np.arange(resolution) / resolution  # [R], pixel footprints' first edges as a fraction of the side
    step, m = side / resolution, EDGE_MARGIN_PX  # [N, 1] original pixels per training pixel
    y, x = y0 + starts * side, x0 + starts * side  # [N, R] in original-frame pixels
    rows = (y >= top + m) & (y + step <= size[1] - bottom - m)
    return rows, (x >= left + m) & (x + step <= size[0] - right - m)
