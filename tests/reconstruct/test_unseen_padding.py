"""Pixels past the source video's frame (a crop that runs over its edge is padded) show nothing:
the metrics, the training loss, the motion refinement and the held-out figures ignore them, so
whatever the target holds there changes no number and no trained value."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dynavatar.flame import FlameModel
from dynavatar.gaussians.binding import bind
from dynavatar.geometry.photometric import photometric_loss, psnr, ssim
from dynavatar.reconstruct import ReconstructConfig, evaluate, fit_avatar
from dynavatar.reconstruct.refine_tracking import RefineTrackingConfig, refine_frame_params
from dynavatar.reconstruct.synthetic import synthetic_clip
from dynavatar.render.torch_renderer import TorchRenderer
from flame_fixtures import ellipsoid_head


def _pair(seed=0, shape=(2, 24, 20, 3)):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=gen)
    return a, (a + 0.3 * torch.rand(shape, generator=gen)).clamp(0, 1)


def _bottom_unseen(shape, rows):
    """[B, H, W, 1] bool: every pixel but the last ``rows`` rows."""
    seen = torch.ones(shape[:3] + (1,), dtype=torch.bool)
    seen[:, -rows:] = False
    return seen


def test_psnr_over_the_seen_pixels_is_the_psnr_of_the_seen_part():
    a, b = _pair()
    seen = _bottom_unseen(a.shape, 7)
    assert torch.allclose(psnr(a, b, seen), psnr(a[:, :-7], b[:, :-7]))
    assert torch.allclose(psnr(a, b, torch.ones_like(seen)), psnr(a, b))


def test_ssim_and_loss_do_not_see_what_the_target_holds_past_the_picture():
    """Any values in the target's unseen rows: the same SSIM and loss; all seen: the plain figures;
    unseen pixels more than a window's half-width from the picture get no gradient."""
    a, b = _pair(1)
    seen = _bottom_unseen(a.shape, 8)
    junk = b.clone()
    junk[:, -8:] = torch.rand(junk[:, -8:].shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ssim(a, b, seen=seen), ssim(a, junk, seen=seen))
    assert torch.allclose(ssim(a, b, seen=torch.ones_like(seen)), ssim(a, b))
    pred = a.clone().requires_grad_(True)
    loss = photometric_loss(pred, junk, 0.8, 0.2, seen)
    assert torch.equal(loss, photometric_loss(a, b, 0.8, 0.2, seen))
    loss.backward()
    # 6+ rows from the picture no window reaches it: zero up to rounding (SSIM at x = y is a maximum)
    assert pred.grad[:, -2:].abs().max() < 1e-2 * pred.grad[:, :-8].abs().max()
    # The SSIM mean counts only windows centred on seen pixels (the map's rows r .. r+h-1).
    perfect = b.clone()
    perfect[:, -8:] = 1 - b[:, -8:]  # unseen rows unlike the prediction: no effect at all
    assert torch.allclose(ssim(b, perfect, seen=seen), torch.ones(2))


@pytest.fixture(scope="module")
def clip():
    model = FlameModel(ellipsoid_head())
    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=8, resolution=40)
    n, r = len(data.frame_index), data.resolution
    rows = torch.ones(n, r, dtype=torch.bool)
    rows[:, -9:] = False  # the video's frame ends 9 px above every crop's bottom
    data = dataclasses.replace(data, seen_rows=rows, seen_cols=torch.ones(n, r, dtype=torch.bool),
                               frame_bottom=torch.full((n,), r - 9))
    junk = data.images.clone()
    junk[:, -9:] = torch.randint(0, 256, junk[:, -9:].shape, generator=torch.Generator().manual_seed(3),
                                 dtype=torch.uint8)
    mattes = data.mattes.clone()
    mattes[:, -9:] = 255 - mattes[:, -9:]
    return model, renderer, data, dataclasses.replace(data, images=junk, mattes=mattes)


def _cfg():
    cfg = ReconstructConfig.preset("tiny")
    cfg.steps, cfg.resolution, cfg.log_every = 12, 40, 4
    cfg.densify = dataclasses.replace(cfg.densify, refine_start=4, refine_stop=10, refine_every=4)
    return cfg


