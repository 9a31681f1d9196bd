"""The offline face parser: mediapipe's dense landmarks + a matte + colour statistics of each image.

Nothing learned beyond what ships in the mediapipe wheel: the face parts come from the dense face mesh
(478 points, ``face_frame``), person vs background from the matte, and hair / skin / neck / clothes /
ears from colour models fitted to each image (``colour_model``: skin from the cheeks, nose, forehead and
chin; hair by EM against skin above the brows; clothes from what is below the chin and not connected to
the hair) plus the face's geometry and connectivity.  The class docstring gives the rules and their
limits.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import numpy as np

from ..geometry.labels import LABEL_NAMES, NUM_LABELS
from .colour_model import ColourGaussian, fit_gaussian, inv3, to_lab
from .face_frame import FaceFrame
from .face_parser import check_images, check_landmarks, check_mattes, detect_landmarks, parse_to_labels
from .landmarks import MediapipeFaceMesh
from .matting import MediapipeSelfieMatte

__all__ = ["LandmarkParser", "LandmarkParserConfig"]

logger = logging.getLogger("dynavatar.perceive")

_L = {name: i for i, name in enumerate(LABEL_NAMES)}
_SKIN_SAMPLES = ("right_cheek", "left_cheek", "nose_wall", "forehead", "chin")
# Face parts painted from the mesh last, in this order (later ones win where they touch).
_PAINTED = ("nose", "right_brow", "left_brow", "right_eye", "left_eye", "upper_lip", "lower_lip", "mouth_interior")


@dataclasses.dataclass
class LandmarkParserConfig:
    skin_tolerance: float = 20.0  # squared Mahalanobis distance (Lab) where "skin" gives way to "other colour"
    skin_shading: float = 0.1  # skin's extra spread along the shading ray, fraction of its distance from black
    skin_min_std: tuple[float, float, float] = (8.0, 3.0, 3.0)  # floor of the skin model's Lab std: neck, ears
    skin_widen: float = 1.2  # and its measured std widened by this (the samples miss the neck and ears)
    hair_min_distance: float = 8.0  # hair colour must be this far from skin (squared Mahalanobis), else bald
    min_seed_fraction: float = 0.002  # fewer seeds than this x image area: no such colour model (bald, no clothes)
    colour_smoothing: float = 0.004  # sigma of the smoothing of colour decisions, fraction of the image side
    edge_softness: float = 0.002  # sigma of the soft label edges, fraction of the image side
    ear_reach: float = 0.22  # how far ears reach beside the face oval, in face heights
    face_hair_band: float = 0.07  # inside the oval, hair may cover this band along its edge (face heights)
    refine_matte: bool = True  # return matte-edge pixels of the background's colour to the background
    hair_below_chin: float = 0.35  # hair prior's decay length below the chin when clothes look like hair (face heights)
    hair_texture: float = 2.0  # strands: anisotropic gradient energy this many times the cheeks' (``strand_texture``)
    near_hair_distance: float = 4.0  # hair colour this close to skin (squared Mahalanobis) still counts when it
    # covers most of the hair zone with strand texture (strawberry-blonde, light brown hair on a fair face)
    texture_weight: float = 1.5  # log-odds against skin per e-fold of strand texture beyond ``hair_texture``
    texture_hair_distance: float = 16.0  # ... used only for hair colours closer to skin than this (squared
    # Mahalanobis): dark hair is told from skin by colour alone, and edges (an ear's rim) stay skin


class LandmarkParser:
    """Offline face parser from mediapipe landmarks + matte + per-image colour statistics.

    All geometry is in the face's own frame (u across, v down the face, in face heights from the
    chin), so tilted heads work; yaw and pitch are read from the mesh where they matter (ears, jaw).

    1. Person vs background: the matte (mediapipe selfie segmentation unless given), with two
       corrections: the inner face is always the person, and pixels along the matte's edge that
       have the colour of the background next to the person go back to the background (the
       256 px selfie model leaks wall under the jaw and beside the hair; not done to a matte that
       preprocessing has refined already, ``for_matte``).
    2. Colour models in CIE Lab, refitted per image. *Skin* from the cheeks, nose walls, forehead
       middle and chin (robust trimmed Gaussian, with extra spread along the shading ray so a
       shadowed neck is still skin). *Hair* by a two-class EM against skin in the zone above the
       brows and off the face; rejected (bald) when its colour is within a few sigma of skin.
       Hair close to skin in colour (strawberry blonde on a fair face) is kept when it covers
       most of the zone with strand texture (``strand_texture``), which smooth scalp lacks.
       Each pixel is skin-coloured or not by likelihood against hair and a flat "other colour",
       plus priors (inner face, throat, and the jaw's underside lean to skin) and, for such
       near-skin hair, strand texture off the face; smoothed a little.
    3. Non-skin foreground is hair or clothes by connectivity: regions connected to the hair
       zone are hair, others are clothes when they lie below the chin. Below the chin a region
       connected to the hair becomes clothes where its colour is more like the clothes (a colour
       model from the unconnected clothes and from right under the neck) than the hair; without
       such a model it stays hair down to 2 x ``hair_below_chin`` face heights below the chin.
    4. Skin-coloured foreground: *neck* below the jaw line (carried on beyond the mesh's jaw
       ends, following the head's yaw); *left_ear* / *right_ear* (the person's own sides) beside
       the face within ``ear_reach``, between the brows' and the mouth's level shifted by the
       head's pitch, and only on a side the head is not turned away from; *skin* elsewhere
       (forehead, bald scalp, arms). A patch of neck apart from the neck itself and ringed by hair
       is hair (light hair beside the neck), a patch of hair apart from the hair and ringed by neck
       is neck (a shadow). Inside the face oval non-skin pixels are skin too (beard,
       shadows, nostrils, glasses) except on the forehead and along the oval's edge, where hair
       connected to the hair outside (a fringe, strands over the cheeks) stays hair.
    5. Face parts are painted last from the mesh polygons: nose, brows, eyes (the eyelid opening),
       upper and lower lip between the outer and inner lip contours, and the mouth interior
       inside the inner contour (zero area when the lips touch).
    6. Inside each eye opening, *iris* is the disc through mediapipe's iris points (centre 468 /
       473, radius the mean distance to the four ring points 469-472 / 474-477), clipped to the
       opening; *sclera* is the rest of the opening. Inside the mouth opening, *teeth* are the
       bright, low-chroma pixels (lighter than 0.7 x the skin's mean lightness, Lab chroma below
       18): tongue and mouth shadow are darker or redder. ``left_eye`` / ``right_eye`` remain only
       where the iris points are unusable (an iris outside its opening by more than its radius).

    *eyeglasses* and *headwear* always get zero probability: glasses become skin (inside the oval)
    or hair (the temples), hats become hair. Soft probabilities are the one-hot labels blurred by
    ``edge_softness`` and multiplied by the (refined) matte, with background = 1 - matte.
    """

    # The version after the slash changes when the same inputs give different maps, so cached
    # datasets parsed by an older version are parsed again (2: parts sampled at pixel centres;
    # 3: iris, sclera and teeth; 4: strand texture for hair close to skin in colour; 5: clothes below
    # the chin in a region that reaches above it; 6: the matte's rim above the brows kept where it
    # has the hair's colour; a shirt region joined to the hair at the temples split by a clothes colour;
    # 7: a matte preprocessing already refined is not refined again, ``for_matte``; patches of neck
    # inside the hair are hair, ``absorb_islands``).
    name = "landmark-parser/7"

    def __init__(self, config: LandmarkParserConfig | None = None, *, detector=None, matter=None) -> None:
        self.config = config or LandmarkParserConfig()
        self._detector = detector
        self._matter = matter

    @classmethod
    def for_matte(cls, refined: bool) -> "LandmarkParser":
        """The default parser for mattes that preprocessing has (``refined``) or has not colour-refined
        (``matting.refine_matte``). Refining a refined matte a second time, with this parser's coarser
        rule, took the hair at the temples and along a dark head's outline back to the background
        although the matte, and so the avatar, keep it (hair labels past the parser's outline then
        count against every label figure and edit; figures in docs/benchmarks.md)."""
        return cls(LandmarkParserConfig(refine_matte=not refined))

    # Backends are created on first need, so a parser that is always given landmarks and mattes
    # never loads mediapipe.
    @property
    def detector(self):
        if self._detector is None:
            self._detector = MediapipeFaceMesh(max_faces=1)
        return self._detector

    @property
    def matter(self):
        if self._matter is None:
            self._matter = MediapipeSelfieMatte()
        return self._matter

    def parse(self, images: np.ndarray, landmarks: np.ndarray | None = None, *,
              mattes: np.ndarray | None = None) -> np.ndarray:
        images = check_images(images)
        lms = check_landmarks(landmarks, len(images))
        mts = check_mattes(mattes, images.shape)
        out = np.empty((len(images), NUM_LABELS) + images.shape[1:3], np.float32)
        for b, img in enumerate(images):
            pts = lms[b] if lms is not None else detect_landmarks(self.detector, img)
            alpha = mts[b] if mts is not None else self.matter.matte(img)
            self.parse_one(img, pts, alpha, out=out[b])
        return out

    def parse_labels(self, image: np.ndarray, landmarks: np.ndarray | None = None,
                     matte: np.ndarray | None = None) -> np.ndarray:
        """One image uint8 [H, W, 3] -> its label map uint8 [H, W] (the argmax of ``parse``).

        For preprocessing, which stores only labels: the [K, H, W] probabilities go into one
        scratch buffer kept between calls. Fresh 17-channel buffers can cost more in page faults
        than the parsing itself on some machines."""
        image = check_images(np.asarray(image)[None])[0]
        lm = check_landmarks(None if landmarks is None else np.asarray(landmarks)[None], 1)
        pts = lm[0] if lm is not None else detect_landmarks(self.detector, image)
        alpha = check_mattes(None if matte is None else np.asarray(matte)[None], (1,) + image.shape)
        alpha = alpha[0] if alpha is not None else self.matter.matte(image)
        shape = (NUM_LABELS,) + image.shape[:2]
        if getattr(self, "_scratch", None) is None or self._scratch.shape != shape:
            self._scratch = np.empty(shape, np.float32)
        return parse_to_labels(self.parse_one(image, pts, alpha, out=self._scratch))

    def parse_one(self, image: np.ndarray, points: np.ndarray | None, alpha: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
        """One image uint8 [H, W, 3], its face's points [478, 2|3] (or None: no face) and matte
        [H, W] -> probabilities float32 [K, H, W] (written into ``out`` when given). With the
        depth column the ears follow the head's pitch."""
        h, w = image.shape[:2]
        alpha = np.asarray(alpha, dtype=np.float32)
        out = np.empty((NUM_LABELS, h, w), np.float32) if out is None else out
        if points is None:
            logger.warning("landmark parser: no face found; the foreground is left unlabelled (uniform)")
            return _no_face_probs(alpha, out)
        face = FaceFrame.build(points, (h, w))
        # The inner face is always the person (the matte can miss a face in harsh light); the
        # oval's rim is left to the matte: on a turned head it reaches past the silhouette.
        inner = face.dist_in > 0.05 * face.height
        for name in _PAINTED:
            inner |= face.parts[name]
        fg_alpha = np.maximum(alpha, inner.astype(np.float32))  # [H, W]
        labels, fg_alpha = self._label_map(image, face, fg_alpha, np.asarray(points, dtype=np.float64))
        return self._soften(labels, fg_alpha, out)

    # -- the steps ---------------------------------------------------------------------------

    def _label_map(self, image: np.ndarray, face: FaceFrame, alpha: np.ndarray,
                   points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Hard labels uint8 [H, W] and the (colour-refined) foreground alpha float32 [H, W].
        ``points`` [478, 2|3]: the iris points split the eye openings (rule 6)."""
        cfg = self.config
        lab = to_lab(image)  # [H, W, 3]
        fg = alpha > 0.5
        skin_model = self._skin_model(lab, face, fg)
        min_seeds = max(50, int(cfg.min_seed_fraction * fg.size))
        alpha = self._refine_matte(lab, alpha, skin_model, face, min_seeds)
        fg = alpha > 0.5
        hair_zone = fg & (face.dist_out > 0.02 * face.height) & (face.v < face.v_brow)  # above the brows, off the face

        @functools.cache
        def texture() -> np.ndarray:  # [H, W]; only hair close to skin in colour asks for it (~20 % of a parse)
            t = strand_texture(lab[..., 0], max(image.shape[:2]))
            cheeks = np.logical_or.reduce([face.parts[n] for n in _SKIN_SAMPLES]) & fg
            # relative to the face's own skin: blur and video compression differ from clip to clip
            return t / max(float(np.median(t[cheeks])) if cheeks.any() else 1.0, 1e-3)

        hair_model = self._hair_model(lab, hair_zone, skin_model, min_seeds, texture)
        skin = self._skin_colour(lab, skin_model, hair_model, face, texture) & fg  # [H, W] bool
        nonskin = fg & ~skin
        reach, clothes = self._hair_or_clothes(nonskin, hair_zone & nonskin, lab, hair_model, face, min_seeds)
        labels = self._assemble(face, fg, skin, reach, clothes)
        absorb_islands(labels, _L["neck"], _L["hair"], outside=_L["background"])
        absorb_islands(labels, _L["hair"], _L["neck"], outside=_L["background"])  # a shadow on the neck
        if points is not None:
            split_eyes(labels, face, points)
        paint_teeth(labels, face, lab, float(skin_model.mean[0]))
        return labels, alpha

    def _assemble(self, face: FaceFrame, fg: np.ndarray, skin: np.ndarray, reach: np.ndarray,
                  clothes: np.ndarray) -> np.ndarray:
        """Masks [H, W] bool -> labels uint8 [H, W] by the geometric rules 4-5 of the class doc."""
        cfg = self.config
        nonskin = fg & ~skin
        oval = face.parts["face_oval"]
        labels = np.full(fg.shape, _L["background"], np.uint8)
        # Outside the face: non-skin colours are hair unless they are clothes ...
        labels[nonskin] = _L["hair"]
        labels[clothes] = _L["clothes"]
        # ... skin colours are skin, neck below the jaw, ears beside the face.
        labels[skin] = _L["skin"]
        labels[skin & face.below_jaw] = _L["neck"]
        ear_top, ear_bottom = face.v_brow + face.v_ear_shift, face.v_ear_bottom + face.v_ear_shift
        beside = (face.u < face.u_sides[0] + 0.05) | (face.u > face.u_sides[1] - 0.05)  # not above or below the face
        ears = skin & ~oval & beside & (face.dist_out < cfg.ear_reach * face.height) & (face.v > ear_top) \
            & (face.v < ear_bottom)
        if face.ear_visible[1]:
            labels[ears & (face.u > face.u_mid)] = _L["left_ear"]  # the person's left: image right when frontal
        if face.ear_visible[0]:
            labels[ears & (face.u <= face.u_mid)] = _L["right_ear"]
        # Inside the face oval everything is skin except hair connected to the hair outside, on
        # the forehead or along the oval's edge (fringes, strands over the cheeks).
        face_hair_zone = (face.dist_in < cfg.face_hair_band * face.height) | (face.v < face.v_brow)
        labels[fg & oval & ~(nonskin & reach & face_hair_zone)] = _L["skin"]
        for name in _PAINTED:
            labels[face.parts[name]] = _L[name]
        return labels

    def _refine_matte(self, lab: np.ndarray, alpha: np.ndarray, skin: ColourGaussian, face: FaceFrame,
                      min_seeds: int) -> np.ndarray:
        """Take back into the background what the (coarse, 256 px) matte let through along its
        edge but is clearly the background's colour: a wall seen under the jaw or between hair
        and neck. A colour model of the background next to the person decides, and only in a
        band along the matte's edge, away from the face, and only where skin (and above the brows,
        the hair's colour) is far less likely."""
        import cv2

        if not self.config.refine_matte:
            return alpha
        side = max(alpha.shape)
        fg = (alpha > 0.5).astype(np.uint8)
        to_bg = cv2.distanceTransform(fg, cv2.DIST_L2, 5)  # inside: pixels to the background
        to_fg = cv2.distanceTransform(1 - fg, cv2.DIST_L2, 5)
        ring = (alpha < 0.05) & (to_fg < 0.08 * side)
        bg = fit_gaussian(lab[ring], widen=(1.2, 1.2, 1.2)) if ring.sum() >= min_seeds else None
        if bg is None:
            return alpha
        band = (fg > 0) & (to_bg < 0.04 * side) & (face.dist_in < 0.05 * face.height)  # not the inner face
        odds = np.clip(bg.log_pdf(lab) - skin.log_pdf(lab), -20, 20).astype(np.float32)
        # Above the brows the band's rim is the hair's own outline: dark hair on a dark background
        # (aoc's navy flag) is far from skin and near the wall's wide model, so without this its
        # outer 20-30 px (of a 512-px crop) went to the background although the matte had them.
        # The hair's colour comes from the hair zone inside the band.
        top = face.v < face.v_brow
        seeds = (fg > 0) & (to_bg >= 0.04 * side) & (face.dist_out > 0.02 * face.height) & top
        hair = fit_gaussian(lab[seeds], widen=(1.2, 1.2, 1.2)) if seeds.sum() >= min_seeds else None
        if hair is not None:
            odds = np.where(top, np.minimum(odds, np.clip(bg.log_pdf(lab) - hair.log_pdf(lab), -20, 20)), odds)
        odds = np.where(bg.mahal2(lab) < 12.0, odds, -20.0).astype(np.float32)
        odds = cv2.GaussianBlur(odds, (0, 0), max(self.config.colour_smoothing * side, 0.5))
        wall = band & (odds > 3.0)
        if not wall.any():
            return alpha
        keep = cv2.GaussianBlur((~wall).astype(np.float32), (0, 0), max(self.config.edge_softness * side, 0.3))
        return np.minimum(alpha, keep)

    def _skin_model(self, lab: np.ndarray, face: FaceFrame, fg: np.ndarray) -> ColourGaussian:
        """Skin colour from the cheeks, nose walls, forehead middle and chin; falls back to the
        whole face oval (minus eyes, brows, lips) and then to a generic skin colour when the face
        is tiny or hidden."""
        cfg = self.config
        fit = functools.partial(fit_gaussian, min_std=cfg.skin_min_std, widen=(cfg.skin_widen,) * 3,
                                shading=cfg.skin_shading)
        sample = np.logical_or.reduce([face.parts[n] for n in _SKIN_SAMPLES]) & fg
        model = fit(lab[sample])
        if model is None:
            inner = face.parts["face_oval"].copy()
            for name in _PAINTED[1:]:  # all parts but the nose, which is skin-coloured
                inner &= ~face.parts[name]
            model = fit(lab[inner])
        if model is None:
            cov = np.diag(np.square([15.0, 8.0, 8.0]))
            inv, det = inv3(cov)
            model = ColourGaussian(np.array([65.0, 15.0, 18.0]), inv, float(np.log(det)), 0)
        return model

    def _hair_model(self, lab: np.ndarray, zone: np.ndarray, skin: ColourGaussian,
                    min_seeds: int, texture: Callable[[], np.ndarray] | None = None) -> ColourGaussian | None:
        """Hair colour from the zone above the brows and off the face, or None (bald, shaved).

        A two-class EM in that zone: skin (the fixed skin model) against hair (a free Gaussian,
        started from the zone's least skin-like 30%). Red or blond hair close to skin colour is
        found this way where an absolute "far from skin" rule misses it. The result is rejected
        when hair would be a small part of the zone or its colour within a few sigma of skin
        (then the "hair" was shaded scalp), unless it covers most of the zone with strand
        ``texture()`` (relative to the cheeks'): light hair on a fair face is that close to skin
        in colour, shaded scalp is as smooth as the cheeks."""
        x = lab[zone]  # [N, 3]
        if len(x) < min_seeds:
            return None
        log_skin = skin.log_pdf(x)
        d = skin.mahal2(x)
        init = d >= max(float(np.quantile(d, 0.7)), 4.0)
        if init.sum() < min_seeds:
            return None
        fit = functools.partial(fit_gaussian, widen=(1.3, 1.1, 1.1))
        model, prior = fit(x[init]), 0.5
        for _ in range(4):
            if model is None:
                return None
            take = model.log_pdf(x) - log_skin + np.log(prior / (1 - prior)) > 0  # [N] hair wins
            if take.sum() < min_seeds:
                return None
            model = fit(x[take])
            prior = float(np.clip(take.mean(), 0.05, 0.95))
        cfg = self.config
        if model is None or prior < 0.1:
            return None
        distance = float(skin.mahal2(model.mean))
        if distance >= cfg.hair_min_distance:
            return model
        if distance < cfg.near_hair_distance or prior < 0.6 or texture is None:
            return None
        return model if float(np.median(texture()[zone][take])) >= cfg.hair_texture else None

    def _skin_colour(self, lab: np.ndarray, skin: ColourGaussian, hair: ColourGaussian | None,
                     face: FaceFrame, texture: Callable[[], np.ndarray] | None = None) -> np.ndarray:
        """bool [H, W]: is the colour more likely skin than hair or "something else"?
        "Something else" is a flat density at the skin model's ``skin_tolerance`` contour. Off the
        face oval of a person whose hair is close to skin in colour, strand ``texture()`` (relative
        to the cheeks') beyond ``hair_texture`` counts against skin. The log-odds are smoothed
        before the decision so single noisy pixels do not flip."""
        import cv2

        cfg = self.config
        log_skin = skin.log_pdf(lab)  # [H, W]
        log_other = np.full_like(log_skin, -0.5 * (cfg.skin_tolerance + skin.log_det + 3 * np.log(2 * np.pi)))
        if hair is not None:
            log_other = np.logaddexp(log_other, hair.log_pdf(lab))
        # Spatial prior: the inner face below the brows, and the throat between the jaw's ends,
        # are skin unless strongly contradicted (stubble, shadow under the jaw).
        inner_face = (face.dist_in > cfg.face_hair_band * face.height) & (face.v > face.v_brow)
        jaw_side = (face.dist_out < 0.12 * face.height) & (face.v > face.v_ear_bottom)  # stubble under a turned jaw
        prior = np.where(inner_face, 2.0, 0.0) + np.where(face.throat, 4.0, 0.0) + np.where(jaw_side, 3.0, 0.0)
        odds = np.clip(log_skin - log_other, -20, 20).astype(np.float32) + prior.astype(np.float32)
        if hair is not None and texture is not None and float(skin.mahal2(hair.mean)) < cfg.texture_hair_distance:
            # strands here and all around (~1 % of the side): a head of hair keeps its evidence, the
            # thin line of one edge (an ear's rim, a sharpened outline) and skin beside hair do not
            strands = np.clip(np.log(np.maximum(texture(), 1e-6) / cfg.hair_texture), 0.0, 3.0).astype(np.float32)
            strands = np.minimum(strands, cv2.GaussianBlur(strands, (0, 0), max(0.012 * max(lab.shape[:2]), 0.5)))
            off_face = (face.dist_out > 0.02 * face.height) & ~face.throat
            odds -= np.where(off_face, cfg.texture_weight * strands, 0.0).astype(np.float32)
        sigma = max(cfg.colour_smoothing * max(lab.shape[:2]), 0.5)
        odds = cv2.GaussianBlur(odds, (0, 0), sigma)
        return odds > 0

    def _hair_or_clothes(self, nonskin: np.ndarray, hair_seeds: np.ndarray, lab: np.ndarray,
                         hair: ColourGaussian | None, face: FaceFrame, min_seeds: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-skin foreground [H, W] -> (hair, clothes) bool masks [H, W] (hair: reaches the seeds).

        Regions connected (through non-skin pixels) to the hair seeds are hair; the others are
        clothes when they lie on average below the chin. A clothes colour model is fitted from
        those clothes and from non-skin pixels right below the neck (where long hair does not
        fall); below the chin, hair-connected pixels that look more like it than like the hair
        become clothes (a shirt touching long hair). Without a clothes model, hair-connected
        pixels stay hair down to 2 x ``hair_below_chin`` face heights below the chin."""
        import cv2

        cfg = self.config
        k = max(3, int(round(0.006 * max(nonskin.shape))) | 1)
        opened = cv2.morphologyEx(nonskin.astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8)) > 0
        n, comp = cv2.connectedComponents(opened.astype(np.uint8), connectivity=8)
        hair_comps = np.unique(comp[hair_seeds & opened])
        reach = np.isin(comp, hair_comps[hair_comps > 0]) & opened  # [H, W]
        other = opened & ~reach
        clothes = np.zeros_like(nonskin)
        if other.any():
            count = np.bincount(comp[other], minlength=n)
            mean_v = np.bincount(comp[other], weights=face.v[other], minlength=n) / np.maximum(count, 1)
            clothes |= other & (mean_v[comp] > 0.0)
        # A region not connected to the hair whose mean lies above the chin (a head thrown back: the
        # band of shirt in view joins unconnected hair at the temples) is clothes below the chin
        # where its colour is unlike the hair's.
        # Below the chin that colour also seeds a clothes model, which claims what looks more like it
        # than like the hair (the shirt's shaded top in d12's laughing tail); with the head thrown
        # back the shirt beside the face lies up to a quarter face height above the chin's line, where
        # only colour both unlike the hair and like those clothes is taken.
        rest = other & ~clothes & (face.v > -0.25)
        if rest.any():
            sigma = max(cfg.colour_smoothing * max(nonskin.shape), 0.5)
            chin = face.v > 0.0
            unlike = np.ones_like(rest) if hair is None else (
                cv2.GaussianBlur(hair.mahal2(lab), (0, 0), sigma) > cfg.skin_tolerance)
            seeds = rest & unlike & chin
            cloth = fit_gaussian(lab[seeds]) if hair is not None and seeds.sum() >= min_seeds else None
            like = np.zeros_like(rest)
            if cloth is not None:
                odds = np.clip(cloth.log_pdf(lab) - hair.log_pdf(lab), -20, 20).astype(np.float32)
                like = cv2.GaussianBlur(odds, (0, 0), sigma) > 0
            clothes |= rest & np.where(chin, unlike | like, unlike & like)
        below = reach & (face.v > 0.0)
        if below.any():
            under_neck = nonskin & (face.v > 0.25) & (np.abs(face.u) < 0.2)
            seeds = clothes | under_neck
            cloth = fit_gaussian(lab[seeds]) if seeds.sum() >= min_seeds else None
            depth = face.v / cfg.hair_below_chin  # hair prior fades below the chin
            if cloth is not None and hair is not None:
                odds = np.clip(cloth.log_pdf(lab) - hair.log_pdf(lab), -20, 20) + depth - 1.0
            else:
                odds = depth - 2.0
            sigma = max(cfg.colour_smoothing * max(nonskin.shape), 0.5)
            odds = cv2.GaussianBlur(odds.astype(np.float32), (0, 0), sigma)
            clothes |= below & (odds > 0)
        # Thin strands lost to the opening follow the nearest decision.
        lost = nonskin & ~opened
        if lost.any():
            near_clothes = cv2.dilate(clothes.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
            near_reach = cv2.dilate(reach.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
            clothes |= lost & near_clothes & (face.v > 0)
            reach |= lost & near_reach & ~clothes
        return reach & ~clothes, clothes & nonskin

    def _soften(self, labels: np.ndarray, fg_alpha: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Hard labels [H, W] + foreground alpha [H, W] -> probabilities [K, H, W] (into
        ``probs``): each foreground label's one-hot blurred (soft edges), times alpha;
        background = 1 - alpha."""
        import cv2

        h, w = labels.shape
        sigma = self.config.edge_softness * max(h, w)
        probs[:] = 0.0
        fg_labels = labels.copy()
        if (labels != _L["background"]).any():
            # background pixels take their nearest foreground label, so blurring does not leak
            # "background" into the foreground distribution (the matte carries that).
            bg = (labels == _L["background"]).astype(np.uint8)
            _, idx = cv2.distanceTransformWithLabels(bg, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
            ys, xs = np.nonzero(bg == 0)
            lut = np.zeros(idx.max() + 1, np.uint8)
            lut[idx[ys, xs]] = labels[ys, xs]
            fg_labels = lut[idx]
        else:
            fg_labels[:] = _L["skin"]
        total = np.zeros((h, w), np.float32)
        for k in np.unique(fg_labels):
            onehot = (fg_labels == k).astype(np.float32)
            if sigma >= 0.3:
                onehot = cv2.GaussianBlur(onehot, (0, 0), sigma)
            probs[k] = onehot
            total += onehot
        probs /= np.maximum(total, 1e-6)
        probs *= fg_alpha
        probs[_L["background"]] = 1.0 - fg_alpha
        return probs


def strand_texture(lightness: np.ndarray, side: int) -> np.ndarray:
    """How much an image's lightness [H, W] looks like strands of hair -> float32 [H, W].

    The structure tensor over 0.8 % of the image ``side`` gives the anisotropic gradient energy
    (the square root of its eigenvalues' difference: strands have strong gradients across one
    direction, skin is smooth, a sensor's isotropic grain cancels). A single edge (the hairline, an
    ear's rim, the jaw against the neck) is anisotropic too, but its gradients all point one way,
    while across strands they alternate: the energy is weighed by 1 - |mean gradient| / mean
    |gradient|, which is near 1 on strands and lower on an edge (not 0: video sharpening rings)."""
    import cv2

    x = lightness.astype(np.float32)
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
    sigma = max(0.008 * side, 1.0)
    blur = lambda a: cv2.GaussianBlur(a, (0, 0), sigma)  # noqa: E731
    jxx, jyy, jxy, mx, my = (blur(g) for g in (gx * gx, gy * gy, gx * gy, gx, gy))
    energy = np.sqrt(np.sqrt((jxx - jyy) ** 2 + 4.0 * jxy ** 2))
    alternating = 1.0 - np.sqrt(mx * mx + my * my) / np.maximum(blur(np.sqrt(gx * gx + gy * gy)), 1e-6)
    return (energy * np.clip(alternating, 0.0, 1.0)).astype(np.float32)


def absorb_islands(labels: np.ndarray, island: int, into: int, min_share: float = 0.6, outside: int = 0) -> np.ndarray:
    """Relabel, in place, every connected patch of label ``island`` but the largest as ``into`` when
    at least ``min_share`` of the pixels just around it are ``into`` and it reaches neither the
    image's edge nor label ``outside`` (the background). Why: light hair close to skin in colour
    (s18's strawberry blonde) falling beside the neck came out as patches of "neck" inside the
    hair; the neck itself is one region joined to the jaw, and a shoulder cut off by a strap runs
    on out of the picture (d10). labels: uint8 [H, W] -> labels."""
    import cv2

    mask = (labels == island).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:  # no patch, or only the region itself
        return labels
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    kernel = np.ones((5, 5), np.uint8)
    for k in range(1, n):
        if k == largest:
            continue
        x, y, w, h = (int(v) for v in stats[k, :4])
        if x <= 1 or y <= 1 or x + w >= labels.shape[1] - 1 or y + h >= labels.shape[0] - 1:
            continue
        y0, y1, x0, x1 = max(y - 3, 0), y + h + 3, max(x - 3, 0), x + w + 3  # the patch's box, with room for its rim
        patch = comp[y0:y1, x0:x1] == k
        rim = (cv2.dilate(patch.astype(np.uint8), kernel) > 0) & ~patch
        around = labels[y0:y1, x0:x1][rim]
        if around.size and np.mean(around == into) >= min_share and not np.any(around == outside):
            labels[y0:y1, x0:x1][patch] = into
    return labels


def split_eyes(labels: np.ndarray, face: FaceFrame, points: np.ndarray) -> np.ndarray:
    """Rule 6, eyes: each eye opening's pixels become iris (the disc through the iris points, clipped
    to the opening) or sclera; in place on ``labels`` uint8 [H, W]. An iris centre farther than its
    radius outside its opening (a bad detection) leaves that eye's label as it was."""
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    for side, centre in (("right_eye", 468), ("left_eye", 473)):
        opening = face.parts[side] & (labels == _L[side])
        if not opening.any():
            continue
        c = points[centre, :2]
        radius = float(np.mean(np.linalg.norm(points[centre + 1:centre + 5, :2] - c, axis=1)))
        oy, ox = np.nonzero(opening)
        gap = float(np.min(np.hypot(ox + 0.5 - c[0], oy + 0.5 - c[1])))
        if not np.isfinite(radius) or radius <= 0 or gap > radius:
            continue
        disc = np.hypot(xs + 0.5 - c[0], ys + 0.5 - c[1]) <= radius  # pixel centres, as fill_polygon
        labels[opening & disc] = _L["iris"]
        labels[opening & ~disc] = _L["sclera"]
    return labels


def paint_teeth(labels: np.ndarray, face: FaceFrame, lab: np.ndarray, skin_lightness: float,
                min_lightness: float = 0.7, max_chroma: float = 18.0) -> np.ndarray:
    """Rule 6, teeth: bright, low-chroma pixels inside the mouth opening; in place on ``labels``.
    lab: CIE Lab [H, W, 3] (L in [0, 100]); skin_lightness: the skin model's mean L."""
    mouth = labels == _L["mouth_interior"]
    if not mouth.any():
        return labels
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    labels[mouth & (lab[..., 0] > min_lightness * skin_lightness) & (chroma < max_chroma)] = _L["teeth"]
    return labels


def _no_face_probs(alpha: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """No face: background from the matte, the foreground spread evenly over the labels this
    parser can produce (an honest "don't know"; its argmax is skin). Written into ``probs``."""
    k_fg = [_L[n] for n in ("skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose", "upper_lip",
                            "lower_lip", "mouth_interior", "hair", "left_ear", "right_ear", "neck", "clothes")]
    probs[:] = 0.0
    probs[k_fg] = alpha[None] / len(k_fg)
    probs[_L["background"]] = 1.0 - alpha
    return probs
