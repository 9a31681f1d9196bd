"""A torso sheet below the head: where the splats of the shoulders and clothes live.

FLAME ends at the neck, but a talking-head clip shows shoulders and a collar in a third of the frame.
Bound to the neck's triangles, those splats turn with every nod and the collar smears, and on
clips that show a shirt most of the held-out error sits there.
Shoulders barely rotate with the head, so this module adds a flat grid of triangles behind the neck
base that **follows the head's translation but not its rotation**: static in the camera frame while
the person talks, and carried along when another clip's parameters move the head.

The sheet is just more triangles of the same mesh: ``FlameModel.with_torso`` appends its vertices
after FLAME's and its faces after FLAME's faces, so binding, densification, rendering, labelling
("torso" region -> "clothes" label) and saving need no special case. Splats the clip does not need
(a synthetic head without shoulders) learn to be transparent.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["torso_sheet", "fit_torso_motion", "TORSO_REGION"]

TORSO_REGION = "torso"


def _grid_faces(cols: int, rows: int) -> Tensor:
    """Two triangles per cell of a (rows+1) x (cols+1) vertex grid, row-major.  -> [2*rows*cols, 3]"""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    v00 = (r * (cols + 1) + c).reshape(-1)
    v01, v10 = v00 + 1, v00 + cols + 1
    v11 = v10 + 1
    # counter-clockwise seen from +z (the camera side in FLAME's frame: y up, z toward the viewer)
    return torch.cat([torch.stack([v00, v10, v01], 1), torch.stack([v01, v10, v11], 1)])


@torch.no_grad()
def torso_sheet(head_vertices: Tensor, neck_vertices: Tensor, cols: int = 24, rows: int = 14,
                width: float = 6.0, below: float = 3.0, above: float = 0.5) -> tuple[Tensor, Tensor]:
    """A vertical grid below the neck, in head units, relative to the head's translation.

    head_vertices: [B, V, 3] posed head vertices minus each frame's translation (a sample of the
    clip's frames); neck_vertices: [M] long, the head model's neck vertices. The sheet is centred
    on the lowest ring of the neck (its mean over frames), ``width`` head-widths wide, spanning
    from ``above`` head-widths above that ring to ``below`` head-widths below it, at the depth of
    the neck's centre (the collar and shoulders lie around that depth).
    -> (vertices [(rows+1)*(cols+1), 3], faces [2*rows*cols, 3] indexing those vertices)
    """
    if head_vertices.dim() != 3 or head_vertices.shape[0] == 0:
        raise ValueError(f"head_vertices must be [B>0, V, 3], got {tuple(head_vertices.shape)}")
    v = head_vertices.detach().float().mean(0).cpu()  # [V, 3] (a few hundred points: CPU is fine)
    head_width = float(v[:, 0].max() - v[:, 0].min())
    neck = v[neck_vertices.cpu()]
    low = neck[:, 1] <= torch.quantile(neck[:, 1], 0.1)  # lowest ring
    centre = neck[low].mean(0)
    xs = centre[0] + head_width * width * torch.linspace(-0.5, 0.5, cols + 1)
    ys = centre[1] + head_width * torch.linspace(above, -below, rows + 1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    verts = torch.stack([gx, gy, torch.full_like(gx, float(neck[:, 2].mean()))], -1).reshape(-1, 3)
    return verts.to(head_vertices.device, head_vertices.dtype), _grid_faces(cols, rows).to(head_vertices.device)


def fit_torso_motion(translation: Tensor, rotation: Tensor, shift: Tensor, ridge: float = 1e-3) -> tuple[Tensor, Tensor]:
    """A linear map from the head's motion to the torso sheet's shift, by ridge least squares.

    The per-frame shifts learned in training mostly follow the head: when a person looks down, the
    head's translation drops while the shoulders stay, so the sheet (which follows the translation)
    must shift back up. Frames with no shift of their own (held-out frames, another clip's motion)
    get this prediction instead of 0; on the shared wojtek clip it explains all but 1-2 mm of shifts
    of 8-12 mm (std), and the held-out frames, which look further down than the training average,
    need 1.5 cm.
    translation, rotation: [N, 3] the training frames' motion; shift: [N, 3] their learned shifts.
    ``ridge`` is relative to the inputs' mean variance. -> (reference [6], map [6, 3]); the
    prediction is ``(cat(translation, rotation) - reference) @ map + mean(shift)``, and the trainer
    centres the shifts so that mean is 0.
    """
    x = torch.cat([translation, rotation], -1).double()  # [N, 6]
    ref = x.mean(0)
    x = x - ref
    y = (shift - shift.mean(0)).double()
    gram = x.T @ x
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    w = torch.linalg.solve(gram + lam * torch.eye(6, dtype=x.dtype, device=x.device), x.T @ y)
    return ref.float(), w.float()
