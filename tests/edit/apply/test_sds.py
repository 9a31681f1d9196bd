"""Score distillation (edit/apply/sds_*.py) with tiny random diffusers components built offline from configs."""

from __future__ import annotations

import math
import types

import pytest
import torch

from dynavatar.errors import DynavatarError, InvalidParametersError
from dynavatar.geometry.cameras import look_at_viewmat, orbit_eyes

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from dynavatar.edit.apply.sds_config import SDSConfig  # noqa: E402
from dynavatar.edit.apply.sds_guidance import SDSGuidance  # noqa: E402
from dynavatar.edit.apply.sds_maths import keyframe_blend, timestep_range, view_angles, view_word  # noqa: E402
from tiny_diffusion import LAT, RES, tiny_components, write_tiny_tokenizer  # noqa: E402

PROMPT = "a photo of sks person with red hair"
IMG = 32  # side of the rendered images the tests feed in


# ------------------------------------------------------------------------------ tiny models
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: intra-op threads only add overhead, and on a shared 2-core machine
    they oversubscribe it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_tiny_tokenizer(tmp_path_factory.mktemp("clip_tokenizer"))


def make_guidance(tokenizer_dir, **cfg) -> SDSGuidance:
    comps = tiny_components(tokenizer_dir)
    return SDSGuidance(**comps, config=SDSConfig(resolution=RES, **cfg))


@pytest.fixture(scope="module")
def shared_guidance(tokenizer_dir):
    return make_guidance(tokenizer_dir)


