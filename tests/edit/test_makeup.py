"""Makeup offline: eyeshadow, blush and a tan as pigment on the skin's splats of the demo head."""

import pytest
import torch

from dynavatar.edit.apply.makeup import MAKEUP_LOOKS, makeup_edit, makeup_look, makeup_weights
from dynavatar.edit.colour_space import rgb_to_oklab
from dynavatar.edit.prompt.rule_refiner import RuleRefiner
from dynavatar.flame import FlameModel
from dynavatar.gaussians.avatar import sh_to_rgb
from dynavatar.geometry.labels import label_index
from dynavatar.edit.apply.splat_recolour import rest_positions


def _plan(prompt):
    (plan,) = RuleRefiner().refine_all(prompt)
    return plan


@pytest.fixture(scope="module")
def head():
    """The demo head's labelled splats (skin, brows, eyes, lips, hair...) and its rest parameters."""
    from dynavatar.reconstruct.demo_head import demo_head_appearance
    from dynavatar.reconstruct.synthetic import demo_identity

    shape = demo_identity(FlameModel.load())
    app = demo_head_appearance(FlameModel.load(), shape)
    params = app.model.zero_params().replace(shape=torch.as_tensor(shape, dtype=torch.float32).reshape(1, -1))
    return app.gaussians, app.model, params


def test_prompts_pick_their_look_and_hair_colours_stay_the_colourists():
    assert makeup_look(_plan("blue eyeshadow")).name == "eyeshadow"
    assert makeup_look(_plan("smoky eyes")).name == "eyeshadow"
    assert makeup_look(_plan("add pink blush")).name == "blush"
    assert makeup_look(_plan("a tan")).name == "tan"
    assert makeup_look(_plan("tanned skin")).name == "tan"
    for prompt in ("tan hair", "red hair", "red lipstick", "blue eyes", "add round glasses"):
        assert makeup_look(_plan(prompt)) is None, prompt


@pytest.mark.parametrize("prompt, plans", [
    ("a light tan", [("appearance", "skin")]),
    ("red hair and a tan", [("colour", "hair"), ("appearance", "skin")]),  # was red hair with tan ends
    ("blonde hair, a tan and blue eyes", [("colour", "hair"), ("appearance", "skin"), ("colour", "eyes")]),
    ("red and tan hair", [("colour", "hair")]),  # two-tone hair: tan is a hair colour here
    ("tan hair", [("colour", "hair")]),
])
def test_a_tan_is_the_skins_edit_of_its_own(prompt, plans):
    """A tan (an appearance look) colours the skin's surfaces, never the hair, and after "and" it is an
    edit of its own rather than a second colour for the clause before it."""
    from dynavatar.edit.prompt import RuleRefiner

    got = RuleRefiner().refine_all(prompt)
    assert [p.kind for p in got] == [k for k, _ in plans], [p.summary() for p in got]
    for p, (kind, where) in zip(got, plans):
        if where == "skin":
            assert set(p.regions) == {"skin", "nose", "left_ear", "right_ear", "neck"} and makeup_look(p).name == "tan"
        elif where == "eyes":
            assert "iris" in p.regions and "hair" not in p.regions
        else:
            assert p.regions == ["hair"] and makeup_look(p) is None


def test_eyeshadow_and_blush_sit_where_a_face_wears_them(head):
    g, model, params = head
    lab = g.labels.argmax(1)
    pos = rest_positions(g, model, params)  # [N, 3] metres, +y up, +z out of the face
    lmk = model(params, landmark_set="mediapipe").landmarks[0]
    eye_y, brow_y = float(lmk[159, 1]), float(lmk[52, 1])
    for name in ("eyeshadow", "blush"):
        w = makeup_weights(g, model, params, MAKEUP_LOOKS[name])
        for other in ("hair", "iris", "sclera", "upper_lip", "lower_lip", "left_brow", "right_brow"):
            assert float(torch.cat([w[lab == label_index(other)], w.new_zeros(1)]).max()) < 0.05, (name, other)
        centre = (pos * w[:, None]).sum(0) / w.sum()
        y = float((pos[:, 1] * w).sum() / w.sum())
        if name == "eyeshadow":  # on the lids: between the eye and the brow, both sides
            assert eye_y - 0.004 < y < brow_y and float(w[pos[:, 0] < 0].sum()) > 0.3 * float(w.sum())
        else:  # the cheeks: below the eyes, well out from the nose
            assert y < eye_y - 0.02 and float((pos[:, 0].abs() * w).sum() / w.sum()) > 0.03
        assert abs(float(centre[0])) < 0.01  # symmetric


