"""Reconstruction: tracked frames -> FLAME-bound Gaussian avatar (losses, metrics, checkpoints)."""

from .config import ReconstructConfig, preset
from .data import TrainData, load_train_data
from .trainer import FitResult, TrainingDivergedError, evaluate, fit_avatar

__all__ = ["FitResult", "ReconstructConfig", "TrainData", "TrainingDivergedError", "evaluate", "fit_avatar",
           "load_train_data", "preset"]
