"""Editing an avatar: keyframes, the region-restricted edit loop with the palette editor, locality,
hue in held-out frames and novel poses, chaining, expression edits, the discriminator."""

from __future__ import annotations

import colorsys
import dataclasses
import math

import numpy as np
import pytest
from conftest import fit_labelled_avatar
import torch

from dynavatar.edit import EditPlan
from dynavatar.edit.apply.discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from dynavatar.edit.apply.expression import apply_expression, expression_delta
from dynavatar.edit.apply.keyframes import farthest_point_keyframes, rotate_head
from dynavatar.edit.apply.loop import EditConfig
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.flame import FlameModel, FlameParams
from dynavatar.geometry.labels import label_index
from dynavatar.render.torch_renderer import TorchRenderer

RED_HAIR = EditPlan(prompt="red hair", kind="colour", regions=["hair"], instruction="make the hair red",
                    colour=(0.8, 0.1, 0.1), colour_name="red")


def test_farthest_point_keyframes_cover_the_clip():
    g = torch.Generator().manual_seed(0)
    p = FlameParams.zeros(60, 3, 10)
    p.expr[:] = torch.randn(60, 10, generator=g) * 0.1
    p.expr[17, 0] = 5.0  # one extreme expression must be picked
    p.jaw[41, 0] = 3.0  # and one extreme jaw
    keys = farthest_point_keyframes(p, 6)
    assert len(set(keys)) == 6 and 17 in keys and 41 in keys
    # Greedy FPS is a 2-approximation of the best covering radius: check against random subsets.
    from dynavatar.edit.apply.keyframes import parameter_features
    f = parameter_features(p)

    def radius(sub):
        return torch.cdist(f, f[sub]).min(1).values.max()
    rand = min(radius(torch.randperm(60, generator=g)[:6]) for _ in range(200))
    assert radius(torch.tensor(keys)) <= rand + 1e-6
    assert farthest_point_keyframes(p, 3, candidates=[5, 6, 7, 8]) and set(
        farthest_point_keyframes(p, 3, candidates=[5, 6, 7, 8])) <= {5, 6, 7, 8}


def test_rotate_head_composes_yaw_exactly():
    from dynavatar.geometry.rotations import axis_angle_to_matrix
    p = FlameParams.zeros(1, 0, 0).replace(rotation=torch.tensor([[0.1, -0.2, 0.05]]))
    q = rotate_head(p, 0.3)
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.3, 0.0])) @ axis_angle_to_matrix(p.rotation[0])
    assert torch.allclose(axis_angle_to_matrix(q.rotation[0]), R, atol=1e-6)


