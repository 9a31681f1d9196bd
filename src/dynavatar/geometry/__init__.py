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
from .triangles import TriangleFrames, gather_triangles, safe_norm, safe_normalize, triangle_frames
from .cameras import (
    Cameras,
    camera_centers,
    intrinsics_from_fov,
    look_at_viewmat,
    orbit_eyes,
    project_points,
)

__all__ = [
    "Cameras",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "normalize_quaternion",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "skew",
    "TriangleFrames",
    "gather_triangles",
    "safe_norm",
    "safe_normalize",
    "triangle_frames",
    "camera_centers",
    "intrinsics_from_fov",
    "look_at_viewmat",
    "orbit_eyes",
    "project_points",
]
