"""A preprocessed clip on disk, and its loader.

Folder layout (written by :func:`dynavatar.perceive.preprocess`; carry it to a GPU machine as is)::

    meta.json          format version, source video + fingerprint, fps, sizes, settings, backends,
                       frames without a face; with parsing also "parser" (its name) and
                       "label_names" (the label set, index order)
    frames/%06d.jpg    square head crops, RGB, resolution x resolution (JPEG quality 95)
    mattes/%06d.png    foreground alpha of each crop, 8-bit
    parsing/%06d.png   face parsing of each crop: uint8 label index per pixel into
                       meta["label_names"] (``geometry.labels.LABEL_NAMES``), lossless PNG.
                       Optional: older folders have none (``perceive.parse_dataset`` adds it)
    landmarks.npz      frame_index [N]  index of each kept frame in the source video
                       detected    [N]  bool, False where the landmarks were interpolated
                       n_faces     [N]  faces seen in the frame
                       lmk_crop    [N, L, 3]  landmarks in crop pixels (x, y, relative z)
                       lmk_orig    [N, L, 2]  landmarks in original-frame pixels
                       crop        [N, 3]     crop window (x0, y0, side) in original-frame pixels

Pixel coordinates use the pixel-edge convention: pixel (i, j) spans [i, i+1] x [j, j+1].
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..errors import VideoError

__all__ = ["FrameDataset", "DATASET_FORMAT"]

DATASET_FORMAT = "dynavatar-preprocessed/1"


@dataclasses.dataclass
class FrameDataset:
    root: Path
    meta: dict
    frame_index: np.ndarray  # [N]
    detected: np.ndarray  # [N] bool
    n_faces: np.ndarray  # [N]
    lmk_crop: np.ndarray  # [N, L, 3]
    lmk_orig: np.ndarray  # [N, L, 2]
    crop: np.ndarray  # [N, 3]

    @classmethod
    def load(cls, root: str | Path) -> "FrameDataset":
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise VideoError(f"{root} is not a preprocessed dataset (no meta.json); run `dynavatar preprocess VIDEO -o {root}`")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise VideoError(f"{meta_path}: unreadable ({e}); preprocess the video again") from None
        if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise VideoError(f"{root}: unknown dataset format {found!r}; preprocess the video again")
        try:
            with np.load(root / "landmarks.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise VideoError(f"{root / 'landmarks.npz'}: unreadable ({e}); preprocess the video again") from None
        return cls(root=root, meta=meta, **arrays)

    def __len__(self) -> int:
        return int(len(self.frame_index))

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    def image(self, i: int) -> np.ndarray:
        """Crop i as RGB uint8 [R, R, 3]."""
        import imageio.v3 as iio

        return np.asarray(iio.imread(self.root / "frames" / f"{i:06d}.jpg"))

    def matte(self, i: int) -> np.ndarray:
        """Foreground alpha of crop i, float32 [R, R] in [0, 1]."""
        import imageio.v3 as iio

        return np.asarray(iio.imread(self.root / "mattes" / f"{i:06d}.png"), dtype=np.float32) / 255.0

    @property
    def has_parsing(self) -> bool:
        """True when every frame has a parsing map."""
        folder = self.root / "parsing"
        return folder.is_dir() and all((folder / f"{i:06d}.png").is_file() for i in range(len(self)))

    def parsing(self, i: int) -> np.ndarray | None:
        """Label indices of crop i, uint8 [R, R] (into ``meta["label_names"]``), or None when the
        dataset has no parsing for it (folders written before parsing existed)."""
        path = self.root / "parsing" / f"{i:06d}.png"
        if not path.is_file():
            return None
        import imageio.v3 as iio

        return np.asarray(iio.imread(path), dtype=np.uint8)

    def to_original(self, i: int, points_crop: np.ndarray) -> np.ndarray:
        """Crop pixels [..., 2] of frame i -> original-frame pixels [..., 2]."""
        x0, y0, side = self.crop[i]
        return points_crop * (side / self.resolution) + np.array([x0, y0])

    @property
    def missing_frames(self) -> list[int]:
        """Source frame indices where no face was detected (landmarks interpolated)."""
        return [int(f) for f in self.frame_index[~self.detected]]
