"""GaussianAvatar: the learnable state of a head avatar, and nothing else.

Every splat lives in the local frame of one triangle of the head mesh (``binding``), so the
avatar is animated by posing the mesh, not by moving splats. The state is a plain dataclass of
tensors: it owns no optimizer, renderer or file format (DESIGN.md §2, "no god objects"); the
functions in ``binding``, ``densify`` and ``dynavatar.io`` act on it.

Local units: positions and scales are measured in units of the triangle scale ``k``, so a splat
with ``log_scales_local = log(0.5)`` is half a triangle across whatever the triangle's size
(GaussianAvatars' convention). Colours are spherical-harmonic coefficients as in 3DGS
(``rgb = 0.5 + C0 * sh[:, 0]`` at degree 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = ["GaussianAvatar", "SH_C0", "rgb_to_sh", "sh_to_rgb", "num_sh_bases"]

SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi)), the constant SH basis function


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC coefficient that renders as ``rgb``.  rgb: [..., 3] -> [..., 3]."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass
class GaussianAvatar:
    """Per-splat parameters in triangle-local units plus the binding to the mesh.

    Learnable (see ``parameters_dict``): means_local, quats_local, log_scales_local,
    opacity_logits, sh. Bookkeeping (not learnable): binding, labels.
    """

    means_local: Tensor  # [N, 3]  position in the triangle frame, units of k
    quats_local: Tensor  # [N, 4]  (w, x, y, z), need not be normalised
    log_scales_local: Tensor  # [N, 3]  log of the axis scales, units of k
    opacity_logits: Tensor  # [N]  opacity = sigmoid(logit)
    sh: Tensor  # [N, (sh_degree+1)^2, 3]  colour SH coefficients
    binding: Tensor  # [N] long  index of the triangle each splat belongs to
    labels: Tensor  # [N, K]  soft semantic labels (K = 0 until semantics fills them)
    sh_degree: int = 0

    PARAM_NAMES = ("means_local", "quats_local", "log_scales_local", "opacity_logits", "sh")

    def __post_init__(self) -> None:
        n = self.means_local.shape[0]
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor) and v.shape[0] != n:
                raise ValueError(f"{f.name} has {v.shape[0]} splats, means_local has {n}")
        if self.sh.shape[1] != num_sh_bases(self.sh_degree):
            raise ValueError(f"sh has {self.sh.shape[1]} bases, degree {self.sh_degree} needs "
                             f"{num_sh_bases(self.sh_degree)}")

    @property
    def num_splats(self) -> int:
        return self.means_local.shape[0]

    @property
    def opacities(self) -> Tensor:  # [N]
        return torch.sigmoid(self.opacity_logits)

    @classmethod
    def init_on_mesh(
        cls,
        n_faces: int,
        splats_per_face: int = 1,
        sh_degree: int = 0,
        num_labels: int = 0,
        init_scale: float = 0.5,
        init_opacity: float = 0.1,
        init_rgb: tuple[float, float, float] = (0.5, 0.5, 0.5),
        jitter: float = 0.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> "GaussianAvatar":
        """``splats_per_face`` splats on every triangle, at its centroid (local origin).

        init_scale: isotropic local scale (units of k: 0.5 ~ half a triangle, so neighbouring
        splats overlap without blurring). jitter: std of a random local offset, useful when
        several splats share a face so they are not identical.
        """
        n = n_faces * splats_per_face
        kw = dict(dtype=dtype, device=device)
        means = torch.zeros(n, 3, **kw)
        if jitter > 0:
            means = means + jitter * torch.randn(n, 3, generator=generator, dtype=dtype).to(means.device)
        quats = torch.zeros(n, 4, **kw)
        quats[:, 0] = 1.0
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, **kw)
        sh[:, 0] = rgb_to_sh(torch.tensor(init_rgb, **kw))
        return cls(
            means_local=means,
            quats_local=quats,
            log_scales_local=torch.full((n, 3), math.log(init_scale), **kw),
            opacity_logits=torch.full((n,), _logit(init_opacity), **kw),
            sh=sh,
            binding=torch.arange(n_faces, device=device).repeat_interleave(splats_per_face),
            labels=torch.zeros(n, num_labels, **kw),
            sh_degree=sh_degree,
        )

    def parameters_dict(self) -> dict[str, Tensor]:
        """The learnable tensors by name (the same objects, so an optimizer can own them)."""
        return {k: getattr(self, k) for k in self.PARAM_NAMES}

    def requires_grad_(self, flag: bool = True) -> "GaussianAvatar":
        for t in self.parameters_dict().values():
            t.requires_grad_(flag)
        return self

    def replace(self, **changes) -> "GaussianAvatar":
        """A copy with some fields swapped (dataclasses.replace; tensors are shared)."""
        return replace(self, **changes)

    def detach(self) -> "GaussianAvatar":
        return self.replace(**{f.name: getattr(self, f.name).detach()
                               for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    def to(self, device=None, dtype: torch.dtype | None = None) -> "GaussianAvatar":
        """Move every tensor to ``device``; cast the floating-point ones to ``dtype``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            out[f.name] = v
        return self.replace(**out)
