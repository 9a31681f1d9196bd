"""``FlameModel``: a stateless FLAME-format head model (buffers only, our own skinning)."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import FlameFileError, InvalidParametersError
from .file_format import FlameData, read_flame_file
from .lbs import barycentric_points, blend_shapes, linear_blend_skinning
from .params import FlameOutput, FlameParams
from .resolve import resolve_head_path

__all__ = ["FlameModel"]

logger = logging.getLogger("dynavatar.flame")


class FlameModel(nn.Module):
    """A FLAME-format head model as an ``nn.Module`` that holds buffers only (nothing to train).

    ``model(params) -> FlameOutput(vertices [B,V,3], joints [B,5,3], landmarks [B,L,3] | None)``.
    Landmarks are mediapipe's 478 face-mesh points when the model has that embedding (the embedded
    default head does); ask for another set with ``landmark_set="ibug68"``.
    """

    def __init__(self, data: FlameData, n_shape: int | None = None, n_expr: int | None = None) -> None:
        super().__init__()
        s_total, e_total = data.n_shape_total, data.n_expr_total
        n_shape = s_total if n_shape is None else int(n_shape)
        n_expr = e_total if n_expr is None else int(n_expr)
        if not 0 <= n_shape <= s_total:
            raise FlameFileError(f"n_shape={n_shape} but the model has {s_total} identity components")
        if not 0 <= n_expr <= e_total:
            raise FlameFileError(f"n_expr={n_expr} but the model has {e_total} expression components")
        self.n_shape, self.n_expr = n_shape, n_expr
        self.parents: list[int] = [int(p) for p in data.parents]
        self.meta = dict(data.meta)
        f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
        v = data.n_vertices
        self.register_buffer("v_template", f32(data.v_template))  # [V, 3]
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.long))  # [F, 3]
        dirs = np.concatenate([data.shapedirs[..., :n_shape], data.shapedirs[..., s_total:s_total + n_expr]], -1)
        self.register_buffer("shapedirs", f32(dirs))  # [V, 3, n_shape + n_expr]
        # [V, 3, 36] -> [36, V*3] so that offsets = pose_feature @ posedirs.
        self.register_buffer("posedirs", f32(data.posedirs.reshape(v * 3, -1).T))
        self.register_buffer("J_regressor", f32(data.J_regressor))  # [5, V]
        self.register_buffer("lbs_weights", f32(data.weights))  # [V, 5]
        self.landmark_sets: tuple[str, ...] = tuple(sorted(data.landmarks))
        for name, (lf, lb) in data.landmarks.items():
            self.register_buffer(f"lmk_{name}_faces", torch.as_tensor(lf, dtype=torch.long))
            self.register_buffer(f"lmk_{name}_bary", f32(lb))
        self.region_names: list[str] | None = data.region_names
        if data.vertex_region is not None:
            self.register_buffer("vertex_region", torch.as_tensor(data.vertex_region, dtype=torch.long))
        else:
            self.vertex_region = None
        self.expr_names: list[str] | None = data.expr_names[:n_expr] if data.expr_names else None
        self.register_buffer("torso_vertices", None)  # [T, 3] relative to the translation; see with_torso
        self.register_buffer("torso_motion_ref", None)  # [6] head translation + rotation the map is relative to
        self.register_buffer("torso_motion_map", None)  # [6, 3] head motion -> torso shift (flame.torso)
        self.n_head_faces = int(self.faces.shape[0])

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | os.PathLike | None = None, n_shape: int | None = None,
             n_expr: int | None = None, embed: bool = True) -> "FlameModel":
        """Load a FLAME-format file; ``path=None`` resolves ``$DYNAVATAR_FLAME``, then
        ``assets/flame/``, then the embedded default head (and logs which one was used).

        ``embed``: a model without our mediapipe landmark embedding or vertex regions (an official
        FLAME file) gets those of the default head, registered onto its template and cached beside
        the file (:func:`dynavatar.flame.transfer.ensure_embedding`; seconds the first time)."""
        resolved = resolve_head_path(path)
        data = read_flame_file(resolved.path)
        if embed and ("mediapipe" not in data.landmarks or data.vertex_region is None):
            from .transfer import ensure_embedding

            data = ensure_embedding(data, path=resolved.path)
        model = cls(data, n_shape=n_shape, n_expr=n_expr)
        model.source = f"{resolved.path} ({resolved.source})"
        logger.info("head model: %s from %s [%d vertices, %d shape, %d expr]",
                    resolved.path.name, resolved.source, data.n_vertices, model.n_shape, model.n_expr)
        return model

    # ------------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def default_landmark_set(self) -> str | None:
        if "mediapipe" in self.landmark_sets:
            return "mediapipe"
        return self.landmark_sets[0] if self.landmark_sets else None

    def _derived(self) -> "FlameModel":
        """A shallow copy whose buffer table can be changed without touching ``self`` (the
        unchanged buffers stay shared)."""
        import copy

        m = copy.copy(self)
        m._buffers = dict(self._buffers)
        return m

    def with_components(self, n_shape: int, n_expr: int) -> "FlameModel":
        """This model using only its first ``n_shape`` identity and ``n_expr`` expression components
        (buffers are shared, except the sliced blendshapes); ``self`` when nothing changes."""
        if (n_shape, n_expr) == (self.n_shape, self.n_expr):
            return self
        if not (0 <= n_shape <= self.n_shape and 0 <= n_expr <= self.n_expr):
            raise FlameFileError(f"cannot use {n_shape} shape / {n_expr} expression components of a model "
                                 f"that has {self.n_shape} / {self.n_expr}")
        m = self._derived()
        dirs = self.shapedirs
        m._buffers["shapedirs"] = torch.cat([dirs[..., :n_shape], dirs[..., self.n_shape:self.n_shape + n_expr]], -1)
        m.n_shape, m.n_expr = n_shape, n_expr
        m.expr_names = self.expr_names[:n_expr] if self.expr_names else None
        return m

    def with_torso(self, vertices: Tensor, faces: Tensor, motion: tuple[Tensor, Tensor] | None = None) -> "FlameModel":
        """This model with a torso sheet (``flame.torso``) appended: ``vertices [T, 3]`` relative
        to the head's translation (they follow it, not the rotation), ``faces [Ft, 3]`` indexing
        them. Forward then returns ``V + T`` vertices, ``faces`` has ``F + Ft`` rows and the
        sheet's vertices carry the "torso" region. Replaces an existing sheet. ``motion``
        (``flame.torso.fit_torso_motion``: reference [6], map [6, 3]) predicts the sheet's shift
        from the head's motion for parameters that carry no ``torso`` of their own."""
        from .torso import TORSO_REGION

        base = self.without_torso()
        m = base._derived()
        dev = base.faces.device
        m._buffers["torso_vertices"] = vertices.to(dev, torch.float32)
        if motion is not None:
            m._buffers["torso_motion_ref"], m._buffers["torso_motion_map"] = (t.to(dev, torch.float32) for t in motion)
        m._buffers["faces"] = torch.cat([base.faces, faces.to(dev, torch.long) + base.n_vertices])
        m.n_head_faces = int(base.faces.shape[0])
        if base.vertex_region is not None and base.region_names:
            names = list(base.region_names) + [TORSO_REGION]
            m.region_names = names
            m._buffers["vertex_region"] = torch.cat([base.vertex_region, torch.full(
                (vertices.shape[0],), len(names) - 1, dtype=torch.long, device=base.vertex_region.device)])
        return m

    def without_torso(self) -> "FlameModel":
        """The head alone (``self`` when there is no torso sheet)."""
        if self.torso_vertices is None:
            return self
        m = self._derived()
        m._buffers["torso_vertices"] = m._buffers["torso_motion_ref"] = m._buffers["torso_motion_map"] = None
        m._buffers["faces"] = self.faces[:self.n_head_faces]
        if self.vertex_region is not None and self.region_names:
            m.region_names = list(self.region_names[:-1])
            m._buffers["vertex_region"] = self.vertex_region[:self.n_vertices]
        return m

    @property
    def torso_motion(self) -> tuple[Tensor, Tensor] | None:
        """(reference [6], map [6, 3]) of ``with_torso``'s ``motion``, or None."""
        if self.torso_motion_map is None:
            return None
        return self.torso_motion_ref, self.torso_motion_map

    def predict_torso(self, params: FlameParams) -> Tensor:
        """The torso sheet's shift that the head's translation and rotation predict (zeros without
        a fitted map).  -> [B, 3]"""
        if self.torso_motion_map is None:
            return params.translation.new_zeros(params.translation.shape)
        x = torch.cat([params.translation, params.rotation], -1) - self.torso_motion_ref  # [B, 6]
        return x @ self.torso_motion_map.to(x.dtype)

    @property
    def torso_faces(self) -> Tensor | None:
        """[Ft, 3] the sheet's faces indexing its own vertices (None without a sheet)."""
        if self.torso_vertices is None:
            return None
        return self.faces[self.n_head_faces:] - self.n_vertices

    def zero_params(self, batch: int = 1) -> FlameParams:
        return FlameParams.zeros(batch, self.n_shape, self.n_expr, device=self.v_template.device,
                                 dtype=self.v_template.dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, params: FlameParams, landmark_set: str | None = "default",
                check_finite: bool = True) -> FlameOutput:
        """Pose the head. ``check_finite=False`` skips the NaN check (a GPU sync) in hot loops."""
        params.validate(self.n_shape, self.n_expr, check_finite=check_finite)
        coeffs = torch.cat([params.shape, params.expr], dim=-1).to(self.shapedirs.dtype)
        v_shaped = self.v_template + blend_shapes(coeffs, self.shapedirs)
        rest_joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        verts, joints = linear_blend_skinning(params.pose().to(v_shaped.dtype), v_shaped, rest_joints,
                                              self.posedirs, self.lbs_weights, self.parents)
        t = params.translation[:, None].to(verts.dtype)
        verts, joints = verts + t, joints + t
        lmk = self.landmarks(verts, landmark_set)
        if self.torso_vertices is not None:  # the sheet follows the head's translation only
            if params.torso is not None:  # (+ the frame's own shoulder shift)
                t = t + params.torso[:, None].to(verts.dtype)
            elif self.torso_motion_map is not None:  # (+ the shift the head's motion predicts)
                t = t + self.predict_torso(params)[:, None].to(verts.dtype)
            sheet = self.torso_vertices.to(verts.dtype)[None] + t  # [B, T, 3]
            verts = torch.cat([verts, sheet], 1)
        return FlameOutput(vertices=verts, joints=joints, landmarks=lmk)

    def landmarks(self, vertices: Tensor, landmark_set: str | None = "default") -> Tensor | None:
        """Landmarks on the posed surface.  vertices [B,V,3] -> [B,L,3] (None if unavailable)."""
        if landmark_set == "default":
            landmark_set = self.default_landmark_set
        if landmark_set is None:
            return None
        if landmark_set not in self.landmark_sets:
            raise InvalidParametersError(
                f"landmark set '{landmark_set}' is not embedded in this head model "
                f"(available: {list(self.landmark_sets) or 'none'})"
            )
        return barycentric_points(vertices, self.faces, getattr(self, f"lmk_{landmark_set}_faces"),
                                  getattr(self, f"lmk_{landmark_set}_bary"))

    def extra_repr(self) -> str:
        torso = "" if self.torso_vertices is None else f", torso sheet={self.torso_vertices.shape[0]} vertices"
        return (f"vertices={self.n_vertices}{torso}, faces={self.faces.shape[0]}, n_shape={self.n_shape}, "
                f"n_expr={self.n_expr}, landmarks={list(self.landmark_sets)}")
