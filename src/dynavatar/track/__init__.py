"""FLAME tracking from dense landmarks, the result container, and its cache beside the dataset."""

from .cache import cached_tracking, tracked_head
from .importers import import_vhap
from .landmark_model import LandmarkFlame
from .result import TrackingResult
from .tracker import TrackerConfig, track

__all__ = ["cached_tracking", "import_vhap", "LandmarkFlame", "TrackerConfig", "TrackingResult", "track",
           "tracked_head"]
