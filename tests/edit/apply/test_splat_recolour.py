"""The splat-space palette edit against the pixel-space one, and the colour-fair temporal metric.

Scenes are planes of opaque splats in front of a pinhole camera, filling the whole image, so every
pixel is a known splat colour: the pixel editor's region statistics and the splats' are then
computable by hand (single colour) or differ only by the few pixels where two colours mix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynavatar.edit import EditPlan
from dynavatar.edit.apply.splat_recolour import (recolour_splats, splat_palette_stats, splat_region_weight,
                                                 splat_visibility)
from dynavatar.edit.colour_space import oklab_to_rgb, rgb_to_oklab
from dynavatar.edit.editors.palette import PaletteEditor
from dynavatar.edit.editors.palette_recolour import region_stats
from dynavatar.edit.prompt.colour_names import COLOURS, shade_colours
from dynavatar.edit.prompt.rule_refiner import RuleRefiner
from dynavatar.edit.metrics import region_colour_consistency, region_colour_spread
from dynavatar.gaussians.avatar import GaussianAvatar, rgb_to_sh, sh_to_rgb
from dynavatar.gaussians.binding import WorldGaussians
from dynavatar.geometry.labels import NUM_LABELS, label_index
from dynavatar.render.sh import eval_sh
from dynavatar.render.torch_renderer import TorchRenderer
from pinhole import square_camera



@pytest.fixture(autouse=True)
def one_thread():
    """These tiny scenes run fastest on one thread (conftest restores the count afterwards)."""
    torch.set_num_threads(1)


RES = 40
RED = EditPlan(prompt="red hair", kind="colour", regions=["hair"], instruction="make the hair red",
               colour=(0.8, 0.1, 0.1), colour_name="red")
BROWN, DARK = (0.45, 0.30, 0.20), (0.30, 0.20, 0.13)


def _graded(r: int) -> tuple[float, float, float]:
    """Row ``r`` of 26 of a region graded from dark brown to brown: a continuous lightness
    distribution, as real hair has (a two-spike one makes every rank map jump between the spikes)."""
    return tuple(d + (b - d) * r / 25 for d, b in zip(DARK, BROWN))
HAIR, SKIN = label_index("hair"), label_index("skin")


def _scene(colour_of_row, hidden: list[tuple[tuple[float, float, float], float]] = ()):
    """A 26x26 grid of opaque hair splats at z = 2 covering the image (row r coloured
    ``colour_of_row(r)``), plus ``hidden`` splats (colour, hair probability; the rest skin) behind
    the camera, which no pixel shows.  -> (GaussianAvatar, WorldGaussians, labels [N, K])"""
    n = 26
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).float()
    xy = (ij - (n - 1) / 2) * 0.1  # 0.1 world = 2 px apart at z = 2; covers +-1.25 > the +-1.0 in view
    means = torch.cat([xy.flip(-1), torch.full((n * n, 1), 2.0)], 1)
    cols = torch.tensor([colour_of_row(int(r)) for r in ij[:, 0]])
    p_hair = torch.ones(n * n)
    if hidden:
        means = torch.cat([means, torch.tensor([[0.0, 0.0, -1.0]]).repeat(len(hidden), 1)])
        cols = torch.cat([cols, torch.tensor([c for c, _ in hidden])])
        p_hair = torch.cat([p_hair, torch.tensor([p for _, p in hidden])])
    N = len(means)
    labels = torch.zeros(N, NUM_LABELS)
    labels[:, HAIR], labels[:, SKIN] = p_hair, 1 - p_hair
    sh = rgb_to_sh(cols)[:, None]  # [N, 1, 3]
    avatar = GaussianAvatar(torch.zeros(N, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1),
                            torch.full((N, 3), math.log(0.1)), torch.full((N,), math.log(4.0)), sh,  # opacity 0.8
                            torch.zeros(N, dtype=torch.long), labels)
    world = WorldGaussians(means[None], avatar.quats_local[None], torch.full((1, N, 3), 0.1),
                           avatar.opacities, sh, sh_degree=0)
    return avatar, world, labels


def _render(world: WorldGaussians, sh: torch.Tensor | None = None) -> torch.Tensor:
    if sh is not None:
        world = WorldGaussians(world.means, world.quats, world.scales, world.opacities, sh, 0)
    return TorchRenderer().render(world, square_camera(RES), background=torch.ones(3)).rgb  # [1, H, W, 3]


def _both_ways(colour_of_row, plan: EditPlan, hidden=()):
    """Pixel-space edit of the render and the render of the splat-space edit."""
    avatar, world, labels = _scene(colour_of_row, hidden)
    img = _render(world)
    mask = torch.ones(1, RES, RES)  # the hair fills the image
    pixel = PaletteEditor().edit(img, mask, plan)
    sel = labels[:, HAIR] > 0.5
    vis = splat_visibility(world, square_camera(RES), mask, TorchRenderer())
    new = recolour_splats(avatar, plan, splat_region_weight(labels, plan, sel), vis)
    return avatar, new, img, pixel, _render(world, new.sh), vis


def _shade_lab(name: str, family: str = "hair") -> tuple[torch.Tensor, torch.Tensor]:
    """The OKLab (dark, light) ends of a named shade, straight from the vocabulary's table."""
    dark, light = shade_colours(name, family)
    return rgb_to_oklab(torch.tensor(dark, dtype=torch.float64)), rgb_to_oklab(torch.tensor(light, dtype=torch.float64))


