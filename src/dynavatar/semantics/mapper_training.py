"""Training and scoring a mask mapper against the exact route.

``train_mask_mapper`` renders the bank (``mapper_bank``), then fits in two phases:

1. the **box head alone**, on the whole bank at once (it is an MLP on a few inputs: cheap), supervised by
   the moments of the bank masks relative to the source's and scored as the window's error in working
   pixels (Huber), because the decoder's windows come from it;
2. **everything**, on batches drawn from the bank: the decoder works in the windows the box head
   *predicts* (as at inference, so it learns to correct the head's small errors), with BCE + soft Dice
   inside the frame, total variation on the latent grids and the box head's loss on the whole bank.

The latent grids learn ``grid_lr_scale`` times faster than the networks (each node sees few samples);
both learning rates are cosine-decayed.  ``evaluate_mask_mapper`` scores a mapper on (t, pose) points
against the route at the route's own resolution.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .mapper_bank import bank_points, bank_side, call_sample_fn, fit_size, mask_bytes, render_bank
from .mapper_config import MaskMapperConfig, MaskMapperError, SampleFn
from .mapper_network import MaskMapper
from .mask_maths import grid_tv, mask_iou, resize_masks, soft_dice_loss
from .mask_windows import crop_masks, mask_moments, moments_delta

__all__ = ["MaskMapperHistory", "train_mask_mapper", "evaluate_mask_mapper"]


@dataclasses.dataclass
class MaskMapperHistory:
    """What ``train_mask_mapper`` logged: losses and IoU per ``log_every`` steps, timings, the bank's size."""

    steps: list[int] = dataclasses.field(default_factory=list)  # logged step numbers
    loss: list[float] = dataclasses.field(default_factory=list)  # mean total loss over each interval
    iou: list[float] = dataclasses.field(default_factory=list)  # mean batch IoU (in the windows) per interval
    box_loss: list[float] = dataclasses.field(default_factory=list)  # mean box-head loss per interval
    val_iou: float | None = None  # mean full-frame IoU on val_size fresh renders (bank resolution), after training
    bank_seconds: float = 0.0  # time spent in sample_fn for the bank (+ validation renders)
    train_seconds: float = 0.0  # optimisation time (decoder phase)
    box_seconds: float = 0.0  # the box head's own fit before it
    bank_shape: tuple[int, int] = (0, 0)  # (H, W) the bank masks were kept at


