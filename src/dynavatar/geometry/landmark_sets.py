"""Mediapipe face-mesh index sets (478 points with iris refinement) shared by every stage.

The parser paints face parts from these outlines, the tracker down-weights the silhouette, the
reconstruction's landmark anchor weighs the mouth: one copy here, on the ground floor, so no stage
reaches sideways into another for them. "left"/"right" are the person's own (mediapipe's convention).
"""

from __future__ import annotations

__all__ = ["LIP_OUTER_UPPER", "LIP_OUTER_LOWER", "LIP_INNER_UPPER", "LIP_INNER_LOWER", "N_MESH_POINTS", "FACE_MESH_POLYGONS", "MOUTH_LANDMARKS", "MP_FACE_OVAL", "MP_OUTER_EYE_CORNERS"]

N_MESH_POINTS = 478  # mediapipe face mesh with iris refinement

# --------------------------------------------------------------------------------------------
# Mediapipe face-mesh polygons. Index lists follow mediapipe's published connection sets
# (mediapipe.python.solutions.face_mesh_connections: FACEMESH_LIPS, FACEMESH_LEFT_EYE, ...),
# walked into closed outlines; "left"/"right" are the person's own (mediapipe's convention).
# the parsing tests check every consecutive pair against those sets where one exists.
# --------------------------------------------------------------------------------------------
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
#: The distinct mediapipe points of the four lip contours the lips are painted from (40).
MOUTH_LANDMARKS = tuple(sorted(set(LIP_OUTER_UPPER + LIP_OUTER_LOWER + LIP_INNER_UPPER + LIP_INNER_LOWER)))

FACE_MESH_POLYGONS: dict[str, tuple[int, ...]] = {
    # FACEMESH_FACE_OVAL, clockwise from the forehead top (10) in the image.
    "face_oval": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                  152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
    # FACEMESH_RIGHT_EYE / FACEMESH_LEFT_EYE: the eyelid margins (upper then lower).
    "right_eye": (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    "left_eye": (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249),
    # FACEMESH_*_EYEBROW: lower edge outwards-in, then upper edge back.
    "right_brow": (46, 53, 52, 65, 55, 107, 66, 105, 63, 70),
    "left_brow": (276, 283, 282, 295, 285, 336, 296, 334, 293, 300),
    # FACEMESH_LIPS: each lip between its outer and inner contour; the mouth opening inside the inner one.
    "upper_lip": LIP_OUTER_UPPER + tuple(reversed(LIP_INNER_UPPER)),
    "lower_lip": LIP_OUTER_LOWER + tuple(reversed(LIP_INNER_LOWER)),
    "mouth_interior": LIP_INNER_UPPER + tuple(reversed(LIP_INNER_LOWER[1:-1])),
    # Our own nose outline (mediapipe's FACEMESH_NOSE is a ridge line + the nostril rim, not an
    # area): from the bridge between the eyes (168) down the side walls to the alae and the
    # nostril base (2), mirror-symmetric in the mesh.
    "nose": (168, 417, 351, 419, 456, 420, 360, 279, 294, 327, 326, 2, 97, 98, 64, 49, 131, 198, 236, 196, 122, 193),
    # Skin samples for the colour model, never labelled: the middle of each cheek (below the eye
    # bags, beside the nose), the nose's side walls, the middle of the forehead and the chin. Wide
    # sampling covers make-up (blushed cheeks) and uneven light; the robust fit drops what is not
    # skin there (a fringe, stubble, highlights).
    "right_cheek": (117, 118, 101, 36, 205, 187, 123),
    "left_cheek": (346, 347, 330, 266, 425, 411, 352),
    "nose_wall": (122, 351, 419, 248, 195, 3, 196),
    "forehead": (108, 151, 337, 336, 9, 107),
    "chin": (83, 18, 313, 421, 428, 199, 208, 201),
}

#: mediapipe face-oval indices: silhouette points, less reliable under rotation (down-weighted).
MP_FACE_OVAL = FACE_MESH_POLYGONS["face_oval"]
#: mediapipe face-mesh indices of the right and left outer eye corners (inter-ocular distance).
MP_OUTER_EYE_CORNERS = (33, 263)
