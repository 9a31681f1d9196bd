"""FLAME tracking from dense landmarks, and the result container."""

from .landmark_model import LandmarkFlame
from .result import TrackingResult
from .tracker import TrackerConfig, track

__all__ = ["LandmarkFlame", "TrackerConfig", "TrackingResult", "track"]