@pytest.fixture
def guidance(shared_guidance):
    """The module's guidance, in its initial state: no adapters, no keyframes, generator at the seed.

    Shared because building and warming up the tiny models costs more than most tests; every test
    leaves the frozen components as it found them (the LoRA test checks exactly that).
    """
    g = shared_guidance
    g.remove_lora()
    g.clear_keyframes()
    g.reseed()
    yield g
    g.remove_lora()


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """[n, IMG, IMG, 3] in [0, 1]: upsampled coarse noise, so images look like blobs, not static."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(IMG, IMG), mode="bilinear").permute(0, 2, 3, 1)


# ------------------------------------------------------------------------------- pure parts
def test_config_validation():
    with pytest.raises(InvalidParametersError):
        SDSConfig(t_min=0.5, t_max=0.4)
    with pytest.raises(InvalidParametersError):
        SDSConfig(t_max_final=0.01)
    with pytest.raises(InvalidParametersError):
        SDSConfig(weighting="linear")
    assert SDSConfig.preset("dreamfusion").guidance_scale == 100.0
    assert SDSConfig.preset("fast").lora_steps == 0


def test_view_words_and_camera_angles(guidance):
    assert view_word(0, 0) == "front view"
    assert view_word(30, 10) == "front view"
    assert view_word(90, 0) == "side view" and view_word(-90, 0) == "side view"
    assert view_word(180, 0) == "back view" and view_word(-170, 0) == "back view"
    assert view_word(270, 0) == "side view"  # wraps to -90
    assert view_word(0, 75) == "overhead view"
    assert guidance.view_prompt("a man", 0.0, 0.0) == "a man, front view"
    assert guidance.view_prompt("a man", 90.0, 0.0) == "a man, side view"
    assert guidance.view_prompt("a man", 180.0, 0.0) == "a man, back view"

    # cameras orbiting a head at the origin: azimuth 0 (+z, in front of the FLAME face), 90, 180
    target = torch.zeros(3)
    eyes = orbit_eyes(4, 1.0, target, elevation_deg=20.0)  # azimuths -180, -90, 0, 90
    yaw, pitch = view_angles(look_at_viewmat(eyes, target.expand_as(eyes)))
    torch.testing.assert_close(pitch, torch.full((4,), 20.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(yaw[1:], torch.tensor([-90.0, 0.0, 90.0]), atol=1e-4, rtol=0)
    assert abs(abs(float(yaw[0])) - 180.0) < 1e-4
    words = [view_word(float(y), float(p)) for y, p in zip(yaw, pitch)]
    assert words == ["back view", "side view", "front view", "side view"]


def test_timestep_annealing_stays_in_range(guidance):
    cfg = guidance.config
    T = guidance.num_train_timesteps
    assert timestep_range(cfg, 0, 100, T) == (20, 980)
    assert timestep_range(cfg, 100, 100, T) == (20, 500)
    assert timestep_range(cfg, 500, 100, T) == (20, 500)  # past the end: clamped
    his = [timestep_range(cfg, s, 100, T)[1] for s in range(101)]
    assert all(a >= b for a, b in zip(his, his[1:]))  # the upper end only falls
    assert timestep_range(SDSConfig.preset("dreamfusion"), 100, 100, T) == (20, 980)  # no annealing

    text = guidance.condition(PROMPT, [0.0] * 2, [0.0] * 2)
    latents = torch.randn(2, 4, LAT, LAT)
    for step in (0, 5, 9, 10):
        lo, hi = timestep_range(cfg, step, 10, T)
        out = guidance.latent_loss(latents, text, step, 10)
        assert bool(((out.timesteps >= lo) & (out.timesteps <= hi)).all())
        assert math.isfinite(float(out.loss))


# ----------------------------------------------------------------------------- the SDS maths
def test_gradient_identity(guidance):
    """d loss / d latents == w(t) * (eps_cfg - eps) / B, with the reference built by hand."""
    g = guidance
    B, s = 2, g.config.guidance_scale
    step, total = 3, 10
    latents = torch.randn(B, 4, LAT, LAT, requires_grad=True)
    text = g.condition(PROMPT, [0.0, 90.0], [0.0, 0.0])
    out = g.latent_loss(latents, text, step, total)
    out.loss.backward()

    # the timesteps and noise are the seeded draws, in order
    gen = torch.Generator().manual_seed(g.config.seed)
    lo, hi = timestep_range(g.config, step, total, 1000)
    ts = torch.randint(lo, hi + 1, (B,), generator=gen)
    noise = torch.randn(latents.shape, generator=gen)
    assert torch.equal(out.timesteps, ts) and torch.equal(out.noise, noise)

    ab_all = torch.as_tensor(g.scheduler.alphas_cumprod, dtype=torch.float32)
    ref = torch.empty_like(latents)
    with torch.no_grad():
        for b in range(B):
            ab = ab_all[ts[b]]
            x_t = ab.sqrt() * latents[b:b + 1] + (1 - ab).sqrt() * noise[b:b + 1]
            t_b = ts[b:b + 1]
            eps_c = g.unet(x_t, t_b, encoder_hidden_states=text.cond[b:b + 1]).sample
            eps_u = g.unet(x_t, t_b, encoder_hidden_states=text.uncond[b:b + 1]).sample
            eps = eps_u + s * (eps_c - eps_u)
            ref[b] = (1 - ab) * (eps - noise[b:b + 1])[0]
    assert ref.abs().max() > 1e-3  # not a trivially zero comparison
    torch.testing.assert_close(out.grad, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(latents.grad, ref / B, atol=2e-5, rtol=1e-4)


def test_gradient_reaches_images(guidance):
    images = smooth_images(2, seed=1).requires_grad_(True)
    loss = guidance.loss(images, yaw=[0.0, 45.0], pitch=[0.0, 10.0], t=[0.1, 0.9], step=0, total_steps=10,
                         prompt=PROMPT)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    assert images.grad is not None and bool(torch.isfinite(images.grad).all())
    assert images.grad.abs().sum() > 0
    assert guidance.last is not None and guidance.last.grad.shape == (2, 4, LAT, LAT)


def test_half_precision_working_dtype(tokenizer_dir):
    """bf16 components (fp16 on CUDA works the same way): float32 renders still get float32 gradients,
    and the float32 LoRA adapters train through the half-precision UNet."""
    g = SDSGuidance(**tiny_components(tokenizer_dir), config=SDSConfig(resolution=RES), dtype=torch.bfloat16)
    assert g.encode_images(smooth_images(1, seed=5)).dtype == torch.bfloat16
    images = smooth_images(2, seed=5).requires_grad_(True)
    g.loss(images, [0.0, 90.0], [0.0, 0.0], [0.0, 1.0], 0, 10, prompt=PROMPT).backward()
    assert images.grad.dtype == torch.float32 and bool(torch.isfinite(images.grad).all())
    assert images.grad.abs().sum() > 0
    res = g.personalise(smooth_images(2, seed=6), "a photo of sks person", steps=2, lr=1e-2)
    assert all(math.isfinite(v) for v in res.losses)
    assert all(p.dtype == torch.float32 for p in g.lora_parameters())


def test_mask_blocks_latent_gradient_outside(guidance):
    mask = torch.zeros(1, IMG, IMG)
    mask[:, :, : IMG // 2] = 1.0  # left half of the image -> left half of the latent grid
    latents = torch.randn(1, 4, LAT, LAT, requires_grad=True)
    text = guidance.condition(PROMPT, [0.0], [0.0])
    guidance.latent_loss(latents, text, 0, 10, mask=mask).loss.backward()
    half = LAT // 2
    assert torch.count_nonzero(latents.grad[..., half:]) == 0
    assert latents.grad[..., :half].abs().min() > 0

    # through the full loss() as well (the pixel gradient can leak through the encoder's receptive
    # field, the latent push cannot)
    images = smooth_images(1, seed=2).requires_grad_(True)
    guidance.loss(images, [0.0], [0.0], None, 0, 10, mask=mask.bool(), prompt=PROMPT).backward()
    assert torch.count_nonzero(guidance.last.grad[..., half:]) == 0


def test_time_conditioning_blends_keyframes(guidance):
    g = guidance
    no_kf = g.condition(PROMPT, [0.0, 0.0], [0.0, 0.0], t=[0.0, 1.0]).cond
    assert torch.equal(no_kf[0], no_kf[1])  # without keyframes, t is ignored

    g.set_keyframes([1.0, 0.0, 0.5], tags=["mouth open", "neutral", "smiling"])  # sorted internally
    e = lambda tag: g.encode_prompts(f"{PROMPT}, front view, {tag}").cond[0]  # noqa: E731
    c = g.condition(PROMPT, [0.0] * 4, [0.0] * 4, t=[0.0, 0.5, 1.0, 0.25]).cond
    assert torch.equal(c[0], e("neutral")) and torch.equal(c[1], e("smiling")) and torch.equal(c[2], e("mouth open"))
    torch.testing.assert_close(c[3], 0.5 * (e("neutral") + e("smiling")))
    assert not torch.allclose(c[0], c[1])

    i0, i1, w = keyframe_blend(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([-1.0, 0.75, 2.0]))
    assert i0.tolist() == [0, 1, 1] and i1.tolist() == [1, 2, 2]
    torch.testing.assert_close(w, torch.tensor([0.0, 0.5, 1.0]))

    side = g.condition(PROMPT, [90.0], [0.0]).cond
    front = g.condition(PROMPT, [0.0], [0.0]).cond
    assert not torch.allclose(side, front)  # the view words reach the embedding


def test_empty_tokenizer_fails_loudly(tokenizer_dir):
    comps = tiny_components(tokenizer_dir)
    comps["tokenizer"] = types.SimpleNamespace(vocab_size=2, model_max_length=77)  # what offline CLIP can return
    with pytest.raises(DynavatarError, match="empty"):
        SDSGuidance(**comps)


def test_missing_weights_name_the_download():
    with pytest.raises(DynavatarError, match="huggingface-cli download nobody/no-such-sd-model"):
        SDSGuidance.from_pretrained("nobody/no-such-sd-model", device="cpu")


def test_from_pretrained_local_folder(tokenizer_dir, tmp_path):
    comps = tiny_components(tokenizer_dir)
    for name, obj in comps.items():
        obj.save_pretrained(str(tmp_path / name))
    g = SDSGuidance.from_pretrained(str(tmp_path), SDSConfig(resolution=RES), device="cpu")
    assert g.vae_scale_factor == 2 and g.latent_size == RES // 2
    loss = g.loss(smooth_images(1, seed=3).requires_grad_(True), [0.0], [0.0], None, 0, 1, prompt=PROMPT)
    assert math.isfinite(loss.item())

    # DESIGN.md §7: without its vocab files CLIPTokenizer.from_pretrained returns an empty tokenizer
    for f in ("vocab.json", "merges.txt", "tokenizer.json"):
        (tmp_path / "tokenizer" / f).unlink(missing_ok=True)
    with pytest.raises(DynavatarError, match="empty"):
        SDSGuidance.from_pretrained(str(tmp_path), SDSConfig(resolution=RES), device="cpu")


# ------------------------------------------------------------------------------------- LoRA
def _unet_out(g: SDSGuidance, x, ts, emb):
    with torch.no_grad():
        return g.unet(x, ts, encoder_hidden_states=emb).sample


def test_lora_wrap_is_exact_and_removable(guidance):
    g = guidance
    x = torch.randn(2, 4, LAT, LAT)
    ts = torch.tensor([50, 700])
    emb = g.condition(PROMPT, [0.0, 90.0], [0.0, 0.0]).cond
    keys = list(g.unet.state_dict().keys())
    before = _unet_out(g, x, ts, emb)

    params = g.add_lora(rank=2)
    assert len(params) == 2 * 4 * 8  # (down, up) x (q, k, v, out) x 8 attention modules
    assert torch.equal(_unet_out(g, x, ts, emb), before)  # up = 0: bit-identical

    with torch.no_grad():
        for p in params:
            p.normal_()
    assert not torch.allclose(_unet_out(g, x, ts, emb), before)

    g.remove_lora()
    assert not g.has_lora
    assert list(g.unet.state_dict().keys()) == keys
    assert torch.equal(_unet_out(g, x, ts, emb), before)


def test_personalise_fits_keyframes_and_trains_only_lora(guidance):
    g = guidance
    images = smooth_images(3, seed=4)
    times = [0.0, 0.5, 1.0]
    g.set_keyframes(times)
    zeros = torch.zeros(3)
    with torch.no_grad():
        latents = g.encode_images(images).float()
        cond = g.condition("a photo of sks person", zeros, zeros, times).cond
    # fixed evaluation draws: every keyframe at four timesteps
    gen = torch.Generator().manual_seed(123)
    lat_e, cond_e = latents.repeat(4, 1, 1, 1), cond.repeat(4, 1, 1)
    ts_e = torch.tensor([100, 300, 600, 900]).repeat_interleave(3)
    noise_e = torch.randn(lat_e.shape, generator=gen)
    with torch.no_grad():
        loss_before = float(g.denoising_loss(lat_e, cond_e, ts_e, noise_e))

    snapshot = {id(p): p.detach().clone() for m in (g.unet, g.vae, g.text_encoder) for p in m.parameters()}
    x = torch.randn(1, 4, LAT, LAT)
    out_before = _unet_out(g, x, torch.tensor([400]), cond[:1])

    res = g.personalise(images, "a photo of sks person", steps=20, rank=4, times=times, lr=1e-2)
    assert len(res.losses) == 20 and res.rank == 4 and res.trainable_parameters > 0
    with torch.no_grad():
        loss_after = float(g.denoising_loss(lat_e, cond_e, ts_e, noise_e))
    assert loss_after < 0.95 * loss_before, (loss_before, loss_after)

    # only the adapters moved
    for m in (g.unet, g.vae, g.text_encoder):
        for p in m.parameters():
            if id(p) in snapshot:
                assert torch.equal(p, snapshot[id(p)])
    assert any(p.abs().sum() > 0 for p in g.lora_parameters()[1::2])  # the up matrices left zero

    # SDS now runs through the adapted UNet, and removing the adapters restores the original exactly
    assert math.isfinite((g.loss(images[:1].clone().requires_grad_(True), [0.0], [0.0], [0.5], 0, 10,
                                      prompt="a photo of sks person with red hair")).item())
    g.remove_lora()
    assert torch.equal(_unet_out(g, x, torch.tensor([400]), cond[:1]), out_before)


# ------------------------------------------------------------------------------ end to end
def test_tiny_optimisation_loop_stays_finite(guidance):
    """Optimise a 32x32 image directly with SDS for 30 steps, orbiting the view and the time."""
    assert IMG == 32
    g = guidance
    torch.manual_seed(0)
    logits = torch.nn.Parameter(torch.randn(1, IMG, IMG, 3) * 0.1)  # image = sigmoid(logits)
    start = torch.sigmoid(logits).detach().clone()
    opt = torch.optim.Adam([logits], lr=0.05)
    mask = torch.ones(1, IMG, IMG)
    total = 30
    losses = []
    for step in range(total):
        image = torch.sigmoid(logits)
        loss = g.loss(image, [step * 12.0], [0.0], [step / (total - 1)], step, total, mask, prompt=PROMPT)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    final = torch.sigmoid(logits).detach()
    assert bool(torch.isfinite(final).all())
    assert (final - start).abs().max() > 1e-3  # the image moved
