"""A torso sheet below the head: where the splats of the shoulders and clothes live.

FLAME ends at the neck, but a talking-head clip shows shoulders and a collar in a third of the frame.
Bound to the neck's triangles, those splats turn with every nod and the collar smears (measured on
the shared wojtek clip: more than half of the held-out error of the fast preset sat on the shirt).
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

__all__ = ["torso_sheet", "TORSO_REGION"]

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
