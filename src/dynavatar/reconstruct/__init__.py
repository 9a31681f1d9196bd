"""Reconstruction: tracked frames -> FLAME-bound Gaussian avatar (losses, metrics, the motion that poses it)."""

from .config import ReconstructConfig
from .data import TrainData, load_train_data
from .motion import reenactment_params, training_motion
from .trainer import FitResult, TrainingDivergedError, evaluate, fit_avatar

__all__ = ["FitResult", "ReconstructConfig", "TrainData", "TrainingDivergedError", "evaluate", "fit_avatar",
           "load_train_data", "reenactment_params", "training_motion"]
