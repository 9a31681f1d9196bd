"""VT-SDS on by default (edit/apply/sds_loop.py): keyframe views personalise a LoRA with view and
time tokens, and the distillation prompt carries the same tokens; tiny random diffusion models."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")

from dynavatar.edit.apply.sds_config import SDSConfig  # noqa: E402
from dynavatar.edit.apply.sds_guidance import SDSGuidance  # noqa: E402
from dynavatar.edit.apply.sds_loop import SDSEditConfig  # noqa: E402
from dynavatar.edit.apply.sds_maths import head_view_angles, time_tag, view_word  # noqa: E402
from dynavatar.geometry.cameras import look_at_viewmat  # noqa: E402
from tiny_diffusion import RES, tiny_components, write_tiny_tokenizer  # noqa: E402


def test_defaults_personalise_and_reach_side_views():
    cfg, sds = SDSEditConfig(), SDSConfig()
    assert cfg.personalise_steps > 0 and SDSEditConfig.preset("quick").steps < cfg.steps
    assert math.degrees(cfg.yaw_range) > sds.front_deg  # the default head turns reach "side view"
    assert view_word(math.degrees(cfg.yaw_range), 0, sds.front_deg, sds.back_deg) == "side view"


def test_view_angle_follows_the_head_not_only_the_camera():
    """A head turned by 30 deg before a fixed frontal camera is seen from 30 deg aside."""
    eye, target = torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3)
    vm = look_at_viewmat(eye, target)
    for deg in (0.0, 30.0, -60.0):
        rot = torch.tensor([[0.0, math.radians(deg), 0.0]])
        yaw, pitch = head_view_angles(rot, torch.zeros(1, 3), vm)
        assert abs(abs(float(yaw)) - abs(deg)) < 1e-3 and abs(float(pitch)) < 1e-3


@pytest.fixture(scope="module")
def guidance(tmp_path_factory):
    torch.set_num_threads(1)
    comps = tiny_components(write_tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    return SDSGuidance(**comps, config=SDSConfig(resolution=RES))


def test_tokens_change_with_pose_and_time(guidance):
    guidance.set_keyframes([0.0, 1.0], [time_tag(0.0), time_tag(1.0)])
    try:
        texts = guidance.condition_texts("a person", [0.0, 40.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    finally:
        guidance.clear_keyframes()
    assert "front view" in texts[0][0] and "side view" in texts[1][0]  # pose
    assert texts[0][0].endswith("time 0.00") and texts[2][1].endswith("time 1.00") and texts[2][2] == 1.0  # time


@pytest.mark.slow
def test_sds_edit_personalises_a_lora_that_the_guidance_uses(guidance):
    """Through edit_splats_sds on a tiny avatar: the LoRA trains on keyframe views with several view
    and time tokens, is in the UNet during distillation (the UNet's output differs from the base
    model's), then is removed; the distillation prompts carry the same tokens."""
    from dynavatar.edit import EditPlan
    from dynavatar.edit.apply.sds_loop import edit_splats_sds
    from dynavatar.flame import FlameModel
    from dynavatar.gaussians.avatar import GaussianAvatar
    from dynavatar.reconstruct.synthetic import synthetic_clip
    from dynavatar.render.torch_renderer import TorchRenderer
    from dynavatar.semantics.avatar_labels import labels_from_head_regions

    model = FlameModel.load()
    renderer = TorchRenderer()
    data = synthetic_clip(model, renderer, n_frames=6, resolution=24)
    g = GaussianAvatar.init_on_mesh(model.faces.shape[0], init_opacity=0.5, generator=torch.Generator().manual_seed(0))
    labels, _ = labels_from_head_regions(g.binding, model)
    g = g.replace(labels=labels)
    plan = EditPlan(prompt="red hair", kind="appearance", regions=["hair"], instruction="make the hair red",
                    positive_prompt="a person with red hair")
    cfg = SDSEditConfig(steps=3, keyframes=2, personalise_steps=3, views_per_step=1)
    res = edit_splats_sds(g, model, data.params, data.cameras, data.train_idx, plan, guidance, renderer,
                          torch.ones(3), cfg, progress=False)
    info = res.info
    assert info["lora_in_use"] and info["lora_up_norm"] > 0 and len(info["lora_losses"]) == 3
    assert len({p.split(", ")[1] for p in info["lora_prompts"]}) >= 2  # front and side keyframe views
    assert len({p.rsplit(", ", 1)[1] for p in info["lora_prompts"]}) == 2  # two keyframe times
    assert all(p.startswith(cfg.subject) and "time " in p for p in info["prompts"])  # the same tokens
    assert not guidance.has_lora  # removed afterwards
    assert torch.isfinite(res.gaussians.sh).all()
