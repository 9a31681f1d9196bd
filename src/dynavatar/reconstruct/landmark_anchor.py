"""Keep photometrically refined motion on the detected landmarks.

Training refines every frame's expression and pose photometrically (``refine_tracking``), and the
photometric loss alone lets the mesh drift from where the face really is wherever colour does not
pin it: the lips' outline is pink against pink skin. The splats then follow the mesh, the RGB is
still right (the splats learned it under the drifted motion), but the mouth region of the *mesh*
moves from frame to frame relative to the landmark detector's lip contour, more than the landmark
tracker's own fit does (docs/benchmarks.md). The face parser paints lips from that contour, so labels
voted over frames smear across the lips' rim and rendered lip masks miss the parser's by that much.

The anchor is the tracker's own data term, the robust (Cauchy) reprojection error of the 478
mediapipe points with the face oval down-weighted, evaluated on the refined motion. It acts only on
the motion (landmarks do not depend on splats), so it is a prior that says: move the face where the
pixels ask, but not off the detector's contour.

Why it stays off by default: anchoring costs held-out PSNR, and what it buys is small. The mouth
anchor makes the training frames' lips agree with the parser, but the held-out frames (mouth mostly
closed) barely move: their remaining error is a sub-pixel rim along the lips' outline whichever
motion renders them (the figures are in docs/benchmarks.md).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..geometry.cameras import project_points
from ..geometry.cameras import Cameras
from ..geometry.landmark_sets import MOUTH_LANDMARKS, MP_FACE_OVAL, MP_OUTER_EYE_CORNERS

__all__ = ["landmark_anchor", "anchor_applies", "landmark_nme", "landmark_nme_per_frame", "landmark_budget",
           "frame_nme", "LANDMARK_SET", "ANCHOR_POINTS"]

#: The detector's landmarks are mediapipe's face mesh (``perceive.landmarks``).
LANDMARK_SET = "mediapipe"
#: Which of them the anchor holds: "all" 478, or "mouth", the 40 points of the lips' outer and inner
#: contours the parser paints the lips from (the rest of the face stays free to follow the pixels).
ANCHOR_POINTS = ("all", "mouth")


@functools.lru_cache(maxsize=8)
def _weights(n_points: int, points: str, device: torch.device) -> Tensor:
    """Per-point weights [L], built once per (set, device): the anchor runs in every training step."""
    if points not in ANCHOR_POINTS:
        raise ValueError(f"landmark anchor points must be one of {ANCHOR_POINTS}, got {points!r}")
    if points == "mouth":
        w = torch.zeros(n_points, device=device)
        w[[i for i in MOUTH_LANDMARKS if i < n_points]] = 1.0
        return w
    w = torch.ones(n_points, device=device)
    if n_points > max(MP_FACE_OVAL):
        w[list(MP_FACE_OVAL)] = 0.5  # silhouette points slide under rotation (as the tracker weighs them)
    return w


def _projected_landmarks(model, vertices: Tensor, cameras: Cameras) -> Tensor:
    """The head's embedded detector points in the cameras' pixels. vertices [B, V, 3] -> [B, L, 2]"""
    lmk = model.landmarks(vertices, LANDMARK_SET)  # [B, L, 3]
    return project_points(lmk, cameras.viewmats.to(lmk), cameras.Ks.to(lmk))[0]


def anchor_applies(weight: float, data, model) -> bool:
    """Whether a motion fit can use the anchor: a positive weight, detected landmarks in ``data``
    (a ``TrainData``), and the head model's embedding of the detector's points."""
    return weight > 0 and data.landmarks is not None and LANDMARK_SET in model.landmark_sets


def landmark_anchor(model, vertices: Tensor, cameras: Cameras, target: Tensor, valid: Tensor,
                    sigma: float = 0.004, points: str = "all") -> Tensor:
    """Robust reprojection error of the head's landmarks against detected ones.

    vertices: posed head [B, V, 3] (``model(params).vertices``); cameras: [B] (or one camera for
    B = 1); target: detected points [B, L, 2] in the cameras' pixels; valid: bool [B] (frames
    without a detection add nothing); sigma: Cauchy scale as a fraction of the image width;
    points: "all" or "mouth" (``ANCHOR_POINTS``).
    -> scalar, mean over valid frames of ``mean_l w_l log(1 + (r_l / (sigma W))^2)``.
    """
    uv = _projected_landmarks(model, vertices, cameras)  # [B, L, 2]
    scale = sigma * cameras.width
    r2 = (uv - target.to(uv)).square().sum(-1) / scale ** 2  # [B, L]
    w = _weights(r2.shape[1], points, r2.device)
    per_frame = (torch.log1p(r2) * w).sum(1) / w.sum()  # [B]
    valid = valid.to(per_frame.device).float()
    return (per_frame * valid).sum() / valid.sum().clamp_min(1.0)


def frame_nme(model, vertices: Tensor, cameras: Cameras, target: Tensor) -> Tensor:
    """Differentiable per-frame landmark error as a fraction of the detected inter-ocular distance:
    the mean pixel distance of the head's embedded detector points from the detected ones.
    vertices [B, V, 3]; cameras [B]; target [B, L, 2] detected points in pixels.  -> [B]"""
    uv = _projected_landmarks(model, vertices, cameras)  # [B, L, 2]
    det = target.to(uv)
    a, b = MP_OUTER_EYE_CORNERS
    iod = (det[:, a] - det[:, b]).norm(dim=-1).clamp_min(1e-6)  # [B]
    dist = ((uv - det).square().sum(-1) + 1e-12).sqrt()  # [B, L]; + eps: a finite gradient at 0
    return dist.mean(1) / iod


@torch.no_grad()
def landmark_nme_per_frame(model, params, data) -> Tensor | None:
    """``frame_nme`` of the motion ``params`` [N] for every frame of ``data`` (a ``TrainData``), +inf
    where no face was detected.  -> [N] on the landmarks' device, or None without landmarks or the
    head model's embedding of the detector's points."""
    if data.landmarks is None or LANDMARK_SET not in model.landmark_sets:
        return None
    dev = data.landmarks.device
    out = []
    for chunk in torch.arange(len(data.frame_index)).split(64):
        verts = model(params[chunk.to(params.expr.device)], landmark_set=None, check_finite=False).vertices
        out.append(frame_nme(model, verts, data.cameras[chunk.to(dev)], data.landmarks[chunk.to(dev)]).to(dev))
    nme = torch.cat(out) if out else torch.zeros(0, device=dev)
    return torch.where(data.landmarks_valid.to(dev), nme, torch.full_like(nme, float("inf")))


def landmark_budget(model, vertices: Tensor, cameras: Cameras, target: Tensor, budget: Tensor,
                    scale: float = 0.01) -> Tensor:
    """Hinge that keeps a photometric motion fit from moving the face off the detected landmarks
    further than the landmark tracker's own fit was: ``mean_b (max(0, nme_b - budget_b) / scale)^2``.

    Unlike ``landmark_anchor`` it does not pull the face onto the detector's points: inside the
    budget (the landmark fit's own error on that frame) the pixels alone decide where the face
    goes, so the photometric fit keeps what it gains and the landmark error cannot get worse than
    the landmark fit's. budget: [B] per-frame NME allowed (+inf: no detection, no constraint);
    scale: the excess, as a fraction of the inter-ocular distance, that costs 1.  -> scalar"""
    nme = frame_nme(model, vertices, cameras, target)
    excess = (nme - budget.to(nme)).clamp_min(0.0)  # inf budget -> 0
    return (excess / scale).square().mean()


@torch.no_grad()
def landmark_nme(model, params, data, frames: Tensor | None = None) -> float | None:
    """Mean landmark error of a motion, as a fraction of the inter-ocular distance (the tracker's
    ``lmk_error``, so a photometric stage can be judged against the landmark fit): the head model's
    embedded detector points projected with ``data``'s cameras vs the detected points, over the
    ``frames`` (all by default) where a face was detected. params: FlameParams [N]; data: a
    ``TrainData`` with landmarks. -> None without landmarks, the embedding, or any detected frame."""
    per_frame = landmark_nme_per_frame(model, params, data)  # [N]
    if per_frame is None:
        return None
    idx = torch.arange(len(per_frame)) if frames is None else torch.as_tensor(frames).reshape(-1).cpu()
    chosen = per_frame.cpu()[idx[data.landmarks_valid.cpu()[idx]]]
    return float(chosen.mean()) if len(chosen) else None
