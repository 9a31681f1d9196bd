"""FLAME parameters and outputs as batched dataclasses (no tuples of tensors)."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import torch
from torch import Tensor

from ..errors import InvalidParametersError

__all__ = ["FlameParams", "FlameOutput", "POSE_FIELDS"]

#: Pose order of FLAME's joints (DESIGN.md §3): global, neck, jaw, left eye, right eye.
POSE_FIELDS = ("rotation", "neck", "jaw", "eyes")


@dataclasses.dataclass
class FlameParams:
    """Batched FLAME parameters. Rotations are axis-angle (radians), translation in metres."""

    shape: Tensor  # [B, S]   identity coefficients
    expr: Tensor  # [B, E]    expression coefficients
    rotation: Tensor  # [B, 3] global (root) rotation
    neck: Tensor  # [B, 3]
    jaw: Tensor  # [B, 3]
    eyes: Tensor  # [B, 6]     left eye then right eye
    translation: Tensor  # [B, 3] added after skinning
    # [B, 3] offset of the torso sheet (flame.torso) from where the translation puts it, metres:
    # shoulders shift a little on their own while a person talks. None (the usual) means 0; a
    # model without a torso sheet ignores it.
    torso: Tensor | None = None

    _WIDTHS = {"rotation": 3, "neck": 3, "jaw": 3, "eyes": 6, "translation": 3, "torso": 3}
    _OPTIONAL = ("torso",)

    @classmethod
    def zeros(cls, batch: int, n_shape: int, n_expr: int, device=None, dtype=torch.float32) -> "FlameParams":
        """The neutral head at the origin, ``batch`` times."""
        z = lambda n: torch.zeros(batch, n, device=device, dtype=dtype)  # noqa: E731
        return cls(shape=z(n_shape), expr=z(n_expr), rotation=z(3), neck=z(3), jaw=z(3), eyes=z(6), translation=z(3))

    @property
    def batch_size(self) -> int:
        return int(self.shape.shape[0])

    def fields(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) of every field that is set (optional fields left at None are skipped)."""
        for f in dataclasses.fields(self):
            t = getattr(self, f.name)
            if t is not None or f.name not in self._OPTIONAL:
                yield f.name, t

    def with_torso(self) -> "FlameParams":
        """These parameters with ``torso`` set (zeros where it was None)."""
        if self.torso is not None:
            return self
        return self.replace(torso=self.translation.new_zeros(self.translation.shape))

    def replace(self, **changes: Tensor) -> "FlameParams":
        return dataclasses.replace(self, **changes)

    def map(self, fn) -> "FlameParams":
        """Apply ``fn`` to every tensor (``.to(device)``, ``.detach()``, slicing ...)."""
        return FlameParams(**{name: fn(t) for name, t in self.fields()})

    def to(self, *args, **kwargs) -> "FlameParams":
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "FlameParams":
        return self.map(Tensor.detach)

    def __getitem__(self, index) -> "FlameParams":
        """Select frames: ``params[3:7]``, ``params[[0, 5]]``; an int keeps the batch axis."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self.map(lambda t: t[index])

    @classmethod
    def cat(cls, items: list["FlameParams"]) -> "FlameParams":
        if any(p.torso is not None for p in items):  # a missing optional field is its zeros
            items = [p.with_torso() for p in items]
        return cls(**{name: torch.cat([getattr(p, name) for p in items]) for name, _ in items[0].fields()})

    def pose(self) -> Tensor:
        """Axis-angle of the five joints in FLAME order.  -> [B, 5, 3]"""
        return torch.cat([self.rotation, self.neck, self.jaw, self.eyes], dim=-1).reshape(-1, 5, 3)

    def to_dict(self) -> dict[str, Tensor]:
        """Plain dict of tensors, e.g. for safetensors."""
        return dict(self.fields())

    @classmethod
    def from_dict(cls, d: dict[str, Tensor], prefix: str = "") -> "FlameParams":
        """Inverse of ``to_dict``; with ``prefix`` the fields are read from ``d[prefix + name]`` (a
        safetensors file holding other tensors too). Optional fields may be absent."""
        return cls(**{f.name: d[prefix + f.name] for f in dataclasses.fields(cls)
                      if prefix + f.name in d or f.name not in cls._OPTIONAL})

    def validate(self, n_shape: int | None = None, n_expr: int | None = None, check_finite: bool = True) -> None:
        """Raise InvalidParametersError for wrong shapes or NaN/inf, naming the field."""
        b = self.batch_size
        for name, t in self.fields():
            if not isinstance(t, Tensor):
                raise InvalidParametersError(f"FlameParams.{name} must be a tensor, got {type(t).__name__}")
            if t.ndim != 2 or t.shape[0] != b:
                raise InvalidParametersError(f"FlameParams.{name} must be [B={b}, D], got {tuple(t.shape)}")
            width = self._WIDTHS.get(name)
            if width is not None and t.shape[1] != width:
                raise InvalidParametersError(f"FlameParams.{name} must be [B, {width}], got {tuple(t.shape)}")
        if n_shape is not None and self.shape.shape[1] != n_shape:
            raise InvalidParametersError(f"FlameParams.shape has {self.shape.shape[1]} coefficients; the model uses {n_shape}")
        if n_expr is not None and self.expr.shape[1] != n_expr:
            raise InvalidParametersError(f"FlameParams.expr has {self.expr.shape[1]} coefficients; the model uses {n_expr}")
        if check_finite and not bool(torch.isfinite(torch.cat([t.reshape(-1) for _, t in self.fields()])).all()):
            for name, t in self.fields():  # one device sync above; name the culprit only on failure
                if not bool(torch.isfinite(t).all()):
                    raise InvalidParametersError(
                        f"FlameParams.{name} contains NaN or inf; this usually means a diverged "
                        "optimisation upstream (lower the learning rate or check the inputs)"
                    )


@dataclasses.dataclass
class FlameOutput:
    """What a FLAME forward pass gives."""

    vertices: Tensor  # [B, V, 3] posed mesh, metres
    joints: Tensor  # [B, 5, 3] posed joint positions
    landmarks: Tensor | None  # [B, L, 3] landmark points on the posed surface, or None
