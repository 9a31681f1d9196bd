"""Perception: video I/O, face landmarks, mattes, face parsing, head crops, cached preprocessing."""

from .dataset import FrameDataset
from .dataset_parsing import parse_dataset
from .face_parser import FaceParser, colourise, overlay, parse_to_labels
from .facer_parser import FacerParser
from .landmark_parser import LandmarkParser, LandmarkParserConfig
from .preprocess import PreprocessConfig, preprocess
from .video import VideoInfo, iter_frames, probe_video

__all__ = ["FaceParser", "FacerParser", "FrameDataset", "LandmarkParser", "LandmarkParserConfig", "PreprocessConfig",
           "VideoInfo", "colourise", "iter_frames", "overlay", "parse_dataset", "parse_to_labels", "preprocess",
           "probe_video"]
