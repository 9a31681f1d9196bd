"""Foreground mattes behind one protocol; default: mediapipe selfie segmentation (offline)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import MissingDependencyError
from .quiet import quiet_native_logs, settle_graph

__all__ = ["Matter", "MediapipeSelfieMatte", "despill", "foreground_colours", "keep_person", "refine_matte", "steady_matte"]


class Matter(Protocol):
    name: str

    def matte(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 [H, W, 3] -> foreground alpha float32 [H, W] in [0, 1]."""
        ...


class MediapipeSelfieMatte:
    """mediapipe selfie segmentation (general model, 256x256 input), run on the head crop."""

    name = "mediapipe-selfie"

    def __init__(self, model_selection: int = 0) -> None:
        with quiet_native_logs():  # mediapipe's native logs (glog/absl/TF-Lite) stay off the terminal
            try:
                from mediapipe.python.solutions import selfie_segmentation
            except ImportError as exc:  # pragma: no cover
                raise MissingDependencyError("mediapipe is needed for matting: pip install mediapipe==0.10.21") from exc
            self._seg = selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
            settle_graph(self._seg)  # its model loads (and logs) on the graph's threads: wait for it here

    def matte(self, image: np.ndarray) -> np.ndarray:
        with quiet_native_logs():  # the graph starts (and logs) on the first call
            res = self._seg.process(np.ascontiguousarray(image))
        if res.segmentation_mask is None:
            return np.zeros(image.shape[:2], dtype=np.float32)
        return np.clip(res.segmentation_mask, 0.0, 1.0).astype(np.float32)

    def close(self) -> None:
        with quiet_native_logs():
            self._seg.close()


def keep_person(alpha: np.ndarray, points: np.ndarray, margin: int | None = None) -> np.ndarray:
    """``alpha`` without the foreground that is not part of the person whose face ``points`` mark.

    Selfie segmentation marks some background objects as person, solid or faintly (a bottle on a
    shelf, plants in a busy room). Splats bound to a head cannot draw them, so they only add error
    and floaters; on the eight shared clips they are 3.5 % of the matte of the cluttered-room clip
    and 2.2 % of the busy-room landscape one, and 0.0-0.1 % of the others. The person is the
    connected regions (alpha > 0.5, opened by 1/40 of the side so a thin bridge does not join an
    object to the person; 8-connected) holding any of the face's landmarks; alpha further than
    ``margin`` pixels from them (default 1/32 of the side: the soft edge of hair stays) is
    cleared. A hand held apart from the body goes too (no head avatar can draw it).
    alpha: float [H, W] in [0, 1]; points: [L, 2] landmarks in the same pixels (x, y). -> float [H, W]"""
    import cv2

    h, w = alpha.shape
    margin = max(3, round(min(h, w) / 32)) if margin is None else margin
    fg = (alpha > 0.5).astype(np.uint8)
    # Thin bridges (a shelf's edge, a strip of wall between hair and shoulder) are opened first, so an
    # object joined to the person only through one is its own region: d14's bottle was kept that way.
    r_open = max(1, round(min(h, w) / 40))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_open + 1,) * 2))
    n, comp = cv2.connectedComponents(fg, connectivity=8)
    if n < 2 or len(points) == 0:  # no foreground, or nothing to tell the person by
        return alpha
    xy = np.floor(np.asarray(points, dtype=np.float64)[:, :2]).astype(np.int64)  # pixel edges -> indices
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    face = sorted(set(np.unique(comp[xy[inside, 1], xy[inside, 0]]).tolist()) - {0})
    if not face:  # no landmark on the foreground (a bad matte or detection): leave it as it is
        return alpha
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    near = cv2.dilate(np.isin(comp, face).astype(np.uint8), kernel).astype(bool)  # the person and its edge
    if near.all() or not alpha[~near].any():
        return alpha
    return np.where(near, alpha, 0.0).astype(alpha.dtype)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Sum over a (2r+1)^2 window (reflected border)."""
    import cv2

    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=False, borderType=cv2.BORDER_REFLECT)


def _local_colour(rgb: np.ndarray, mask: np.ndarray, r: int, inside: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean colour of the ``mask`` pixels near each pixel, and where that mean is supported: within
    ``r``, else within ``4 r``, else over the whole crop (inside the video frame). A hole in the matte
    over dark hair has no background pixel within ``r``, but the wall a little further off, or the
    frame's, still tells the hair from the wall.
    -> colour [H, W, 3], supported bool [H, W], from further than ``r`` bool [H, W]"""
    col = np.zeros_like(rgb)
    have = np.zeros(mask.shape, bool)
    for radius in (r, 4 * r):
        n = _box(mask, radius)
        mean = _box(rgb * mask[..., None], radius) / np.maximum(n, 1.0)[..., None]
        take = ~have & (n > 0.1 * (2 * radius + 1) ** 2)
        col[take] = mean[take]
        have |= take
        if radius == r:
            near = have.copy()
    pool = mask > 0 if inside is None else (mask > 0) & inside
    if pool.sum() > 0.02 * mask.size:  # the whole crop's, where the windows had too few
        col[~have] = rgb[pool].mean(0)
        have[:] = True
    return col, have, have & ~near


