"""The optimisation that turns tracked frames into a FLAME-bound Gaussian avatar.

The splats start on their triangles, coloured by what each draws in a few frames (``init_colours.py``;
``init_colours="projected"``: the first frame's pixel each triangle projects to).
Per step: pick frames, pose FLAME with the tracked (and jointly refined) parameters, bind the
splats to the posed triangles, render, compare with the matted frame (L1 + D-SSIM), add the
regularisers (``regularisers.py``: GaussianAvatars' binding terms, an opaque face, splats lying flat on the skin),
step Adam, densify with the binding-aware strategy, and project the splats back into a box round
their triangle (``surface.py``: one view cannot tell the skin from a layer behind it). Checkpoints are written every N steps or M
seconds, and a run resumes from the last one exactly (``resume.py``: optimizer moments, RNG
streams and densification statistics included); Ctrl-C saves and raises ``RunInterrupted``; a
NaN/inf stops the run after saving the last good state.

The per-frame motion that is refined (``refine_tracking.MOTION_FIELDS``) includes two things the
landmark tracker does not fit: a neck bend (kept at zero mean, see ``_UNTRACKED``) and a shift of
the torso sheet (centred at the end, then predicted from the head's motion for frames that have
none: ``_fit_torso_motion``). Under ``accelerate launch`` the processes split each step's frames
(``distributed.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import DynavatarError, RunInterrupted
from ..flame import FlameModel, FlameParams
from ..gaussians.avatar import GaussianAvatar, rgb_to_sh
from ..gaussians.binding import bind
from ..gaussians.densify import DensifyState, densify_step
from ..geometry.cameras import project_points
from .config import ReconstructConfig
from .data import TrainData
from .distributed import DataParallel, data_parallel
from .landmark_anchor import anchor_applies, landmark_anchor, landmark_budget, landmark_nme_per_frame
from ..geometry.photometric import l1 as l1_loss
from ..geometry.photometric import only_seen, photometric_loss, psnr, ssim
from .refine_tracking import MOTION_FIELDS, motion_optimizer
from .frame_votes import votes_over_frames
from .init_colours import init_colours_
from .resume import Checkpointer, DeferredInterrupt, load_checkpoint, rng_state
from .regularisers import beyond_frame_loss, face_opacity_loss, flat_triangles, regularisers
from .surface import face_triangles, project_to_surface_, surface_bounds

__all__ = ["FitResult", "fit_avatar", "attach_torso", "evaluate", "face_opacity_loss", "TrainingDivergedError"]

logger = logging.getLogger("dynavatar.reconstruct")

_REFINED = MOTION_FIELDS
#: Joints the tracker leaves at zero whose training offsets are kept at zero mean: a constant offset
#: is the canonical avatar's job (the splats absorb it); otherwise a neck bend traded against the
#: root rotation becomes the avatar's rest pose, and every frame posed with tracked or another
#: clip's parameters (neck 0) sits a few pixels off. (The torso's shift is centred once at the end:
#: nothing trades against it.)
_UNTRACKED = ("neck",)


class TrainingDivergedError(DynavatarError):
    """Loss or parameters became NaN/inf; the last good checkpoint was saved."""


@dataclasses.dataclass
class FitResult:
    avatar: GaussianAvatar
    model: FlameModel  # the head model the splats are bound to (with the torso sheet if one was added)
    params: FlameParams  # [N] tracked + refined (eval frames: tracked only)
    history: list[dict]
    seconds: float


def _param_groups(avatar: GaussianAvatar, cfg: ReconstructConfig) -> list[dict]:
    lr = cfg.lr
    return [{"params": [p], "lr": getattr(lr, name) if hasattr(lr, name) else 1e-3, "name": name}
            for name, p in avatar.parameters_dict().items()]


def _init_colours(avatar: GaussianAvatar, data: TrainData, model: FlameModel, background: Tensor) -> None:
    """``init_colours="projected"``: each splat takes the first training frame's pixel its triangle
    projects to, hidden or not; one past the video's picture (the crop's padding) keeps its colour."""
    with torch.no_grad():
        i = int(data.train_idx[0])
        verts = model(data.params[i], landmark_set=None, check_finite=False).vertices[0]
        centre = verts[model.faces].mean(1)[avatar.binding]  # [N, 3]
        cam = data.cameras[i]
        uv, _ = project_points(centre, cam.viewmats[0], cam.Ks[0])  # [N, 2]
        uv = torch.nan_to_num(uv, nan=0.0, posinf=0.0, neginf=0.0)
        r = data.resolution
        x, y = uv[:, 0].long().clamp(0, r - 1), uv[:, 1].long().clamp(0, r - 1)
        at = torch.tensor([i], device=verts.device)
        target, _ = data.targets(at, background)
        seen = data.seen(at)
        colour = rgb_to_sh(target[0, y, x])
        avatar.sh[:, 0] = colour if seen is None else torch.where(seen[0, y, x], colour, avatar.sh[:, 0])


def _decay_position_lr(opt: torch.optim.Optimizer, cfg: ReconstructConfig, step: int) -> None:
    """Splat positions: exponential decay from ``lr.means_local`` to ``x lr.position_final``
    over the run (3DGS's schedule: large moves early, sub-pixel settling at the end)."""
    lr = cfg.lr.means_local * cfg.lr.position_final ** min(1.0, step / max(1, cfg.steps))
    for group in opt.param_groups:
        if group.get("name") == "means_local":
            group["lr"] = lr


def attach_torso(model: FlameModel, data: TrainData, max_frames: int = 64) -> FlameModel:
    """The model with a torso sheet placed from the training frames' mean neck (``flame.torso``)."""
    from ..flame.torso import torso_sheet

    head = model.without_torso()
    idx = data.train_idx[torch.linspace(0, len(data.train_idx) - 1, min(max_frames, len(data.train_idx))).long()]
    with torch.no_grad():
        p = data.params[idx]
        verts = head(p, landmark_set=None, check_finite=False).vertices - p.translation[:, None]
    if head.vertex_region is not None and head.region_names and "neck" in head.region_names:
        neck = torch.nonzero(head.vertex_region == head.region_names.index("neck")).squeeze(-1)
    else:  # no regions: the lowest tenth of the head stands in for the neck
        y = head.v_template[:, 1]
        neck = torch.nonzero(y <= torch.quantile(y, 0.1)).squeeze(-1)
    vertices, faces = torso_sheet(verts, neck.to(verts.device))
    return head.with_torso(vertices, faces)


def _wants_torso(setting: bool | str, data: TrainData) -> bool:
    """``ReconstructConfig.torso``: "auto" adds the sheet when the parser finds clothes (over 1 % of the
    pixels) OR the matte reaches the bottom edge of the video frame (a person cut off below, not a
    floating head). Either alone misses clips: the parser calls bare shoulders skin or neck and a dark
    top background, and a tight video's crop runs past the frame, so the matte stops at the frame's
    bottom edge (``TrainData.frame_bottom``), above the crop's. On the eight shared clips every matte
    covers 54-98 % of the frame's bottom band, while the parser found clothes on 0.0-0.2 % of the pixels
    of three of them (bare shoulders, a dark top) and on 1.03 % of a fourth."""
    if setting != "auto":
        return bool(setting)
    idx = data.train_idx[:: max(1, len(data.train_idx) // 32)]
    if data.parsing is not None:
        from ..geometry.labels import label_index

        if bool((data.parsing[idx] == label_index("clothes")).float().mean() > 0.01):
            return True
    return bool(_matte_at_frame_bottom(data, idx) > 0.2)


def _matte_at_frame_bottom(data: TrainData, idx: Tensor) -> float:
    """Mean matte of the band of rows just above where each frame ``idx`` ends (R/32 rows)."""
    res, band = data.resolution, max(1, data.resolution // 32)
    bottom = data.frame_bottom[idx].tolist() if data.frame_bottom is not None else [res] * len(idx)
    vals = [data.mattes[i, max(0, b - band):b].float().mean() / 255 for i, b in zip(idx.tolist(), bottom) if b > 0]
    return float(torch.stack(vals).mean()) if vals else 0.0


def _frame_params(base: FlameParams, deltas: dict[str, Tensor] | None, idx: Tensor) -> FlameParams:
    p = base[idx]
    if deltas is None:
        return p
    return p.replace(**{k: getattr(p, k) + deltas[k][idx] for k in _REFINED})


def fit_avatar(data: TrainData, model: FlameModel, renderer, config: ReconstructConfig | None = None,
               out_dir: str | Path | None = None, progress: bool = True, resume: bool = True,
               parallel: DataParallel | None = None) -> FitResult:
    """Optimise a ``GaussianAvatar`` on ``data``'s training frames (see the module docstring).

    ``out_dir``: checkpoints go to ``out_dir/checkpoint``; with ``resume`` a checkpoint there is
    continued exactly, and one written with other settings raises ``ConfigError`` (``resume=False``
    starts over and overwrites it). Ctrl-C saves the last completed step and raises
    ``RunInterrupted``. ``parallel``: data-parallel over frames (``distributed.py``); by default the
    launcher's environment decides (one process without ``accelerate launch``). Only the main process
    writes checkpoints and shows progress; every process returns the same result."""
    cfg = config or ReconstructConfig()
    dp = parallel or data_parallel()
    dev = data.images.device
    model = model.to(dev)
    model = attach_torso(model, data) if _wants_torso(cfg.torso, data) else model.without_torso()
    bounds = surface_bounds(model, cfg.surface) if cfg.bind_to_surface else None  # [F, 3]
    face = face_triangles(model, cfg.surface.face_ahead_of_ears) if cfg.w_face_opacity > 0 else None  # [F]
    flat = flat_triangles(model, cfg.flat_on, cfg.surface.face_ahead_of_ears) if cfg.w_flat > 0 else None  # [F]
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    bg = torch.tensor(cfg.background, device=dev)
    ckpt_dir = Path(out_dir) / "checkpoint" if out_dir else None
    resumed = load_checkpoint(ckpt_dir, cfg, dev, resume)  # raises ConfigError for other settings
    start, history = (resumed.step, resumed.history) if resumed is not None else (0, [])

    avatar = GaussianAvatar.init_on_mesh(model.faces.shape[0], cfg.splats_per_face, cfg.sh_degree, init_scale=0.5,
                                         init_opacity=0.5, jitter=0.2 if cfg.splats_per_face > 1 else 0.0,
                                         generator=gen, device=dev)
    base = data.params.with_torso()  # every motion field present (the torso's shift starts at 0)
    deltas = {k: torch.zeros_like(getattr(base, k)) for k in _REFINED} if cfg.refine_params else None
    if resumed is not None:
        avatar = resumed.avatar
        if deltas is not None:
            deltas = {k: resumed.deltas.get(k, deltas[k]).to(dev) for k in deltas}
    elif cfg.init_colours == "seen":
        init_colours_(avatar, data, model, renderer, bg)
    else:
        _init_colours(avatar, data, model, bg)
    avatar.requires_grad_(True)
    fused = dev.type == "cuda"  # one kernel for all tensors: the step is launch-bound, not FLOP-bound
    opt = torch.optim.Adam(_param_groups(avatar, cfg), eps=1e-15, fused=fused)
    opt_params = None
    if deltas is not None:
        for v in deltas.values():
            v.requires_grad_(True)
        opt_params = motion_optimizer(deltas, cfg.lr.expr, cfg.lr.pose, cfg.lr.translation, cfg.lr.torso,
                                      fused=fused)
    state = (DensifyState.zeros(avatar.num_splats, device=dev) if resumed is None
             else resumed.restore(opt, opt_params, gen, dev))
    saver = Checkpointer(ckpt_dir, cfg, enabled=dp.is_main, saved_step=start if resumed is not None else None)

    def checkpoint(next_step: int, rng: dict[str, Tensor]) -> None:
        """Save the state in which steps < ``next_step`` are done (``rng``: the streams at that boundary)."""
        saver.save(next_step, avatar, deltas, opt, opt_params, state, history, rng)

    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc="fit avatar", disable=not (progress and dp.is_main), unit="step",
               initial=start, total=cfg.steps)
    train = data.train_idx
    anchored = deltas is not None and anchor_applies(cfg.w_landmarks, data, model)
    # [N] each frame's landmark error under the landmark fit: the refined motion may not exceed it
    budget = landmark_nme_per_frame(model, base, data) if deltas is not None and cfg.w_landmark_budget > 0 else None
    # Where the loop stands, for Ctrl-C: steps < ``done`` are complete; "pre": the current step has only
    # drawn random numbers (state as at ``done``, streams as in ``rng0``); "update": it is changing the
    # splats/optimizers (no consistent state to save); "boundary": ``done`` steps complete, nothing more.
    done, phase, rng0 = start, "boundary", None
    interrupt = DeferredInterrupt(enabled=not dp.active)  # processes of a parallel run must stop together
    try:
        with interrupt:
            for step in bar:
                rng0 = rng_state(gen, dev)
                phase = "pre"
                _decay_position_lr(opt, cfg, step)
                draw = torch.randint(len(train), (min(cfg.batch_size, len(train)),), generator=gen)
                idx = train[draw.to(train.device)]
                idx = dp.shard(idx)  # the same draw in every process; each renders its share
                p = _frame_params(base, deltas, idx)
                verts = model(p, landmark_set=None, check_finite=False).vertices
                g = bind(avatar, verts, model.faces)
                cams = data.cameras[idx] if len(idx) > 1 else data.cameras[int(idx[0])]
                # a new background each step: a white splat can no longer pass for transparency at the outline
                step_bg = torch.rand(3, generator=gen).to(dev) if cfg.random_background else bg
                out = renderer.render(g, cams, background=step_bg)
                if out.means2d.requires_grad:
                    out.means2d.retain_grad()
                target, _ = data.targets(idx, step_bg)
                pred, seen = out.rgb, data.seen(idx)
                loss = photometric_loss(pred, target, cfg.w_l1, cfg.w_dssim, seen) + regularisers(avatar, cfg, face, flat)
                if cfg.w_beyond_frame > 0 and data.frame_bottom is not None:
                    loss = loss + cfg.w_beyond_frame * beyond_frame_loss(out.alpha, data.frame_bottom[idx])
                if anchored:
                    loss = loss + cfg.w_landmarks * landmark_anchor(model, verts, cams, data.landmarks[idx],
                                                                    data.landmarks_valid[idx],
                                                                    points=cfg.landmark_points)
                if budget is not None:
                    loss = loss + cfg.w_landmark_budget * landmark_budget(model, verts, cams, data.landmarks[idx],
                                                                          budget[idx.to(budget.device)])
                opt.zero_grad(set_to_none=True)
                if opt_params is not None:
                    opt_params.zero_grad(set_to_none=True)
                loss.backward()
                trained = list(avatar.parameters_dict().values()) + list((deltas or {}).values())
                mean_loss = dp.average_gradients(trained, loss)
                if not torch.isfinite(mean_loss):
                    checkpoint(step, rng0)
                    raise _diverged(mean_loss, step, avatar, saver.folder)
                phase = "update"
                opt.step()
                if opt_params is not None:
                    opt_params.step()
                    _zero_mean_(deltas, train, _UNTRACKED)
                    if not cfg.train_neck:
                        deltas["neck"].detach().zero_()
                avatar, state, info = densify_step(cfg.densify, state, avatar, opt, out, step, data.resolution,
                                                   data.resolution, generator=gen,
                                                   reduce_stats=dp.reduce_densify_stats)
                if bounds is not None:
                    project_to_surface_(avatar.means_local.data, avatar.binding, bounds)
                done, phase = step + 1, "boundary"
                if step % cfg.log_every == 0 or step == cfg.steps - 1:
                    with torch.no_grad():
                        ps = psnr(pred.detach(), target, seen).mean().item()
                    history.append({"step": step, "loss": mean_loss.item(), "l1": l1_loss(pred.detach(), target).item(),
                                    "psnr": ps, "splats": avatar.num_splats, "time_s": time.perf_counter() - t0})
                    bar.set_postfix(loss=f"{mean_loss.item():.4f}", psnr=f"{ps:.2f}", splats=avatar.num_splats)
                if interrupt.requested:  # Ctrl-C during this step: stop here, where the state is whole
                    raise KeyboardInterrupt
                if saver.due(done):
                    checkpoint(done, rng_state(gen, dev))
    except KeyboardInterrupt:
        if phase != "update":  # "pre": the step changed nothing yet, so it is redone on resume
            checkpoint(done, rng0 if phase == "pre" else rng_state(gen, dev))
        raise _interrupted(done, cfg.steps, saver) from None
    finally:
        bar.close()
    checkpoint(cfg.steps, rng_state(gen, dev))
    refined = base
    if deltas is not None and model.torso_vertices is not None:
        model, deltas["torso"] = _centre_torso(model, deltas["torso"].detach(), data.train_idx)
    if deltas is not None:
        refined = base.replace(**{k: getattr(base, k) + deltas[k].detach() for k in _REFINED})
        ev = data.eval_idx
        if len(ev):  # held-out frames keep their tracked parameters: they were never trained on
            refined = refined.replace(**{k: torch.where(_mask(ev, len(data.frame_index), dev)[:, None],
                                                        getattr(base, k), getattr(refined, k)) for k in _REFINED})
        if model.torso_vertices is not None:  # ... and the torso shift their head's motion predicts
            model, refined = _fit_torso_motion(model, refined, data.train_idx, ev)
    avatar = _hide_padding_only_splats(avatar.detach(), model, refined.detach(), data, renderer)
    return FitResult(avatar, model, refined.detach(), history, time.perf_counter() - t0)


@torch.no_grad()
def _hide_padding_only_splats(avatar: GaussianAvatar, model: FlameModel, params: FlameParams, data: TrainData,
                              renderer, n_frames: int = 48, max_seen: float = 0.5) -> GaussianAvatar:
    """Splats that the training frames show mostly in the crops' padding past the video's frame (at
    most ``max_seen`` of what they draw in the picture) met few or no pixels: they keep their first
    colour, or stretch the edge's colour on, and draw a smear below aoc's neck, where her video ends.
    They become transparent. Splats some frames show in their picture keep drawing on into other
    frames' padding (d12's shirt below the frame's edge), and splats no frame shows at all (the back
    of the head) are left as they were. Judged on ``n_frames`` training frames spread over the clip.
    Why half: lower shares leave the smear (docs/benchmarks.md has the comparison)."""
    if data.seen_rows is None or data.seen_cols is None:
        return avatar
    frames = data.train_idx[:: max(1, len(data.train_idx) // n_frames)]

    def picture_and_padding(i: int) -> Tensor:  # [R, R, 2]
        seen = data.seen(torch.tensor([i], device=data.seen_rows.device))[0]  # [R, R, 1]
        return torch.cat([seen, ~seen], -1).float()

    votes = votes_over_frames(avatar, model, params, data.cameras, frames, picture_and_padding, renderer)
    # more than a tenth of a pixel drawn, at most ``max_seen`` of it in the picture
    padding_only = (votes[:, 1] > 0.1) & (votes[:, 0] <= max_seen * votes.sum(1))
    if bool(padding_only.any()):
        logger.info("%d of %d splats are drawn only past the video's frame: made transparent",
                    int(padding_only.sum()), avatar.num_splats)
    return avatar.replace(opacity_logits=avatar.opacity_logits.masked_fill(padding_only, -30.0))


def _diverged(loss: Tensor, step: int, avatar: GaussianAvatar, folder: Path | None) -> TrainingDivergedError:
    bad = [n for n, t in avatar.parameters_dict().items() if not torch.isfinite(t).all()]
    return TrainingDivergedError(
        f"loss became {loss.item()} at step {step}" + (f"; non-finite parameters: {bad}" if bad else "") +
        ". The last good state was saved" + (f" to {folder}" if folder else "") +
        "; lower the learning rates (config.lr) or check the input frames/tracking.")


def _interrupted(done: int, total: int, saver: Checkpointer) -> RunInterrupted:
    """The one-line error of a Ctrl-C: what was saved where (``saver.saved_step``: the step its newest
    checkpoint resumes at), and what to do."""
    at = f"interrupted at step {done} of {total}"
    if saver.folder is None:
        return RunInterrupted(f"{at}; nothing was saved (no output folder was given) — pass out_dir (-o) to make "
                              "the run resumable")
    if not saver.enabled:
        return RunInterrupted(f"{at}; the main process saves the state in {saver.folder} — run the same command "
                              "again to resume")
    if saver.saved_step == done:
        return RunInterrupted(f"{at}; the state was saved in {saver.folder} — run the same command again to resume")
    if saver.saved_step is not None:
        return RunInterrupted(f"{at}, in the middle of an update; the checkpoint of step {saver.saved_step} in "
                              f"{saver.folder} is kept — run the same command again to resume from it")
    return RunInterrupted(f"{at}, in the middle of an update; nothing was saved — run the same command again to "
                          "start over")


@torch.no_grad()
def _zero_mean_(deltas: dict[str, Tensor], train: Tensor, fields: tuple[str, ...]) -> None:
    for k in fields:
        d = deltas[k]
        d[train] -= d[train].mean(0)


def _fit_torso_motion(model: FlameModel, params: FlameParams, train: Tensor, held_out: Tensor
                      ) -> tuple[FlameModel, FlameParams]:
    """Fit ``flame.torso.fit_torso_motion`` on the training frames; held-out frames get its prediction."""
    from ..flame.torso import fit_torso_motion

    tr = params[train]
    motion = fit_torso_motion(tr.translation, tr.rotation, tr.torso)
    model = model.with_torso(model.torso_vertices, model.torso_faces, motion=motion)
    torso = params.torso.clone()
    if len(held_out):
        torso[held_out] = model.predict_torso(params[held_out])
    return model, params.replace(torso=torso)


def _centre_torso(model: FlameModel, shift: Tensor, train_idx: Tensor) -> tuple[FlameModel, Tensor]:
    """Move the torso sheet to the training frames' mean shift and make the shifts relative to it.

    Bound splats follow a translated triangle exactly, so nothing renders differently; but a zero
    shift (held-out frames before refinement, another clip's parameters) now means the average
    shoulder position instead of the sheet's initial guess.  shift: [N, 3] -> (model, [N, 3])"""
    mean = shift[train_idx].mean(0)  # [3]
    model = model.with_torso(model.torso_vertices + mean, model.torso_faces)
    out = shift - mean
    out[_mask(train_idx, len(shift), shift.device).logical_not()] = 0  # untrained frames: the mean
    return model, out


def _mask(idx: Tensor, n: int, dev) -> Tensor:
    m = torch.zeros(n, dtype=torch.bool, device=dev)
    m[idx] = True
    return m


def evaluate(avatar: GaussianAvatar, params: FlameParams, data: TrainData, model: FlameModel, renderer,
             background=(1.0, 1.0, 1.0), lpips_fn=None, refine_tracking=None) -> dict:
    """PSNR/SSIM (and LPIPS if a function is given) on the held-out frames.

    ``refine_tracking`` (a ``RefineTrackingConfig``): first refine the held-out frames' motion
    photometrically with the avatar frozen (``refine_tracking.py``); the result then also carries
    the refined ``params``."""
    refined = None
    if not len(data.eval_idx):
        logger.warning("no held-out frames: the clip's %d frame(s) are too few to hold any out, so every frame "
                       "trained and the held-out figures are NaN; fit a clip of 2 or more frames to evaluate",
                       len(data.frame_index))
    if refine_tracking is not None:
        from .refine_tracking import refine_frame_params

        params = refined = refine_frame_params(avatar, model, params, data, data.eval_idx, renderer, refine_tracking,
                                               background)
    with torch.no_grad():
        res = _evaluate(avatar, params, data, model, renderer, background, lpips_fn)
    return res if refined is None else {**res, "params": refined}


def _evaluate(avatar, params, data, model, renderer, background, lpips_fn) -> dict:
    """Held-out figures over the pixels that show the video's picture (``TrainData.seen``): the crop's
    padding past the frame is unobserved, so drawing the shoulders on below the frame's edge is
    neither punished nor, where the avatar draws nothing, rewarded as matched background.
    ``psnr_whole_crop``: the figure of earlier versions, which scored the padding as background."""
    bg = torch.tensor(background, device=data.images.device)
    ps, ss, lp, whole = [], [], [], []
    for i in data.eval_idx.tolist():
        verts = model(params[i], landmark_set=None, check_finite=False).vertices
        pred = renderer.render(bind(avatar, verts, model.faces), data.cameras[i], background=bg).rgb.clamp(0, 1)
        at = torch.tensor([i], device=bg.device)
        target, _ = data.targets(at, bg)
        seen = data.seen(at)  # the padding past the video's frame shows nothing to compare with
        ps.append(psnr(pred, target, seen).item())
        whole.append(psnr(pred, target).item())
        ss.append(ssim(pred, target, seen=seen).item())
        if lpips_fn is not None:
            lp.append(float(lpips_fn(pred, only_seen(pred, target, seen))))
    mean = lambda x: float(sum(x) / len(x)) if x else math.nan  # noqa: E731
    return {"psnr": mean(ps), "ssim": mean(ss), "lpips": mean(lp) if lp else None, "frames": len(ps),
            "psnr_whole_crop": mean(whole)}
