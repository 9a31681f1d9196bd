"""Perception: video I/O, face landmarks, mattes, head crops, cached preprocessing."""

from .dataset import FrameDataset
from .preprocess import PreprocessConfig, preprocess
from .video import VideoInfo, iter_frames, probe_video

__all__ = ["FrameDataset", "PreprocessConfig", "VideoInfo", "iter_frames", "preprocess", "probe_video"]