def _unmix(rgb: np.ndarray, f_col: np.ndarray, b_col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel as a mix of the person's colour F and the wall's B: alpha = the projection of
    (pixel - B) on (F - B), clipped to [0, 1], and the contrast |F - B|. -> float [H, W] twice"""
    d = f_col - b_col
    contrast = np.linalg.norm(d, axis=-1)
    return np.clip(((rgb - b_col) * d).sum(-1) / np.maximum(contrast, 1e-6) ** 2, 0.0, 1.0), contrast


def _local_spread(rgb: np.ndarray, mask: np.ndarray, r: int) -> np.ndarray:
    """The spread of the ``mask`` pixels' colours within ``r`` of each pixel: the root of the summed
    per-channel variances (0-1 RGB units; 0 where there are none). -> float [H, W]"""
    n = np.maximum(_box(mask, r), 1.0)[..., None]
    mean = _box(rgb * mask[..., None], r) / n
    mean_sq = _box(rgb * rgb * mask[..., None], r) / n
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0).sum(-1))


def _confident(image: np.ndarray, alpha: np.ndarray, inside: np.ndarray | None, radius: int | None):
    """What both colour estimates start from: rgb float [H, W, 3] in [0, 1], alpha float32 [H, W],
    the confident person and background (float 0/1 [H, W]; padding past the video frame is black,
    not background) and the window's radius (1/32 of the side unless given)."""
    h, w = alpha.shape
    r = max(3, round(min(h, w) / 32)) if radius is None else radius
    a = alpha.astype(np.float32)
    fg, bg = (a > 0.95).astype(np.float32), (a < 0.05).astype(np.float32)
    if inside is not None:
        bg *= inside
    return image.astype(np.float32) / 255.0, a, fg, bg, r


def refine_matte(image: np.ndarray, alpha: np.ndarray, inside: np.ndarray | None = None, radius: int | None = None,
                 min_contrast: float = 0.2, low_contrast: bool = False) -> np.ndarray:
    """``alpha`` re-estimated where the segmenter was unsure, from the colours of the person and the
    background around it.

    The segmenter sees the crop at 256 px and its outline is upsampled, soft and a few pixels wide
    of the hair: a band of wall is matted in as person (a halo the avatar cannot draw) or strand tips
    are cut; and over dark hair it leaves holes of alpha 0.3-0.7 (the wall shows through the hair
    of every composite). Every unsure pixel is explained as a mix of the foreground colour nearby
    (mean of the confident-person pixels within ``radius``) and the background colour nearby (mean of
    the confident-background pixels; for a hole inside the hair, the background further off:
    ``_local_colour``, used only where confident person fills most of that wider window): alpha = the
    projection of (pixel - B) on (F - B). Only where F and B differ by ``min_contrast`` (0-1 RGB
    distance) is the estimate used: dark hair on a light wall snaps, skin on a skin-coloured wall
    keeps the segmenter's alpha. Confident pixels, the black padding past the video frame
    (``inside`` False) and its neighbourhood keep theirs.

    ``low_contrast`` is for dark hair on a dark, flat wall (d14), which differs from it by less than
    ``min_contrast`` but by far more than either varies: a contrast of at least ``_LOW_CONTRAST``
    is also used where it is ``_MIN_SNR`` times the colours' spread nearby; the wall's colour may come
    from 4 x ``radius`` where the wall is that flat (the segmenter's unsure band there is wider than
    the window); and the confident person's rim (``radius`` px deep) is tested for wall (``_wall_in_rim``).
    image: uint8 [H, W, 3]; alpha: float [H, W] in [0, 1]; inside: bool [H, W] or None. -> float32 [H, W]"""
    import cv2

    rgb, p, fg, bg, r = _confident(image, alpha, inside, radius)
    f_col, f_ok, _ = _local_colour(rgb, fg, r, None)  # [H, W, 3], [H, W]
    b_col, b_ok, b_far = _local_colour(rgb, bg, r, inside)
    # A background colour from further off is trusted only inside the person (a hole: confident
    # person over most of the window). Along the outline, a wide unsure band with the wall's colour
    # taken from elsewhere in the room gave d14's bun (dark hair on a dark grey wall) a ragged,
    # flickering edge: -1.3 dB held-out PSNR on the H100 with matte version 2.
    enclosed = _box(fg, 4 * r) > 0.6 * (8 * r + 1) ** 2  # [H, W]: the far window is mostly person
    est, contrast = _unmix(rgb, f_col, b_col)
    band = cv2.dilate(((p > 0.05) & (p < 0.95)).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    band |= cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (bg > 0)
    distinct, b_near = contrast > min_contrast, ~b_far | enclosed
    if low_contrast:
        b_spread = _local_spread(rgb, bg, r)  # [H, W]
        spread = np.maximum(_local_spread(rgb, fg, r), b_spread)
        distinct |= (contrast > _LOW_CONTRAST) & (contrast > _MIN_SNR * spread)
        # a wall's colour from further off is its own where the wall is flat that far
        b_near |= _local_spread(rgb, bg, 4 * r) < 0.5 * contrast
    use = band & distinct & f_ok & b_ok & b_near
    if low_contrast:
        wall, wall_alpha = _wall_in_rim(rgb, p, fg, b_col, b_spread, b_ok & b_near, inside, r)
        est, use = np.where(wall, wall_alpha, est), use | wall
    if inside is not None and not inside.all():
        use &= ~cv2.dilate((~inside).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    return np.where(use, est, p).astype(np.float32)


#: ``refine_matte(low_contrast=True)``: the least person-to-wall contrast used (0-1 RGB distance), and
#: how many times the colours' own spread nearby it must be
_LOW_CONTRAST, _MIN_SNR = 0.08, 4.0


def _wall_in_rim(rgb: np.ndarray, p: np.ndarray, fg: np.ndarray, b_col: np.ndarray, b_spread: np.ndarray,
                 b_ok: np.ndarray, inside: np.ndarray | None, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the confident person's rim (``r`` px inside where it stops being sure) is the wall: the segmenter
    draws its outline a few pixels outside dark hair on a dark wall, with full confidence. A rim pixel
    is wall when it has a flat wall's colour nearby (within twice its spread; the wall's spread under
    half its contrast to the person) and is closer to it than to the person's colour, taken from the
    person further in than the rim (the rim itself may be wall). Arrays as in ``refine_matte``;
    ``b_spread``: the background's colour spread within ``r``; ``b_ok``: where its colour may be used.
    -> wall bool [H, W], its alpha float [H, W]"""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
    f_col, f_ok, f_far = _local_colour(rgb, cv2.erode(fg, kernel), r, None)
    unsure = (p < 0.95) if inside is None else (p < 0.95) & inside
    rim = cv2.dilate(unsure.astype(np.uint8), kernel).astype(bool) & (p >= 0.95)
    alpha, contrast = _unmix(rgb, f_col, b_col)
    to_b, to_f = np.linalg.norm(rgb - b_col, axis=-1), np.linalg.norm(rgb - f_col, axis=-1)
    wall = (to_b < np.maximum(2.0 * b_spread, 0.02)) & (to_b < 0.5 * to_f) & (b_spread < 0.5 * contrast)
    return rim & wall & (contrast > _LOW_CONTRAST) & f_ok & ~f_far & b_ok, alpha


def steady_matte(before: np.ndarray, alpha: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``alpha`` of one frame with the segmenter's frame-to-frame flicker removed: the per-pixel
    median of it and its neighbours' (the same crop window's pixels, one frame either side).

    The segmenter decides each frame alone, so an outline it is unsure of (dark hair on a dark
    wall: d14's bun) is ragged in a different way in every frame, and the avatar, which draws it
    smooth, is scored against that noise. A median of three removes a one-frame spike and keeps a
    steadily moving edge exactly where it is (of three values in order, the middle one is the
    middle frame's), so there is no lag. Pass the frame's own alpha for a missing neighbour (the
    first and last frames, a crop that jumped). All float [H, W]. -> float32 [H, W]"""
    stack = np.stack([before, alpha, after]).astype(np.float32)
    return np.median(stack, axis=0).astype(np.float32)


def foreground_colours(image: np.ndarray, alpha: np.ndarray, inside: np.ndarray | None = None,
                       radius: int | None = None, prior: float = 0.01) -> np.ndarray:
    """``image`` with the background's share taken out of its partly transparent pixels: the colour
    of the person alone (F in ``image = alpha F + (1 - alpha) B``).

    A pixel at the hair's edge with alpha 0.5 is half wall. Composited as ``alpha * image`` over a
    new background it keeps that wall (a grey fringe round dark hair: d14's bun on its grey wall), and
    an avatar trained on such composites learns the fringe into its splats and draws it over every
    background it is shown on. Per unsure pixel, F and B start from the mean colours of the
    confident person and background pixels nearby (``_local_colour``) and share what the pixel does
    not explain, each by its weight in the mix: the least-squares solution of
    ``image = alpha F + (1 - alpha) B`` with a small ``prior`` pull to those starting colours. A
    uniform person on a uniform background comes back exactly. Where no confident colour is known
    for either, the pixel keeps its colour; confident pixels are unchanged.
    image: uint8 [H, W, 3]; alpha: float [H, W] in [0, 1]; inside: bool [H, W] (False: padding past
    the video frame, not background) or None. -> uint8 [H, W, 3]"""
    rgb, a, fg, bg, r = _confident(image, alpha, inside, radius)
    unsure = (a > 0.02) & (a < 0.98)
    if not unsure.any():
        return image
    f0, f_ok, _ = _local_colour(rgb, fg, r, None)  # [H, W, 3], [H, W]
    b0, b_ok, _ = _local_colour(rgb, bg, r, inside)
    a3 = a[..., None]
    residual = rgb - a3 * f0 - (1 - a3) * b0  # [H, W, 3]
    f = f0 + a3 * residual / (prior + a3 ** 2 + (1 - a3) ** 2)
    use = (unsure & f_ok & b_ok)[..., None]
    return np.where(use, np.clip(f * 255.0, 0, 255).round().astype(np.uint8), image)


def despill(image: np.ndarray, alpha: np.ndarray, inside: np.ndarray | None = None,
            min_excess: float = 0.1, min_saturation: float = 0.4) -> np.ndarray:
    """``image`` with a chroma-key backdrop's light taken off the person: green (or blue) spill.

    A green screen lights the person too: its green reflects off dark hair, the shoulders and the
    ears, and an avatar trained on those frames draws green hair on every background (d0: 4 % of the
    person's pixels are greener than both their red and blue, by 15/255 on average). When the
    backdrop (the mean of the confident background pixels inside the video frame) is green or blue,
    its channel exceeding both others by ``min_excess`` (0-1) and saturated (``(max - min) / max`` at
    least ``min_saturation``: d0's green screen 0.56; a lavender wall, wojtek's, 0.2, is no key), every
    person pixel (alpha > 0.02) has
    that channel limited to the larger of the other two: the keyer's "max" despill. Skin, lips and
    warm hair have more red than green and keep their colour; a grey strand lit green goes back to
    grey. A red, grey, white or wooden backdrop is no key and the image is returned unchanged (a red
    limit would take the red out of skin). Green eyes on a green screen lose their green too, as in
    any keyer. image: uint8 [H, W, 3]; alpha: float [H, W]; inside: bool [H, W] or None. -> uint8."""
    rgb, a, _, bg, _ = _confident(image, alpha, inside, None)
    pool = bg > 0
    if pool.sum() < 0.02 * bg.size:
        return image
    backdrop = rgb[pool].mean(0)  # [3]
    key = int(np.argmax(backdrop))
    others = [c for c in range(3) if c != key]
    saturation = (backdrop.max() - backdrop.min()) / max(float(backdrop.max()), 1e-6)
    if key == 0 or backdrop[key] - backdrop[others].max() < min_excess or saturation < min_saturation:
        return image
    limit = rgb[..., others].max(-1)  # [H, W]
    person = a > 0.02
    out = image.copy()
    spilled = person & (rgb[..., key] > limit)
    out[..., key][spilled] = np.round(limit[spilled] * 255.0).astype(np.uint8)
    return out