def test_discriminator_learns_to_separate_and_ignores_outside_region():
    torch.manual_seed(0)
    d = PatchDiscriminator(channels=8)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    real = torch.rand(4, 32, 32, 3) * 0.2 + torch.tensor([0.8, 0.1, 0.1])  # red patches
    fake = torch.rand(4, 32, 32, 3) * 0.2 + torch.tensor([0.1, 0.1, 0.8])  # blue patches
    masks = torch.ones(4, 32, 32)
    first = discriminator_loss(d, real, fake, masks).item()
    for _ in range(60):
        opt.zero_grad(); discriminator_loss(d, real, fake, masks).backward(); opt.step()  # noqa: E702
    assert discriminator_loss(d, real, fake, masks).item() < 0.5 * first
    # The losses weight each patch logit by how much of its patch lies in the region.
    m = torch.zeros(4, 32, 32); m[:, :16] = 1  # noqa: E702
    w = d.patch_weights(m)
    assert w[:, : 16 // d.stride].min() == 1 and w[:, 16 // d.stride:].max() == 0
    assert generator_loss(d, fake, m) > generator_loss(d, real, m)  # trained: red looks real, blue fake


@pytest.fixture(scope="module")
def avatar():
    # 30 label-refinement steps, not label_splats' 300: on the synthetic clip the votes are already right,
    # and the 300 took 77 of this fixture's 84 s (a tenth of the default suite)
    return fit_labelled_avatar(n_frames=12, resolution=48, steps=40, refine_steps=30)


def _median_hue_deg(img: np.ndarray, mask: np.ndarray) -> float:
    px = img[mask].astype(np.float64) / 255
    hues = np.array([colorsys.rgb_to_hsv(*c)[0] for c in px]) * 2 * np.pi
    return float(np.degrees(np.angle(np.median(np.cos(hues)) + 1j * np.median(np.sin(hues)))))


def test_palette_red_hair_is_local_and_holds_in_held_out_frames_and_novel_poses(avatar):
    cfg = EditConfig(keyframes=3, novel_yaws=(-0.5, 0.5), steps=40, reedit_every=20, w_adv=0.02, adv_start=10)
    before_sh = avatar.gaussians.sh.clone()
    edited = avatar.edit(RED_HAIR, editor=PaletteEditor(), config=cfg, progress=False)
    assert torch.equal(avatar.gaussians.sh, before_sh), "the original avatar must be untouched"
    rec = edited.meta["edits"][-1]
    assert rec["plan"]["colour_name"] == "red" and rec["editor"] == "PaletteEditor" and rec["keyframes"]
    # Splats outside the region are bit-identical.
    hair_sel = avatar.select("hair")
    assert torch.equal(edited.gaussians.sh[~hair_sel], avatar.gaussians.sh[~hair_sel])
    hair = label_index("hair")
    frames = [int(i) for i in avatar.data.eval_idx]
    poses = [(f, None) for f in frames] + [(frames[0], rotate_head(avatar.params[frames[0]], 0.6))]
    for f, p in poses:
        kw = {"frame": f} if p is None else {"params": p, "camera": avatar.cameras[f]}
        a, b = avatar.render(**kw), edited.render(**kw)
        region = avatar.render_masks(**kw)[hair] > 0.5
        outside = ~(torch.nn.functional.max_pool2d(torch.from_numpy(region.astype(np.float32))[None, None], 5, 1, 2)[0, 0] > 0).numpy()
        diff = np.abs(a.astype(int) - b.astype(int))[outside].mean()
        assert diff <= 2.0, f"pixels outside the hair changed by {diff:.2f}/255 on average"
        core = region & (avatar.render_masks(**kw)[hair] > 0.8)
        assert core.sum() > 10
        hue = _median_hue_deg(b, core)
        assert abs(hue) <= 20, f"hair hue {hue:.1f} deg is not red"
    # Edits chain, and each is recorded.
    twice = edited.edit(dataclasses.replace(RED_HAIR, prompt="blue eyes", regions=["left_eye", "right_eye"],
                                            colour=(0.1, 0.2, 0.9), colour_name="blue"),
                        editor=PaletteEditor(), config=dataclasses.replace(cfg, steps=4), progress=False)
    assert [e["prompt"] for e in twice.meta["edits"]] == ["red hair", "blue eyes"]


def test_expression_edit_changes_flame_not_splats(avatar):
    plan = EditPlan(prompt="make her smile", kind="expression", regions=[], instruction="make the person smile",
                    expression={"smile": 0.8})
    smiling = avatar.edit(plan, progress=False)
    assert smiling.gaussians is avatar.gaussians
    names = avatar.model.expr_names
    i = names.index("smile_L")
    assert bool((smiling.params.expr[:, i] > avatar.params.expr[:, i]).all())  # every frame smiles more, relative to its own face


def test_expression_transfer_to_a_head_without_names_recovers_the_mixing():
    """A head whose expression basis is an unknown rotation of the default head's: the landmark
    least-squares transfer must find the rotated coefficients."""
    ref = FlameModel.load()
    q, _ = torch.linalg.qr(torch.randn(ref.n_expr, ref.n_expr, generator=torch.Generator().manual_seed(0)))
    mixed = FlameModel.load()
    n_s = mixed.n_shape
    mixed.shapedirs[..., n_s:] = mixed.shapedirs[..., n_s:] @ q  # expression e' drives basis B q
    mixed.expr_names = None
    coeffs, jaw = expression_delta(mixed, {"smile": 1.0}, reference=ref)
    want, _ = expression_delta(ref, {"smile": 1.0})
    # B q e' = B e  =>  e' = q^T e
    lm = lambda m, e: m(m.zero_params(1).replace(expr=e[None]), landmark_set="mediapipe").landmarks[0]  # noqa: E731
    err = (lm(mixed, coeffs) - lm(ref, want)).norm(dim=-1)
    print(f'transferred smile: landmark error max {err.max() * 1000:.3f} mm, mean {err.mean() * 1000:.3f} mm')
    assert err.max() < 5e-4, err.max()  # < 0.5 mm on a ~0.2 m head
    p = apply_expression(FlameParams.zeros(3, n_s, ref.n_expr), mixed, {"smile": 1.0})
    assert torch.allclose(p.expr[0], coeffs, atol=1e-6)


def test_sds_method_runs_end_to_end_with_tiny_components(avatar, tmp_path):
    """method="sds" through Avatar.edit with tiny random diffusion components (with LoRA
    personalisation): finite, region-only, recorded."""
    from tiny_diffusion import RES, tiny_components, write_tiny_tokenizer
    from dynavatar.edit.apply.sds_config import SDSConfig
    from dynavatar.edit.apply.sds_guidance import SDSGuidance
    from dynavatar.edit.apply.sds_loop import SDSEditConfig

    torch.set_num_threads(1)
    guidance = SDSGuidance(**tiny_components(write_tiny_tokenizer(tmp_path)), config=SDSConfig(resolution=RES))
    plan = dataclasses.replace(RED_HAIR, kind="appearance", colour=None, colour_name=None,
                               positive_prompt="a person with red hair")
    cfg = SDSEditConfig(steps=6, keyframes=2, personalise_steps=2)
    edited = avatar.edit(plan, method="sds", guidance=guidance, config=cfg, progress=False)
    sel = avatar.select("hair")
    changed = (edited.gaussians.sh.shape[0] == avatar.gaussians.sh.shape[0] and
               not torch.equal(edited.gaussians.sh[sel], avatar.gaussians.sh[sel]))
    assert changed and torch.isfinite(edited.gaussians.sh).all()
    assert torch.equal(edited.gaussians.sh[~sel], avatar.gaussians.sh[~sel])
    assert edited.meta["edits"][-1]["method"] == "sds" and not guidance._lora_sites


def test_cli_edit_shows_the_plan_before_spending_gpu_time(avatar, tmp_path):
    from click.testing import CliRunner

    from dynavatar.cli import main

    avatar.save(tmp_path / "a")
    res = CliRunner().invoke(main, ["edit", str(tmp_path / "a"), "red hair and blue eyes", "-o", str(tmp_path / "b"),
                                    "--plan-only", "--refiner", "rule", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "[colour] hair" in res.output and "left_eye, right_eye" in res.output
    assert not (tmp_path / "b").exists()
    bad = CliRunner().invoke(main, ["edit", str(tmp_path / "missing"), "red hair", "-o", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_bad_edit_inputs_give_clear_errors(avatar):
    from dynavatar.edit import EditPlanError
    from dynavatar.errors import DynavatarError

    with pytest.raises(EditPlanError, match="not valid JSON"):
        EditPlan.from_json("{not json")
    with pytest.raises(EditPlanError, match="colour"):
        dataclasses.replace(RED_HAIR, colour=(float("nan"), 0.1, 0.1)).validate()
    with pytest.raises(EditPlanError, match="unknown labels"):
        dataclasses.replace(RED_HAIR, regions=["beard"]).validate()
    with pytest.raises(EditPlanError, match="both edited and preserved"):
        dataclasses.replace(RED_HAIR, preserve=["hair"]).validate()
    # No splat carries the label: a clear error, not an empty optimisation.
    glasses = dataclasses.replace(RED_HAIR, regions=["eyeglasses"])
    with pytest.raises(DynavatarError, match="no splat is labelled"):
        avatar.edit(glasses, editor=PaletteEditor(), config=EditConfig(steps=1), progress=False)
    # An avatar without labels says how to get them.
    bare = dataclasses.replace(avatar, gaussians=avatar.gaussians.replace(labels=torch.zeros(avatar.gaussians.num_splats, 0)))
    with pytest.raises(DynavatarError, match="label_splats"):
        bare.edit(RED_HAIR, editor=PaletteEditor(), config=EditConfig(steps=1), progress=False)


def _consistency_poses(avatar, keyframes: list[int]) -> list[dict]:
    """Poses no keyframe shows: the clip's other frames, and two of them looking down (the top of
    the head) and turned aside."""
    poses = [{"frame": f} for f in range(avatar.params.batch_size) if f not in keyframes]
    for f in (poses[0]["frame"], poses[-1]["frame"]):
        for yaw, pitch in ((0.0, 0.5), (0.8, 0.0), (-0.8, 0.3)):
            poses.append({"params": rotate_head(avatar.params[f], yaw, pitch), "camera": avatar.cameras[f]})
    return poses


def test_splat_recolour_reaches_unseen_hair_and_keeps_held_out_colour_consistent(avatar):
    """Issue 7: a palette edit recolours the hair splats themselves (not only what keyframes show),
    so hair no keyframe sees turns red too, and the region's colour does not flicker visibly across
    held-out frames and poses (colour-fair metric, 2 px eroded masks)."""
    from dynavatar.edit.apply.keyframes import View
    from dynavatar.edit.apply.region import render_views
    from dynavatar.edit.apply.splat_recolour import splat_visibility
    from dynavatar.edit.colour_space import rgb_to_oklab
    from dynavatar.edit.metrics import region_colour_consistency, region_colour_spread
    from dynavatar.gaussians.avatar import sh_to_rgb

    torch.set_num_threads(1)
    cfg = EditConfig(keyframes=3, novel_yaws=(), steps=10, reedit_every=5, w_adv=0.02, adv_start=4)
    edited = avatar.edit(RED_HAIR, editor=PaletteEditor(), config=cfg, progress=False)
    keys = edited.meta["edits"][-1]["keyframes"]
    hair_sel = avatar.select("hair")
    for k in avatar.gaussians.PARAM_NAMES:
        assert torch.equal(getattr(edited.gaussians, k)[~hair_sel], getattr(avatar.gaussians, k)[~hair_sel]), k

    # Hair splats that no keyframe shows (zero blending weight in every keyframe render).
    views = [View(f) for f in keys]
    _, wg, cams = render_views(avatar.gaussians, avatar.model, avatar.params, avatar.cameras, views,
                               TorchRenderer(), torch.ones(3))
    vis = splat_visibility(wg, cams, torch.ones(len(views), cams.height, cams.width), TorchRenderer())
    unseen = hair_sel & (vis == 0)

    def hue(rgb: torch.Tensor) -> torch.Tensor:  # sRGB [..., 3] -> OKLab hue [...], degrees
        lab = rgb_to_oklab(rgb.clamp(0, 1))
        return torch.rad2deg(torch.atan2(lab[..., 2], lab[..., 1]))

    red = hue(torch.tensor(RED_HAIR.colour))
    off_before, off_after = (((hue(sh_to_rgb(g.sh[unseen, 0])) - red + 180) % 360 - 180).abs()  # circular
                             for g in (avatar.gaussians, edited.gaussians))
    print(f"{int(unseen.sum())} hair splats unseen by keyframes {keys}: median hue off red "
          f"{float(off_before.median()):.1f} deg before, {float(off_after.median()):.1f} deg after")
    assert unseen.sum() >= 5
    assert off_before.median() > 20 and (off_after < 10).all()

    hair = label_index("hair")
    imgs_b, imgs_a, masks = [], [], []
    for kw in _consistency_poses(avatar, keys):
        imgs_b.append(avatar.render(**kw)), imgs_a.append(edited.render(**kw))
        masks.append(avatar.render_masks(**kw)[hair] > 0.5)
    b, a = region_colour_consistency(imgs_b, masks), region_colour_consistency(imgs_a, masks)
    print(f"over {a['frames']} held-out poses: chroma CV {b['chroma_cv']:.4f} -> {a['chroma_cv']:.4f}, "
          f"hue std {b['hue_std_deg']:.2f} -> {a['hue_std_deg']:.2f} deg (median chroma {b['chroma_median']:.3f} -> "
          f"{a['chroma_median']:.3f}); absolute spread x1000 {region_colour_spread(imgs_b, masks):.2f} -> "
          f"{region_colour_spread(imgs_a, masks):.2f}")
    # Flicker a person could see, in OKLab distance: the hue's spread (radians) times the chroma; a
    # just-noticeable difference is ~0.02. The hair before is nearly grey (median chroma 0.036), so
    # its hue spread in degrees says little; red after, it must stay under half a JND. Seen with the
    # fit's defaults of 2026-12-07: chroma CV 0.192 -> 0.184, hue std 0.5 -> 1.9 deg at chroma 0.113
    # (0.004). Without the splat step (splat_recolour=False, even with 40 steps) unseen hair stayed
    # brown. The colourist's recolour keeps dark strands dark (their chroma low), so the median
    # chroma rises ~3x rather than the ~4x of a flat fill.
    assert a["frames"] >= 10 and a["chroma_median"] > 2.5 * b["chroma_median"]
    assert a["chroma_cv"] <= b["chroma_cv"] + 0.02
    assert math.radians(a["hue_std_deg"]) * a["chroma_median"] < 0.01


def test_loop_after_a_recolour_only_fine_tunes_and_stays_displayable(avatar):
    """After the splat-space recolour the loop is a fine-tune: the region's colours stay inside [0, 1],
    or no further out than the recolour put them (the renderer clips beyond, so a colour pushed out
    there only hides an error that shows as a speck in other views), and near the recolour's (on the demo head 60 unheld steps had put a third of the lip
    splats outside [0, 1], as dark and purple specks)."""
    from dynavatar.gaussians.avatar import sh_to_rgb

    torch.set_num_threads(1)
    only = avatar.edit(RED_HAIR, editor=PaletteEditor(), config=EditConfig(keyframes=2, novel_yaws=(), steps=0),
                       progress=False)
    cfg = EditConfig(keyframes=2, novel_yaws=(), steps=8, reedit_every=0, w_adv=0.0, lr_colour=0.2)
    tuned = avatar.edit(RED_HAIR, editor=PaletteEditor(), config=cfg, progress=False)
    hair = avatar.select("hair")
    rgb, start = sh_to_rgb(tuned.gaussians.sh[hair, 0]), sh_to_rgb(only.gaussians.sh[hair, 0])
    assert bool((rgb >= start.clamp(max=0) - 1e-5).all() and (rgb <= start.clamp(min=1) + 1e-5).all())
    assert float((rgb - start).abs().mean()) < 0.04  # Adam at lr 0.2 moves ~0.05 a step


def test_an_eye_colour_edit_ends_with_the_splat_recolour(avatar):
    """Blue eyes: the splat recolour (iris only, the pupil from the eye's shape) is the whole edit; a
    loop of pixel targets would pull the pupils to the iris colour. With steps the splats are exactly
    those of steps=0, and the edit's record says why the loop did not run."""
    torch.set_num_threads(1)
    blue = dataclasses.replace(RED_HAIR, prompt="blue eyes", regions=["iris", "left_eye", "right_eye"],
                               colour=(0.1, 0.2, 0.9), colour_name="blue")
    only = avatar.edit(blue, editor=PaletteEditor(), config=EditConfig(keyframes=2, novel_yaws=(), steps=0),
                       progress=False)
    looped = avatar.edit(blue, editor=PaletteEditor(), progress=False,
                         config=EditConfig(keyframes=2, novel_yaws=(), steps=6, reedit_every=0, w_adv=0.0))
    assert not torch.equal(only.gaussians.sh, avatar.gaussians.sh)  # the irises were recoloured
    assert torch.equal(looped.gaussians.sh, only.gaussians.sh)
    assert "skipped" in str(looped.meta["edits"][-1])
