"""Semantic labels on splats ("dual tracking"): each splat carries a soft label vector.

Every splat's blending-weighted overlap with every label mask comes from one backward pass through
the renderer (``render.pixel_votes.splat_pixel_votes``).

Accumulated over the training frames these votes are fused with the head model's vertex regions
as a prior, so splats that no frame shows (the back of the head, the inside of the mouth) still get
a sensible label: ``labels = (votes + lambda * prior) / (sum votes + lambda)``.

Votes are a blur: a splat's label is the average of the pixels under its footprint, and rendering
averages those labels again over the footprints that overlap a pixel, so a thin region (a lip, a
few pixels thick) loses its rim twice. ``refine_labels`` then fits the label logits so that the
*rendered* labels match the parsed frames (cross-entropy, the frames' blending weights fixed):
a deconvolution that starts from the votes and only moves splats that frames show.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..gaussians.avatar import GaussianAvatar
from ..gaussians.binding import WorldGaussians, bind
from ..geometry.labels import NUM_LABELS, REGION_TO_LABEL, label_index
from ..geometry.cameras import Cameras
from ..render.pixel_votes import splat_pixel_votes
from .coverage import render_coverage

__all__ = ["splat_pixel_votes", "region_prior", "label_splats", "LabelResult", "render_label_masks",
           "selection_from_mask", "render_selection", "refine_labels"]

BACKGROUND = label_index("background")


def region_prior(binding: Tensor, model) -> Tensor:
    """One-hot label prior per splat from its triangle's majority vertex region.  -> [N, K]

    Zero rows when the head model has no regions (a FLAME file without our embedding)."""
    n = binding.shape[0]
    prior = torch.zeros(n, NUM_LABELS, device=binding.device)
    if getattr(model, "vertex_region", None) is None or not model.region_names:
        return prior
    to_label = torch.tensor([label_index(REGION_TO_LABEL.get(r, "skin")) for r in model.region_names],
                            device=binding.device)
    face_region = torch.mode(model.vertex_region.to(binding.device)[model.faces.to(binding.device)], dim=1).values
    prior[torch.arange(n, device=binding.device), to_label[face_region[binding]]] = 1.0
    return prior


@dataclasses.dataclass
class LabelResult:
    labels: Tensor  # [N, K] soft labels, rows sum to 1
    votes: Tensor  # [N, K] accumulated blending-weighted votes from the frames
    visibility: Tensor  # [N] total blending weight the splat had over all frames (pixels)


@torch.no_grad()
def label_splats(avatar: GaussianAvatar, model, params, cameras: Cameras, label_maps: Tensor,
                 renderer, frames: Iterable[int] | None = None, prior_weight: float = 1.0,
                 background_weight: float = 0.2, progress: bool = False, seen=None) -> LabelResult:
    """Soft labels for every splat from parsed frames.

    params: FlameParams [F]; cameras: Cameras [F] at the label maps' resolution;
    label_maps: [F, H, W] long/uint8 label indices (LABEL_NAMES); frames: which of the F to use
    (default all). ``prior_weight`` is in the votes' units (pixels of full blending weight).
    ``background_weight`` scales the votes of background pixels: a splat on the silhouette spreads
    its footprint over the background next to it, and matte edges bleed, so background is weak
    evidence against a head label (0 ignores it). ``seen`` (``TrainData.seen``: frame indices ->
    [B, H, W, 1] bool or None): pixels past the video's picture cast no vote (the parser calls the
    crop's padding background, though the shoulders go on below the frame's edge).
    """
    dev = avatar.means_local.device
    frames = list(range(params.batch_size) if frames is None else frames)
    votes = torch.zeros(avatar.num_splats, NUM_LABELS, device=dev)
    vis = torch.zeros(avatar.num_splats, device=dev)
    model = model.to(dev)
    for f in tqdm(frames, desc="labelling splats", disable=not progress, leave=False):
        verts = model(params[f].to(dev), landmark_set=None).vertices
        g = bind(avatar, verts, model.faces)
        onehot = torch.nn.functional.one_hot(label_maps[f].long().to(dev), NUM_LABELS).float()  # [H, W, K]
        onehot[..., BACKGROUND] *= background_weight
        picture = seen(torch.tensor([f])) if seen is not None else None
        if picture is not None:
            onehot *= picture[0].to(onehot)
        w = torch.cat([onehot, torch.ones_like(onehot[..., :1])], -1)  # last channel: visibility
        v = splat_pixel_votes(g, cameras[f].to(dev), w, renderer)
        votes += v[:, :NUM_LABELS]
        vis += v[:, NUM_LABELS]
    prior = region_prior(avatar.binding, model)
    labels = votes + prior_weight * prior
    total = labels.sum(1, keepdim=True)
    uniform = torch.full_like(labels, 1.0 / NUM_LABELS)
    labels = torch.where(total > 0, labels / total.clamp_min(1e-12), uniform)
    return LabelResult(labels, votes, vis)


def refine_labels(avatar: GaussianAvatar, model, params, cameras: Cameras, label_maps: Tensor, labels: Tensor,
                  renderer, frames: Iterable[int] | None = None, steps: int = 300, batch_size: int = 2,
                  lr: float = 0.05, background_weight: float = 0.2, prior_pixels: float = 2.0, seed: int = 0,
                  progress: bool = False, seen=None) -> Tensor:
    """Labels [N, K] whose rendering matches the parsed frames better than ``labels`` (the votes).

    Adam on the label logits (started at ``log labels``) against the per-pixel cross-entropy of the
    rendered label distribution (``render_label_masks``: uncovered pixels count as background) and
    the parsed label, over random batches of ``frames``; background pixels weigh
    ``background_weight`` as in ``label_splats``, and pixels not ``seen`` weigh nothing. Geometry is frozen.

    Adam moves every parameter at about the same speed whatever its gradient's size, so a splat that
    covers a hundredth of a pixel would be relabelled as fast as one that covers a hundred. A pull
    back to the votes (cross-entropy of the new labels against them, worth ``prior_pixels`` pixels of
    full weight in every frame) keeps such splats where the votes put them; splats the frames show
    clearly follow the pixels. A splat no frame shows keeps its label (to the 1e-4 floor of the logits).
    Measured on the real wojtek clip (fast avatar, lips, 8 held-out frames, crops around the mouth,
    CPU): IoU vs the parser 0.846 -> 0.853 (300 steps of 2 frames; 0.861 without the pull, which
    relabels barely-seen splats: 0.99 -> 0.79 label accuracy on the synthetic clip).  -> [N, K], rows sum to 1
    """
    dev = avatar.means_local.device
    frames = torch.as_tensor(list(range(params.batch_size) if frames is None else frames), dtype=torch.long)
    if steps <= 0 or len(frames) == 0:
        return labels
    model = model.to(dev)
    g0 = avatar.detach()
    logits = labels.to(dev).float().clamp_min(1e-4).log().requires_grad_(True)
    votes = torch.softmax(logits.detach(), 1)  # = labels up to the 1e-4 floor, and exactly the prior's minimum
    opt = torch.optim.Adam([logits], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="refining splat labels", disable=not progress, leave=False):
        idx = frames[torch.randint(len(frames), (min(batch_size, len(frames)),), generator=gen)]
        with torch.no_grad():
            verts = model(params[idx].to(dev), landmark_set=None).vertices
        cams = cameras[idx].to(dev) if len(idx) > 1 else cameras[int(idx[0])].to(dev)
        out = renderer.render(bind(g0, verts, model.faces), cams, features=torch.softmax(logits, 1))
        probs = _label_probs(out)  # [B, H, W, K]
        truth = label_maps[idx.to(label_maps.device)].long().to(dev)  # [B, H, W]
        log_p = probs.clamp_min(1e-6).log().gather(-1, truth[..., None])[..., 0]
        weight = torch.where(truth == BACKGROUND, background_weight, 1.0)
        picture = seen(idx) if seen is not None else None
        if picture is not None:
            weight = weight * picture[..., 0].to(weight)
        # the prior is zero-gradient at the votes, so splats without pixels stay exactly there
        prior = -(votes * torch.log_softmax(logits, 1)).sum()
        loss = (-(weight * log_p).sum() + prior_pixels * len(idx) * prior) / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.softmax(logits.detach(), 1)


def _label_probs(out) -> Tensor:
    """A render of label features -> per-pixel label distributions [B, H, W, K]: what the splats
    leave uncovered is background."""
    probs = out.features.clone()
    probs[..., BACKGROUND] = probs[..., BACKGROUND] + (1 - out.alpha[..., 0])
    return probs


def render_label_masks(g: WorldGaussians, camera: Cameras, labels: Tensor, renderer) -> Tensor:
    """Per-label probability images: labels rendered as feature channels, background where the
    splats leave the pixel uncovered.  labels: [N, K] -> [K, H, W], sums to 1 per pixel."""
    out = renderer.render(g, camera, features=labels.to(g.means))
    return _label_probs(out)[0].permute(2, 0, 1).clamp(0, 1)


def selection_from_mask(g: WorldGaussians, camera: Cameras, mask: Tensor, renderer, threshold: float = 0.5,
                        min_weight: float = 1e-3, labels: Tensor | None = None, label_share: float = 0.1,
                        weak_quantile: float = 0.5) -> Tensor:
    """The exact route's first half: splats that a user mask covers, as seen in one frame.

    mask: [H, W] in [0, 1] drawn on the frame rendered by ``camera`` -> bool [N]: splats whose
    blending weight falls mostly (> ``threshold``) inside the mask. Splats the frame does not show
    (total weight < ``min_weight`` pixels) are not selected: nothing in the mask speaks for them.

    ``labels`` [N, K] (the splats' semantic labels, "dual tracking"): a splat the frame barely shows
    — visible weight below the ``weak_quantile`` of the covered splats' — is kept only if its label
    is one of the mask's own, those holding at least ``label_share`` of the covered splats' visible
    weight. Why: a dense avatar hides splats behind the surface the user drew on (a closed mouth
    covers the teeth and mouth interior, which are bound to lip triangles); their sliver of weight
    falls inside the mask, yet at other times and poses they show as specks and rims around it.
    Clearly visible splats are decided by the mask alone, so a rectangle drawn across several labels
    (a cheek, an eye and hair) keeps everything it visibly covers. ``dynavatar bench mask`` reports
    the route's agreement with the labels with and without this rule (figures: docs/benchmarks.md).
    """
    w = torch.stack([mask.float(), torch.ones_like(mask, dtype=torch.float)], -1)
    v = splat_pixel_votes(g, camera, w, renderer)
    inside, total = v[:, 0], v[:, 1]
    covered = (total > min_weight) & (inside > threshold * total)
    if labels is None or int(covered.sum()) < 2:
        return covered
    labels = labels.to(total)
    profile = (labels[covered] * total[covered, None]).sum(0) / total[covered].sum()  # [K] the mask's labels
    own_label = labels[:, profile >= label_share].sum(1) >= 0.5
    weak = total < torch.quantile(total[covered], weak_quantile)
    return covered & (own_label | ~weak)


def render_selection(g: WorldGaussians, camera: Cameras, selected: Tensor, renderer) -> Tensor:
    """The exact route's second half: the selected splats' coverage at any pose.  -> [H, W] in [0, 1]
    (rendered in a window around them: ``coverage.render_coverage``)."""
    return render_coverage(g, camera[:1], selected, renderer)[0]