def test_edits_tint_the_region_keep_its_shading_and_leave_the_rest_exact(head):
    g, model, params = head
    for prompt, look in (("blue eyeshadow", "eyeshadow"), ("add pink blush", "blush"), ("a tan", "tan")):
        out, info = makeup_edit(g, model, params, _plan(prompt))
        w = makeup_weights(g, model, params, MAKEUP_LOOKS[look])
        assert info["look"] == look and info["splats_changed"] == int((w > 0).sum())
        assert torch.equal(out.sh[w == 0], g.sh[w == 0])  # untouched splats, bit for bit
        assert torch.equal(out.means_local, g.means_local) and torch.equal(out.labels, g.labels)
        strong = w > 0.5
        before = rgb_to_oklab(sh_to_rgb(g.sh[strong, 0]).clamp(0, 1))
        after = rgb_to_oklab(sh_to_rgb(out.sh[strong, 0]).clamp(0, 1))
        if look == "eyeshadow":
            assert float((after[:, 2] - before[:, 2]).mean()) < -0.03  # bluer (OKLab b down)
        elif look == "blush":
            assert float((after[:, 1] - before[:, 1]).mean()) > 0.01  # pinker (OKLab a up)
        else:
            assert float((after[:, 0] - before[:, 0]).mean()) < -0.02  # darker, and warmer
            assert float((after[:, 2] - before[:, 2]).mean()) > 0.0


def test_edit_routes_makeup_offline_and_plan_says_so(tiny_labelled_avatar):
    from dynavatar.edit.backends import describe_backend

    assert "makeup" in describe_backend(_plan("add pink blush"), probe=False)
    edited = tiny_labelled_avatar.edit("a tan", progress=False)
    assert edited.meta["edits"][-1]["editor"] == "makeup"
    assert tiny_labelled_avatar.meta.get("edits", []) == []  # the original untouched


def test_pigment_keeps_lightness_structure_and_holds_its_chroma():
    """At one opacity the lightness map is linear (structure kept exactly); at full opacity the hue is
    the pigment's, with its chroma held to the look's bound; the lightness scales by the pigment's
    lightness over the region's mean, within its bounds."""
    from dynavatar.edit.apply.makeup import _pigment_over

    g = torch.Generator().manual_seed(0)
    skin = (torch.tensor([0.78, 0.58, 0.48]) * (0.7 + 0.3 * torch.rand(200, 1, generator=g))).clamp(0, 1)  # shaded skin
    blue = torch.tensor([0.12, 0.31, 0.82])
    half = rgb_to_oklab(_pigment_over(skin, blue, torch.full((200, 1), 0.5), 0.11).clamp(0, 1))
    lab = rgb_to_oklab(skin)
    assert torch.corrcoef(torch.stack([lab[:, 0], half[:, 0]]))[0, 1] > 0.999
    full = rgb_to_oklab(_pigment_over(skin, blue, torch.ones(200, 1), 0.11))
    pig = rgb_to_oklab(blue[None])[0]
    assert torch.allclose(full[:, 1:].norm(dim=-1), torch.full((200,), 0.11), atol=1e-4)
    hue = torch.nn.functional.cosine_similarity(full[:, 1:], pig[1:].expand(200, 2), dim=-1)
    assert bool((hue > 0.999).all())
    ratio = full[:, 0] / lab[:, 0]
    expected = (pig[0] / lab[:, 0].mean()).clamp(0.55, 1.15)
    assert torch.allclose(ratio, expected.expand(200), atol=1e-4)