def test_training_refinement_and_evaluation_ignore_the_padding(clip):
    """The same fit, refinement and held-out figures whatever the padding rows of the frames and
    mattes hold; and the data reports which pixels it saw."""
    model, renderer, data, junk = clip
    assert data.seen(torch.tensor([0, 1])).shape == (2, 40, 40, 1)
    assert not data.seen(torch.tensor([0]))[0, -9:].any() and data.seen(torch.tensor([0]))[0, :-9].all()
    a = fit_avatar(data, model, renderer, _cfg(), progress=False)
    b = fit_avatar(junk, model, renderer, _cfg(), progress=False)
    for k, v in a.avatar.parameters_dict().items():
        assert torch.equal(v, b.avatar.parameters_dict()[k]), k
    assert torch.equal(a.params.expr, b.params.expr)
    ea = evaluate(a.avatar, a.params, data, a.model, renderer)
    eb = evaluate(a.avatar, a.params, junk, a.model, renderer)
    assert ea["psnr"] == eb["psnr"] and ea["ssim"] == eb["ssim"]
    cfg = RefineTrackingConfig(steps=3)
    ra = refine_frame_params(a.avatar, a.model, a.params, data, data.eval_idx, renderer, cfg)
    rb = refine_frame_params(a.avatar, a.model, a.params, junk, data.eval_idx, renderer, cfg)
    assert torch.equal(ra.expr, rb.expr) and torch.equal(ra.rotation, rb.rotation)
    # Without the record of what was seen, the padding counts (the figures differ).
    plain = dataclasses.replace(junk, seen_rows=None, seen_cols=None)
    assert evaluate(a.avatar, a.params, plain, a.model, renderer)["psnr"] != ea["psnr"]


def test_splat_labels_ignore_the_parsing_past_the_picture(clip):
    """The parser calls the crop's padding background; those pixels vote for no label, so any labels
    there give the same splat labels."""
    from dynavatar.semantics.avatar_labels import labels_from_parsing

    model, renderer, data, _ = clip
    fit = fit_avatar(data, model, renderer, _cfg(), progress=False)
    junk = data.parsing.clone()
    junk[:, -9:] = 10  # "hair" all along the padding
    frames = data.train_idx.tolist()

    def labels(parsing, seen):
        return labels_from_parsing(fit.avatar, fit.model, fit.params, data.cameras, parsing, frames, renderer,
                                   refine_steps=4, progress=False, seen=seen)[0]

    assert torch.equal(labels(data.parsing, data.seen), labels(junk, data.seen))
    assert not torch.equal(labels(data.parsing, None), labels(junk, None))


def test_splats_drawn_only_in_the_padding_become_transparent(clip):
    """Nothing observed them, so they would draw their first colour. Made transparent, they change
    the training frames' padding and (almost) nothing of their picture."""
    model, renderer, data, _ = clip
    fit = fit_avatar(data, model, renderer, _cfg(), progress=False)
    hidden = fit.avatar.opacities < 1e-6
    assert 0 < int(hidden.sum()) < fit.avatar.num_splats // 4
    shown = fit.avatar.replace(opacity_logits=fit.avatar.opacity_logits.masked_fill(hidden, 0.0))
    picture, padding = [], []
    for i in data.train_idx.tolist():
        verts = fit.model(fit.params[i], landmark_set=None).vertices
        a, b = (renderer.render(bind(g, verts, fit.model.faces), data.cameras[i], background=torch.ones(3)).rgb[0]
                for g in (fit.avatar, shown))
        seen = data.seen(torch.tensor([i]))[0, ..., 0]
        diff = (a - b).abs().amax(-1)
        picture.append(diff[seen].mean())
        padding.append(diff[~seen].mean())
    assert max(picture) < 0.1 * max(padding), (max(picture), max(padding))


def test_beyond_frame_loss_is_the_mean_opacity_below_each_frames_edge():
    """Against a loop over frames and rows: rows past ``frame_bottom`` count, that row and those above
    do not; a frame whose picture reaches the crop's bottom adds nothing."""
    from dynavatar.reconstruct.regularisers import beyond_frame_loss

    alpha = torch.rand(3, 10, 6, 1, generator=torch.Generator().manual_seed(0))
    bottom = torch.tensor([4, 10, 0])
    total = sum(float(alpha[b, r].sum()) for b in range(3) for r in range(10) if r > int(bottom[b]))
    assert abs(float(beyond_frame_loss(alpha, bottom)) - total / alpha.numel()) < 1e-6
    assert float(beyond_frame_loss(alpha, torch.tensor([10, 10, 10]))) == 0.0


def test_a_fit_draws_nothing_below_the_frame_with_the_term_and_the_same_above(clip):
    """The synthetic head drawn into rows the video never shows: with ``w_beyond_frame`` the avatar
    draws far less there, while its picture above the frame's edge is about as good."""
    model, renderer, data, _ = clip
    frames = data.train_idx[:4]
    below, above = {}, {}
    for w in (0.0, 0.5):
        cfg = dataclasses.replace(_cfg(), steps=40, track_steps=0, w_beyond_frame=w)
        fit = fit_avatar(data, model, renderer, cfg, progress=False)
        with torch.no_grad():
            g = bind(fit.avatar, fit.model(fit.params[frames]).vertices, fit.model.faces)
            out = renderer.render(g, data.cameras[frames], background=torch.ones(3))
        below[w] = float(out.alpha[:, -8:].mean())
        target, _ = data.targets(frames, torch.ones(3))
        above[w] = float(psnr(out.rgb[:, :-9], target[:, :-9]).mean())
    assert below[0.0] > 0.05, below  # the head does reach past the frame here
    assert below[0.5] < 0.5 * below[0.0], below
    assert above[0.5] > above[0.0] - 1.0, (above, below)
