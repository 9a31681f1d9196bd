"""Face parsing: per-pixel probabilities over the project's fixed label set (``labels.LABEL_NAMES``).

Two backends behind one protocol (``face_parser.FaceParser``):

* :class:`LandmarkParser` (``landmark_parser``), the offline default. Nothing learned beyond what ships in
  the mediapipe wheel: the face parts come from mediapipe's dense face mesh (478 points, ``face_frame``),
  person vs background from the matte, and hair / skin / neck / clothes / ears from colour statistics
  fitted to each image (``colour_model``) plus the face's geometry and connectivity.
* :class:`FacerParser` (``facer_parser``), the real backend: pyfacer's FaRL parsers (LaPa or
  CelebAMask-HQ labels), mapped onto our labels with explicit tables. Its weights must already be in the
  torch hub cache.

Probabilities are ``float32 [B, K, H, W]`` and sum to 1 over K at every pixel; ``parse_to_labels``
takes the argmax, ``colourise`` and ``overlay`` draw them for people to look at. ``parse_dataset``
(``dataset_parsing``) adds label maps to a preprocessed frame folder.

This module gathers the public names of those pieces in one place.
"""

from __future__ import annotations

from .dataset_parsing import ensure_parsing, parse_dataset, parse_frame, write_labels
from .face_parser import FaceParser, colourise, overlay, parse_to_labels
from .facer_parser import CELEBM_TO_LABEL, LAPA_TO_LABEL, FacerParser, facer_five_points, map_label_probs
from .landmark_parser import LandmarkParser, LandmarkParserConfig

__all__ = ["FaceParser", "LandmarkParser", "LandmarkParserConfig", "FacerParser", "LAPA_TO_LABEL",
           "CELEBM_TO_LABEL", "facer_five_points", "map_label_probs", "parse_to_labels", "colourise", "overlay",
           "parse_dataset", "ensure_parsing", "parse_frame", "write_labels"]
