"""FLAME posed at its landmarks only: the fast inner loop of landmark tracking.

A landmark depends on the three vertices of its triangle, so fitting hundreds of frames needs
only those vertices (~1.4k of FLAME's 5k) through the skinning; the joints still come from the
whole shaped mesh, through the precomputed regression of the blendshapes (``J_regressor @ dirs``).
Results are identical to ``FlameModel(params).landmarks`` (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InvalidParametersError
from ..flame import FlameModel, FlameParams
from ..flame.lbs import blend_shapes, linear_blend_skinning

__all__ = ["LandmarkFlame"]


class LandmarkFlame(nn.Module):
    def __init__(self, model: FlameModel, landmark_set: str = "mediapipe") -> None:
        super().__init__()
        if landmark_set not in model.landmark_sets:
            raise InvalidParametersError(
                f"the head model has no '{landmark_set}' landmark embedding (has: {list(model.landmark_sets)}); "
                "use the embedded default head or a FLAME file converted with an embedding")
        lf = getattr(model, f"lmk_{landmark_set}_faces")
        tri = model.faces[lf]  # [L, 3]
        used, local = torch.unique(tri.reshape(-1), return_inverse=True)
        v = model.n_vertices
        self.n_shape, self.n_expr, self.parents = model.n_shape, model.n_expr, model.parents
        self.register_buffer("tri_local", local.reshape(-1, 3))  # [L, 3] into the subset
        self.register_buffer("bary", getattr(model, f"lmk_{landmark_set}_bary").clone())  # [L, 3]
        self.register_buffer("v_template", model.v_template[used].clone())  # [U, 3]
        self.register_buffer("shapedirs", model.shapedirs[used].clone())  # [U, 3, K]
        pd = model.posedirs.reshape(-1, v, 3)[:, used].reshape(model.posedirs.shape[0], -1)
        self.register_buffer("posedirs", pd.clone())  # [36, U*3]
        self.register_buffer("weights", model.lbs_weights[used].clone())  # [U, 5]
        self.register_buffer("j_template", model.J_regressor @ model.v_template)  # [5, 3]
        self.register_buffer("j_dirs", torch.einsum("jv,vck->jck", model.J_regressor, model.shapedirs))  # [5, 3, K]

    def forward(self, params: FlameParams) -> Tensor:
        """-> landmarks [B, L, 3] on the posed surface (translation included)."""
        coeffs = torch.cat([params.shape, params.expr], dim=-1)
        v_shaped = self.v_template + blend_shapes(coeffs, self.shapedirs)  # [B, U, 3]
        joints = self.j_template + blend_shapes(coeffs, self.j_dirs)  # [B, 5, 3]
        verts, _ = linear_blend_skinning(params.pose(), v_shaped, joints, self.posedirs, self.weights, self.parents)
        tri = verts[:, self.tri_local]  # [B, L, 3, 3]
        return (tri * self.bary[None, :, :, None]).sum(2) + params.translation[:, None]
