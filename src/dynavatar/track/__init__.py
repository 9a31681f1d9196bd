"""FLAME tracking from dense landmarks, and the result container."""

from .importers import import_vhap
from .landmark_model import LandmarkFlame
from .result import TrackingResult
from .tracker import TrackerConfig, track

__all__ = ["import_vhap", "LandmarkFlame", "TrackerConfig", "TrackingResult", "track"]