def _lch(lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return lab[..., 0], lab[..., 1:].norm(dim=-1), torch.atan2(lab[..., 2], lab[..., 1])


def _from_lch(L, C, h) -> torch.Tensor:
    return torch.stack([L, C * torch.cos(h), C * torch.sin(h)], -1)


@pytest.mark.parametrize("strength,name", [(0.6, "red"), (1.0, "blue")])
def test_single_colour_region_lands_on_the_middle_of_the_shade_in_both_spaces(strength, name):
    """One colour: no lightness structure to keep, so both edits put it at the middle of the named
    shade (half-way between its ends in lightness, chroma and hue), blended by the strength; the
    reference is built here from the shade table alone."""
    plan = EditPlan(**{**RED.to_dict(), "strength": strength, "colour": COLOURS[name], "colour_name": name})
    _, _, img, pixel, splat, _ = _both_ways(lambda r: BROWN, plan)
    assert (img - torch.tensor(BROWN)).abs().max() < 1e-3, "the scene must show the splat colour everywhere"
    (Ld, Cd, hd), (Ll, Cl, hl) = (_lch(x) for x in _shade_lab(name))
    dh = torch.atan2(torch.sin(hl - hd), torch.cos(hl - hd))
    mid = _from_lch((Ld + Ll) / 2, (Cd + Cl) / 2, hd + dh / 2)
    src = rgb_to_oklab(torch.tensor(BROWN, dtype=torch.float64))
    want = oklab_to_rgb(src + strength * (mid - src)).float()
    assert 0.0 < want.min() and want.max() < 1.0, "keep the reference inside the gamut (no clamp hides errors)"
    err_p, err_s = (pixel - want).abs().max().item(), (splat - want).abs().max().item()
    print(f"{name} x{strength}: want {want.tolist()}; |pixel - want| {err_p * 255:.2f}/255, "
          f"|splat - want| {err_s * 255:.2f}/255")
    assert err_p < 1.5 / 255 and err_s < 1.5 / 255


@pytest.mark.parametrize("material", [None, "glossy"])
def test_graded_region_statistics_and_edit_agree_with_the_pixel_editor(material):
    """A region graded from dark brown to brown: the splats' visibility-weighted statistics equal
    the pixel ones (pixels between two rows of splats mix neighbours that are nearly alike), so
    the two edits give the same colours; the light end stays lighter than the dark end (the
    lightness order is kept, not flattened)."""
    plan = EditPlan(**{**RED.to_dict(), "material": material})
    _, new, img, pixel, splat, vis = _both_ways(_graded, plan)
    mean_p, std_p = region_stats(rgb_to_oklab(img), torch.ones(1, RES, RES))
    labs = rgb_to_oklab(torch.tensor([_graded(r) for r in range(26) for _ in range(26)]))
    mean_s, std_s = splat_palette_stats(labs, vis[:676])
    print(f"mean pixel {mean_p.tolist()} splat {mean_s.tolist()}; std pixel {std_p.tolist()} splat {std_s.tolist()}")
    assert std_p[0, 0] > 0.02  # a genuine spread of lightness
    assert (mean_p - mean_s).abs().max() < 2e-3 and (std_p - std_s).abs().max() < 0.1 * std_p.max()
    rows = torch.arange(2, RES - 2)  # the outer rows show the grid's last splats more thinly
    err = (splat[0, rows] - pixel[0, rows]).abs().max().item()
    print(f"graded region, material {material}: |splat-space - pixel-space| max {err * 255:.2f}/255")
    # (the rank map stretches this narrow region's lightness up to 3x onto the red shade, and its
    # small quantile differences with it: 2-3/255 measured)
    assert err < 4.0 / 255
    L = rgb_to_oklab(splat[0])[..., 0]
    assert L[RES - 8:].mean() > L[:8].mean() + 0.05, "the brown end stays the lighter one"
    hue = torch.rad2deg(torch.atan2(*rgb_to_oklab(splat[0, rows].double())[..., [2, 1]].unbind(-1)))
    assert (hue.abs() < 45).all(), "both halves turn red"


@pytest.mark.parametrize("prompt", ["red hair", "platinum blonde hair", "black hair", "blonde hair with highlights"])
def test_splat_lightness_map_is_monotone(prompt):
    """Strands from shadow to highlight (and a few far outside the bulk): after the edit, a darker
    splat is never lighter than a lighter one, for dark, light and qualified targets alike."""
    (plan,) = RuleRefiner().refine_all(prompt)
    gen = torch.Generator().manual_seed(1)
    t = torch.cat([torch.rand(300, generator=gen), torch.tensor([0.0, 0.01, 0.99, 1.0])])
    rgb = torch.stack([0.05 + 0.6 * t, 0.03 + 0.42 * t, 0.02 + 0.25 * t], -1)  # dark brown .. light brown
    av = _bare_avatar(rgb)
    new = recolour_splats(av, plan, torch.ones(len(rgb)), torch.ones(len(rgb)))
    L0 = rgb_to_oklab(rgb.double())[:, 0]
    L1 = rgb_to_oklab(sh_to_rgb(new.sh[:, 0]).double())[:, 0]
    order = L0.argsort()
    steps = L1[order].diff()
    print(f"{prompt}: L {L0.min():.3f}..{L0.max():.3f} -> {L1.min():.3f}..{L1.max():.3f}; min step {steps.min():.2e}")
    assert steps.min() > -1e-4, "the lightness map must be monotone"
    assert L1.max() - L1.min() > 0.1, "and not a flat fill"


def test_a_region_already_at_the_target_maps_onto_itself():
    """Splats whose lightness, chroma and hue run along the 'auburn' shade (its table ends at the
    5th and 95th lightness percentiles, hue and chroma interpolated, shading past the ends) are
    already auburn: the recolour leaves them where they are."""
    (plan,) = RuleRefiner().refine_all("auburn hair")
    (Ld, Cd, hd), (Ll, Cl, hl) = (_lch(x) for x in _shade_lab("auburn"))
    r = (torch.arange(400, dtype=torch.float64) + 0.5) / 400  # lightness ranks
    t = (r - 0.05) / 0.9
    tc = t.clamp(0, 1)
    L = Ld + t * (Ll - Ld)
    C = (Cd + tc * (Cl - Cd)) * L / (Ld + tc * (Ll - Ld))
    lab = _from_lch(L, C, hd + tc * torch.atan2(torch.sin(hl - hd), torch.cos(hl - hd)))
    rgb = oklab_to_rgb(lab)
    assert rgb.min() > 0 and rgb.max() < 1
    av = _bare_avatar(rgb.float())
    new = sh_to_rgb(recolour_splats(av, plan, torch.ones(400), torch.ones(400)).sh[:, 0])
    err = (new - rgb.float()).abs().max().item()
    print(f"auburn onto auburn: max change {err * 255:.2f}/255")
    assert err < 3.0 / 255


def test_outside_splats_bit_identical_boundary_blends_and_unseen_hair_recoloured():
    """100 unseen grey hair splats (as inside or behind a real head: never optimised, any colour)
    do not move the statistics (visibility-weighted) yet take the same colour as a grey hair pixel
    would with the same region statistics; a p=0.6 splat blends 60 %; splats below the selection
    threshold keep every tensor bit-identical."""
    grey = (0.28, 0.28, 0.28)  # inside the region's lightness range
    hidden = [(grey, 1.0)] * 100 + [(grey, 0.6), (grey, 0.4), (grey, 0.0)]  # hair, boundary, mostly skin, skin
    avatar, new, img, _, _, vis = _both_ways(_graded, RED, hidden)
    h = 676 + torch.arange(len(hidden))
    assert (vis[h] == 0).all(), "the hidden splats must be unseen"
    for k in avatar.PARAM_NAMES:  # below the 0.5 selection threshold: bit-identical, every tensor
        assert torch.equal(getattr(new, k)[h[-2:]], getattr(avatar, k)[h[-2:]]), k
    assert torch.equal(new.labels, avatar.labels) and torch.equal(new.opacity_logits, avatar.opacity_logits)
    # The reference: the pixel editor on the render with one grey pixel planted in the hair (one
    # pixel of 1600 barely moves the statistics).
    probe = img.clone()
    probe[0, 5, 5] = torch.tensor(grey)
    plan = EditPlan(**{**RED.to_dict(), "mask_dilation": 0})
    ref = PaletteEditor(feather=0.0, edge_aware=False).edit(probe, torch.ones(1, RES, RES), plan)[0, 5, 5]
    got = sh_to_rgb(new.sh[h[[0, -3]], 0])  # [2, 3]: an unseen hair splat, the p=0.6 one
    print(f"unseen hair splat: grey -> {got[0].tolist()} (pixel editor {ref.tolist()})")
    assert (got[0] - ref).abs().max() < 4.0 / 255, "an unseen hair splat takes the pixel editor's colour"
    assert (got[1] - (torch.tensor(grey) + 0.6 * (got[0] - torch.tensor(grey)))).abs().max() < 1e-3, "p=0.6 blends 60%"


def test_hair_splats_the_views_show_outside_the_region_keep_their_colour():
    """Every splat is labelled hair but the region mask (what the renders call hair) is the top half
    only: splats seen below it (a labelling error: hair splats over the jacket) keep their colour,
    those seen inside take the new one, and unseen ones (the back of the head) are recoloured."""
    avatar, world, labels = _scene(_graded, hidden=[((0.28, 0.28, 0.28), 1.0)])
    mask = torch.zeros(1, RES, RES)
    mask[:, : RES // 2] = 1.0
    inside, outside = splat_visibility(world, square_camera(RES), mask, TorchRenderer(), with_outside=True)
    weight = splat_region_weight(labels, RED, labels[:, HAIR] > 0.5)
    new = recolour_splats(avatar, RED, weight, inside, outside=outside)
    rows = torch.arange(26).repeat_interleave(26)  # grid row of each visible splat; y = (row - 12.5) * 2 px
    old_rgb, new_rgb = sh_to_rgb(avatar.sh[:, 0]), sh_to_rgb(new.sh[:, 0])
    change = (new_rgb - old_rgb).abs().max(-1).values  # [N]
    top, bottom = change[:676][(rows >= 4) & (rows <= 9)], change[:676][(rows >= 16) & (rows <= 21)]
    print(f"change seen inside {top.min() * 255:.1f}/255 and up, seen outside {bottom.max() * 255:.2f}/255 at most, "
          f"unseen {change[-1] * 255:.1f}/255")
    assert top.min() > 20 / 255, "the region takes the new colour"
    assert bottom.max() == 0.0, "splats shown outside the region keep their colour exactly"
    assert change[-1] > 30 / 255, "an unseen hair splat is recoloured"
    # Without the outside votes the old behaviour stays: every selected splat is recoloured.
    plain = sh_to_rgb(recolour_splats(avatar, RED, weight, inside).sh[:676, 0])
    assert ((plain - old_rgb[:676]).abs().max(-1).values[(rows >= 16) & (rows <= 21)] > 30 / 255).all()


def test_eye_edit_moves_the_iris_and_leaves_the_sclera_pupil_and_glint_exactly():
    """An eye region's splats: sclera (white), iris (brown), pupil (black), glint: 'green eyes'
    turns the iris green and leaves the rest of the eye bit-for-bit (after the SH round trip)."""
    (plan,) = RuleRefiner().refine_all("green eyes")
    rgb = torch.tensor([[0.92, 0.90, 0.88]] * 60 + [[0.45, 0.28, 0.15]] * 30 + [[0.02, 0.02, 0.02]] * 8
                       + [[1.0, 1.0, 1.0]] * 2)
    av = _bare_avatar(rgb, label="left_eye")
    weight = splat_region_weight(av.labels, plan, torch.ones(len(rgb), dtype=torch.bool))
    new = sh_to_rgb(recolour_splats(av, plan, weight, torch.ones(len(rgb))).sh[:, 0])
    old = sh_to_rgb(av.sh[:, 0])
    keep = torch.cat([torch.arange(60), torch.arange(90, 100)])
    moved = (new[keep] - old[keep]).abs().max().item()
    iris = rgb_to_oklab(new[60:90].double())
    hue = torch.rad2deg(torch.atan2(iris[:, 2], iris[:, 1])).median().item()
    print(f"green eyes: sclera/pupil/glint max change {moved * 255:.3f}/255; iris hue {hue:.0f} deg")
    assert moved < 0.5 / 255, "sclera, pupil and glint untouched"
    assert 100 < hue < 170, "the iris turns green"


def _bare_avatar(rgb: torch.Tensor, label: str = "hair") -> GaussianAvatar:
    """Degree-0 splats of colours ``rgb`` [N, 3], all labelled ``label``."""
    N = len(rgb)
    labels = torch.zeros(N, NUM_LABELS)
    labels[:, label_index(label)] = 1.0
    z = torch.zeros(N, 3)
    return GaussianAvatar(z, torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1), z, torch.zeros(N), rgb_to_sh(rgb)[:, None],
                          torch.zeros(N, dtype=torch.long), labels)


def test_view_dependent_bands_follow_the_colour_map_to_first_order():
    """Degree-1 SH: the recoloured splat seen from a direction has (to first order in the bands)
    the mapped colour of what the original showed from there. (A muted target keeps every colour
    inside the sRGB gamut: at the gamut clamp the map has no derivative.)"""
    plan = EditPlan(**{**RED.to_dict(), "colour": (0.65, 0.35, 0.3)})
    gen = torch.Generator().manual_seed(0)
    N = 64
    labels = torch.zeros(N, NUM_LABELS)
    labels[:, HAIR] = 1.0
    ramp = torch.linspace(0.75, 1.25, N // 2)[:, None] * torch.tensor(BROWN)  # even lightness steps
    dc = rgb_to_sh(torch.cat([ramp, ramp.flip(0)]))  # (a rank map of an even spread has no kinks)
    bands = 0.03 * torch.randn(N, 3, 3, generator=gen)
    bands[:8] = 0.0
    sh = torch.cat([dc[:, None], bands], 1)  # [N, 4, 3]
    z = torch.zeros(N, 3)
    av1 = GaussianAvatar(z, torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1), z, torch.zeros(N), sh,
                         torch.zeros(N, dtype=torch.long), labels, sh_degree=1)
    vis = torch.ones(N)
    vis[N // 2:] = 0.0  # the statistics come from the first half only ...
    sel = torch.ones(N, dtype=torch.bool)
    new1 = recolour_splats(av1, plan, splat_region_weight(labels, plan, sel), vis)
    assert torch.equal(new1.sh[:8, 1:], torch.zeros(8, 3, 3)), "no view dependence in, none out"
    d = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, 1.0]), dim=0).expand(N, 3)
    seen = (eval_sh(1, d, sh) + 0.5)[N // 2:]  # what the original shows from d  [N/2, 3]
    # ... so a degree-0 avatar whose second half has those colours maps them with the same statistics.
    av0 = av1.replace(sh=torch.cat([dc[: N // 2], rgb_to_sh(seen)])[:, None], sh_degree=0)
    want = sh_to_rgb(recolour_splats(av0, plan, splat_region_weight(labels, plan, sel), vis).sh[N // 2:, 0])
    assert 0.01 < want.min() and want.max() < 0.99
    got = (eval_sh(1, d, new1.sh) + 0.5)[N // 2:]
    err, band = (got - want).abs().max().item(), (seen - sh_to_rgb(dc[N // 2:])).abs().max().item()
    print(f"view-dependent colour |linearised - exact| {err:.2e} for bands up to {band:.3f}")
    # Bands left as they were (or mapped wrongly) would be off by ~band; the linearisation leaves
    # the map's curvature (and its few kinks: gamut, chroma past the shade's light end) only.
    assert err < 0.1 * band


# ----------------------------------------------------------------------------- the temporal metric
def _frames(chroma: float, hue_deg: float, rel: list[float], hue_jitter: list[float] | None = None
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A textured disc (fixed lightness and chroma texture) of one OKLab hue on white, its chroma scaled by
    ``1 + rel[f]`` in frame f; its outer 2-px ring mixes with the background by a different amount
    each frame (matte edges), about a quarter of the region's pixels."""
    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 24, xx - 24)
    mask, ring = r < 14, (r >= 12) & (r < 14)
    rng = np.random.default_rng(0)
    tex, ctex = rng.uniform(-0.06, 0.06, mask.sum()), rng.uniform(0.7, 1.3, mask.sum())  # texture [P]
    imgs, masks = [], []
    for f, q in enumerate(rel):
        h = math.radians(hue_deg + (hue_jitter[f] if hue_jitter else 0.0))
        c = chroma * (1 + q) * ctex  # [P]
        lab = np.stack([0.55 + tex, c * math.cos(h), c * math.sin(h)], -1)
        img = np.ones((48, 48, 3))
        img[mask] = oklab_to_rgb(torch.from_numpy(lab)).numpy()
        mix = 0.2 + 0.6 * (f % 2)
        img[ring] = mix * img[ring] + (1 - mix) * 1.0
        imgs.append((img.clip(0, 1) * 255).round().astype(np.uint8))
        masks.append(mask)
    return imgs, masks


def test_temporal_metric_is_fair_across_colours_and_ignores_edge_pixels():
    rel = [0.0, 0.1, -0.1, 0.05, -0.05, 0.0]  # the same relative chroma flicker for both colours
    brown = _frames(0.06, 60.0, rel)
    red = _frames(0.18, 28.0, rel)
    cb, cr = region_colour_consistency(*brown), region_colour_consistency(*red)
    sb, sr = region_colour_spread(*brown), region_colour_spread(*red)
    print(f"brown: cv {cb['chroma_cv']:.4f} spread {sb:.2f}; red: cv {cr['chroma_cv']:.4f} spread {sr:.2f}")
    want = float(np.std(rel) / np.mean(1 + np.array(rel)))
    assert abs(cb["chroma_cv"] - want) < 0.2 * want and abs(cr["chroma_cv"] - want) < 0.1 * want
    assert sr > 2.5 * sb, "the absolute spread charges the red for being saturated"
    # The swinging edge ring: eroded away by default, counted without erosion.
    steady = region_colour_consistency(*_frames(0.18, 28.0, [0.0] * 6))
    swing0 = region_colour_consistency(*_frames(0.18, 28.0, [0.0] * 6), erode=0)
    print(f"steady colour, swinging edge: cv {steady['chroma_cv']:.4f} eroded, {swing0['chroma_cv']:.4f} not")
    assert steady["chroma_cv"] < 0.005 and swing0["chroma_cv"] > 3 * steady["chroma_cv"] + 0.005
    # Hue flicker shows in the circular std, to within the uint8 rounding.
    jit = [0.0, 4.0, -4.0, 2.0, -2.0, 0.0]
    hue = region_colour_consistency(*_frames(0.18, 28.0, [0.0] * 6, jit))["hue_std_deg"]
    assert abs(hue - np.std(jit)) < 0.5, hue
    grey = region_colour_consistency(*_frames(0.005, 28.0, rel))
    assert math.isnan(grey["hue_std_deg"]), "a grey region has no hue to be consistent in"


def test_a_dark_brown_iris_turns_blue_around_a_pupil_found_by_position():
    """Two iris discs of a near-black brown (as the tiny avatars of dark-eyed clips have: darker
    than the colour rule's pupil cut) with a black pupil at the centre: with the splats' positions,
    'blue eyes' lifts the iris into the blue shade and leaves the pupil exactly as it was."""
    from dynavatar.edit.apply.splat_recolour import geometric_pupil

    (plan,) = RuleRefiner().refine_all("blue eyes")
    g = torch.linspace(-1, 1, 15)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    disc = torch.stack([xx, yy], -1).reshape(-1, 2)
    disc = disc[disc.norm(dim=-1) <= 1.0]  # unit disc, [D, 2]
    R = 0.005
    positions = torch.cat([torch.cat([disc * R + torch.tensor([sx, 0.01]), torch.full((len(disc), 1), 0.07)], 1)
                           for sx in (-0.032, 0.032)])  # [N, 3], both eyes
    r = torch.cat([disc.norm(dim=-1)] * 2)  # [N] radius / R
    rgb = torch.where((r < 0.2)[:, None], torch.tensor([0.01, 0.01, 0.01]), torch.tensor([0.07, 0.045, 0.03]))
    av = _bare_avatar(rgb, label="iris")
    pupil = geometric_pupil(positions, torch.ones(len(r)))
    assert pupil[r < 0.2].min() == 1.0 and pupil[r > 0.45].max() == 0.0, "the disc's centre is pupil, the ring not"
    weight = splat_region_weight(av.labels, plan, torch.ones(len(r), dtype=torch.bool))
    new = sh_to_rgb(recolour_splats(av, plan, weight, torch.ones(len(r)), positions=positions).sh[:, 0])
    old = sh_to_rgb(av.sh[:, 0])
    ring = rgb_to_oklab(new[r > 0.5].double())
    hue = torch.rad2deg(torch.atan2(ring[:, 2], ring[:, 1])).median().item()
    print(f"ring L {ring[:, 0].median():.3f} hue {hue:.0f} deg; pupil change "
          f"{(new[r < 0.2] - old[r < 0.2]).abs().max() * 255:.3f}/255")
    assert (new[r < 0.2] - old[r < 0.2]).abs().max() < 0.5 / 255, "the pupil is untouched"
    assert ring[:, 0].median() > 0.3, "the iris is lifted into the blue shade's lightness (dark end 0.33)"
    assert -130 < hue < -80, "the iris turns blue"


def test_a_light_grey_iris_is_not_taken_for_the_white_of_the_eye():
    """A grey iris is nearly as light as the sclera around it, and the lightness split of the eye
    opening called it sclera ('blue eyes' left d10's grey irises alone). Splats labelled iris, with
    their place in the disc known, are iris: they turn blue; the white stays exactly white."""
    (plan,) = RuleRefiner().refine_all("blue eyes")
    g = torch.linspace(-2, 2, 21)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([xx, yy], -1).reshape(-1, 2)
    r = grid.norm(dim=-1)
    grid, r = grid[r <= 2.0], r[r <= 2.0]  # the disc (r <= 1) and the white around it
    R = 0.005
    positions = torch.cat([grid * R + torch.tensor([0.032, 0.01]), torch.full((len(grid), 1), 0.07)], 1)
    iris = r <= 1.0
    rgb = torch.where(iris[:, None], torch.tensor([0.58, 0.6, 0.62]), torch.tensor([0.92, 0.9, 0.88]))
    rgb[r < 0.2] = torch.tensor([0.02, 0.02, 0.02])  # the pupil
    rgb[r > 1.6] = torch.tensor([0.25, 0.17, 0.13])  # lids and lashes: the opening's dark end
    white = ~iris & (r <= 1.6)
    av = _bare_avatar(rgb, label="left_eye")
    av.labels[iris] = 0.0
    av.labels[iris, label_index("iris")] = 1.0
    weight = splat_region_weight(av.labels, plan, torch.ones(len(r), dtype=torch.bool))
    new = sh_to_rgb(recolour_splats(av, plan, weight, torch.ones(len(r)), positions=positions).sh[:, 0])
    old = sh_to_rgb(av.sh[:, 0])
    ring = rgb_to_oklab(new[iris & (r > 0.5)].double())
    hue = torch.rad2deg(torch.atan2(ring[:, 2], ring[:, 1])).median().item()
    print(f"grey iris -> hue {hue:.0f} deg, chroma {ring[:, 1:].norm(dim=-1).median():.3f}; white's change "
          f"{(new[white] - old[white]).abs().max() * 255:.3f}/255")
    assert -130 < hue < -80 and ring[:, 1:].norm(dim=-1).median() > 0.04, "the grey iris turns blue"
    assert (new[white] - old[white]).abs().max() < 0.5 / 255, "the white of the eye is untouched"
