"""FLAME's skinning as pure functions on tensors (written for this project).

The standard formulation: template + identity/expression blendshapes; joints regressed from the
shaped template; pose correctives from ``R_j - I`` of the four non-root joints; linear blend
skinning down the kinematic tree; translation added last.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..geometry.rotations import axis_angle_to_matrix

__all__ = ["blend_shapes", "rigid_transforms", "linear_blend_skinning", "barycentric_points"]


def blend_shapes(coeffs: Tensor, dirs: Tensor) -> Tensor:
    """coeffs: [B, K], dirs: [V, 3, K] -> offsets [B, V, 3]."""
    return torch.einsum("bk,vck->bvc", coeffs, dirs)


def rigid_transforms(rot_mats: Tensor, joints: Tensor, parents: list[int]) -> tuple[Tensor, Tensor]:
    """Compose joint rotations down the tree.

    rot_mats: [B, J, 3, 3] local rotations; joints: [B, J, 3] rest joint positions;
    parents: J ints, parents[0] = -1, parents[j] < j.
    Returns posed joints [B, J, 3] and skinning transforms [B, J, 4, 4] that map rest-pose
    points to posed points (the rest joint position is removed from each).
    """
    b, j = joints.shape[:2]
    # Python-int indexing only: no host->device copies, so the pass can be captured in a CUDA graph.
    rel = torch.stack([joints[:, 0]] + [joints[:, i] - joints[:, parents[i]] for i in range(1, j)], dim=1)  # [B, J, 3]
    local = torch.cat([rot_mats, rel[..., None]], dim=-1)  # [B, J, 3, 4]
    bottom = torch.zeros_like(local[..., :1, :])
    bottom[..., 3] = 1.0
    local = torch.cat([local, bottom], dim=-2)  # [B, J, 4, 4]
    chain = [local[:, 0]]
    for i in range(1, j):
        chain.append(chain[parents[i]] @ local[:, i])
    world = torch.stack(chain, dim=1)  # [B, J, 4, 4]
    posed_joints = world[..., :3, 3]
    # Subtract the rest joint so the transform applies to rest-pose vertices directly.
    shift = (world[..., :3, :3] @ joints[..., None])[..., 0]  # [B, J, 3]
    skin = torch.cat([world[..., :3, :3], (posed_joints - shift)[..., None]], dim=-1)
    return posed_joints, torch.cat([skin, world[..., 3:, :]], dim=-2)


def linear_blend_skinning(
    pose: Tensor,  # [B, J, 3] axis-angle per joint
    v_shaped: Tensor,  # [B, V, 3]
    joints: Tensor,  # [B, J, 3] rest joints, regressed from the full shaped mesh
    posedirs: Tensor,  # [(J-1)*9, V*3]
    weights: Tensor,  # [V, J]
    parents: list[int],
) -> tuple[Tensor, Tensor]:
    """Pose the shaped mesh. Returns vertices [B, V, 3] and posed joints [B, J, 3].

    Joints are an input so that a caller posing only some vertices (landmark fitting) can still
    give the joints of the whole mesh.
    """
    b, v = v_shaped.shape[:2]
    rot = axis_angle_to_matrix(pose)  # [B, J, 3, 3]
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    pose_feature = (rot[:, 1:] - eye).reshape(b, -1)  # [B, (J-1)*9]
    v_posed = v_shaped + (pose_feature @ posedirs).reshape(b, v, 3)
    posed_joints, transforms = rigid_transforms(rot, joints, parents)
    per_vertex = torch.einsum("vj,bjxy->bvxy", weights, transforms)  # [B, V, 4, 4]
    verts = (per_vertex[..., :3, :3] @ v_posed[..., None])[..., 0] + per_vertex[..., :3, 3]
    return verts, posed_joints


def barycentric_points(vertices: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Points on the surface.  vertices [B,V,3], faces [F,3], face_idx [L], bary [L,3] -> [B,L,3]."""
    tri = vertices[:, faces[face_idx]]  # [B, L, 3, 3]
    return (tri * bary[None, :, :, None]).sum(dim=2)
