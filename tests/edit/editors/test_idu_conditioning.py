"""Instruct-NeRF2NeRF's conditioning in the IDU loop (edit/editors/diffusion.py ``ip2p_from_current``,
edit/apply/loop.py ``original_views``): the image guidance is the ORIGINAL view, the denoising starts
from the CURRENT render. Checked with a tiny random InstructPix2Pix pipeline by looking at what the
UNet receives."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from dynavatar.edit import EditPlan  # noqa: E402
from dynavatar.edit.editors.diffusion import InstructPix2PixEditor, ip2p_from_current  # noqa: E402
from dynavatar.edit.editors.random_pipelines import random_ip2p_pipeline  # noqa: E402

PLAN = EditPlan(prompt="red hair", kind="appearance", regions=["hair"], instruction="make the hair red",
                num_steps=10)


@pytest.fixture(scope="module")
def pipe():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield random_ip2p_pipeline("tiny", seed=0)
    torch.set_num_threads(n)


def _image(seed: int, side: int = 32) -> torch.Tensor:
    """[1, 3, side, side] in [0, 1]: smooth random blobs."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(side, side), mode="bilinear")


def _unet_inputs(pipe, fn):
    """Every (sample [3, 8, h, w]) the UNet is called with while ``fn`` runs (a real forward hook)."""
    seen = []
    h = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        out = fn()
    finally:
        h.remove()
    return out, seen


def test_image_channels_carry_the_original_and_latents_start_from_the_current_render(pipe):
    current, original = _image(1), _image(2)
    enc = lambda x, mode: pipe.vae.encode(x * 2 - 1).latent_dist.mode() if mode else (  # noqa: E731
        pipe.vae.encode(x * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor)
    with torch.no_grad():
        orig_lat, cur_lat, other_lat = enc(original, True), enc(current, False), enc(original, False)
    # start late in the schedule: little noise is added, so the first sample is close to the current render
    out, seen = _unet_inputs(pipe, lambda: ip2p_from_current(pipe, current, original, PLAN, start=0.1,
                                                             generator=torch.Generator().manual_seed(0)))
    assert out.shape == current.shape and torch.isfinite(out).all()
    assert len(seen) == 1  # 10 steps, started at 0.1 of the way: one step
    first = seen[0]  # [3, 8, h, w]: (full, image-only, unconditional) x (noisy latents | image latents)
    torch.testing.assert_close(first[0, 4:], orig_lat[0], atol=1e-5, rtol=0)  # image guidance: the original
    torch.testing.assert_close(first[1, 4:], orig_lat[0], atol=1e-5, rtol=0)
    assert torch.count_nonzero(first[2, 4:]) == 0  # unconditional branch: no image
    # the noisy latents are the CURRENT render's, noised at the first timestep with the seeded noise
    sched = pipe.scheduler
    sched.set_timesteps(PLAN.num_steps)
    t0 = sched.timesteps[9:10]
    sched.set_begin_index(9)
    noise = torch.randn(cur_lat.shape, generator=torch.Generator().manual_seed(0))
    expected = sched.scale_model_input(sched.add_noise(cur_lat, noise, t0), t0[0])
    torch.testing.assert_close(first[0, :4], expected[0], atol=1e-4, rtol=1e-4)
    wrong = sched.scale_model_input(sched.add_noise(other_lat, noise, t0), t0[0])
    assert not torch.allclose(first[0, :4], wrong[0], atol=1e-3)


def test_editor_passes_originals_through_its_crops(pipe):
    """The editor's crop/composite shell sends each view's original to the UNet's image channels and
    the current render to its starting latents."""
    ed = InstructPix2PixEditor(pipe=pipe, work_resolution=16, start_strength=0.2)
    images = _image(3).permute(0, 2, 3, 1).repeat(2, 1, 1, 1)  # [2, 32, 32, 3]
    originals = _image(4).permute(0, 2, 3, 1).repeat(2, 1, 1, 1)
    masks = torch.zeros(2, 32, 32)
    masks[:, 8:24, 8:24] = 1
    out, seen = _unet_inputs(pipe, lambda: ed.edit(images, masks, PLAN, seed=0, originals=originals))
    assert out.shape == images.shape and len(seen) == 2 * 2  # two views, a fifth of 10 steps each
    _, swapped = _unet_inputs(pipe, lambda: ed.edit(images, masks, PLAN, seed=0, originals=images))
    # other originals: other image channels, the same starting latents (the current render, same seed)
    assert not torch.allclose(seen[0][0, 4:], swapped[0][0, 4:])
    torch.testing.assert_close(seen[0][:, :4], swapped[0][:, :4])
    with pytest.raises(ValueError, match="originals must match"):
        ed.edit(images, masks, PLAN, originals=originals[:1])
