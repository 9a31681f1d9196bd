"""Standard 3D Gaussian Splatting ``.ply`` files (the format viewers and 3DGS tools read).

One posed frame in world space, binary little-endian, float32 properties in the order of the
original 3DGS code: ``x y z nx ny nz f_dc_0..2 f_rest_0.. opacity scale_0..2 rot_0..3`` with
opacity as a logit, scales as logs, rotation as a (w, x, y, z) quaternion, and ``f_rest``
channel-major (all R coefficients, then G, then B). Writes are atomic (temp file + os.replace), so
a crash never leaves a half-written file where a viewer or a resume expects a good one.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidParametersError
from .atomic import atomic_path

__all__ = ["PlySplats", "export_ply", "write_ply", "read_ply"]

logger = logging.getLogger("dynavatar.io")


@dataclass
class PlySplats:
    """World-space splats as stored in a 3DGS .ply (the file's own parametrisation)."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] (w, x, y, z)
    log_scales: Tensor  # [N, 3]
    opacity_logits: Tensor  # [N]
    sh: Tensor  # [N, (deg+1)^2, 3]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1


def _property_names(n_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


ABSURD_SCALE = 100.0  # a splat wider than this many times the scene is reported (a viewer shows a smear)


def _check_finite(splats: PlySplats, path: Path) -> None:
    """Refuse splats with NaN/inf in any property (and rotations of zero length): viewers and 3DGS
    tools either crash on them or draw garbage, and the numbers never come back from a file."""
    n = splats.means.shape[0]
    bad = torch.zeros(n, dtype=torch.bool)
    fields = {"means": splats.means, "scales": splats.log_scales, "opacities": splats.opacity_logits,
              "colours": splats.sh, "rotations": splats.quats}
    which = []
    for name, t in fields.items():
        rows = ~torch.isfinite(t.detach().to("cpu", torch.float32).reshape(n, -1)).all(1)
        if name == "rotations":
            rows |= splats.quats.detach().to("cpu", torch.float32).reshape(n, -1).abs().sum(1) == 0
        if rows.any():
            which.append(name)
        bad |= rows
    if bad.any():
        raise InvalidParametersError(
            f"cannot write {path}: {int(bad.sum())} of {n} splats have non-finite {'/'.join(which)} (NaN or inf); "
            "the fit diverged: re-fit the avatar (e.g. with a lower learning rate) and export again")


def _warn_absurd_scales(splats: PlySplats, path: Path) -> None:
    """Scales far beyond the scene's extent are finite but useless (a diverged or mis-scaled fit)."""
    means = splats.means.detach().to("cpu", torch.float64)
    if means.shape[0] < 2:
        return
    extent = float((means.max(0).values - means.min(0).values).max())
    if extent <= 0:
        return
    largest = splats.log_scales.detach().to("cpu", torch.float64).max(1).values
    absurd = largest > math.log(ABSURD_SCALE * extent)
    if absurd.any():
        logger.warning("%s: %d of %d splats are over %gx the scene's extent (%.3g); the fit may have diverged: "
                       "check the render, re-fit if it is smeared", path, int(absurd.sum()), means.shape[0],
                       ABSURD_SCALE, extent)


def write_ply(splats: PlySplats, path: str | os.PathLike) -> Path:
    """Write ``splats`` to ``path`` atomically; returns the path. Raises InvalidParametersError (and
    writes nothing) when any splat has a non-finite property; warns about absurdly large scales."""
    path = Path(path)
    _check_finite(splats, path)
    _warn_absurd_scales(splats, path)
    n, k = splats.sh.shape[0], splats.sh.shape[1]
    f = lambda t: t.detach().to("cpu", torch.float32).reshape(n, -1).numpy()
    sh = splats.sh.detach().to("cpu", torch.float32)
    rest = sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (k - 1)).numpy()  # channel-major
    cols = [f(splats.means), np.zeros((n, 3), np.float32), sh[:, 0, :].numpy(), rest,
            f(splats.opacity_logits), f(splats.log_scales), f(splats.quats)]
    data = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype="<f4")
    names = _property_names(3 * (k - 1))
    assert data.shape[1] == len(names)
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n" + "".join(
        f"property float {p}\n" for p in names) + "end_header\n"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    return path


def export_ply(avatar, path: str | os.PathLike, vertices: Tensor, faces: Tensor) -> Path:
    """Write the avatar posed on one mesh (``vertices [V, 3]`` or ``[1, V, 3]``) as a 3DGS .ply."""
    from ..gaussians.binding import bind

    if vertices.dim() == 3:
        if vertices.shape[0] != 1:
            raise ValueError("export_ply writes one frame: pass vertices [V, 3] or [1, V, 3]")
        vertices = vertices[0]
    with torch.no_grad():
        wg = bind(avatar, vertices, faces, backend="torch")
    return write_ply(
        PlySplats(means=wg.means[0], quats=wg.quats[0], log_scales=wg.scales[0].log(),
                  opacity_logits=avatar.opacity_logits, sh=avatar.sh),
        path,
    )


def read_ply(path: str | os.PathLike) -> PlySplats:
    """Read a 3DGS .ply (binary little-endian, float properties) into a PlySplats."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    if lines[0] != "ply" or "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: not a binary little-endian PLY file")
    n, props = 0, []
    for ln in lines:
        parts = ln.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:1] == ["property"]:
            if parts[1] not in ("float", "float32"):
                raise ValueError(f"{path}: property {parts[-1]} is {parts[1]}, only float is supported")
            props.append(parts[2])
    arr = np.frombuffer(raw, dtype="<f4", count=n * len(props), offset=end).reshape(n, len(props))
    col = {p: i for i, p in enumerate(props)}
    get = lambda names: torch.from_numpy(arr[:, [col[p] for p in names]].copy())
    rest = sorted((p for p in props if p.startswith("f_rest_")), key=lambda p: int(p[7:]))
    k = 1 + len(rest) // 3
    sh = torch.empty(n, k, 3)
    sh[:, 0] = get(["f_dc_0", "f_dc_1", "f_dc_2"])
    if rest:
        sh[:, 1:] = get(rest).reshape(n, 3, k - 1).transpose(1, 2)
    return PlySplats(
        means=get(["x", "y", "z"]),
        quats=get(["rot_0", "rot_1", "rot_2", "rot_3"]),
        log_scales=get(["scale_0", "scale_1", "scale_2"]),
        opacity_logits=get(["opacity"])[:, 0],
        sh=sh,
    )
