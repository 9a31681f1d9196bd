"""The ground floor: pure maths and the small shared vocabularies every stage uses. No state, no I/O.

- torch: rotations, triangle frames, cameras (``Cameras`` and the pinhole maths), the photometric loss;
- plain Python: label names (``labels``) and mediapipe index sets (``landmark_sets``);
- numpy/scipy: triangle meshes, closest points on them, mesh registration.

Every name loads on first use, so ``dynavatar.geometry.labels`` (needed by the prompt refiner, which
must stay light) does not pull in torch or scipy.
"""

import importlib

# name -> module that defines it
_LAZY = {
    **dict.fromkeys(("axis_angle_to_matrix", "axis_angle_to_quaternion", "matrix_to_axis_angle",
                     "matrix_to_quaternion", "normalize_quaternion", "quaternion_multiply", "quaternion_to_matrix",
                     "skew"), "rotations"),
    **dict.fromkeys(("TriangleFrames", "gather_triangles", "safe_norm", "safe_normalize", "triangle_frames"),
                    "triangles"),
    **dict.fromkeys(("Cameras", "camera_centers", "intrinsics_from_fov", "look_at_viewmat", "orbit_eyes",
                     "project_points"), "cameras"),
    **dict.fromkeys(("psnr", "ssim", "l1", "photometric_loss"), "photometric"),
    **dict.fromkeys(("LABEL_NAMES", "NUM_LABELS", "LABEL_COLOURS", "REGION_TO_LABEL", "label_index"), "labels"),
    **dict.fromkeys(("face_normals", "vertex_normals", "vertex_adjacency", "boundary_vertices", "uniform_laplacian",
                     "vertex_components", "rms_radius"), "mesh"),
    **dict.fromkeys(("closest_point_on_triangles", "closest_point_on_mesh"), "closest_point"),
    **dict.fromkeys(("Registration", "register_mesh", "umeyama"), "registration"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"dynavatar.geometry.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dynavatar.geometry' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
