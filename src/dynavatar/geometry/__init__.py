"""Pure tensor maths: rotations, triangle frames, cameras (no state, no I/O)."""

from .rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    normalize_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
    skew,
)

__all__ = [
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "normalize_quaternion",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "skew",
]