def train_mask_mapper(sample_fn: SampleFn, config: MaskMapperConfig | None = None, *,
                      src_mask: Tensor | None = None, t0: float = 0.0, pose0: Tensor | Sequence[float] | None = None,
                      progress: bool = True, bank: tuple[Tensor, Tensor, Tensor] | None = None,
                      device: str | torch.device = "cpu") -> tuple[MaskMapper, MaskMapperHistory]:
    """Fit a MaskMapper to the exact route ``sample_fn`` for the mask drawn at (t0, pose0).

    ``src_mask`` [H, W] is the user's mask at (t0, pose0); when omitted it is rendered by sample_fn
    there.  The exact route is slow, so it is called only for a bank of ``bank_size`` (t, pose) points
    (stratified-jittered + uniform, see ``bank_points``), rendered once and kept at ``bank_side``
    (enough resolution for the source's window); each step draws a batch from the bank and crops it to
    the windows.  ``bank=(t [N], pose [N, P], masks [N, H, W])`` reuses renders made elsewhere (float in [0, 1], or
    uint8 x 255 as ``render_bank(as_bytes=True)`` returns them, kept without a float copy).
    """
    from tqdm.auto import tqdm

    cfg = config or MaskMapperConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    pose0 = torch.zeros(cfg.pose_dim) if pose0 is None else torch.as_tensor(pose0, dtype=torch.float32).reshape(-1)
    if pose0.shape[0] != cfg.pose_dim:
        raise MaskMapperError(f"pose0 has {pose0.shape[0]} entries, config.pose_dim is {cfg.pose_dim}")
    t0_t = torch.tensor([float(t0)])

    clock = time.perf_counter()
    if src_mask is None:
        src_mask = call_sample_fn(sample_fn, t0_t, pose0[None])[0]
    src_mask = torch.as_tensor(src_mask).float()
    if src_mask.ndim == 3:
        src_mask = src_mask[0]
    side = bank_side(src_mask, cfg)
    if bank is None:
        bt, bp = bank_points(cfg, cfg.bank_total, gen, cfg.bank_jitter_fraction)
        # kept as bytes: a 5600-mask bank at 512 px is 1.5 GB instead of 5.9 GB
        targets = render_bank(sample_fn, bt, bp, None, cfg.render_batch, progress, max_side=side, as_bytes=True)
    else:
        bt, bp = bank[0].float().reshape(-1), bank[1].float().reshape(-1, cfg.pose_dim)
        masks = torch.as_tensor(bank[2])
        size = fit_size(*masks.shape[-2:], side)
        if masks.dtype == torch.uint8 and tuple(masks.shape[-2:]) == size:  # render_bank(as_bytes=True)'s own
            targets = masks
        else:
            targets = mask_bytes(resize_masks(masks.float() / (255 if masks.dtype == torch.uint8 else 1), size))
    val = None
    if cfg.val_size > 0:
        vt, vp = bank_points(cfg, cfg.val_size, gen, 0.0)
        val = (vt, vp, render_bank(sample_fn, vt, vp, None, cfg.render_batch, progress, "render val masks", side))
    history = MaskMapperHistory(bank_seconds=time.perf_counter() - clock, bank_shape=tuple(targets.shape[-2:]))

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        mapper = MaskMapper(cfg).to(device)
    mapper.set_source(src_mask.to(device), float(t0), pose0)
    src = mapper._stored_source_inputs()
    bank_mom, bank_valid = (torch.cat(x) for x in zip(*(mask_moments(targets[i:i + 256].float() / 255)
                                                          for i in range(0, targets.shape[0], 256))))
    delta_gt = moments_delta(bank_mom, src.moments.to(bank_mom.device).expand(targets.shape[0], -1))
    bt, bp, targets = bt.to(device), bp.to(device), targets.to(device)
    delta_gt, bank_valid = delta_gt.to(device), bank_valid.to(device)
    S = cfg.mask_size
    if bool(bank_valid.any()):
        with torch.no_grad():  # whiten the box head's targets
            mapper.box_mean.copy_(delta_gt[bank_valid].mean(0))
            mapper.box_scale.copy_(delta_gt[bank_valid].std(0, unbiased=False).clamp(min=0.05)
                                   if int(bank_valid.sum()) > 1 else torch.ones(4, device=device))
    valid_idx = bank_valid.nonzero()[:, 0]
    # window error in working pixels per unit of delta: position / (rel half-size * scale), log-scale * 1
    px_per = (S / 2) / torch.cat([src.rel[0, 2:].abs(), torch.ones(2, device=device)])  # [4]
    t0_b, p0_b = t0_t.to(device), pose0[None].to(device)
    D = 1 + cfg.pose_dim

    def box_loss_of(db: Tensor, bi: Tensor) -> Tensor:
        """Box head outputs db [n, 4] at bank entries bi [n]: Huber of the window error in working pixels."""
        if bi.shape[0] == 0:
            return db.new_zeros(())
        g = delta_gt[bi]
        err = (db - g) * px_per
        err = torch.cat([err[:, :2] * (-g[:, 2:]).exp(), err[:, 2:]], dim=1)  # relative to the target window
        return F.smooth_l1_loss(err, torch.zeros_like(err), beta=1.0)

    def bank_box_loss() -> Tensor:
        """The box head on (a large draw of) the whole bank."""
        bi = valid_idx[torch.randperm(valid_idx.shape[0], generator=gen)[:cfg.box_bank].to(device)]
        loss = box_loss_of(mapper.box_delta(bt[bi], bp[bi]), bi)
        if mapper.box_offsets is not None:
            loss = loss + cfg.box_offset_weight * mapper.box_offsets.pow(2).sum(1).mean()
        return loss

    use_box = valid_idx.shape[0] > 0
    if use_box and cfg.box_steps > 0:  # fit the (cheap) box head first: the decoder's windows come from it
        clock = time.perf_counter()
        box_grid = [mapper.box_codes] + ([mapper.box_offsets] if mapper.box_offsets is not None else [])
        bopt = torch.optim.Adam([{"params": box_grid, "lr": cfg.lr * cfg.grid_lr_scale},
                                 {"params": list(mapper.box_head.parameters()), "lr": cfg.lr}])
        bsched = torch.optim.lr_scheduler.LambdaLR(
            bopt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.box_steps) / cfg.box_steps)))
        for _ in range(cfg.box_steps):
            loss = bank_box_loss() + cfg.smooth_weight * grid_tv(mapper.box_codes, 1)
            bopt.zero_grad(set_to_none=True)
            loss.backward()
            bopt.step()
            bsched.step()
        history.box_seconds = time.perf_counter() - clock

    grid_names = ("codes", "box_codes", "frame_codes", "box_offsets")
    grid_params = [p for n, p in mapper.named_parameters() if n in grid_names]
    other = [p for n, p in mapper.named_parameters() if n not in grid_names]
    opt = torch.optim.Adam([{"params": grid_params, "lr": cfg.lr * cfg.grid_lr_scale},
                            {"params": other, "lr": cfg.lr}])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(cfg.steps, 1))))

    clock = time.perf_counter()
    mapper.train()
    acc_loss, acc_iou, acc_box, acc_n = 0.0, 0.0, 0.0, 0
    bar = tqdm(range(cfg.steps), desc="mask mapper", disable=not progress, unit="step")
    for step in bar:
        idx = torch.randint(0, bt.shape[0], (min(cfg.batch_size, bt.shape[0]),), generator=gen).to(device)
        B = idx.shape[0]
        z = mapper._latent_inputs(bt[idx], bp[idx], t0_b.expand(B), p0_b.expand(B, -1))
        delta = mapper.box_delta(bt[idx], bp[idx])  # [B, 4]
        # the head keeps learning on the whole bank (it generalises better than on the batch alone)
        box_loss = bank_box_loss() if use_box else z.new_zeros(())
        # the decoder works in the predicted windows, as at inference: it learns to correct the box head
        used = delta.detach()
        boxes = mapper.boxes_from_delta(used, src)
        tgt, inside = crop_masks(targets[idx].float() / 255, boxes, S)  # [B, S, S]
        w = inside.float()
        logits = mapper._decode_in_window(z, used, src)
        bce = (F.binary_cross_entropy_with_logits(logits, tgt, reduction="none") * w).sum() / w.sum().clamp(min=1)
        dice = soft_dice_loss(torch.sigmoid(logits) * w, tgt * w)
        tv = grid_tv(mapper.codes, D) + grid_tv(mapper.box_codes, 1)
        loss = bce + cfg.dice_weight * dice + cfg.smooth_weight * tv + cfg.box_weight * box_loss
        if mapper.frame_codes is not None:
            loss = loss + cfg.frame_smooth_weight * grid_tv(mapper.frame_codes, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc_loss += float(loss.detach())
        acc_box += float(box_loss.detach())
        acc_iou += float(mask_iou(torch.sigmoid(logits.detach()) * w, tgt * w).mean())
        acc_n += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            history.steps.append(step + 1)
            history.loss.append(acc_loss / acc_n)
            history.iou.append(acc_iou / acc_n)
            history.box_loss.append(acc_box / acc_n)
            bar.set_postfix(loss=f"{acc_loss / acc_n:.4f}", iou=f"{acc_iou / acc_n:.3f}")
            acc_loss, acc_iou, acc_box, acc_n = 0.0, 0.0, 0.0, 0
    history.train_seconds = time.perf_counter() - clock
    mapper.eval()
    if val is not None:
        vt, vp, vm = (v.to(device) for v in val)
        probs = torch.cat([mapper.predict(vt[i:i + 64], vp[i:i + 64], out_size=tuple(vm.shape[-2:]))
                           for i in range(0, vt.shape[0], 64)])
        history.val_iou = float(mask_iou(probs, vm).mean())
    return mapper, history


@torch.no_grad()
def evaluate_mask_mapper(mapper: MaskMapper, sample_fn: SampleFn, ts: Tensor, poses: Tensor,
                         src_mask: Tensor | None = None, t0: float | None = None, pose0: Tensor | None = None,
                         batch: int = 32) -> dict:
    """IoU of the mapper against the exact route at (ts [N], poses [N, P]), at the exact route's own
    resolution (the mapper's logits are upsampled to it).  Use points that were not in the bank.

    -> {"iou_mean": float, "iou_min": float, "per_sample": Tensor [N]}."""
    ts = torch.as_tensor(ts, dtype=torch.float32).reshape(-1)
    poses = torch.as_tensor(poses, dtype=torch.float32).reshape(ts.shape[0], -1)
    ious = []
    for i in range(0, ts.shape[0], batch):
        target = call_sample_fn(sample_fn, ts[i:i + batch], poses[i:i + batch]).cpu()  # [b, H, W]
        pred = mapper.predict(ts[i:i + batch], poses[i:i + batch], src_mask, t0, pose0,
                              out_size=tuple(target.shape[-2:])).cpu()
        ious.append(mask_iou(pred, target))
    per = torch.cat(ious)
    return {"iou_mean": float(per.mean()), "iou_min": float(per.min()), "per_sample": per}
