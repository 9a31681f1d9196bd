"""Prompt refinement: the user's words -> a validated ``EditPlan``.

Three refiners share one output schema (``EditPlan``) and one protocol (``PromptRefiner``):

- ``RuleRefiner``: offline, deterministic, no weights. A small English grammar of edit requests:
  colours (``colours.py``), materials, face regions, accessories, removals, expressions with
  adverbs, negations ("not the lips", "keep the brows"), several edits in one prompt. It is the
  default and the fallback of the other two.
- ``TransformersRefiner``: a local chat model through ``transformers`` (Qwen2.5-1.5B-Instruct by
  default), loaded lazily from the Hugging Face cache.
- ``OpenAIRefiner``: any OpenAI-compatible ``/v1/chat/completions`` endpoint, standard library only.

The two model refiners share ``_ChatRefiner``: one system prompt that states the schema, one JSON
extraction, one validation, one repair re-ask and one fallback to the rules; they differ only in
``generate_text(messages) -> str``, which is also the seam tests override.

Decisions a reader may question, and why:

- **Beards.** The label set has no beard/facial-hair label. Adding, removing or recolouring a
  beard edits the ``skin`` region through a diffusion editor; a beard recolour is an
  ``appearance`` plan with no ``colour`` or ``material`` (they stay in the instruction's words), so
  a region-palette editor never restyles the whole face.
  The same holds for any object without a label of its own (earrings, necklaces...).
- **Several edits in one prompt.** ``refine_all`` returns one plan per independent clause
  ("red hair and blue eyes" -> two plans). ``refine`` must return one plan: it merges plans that
  can share one (same colour and material, expressions, accessories, removals) and otherwise
  returns the first clause's plan and logs a warning that names ``refine_all``.
- **Preserve.** ``preserve`` holds only what the user asked to keep, anywhere in the prompt (a
  "keep the brows" clause applies to every plan of that prompt); everything outside ``regions`` is
  kept by the region mask anyway. Preserved labels are taken out of ``regions``.
- **Expressions** list the regions whose appearance the new expression changes (lips and mouth
  for a smile), so a 2D editor may refine texture there; FLAME does the geometry.
- **"wink"** without a side is the person's left eye.
- **Metal names** ("gold", "silver") mean a metallic material on skin, lips, clothes and
  accessories, but a natural colour on hair, brows, beards ("golden hair" is golden blonde) and eyes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import re
import urllib.error
import urllib.request
from typing import Any, Protocol, runtime_checkable

from ..errors import DynavatarError, MissingDependencyError
from ..geometry.labels import LABEL_NAMES
from .colours import (EYE_OVERRIDES, HAIR_LIKE_OVERRIDES, HAIR_ONLY_NAMES, SKIN_OVERRIDES, ColourMatch,
                      find_colour, hex_to_rgb)
from .plan import EDIT_KINDS, EXPRESSIONS, MATERIALS, EditPlan, EditPlanError

__all__ = ["PromptRefiner", "RuleRefiner", "TransformersRefiner", "OpenAIRefiner", "get_refiner",
           "extract_json_object", "plan_from_text", "build_system_prompt", "kind_defaults", "DEFAULT_LLM"]

logger = logging.getLogger("dynavatar.edit")

DEFAULT_LLM = "Qwen/Qwen2.5-1.5B-Instruct"
_DEFAULT_LLM_WEIGHTS = "Qwen2.5 1.5B Instruct"  # its entry in dynavatar.weights.KNOWN_WEIGHTS


@runtime_checkable
class PromptRefiner(Protocol):
    """Anything that turns a prompt into a validated EditPlan."""

    def refine(self, prompt: str) -> EditPlan: ...


# ====================================================================== per-kind defaults
# Colour edits are easy for an editor (fewer steps, less text guidance keeps identity); accessories
# need room around the region for frames and brims (larger mask dilation) and more steps.
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "colour": dict(strength=1.0, text_guidance=5.0, image_guidance=1.5, num_steps=12, mask_dilation=4),
    "appearance": dict(strength=1.0, text_guidance=7.5, image_guidance=1.5, num_steps=20, mask_dilation=6),
    "accessory": dict(strength=1.0, text_guidance=8.0, image_guidance=1.2, num_steps=25, mask_dilation=16),
    "remove": dict(strength=1.0, text_guidance=7.0, image_guidance=1.3, num_steps=25, mask_dilation=10),
    "expression": dict(strength=1.0, text_guidance=6.5, image_guidance=1.6, num_steps=20, mask_dilation=6),
}
assert set(_KIND_DEFAULTS) == set(EDIT_KINDS)


def kind_defaults(kind: str) -> dict[str, Any]:
    """Default strength/guidance/steps/dilation for a kind of edit (a copy; safe to modify)."""
    if kind not in _KIND_DEFAULTS:
        raise EditPlanError(f"kind {kind!r} is not one of {EDIT_KINDS}")
    return dict(_KIND_DEFAULTS[kind])


# ====================================================================== vocabulary
@dataclasses.dataclass(frozen=True)
class _Target:
    """A part of the head a prompt can name."""

    key: str
    regions: tuple[str, ...]
    noun: str | None  # how plans name it; None: as the user said it ("jacket")
    article: str = ""  # "a" for countable singular nouns in descriptions ("a green face")
    wear: bool = False  # described as worn ("wearing a red shirt")
    hair_like: bool = False  # metal names are hair colours here
    labelless: bool = False  # no label of its own: colour edits go to a diffusion editor


_BROWS = ("left_brow", "right_brow")
_EYES = ("left_eye", "right_eye")
_LIPS = ("upper_lip", "lower_lip")
_EARS = ("left_ear", "right_ear")
_SKIN_GROUP = ("skin", "nose", "left_ear", "right_ear", "neck")  # "skin" means all visible skin

_TARGETS: dict[str, _Target] = {t.key: t for t in (
    _Target("hair", ("hair",), "hair", hair_like=True),
    _Target("brows", _BROWS, "eyebrows", hair_like=True),
    _Target("left_brow", ("left_brow",), "left eyebrow", "a", hair_like=True),
    _Target("right_brow", ("right_brow",), "right eyebrow", "a", hair_like=True),
    _Target("eyes", _EYES, "eyes"),
    _Target("left_eye", ("left_eye",), "left eye", "a"),
    _Target("right_eye", ("right_eye",), "right eye", "a"),
    _Target("lips", _LIPS, "lips"),
    _Target("upper_lip", ("upper_lip",), "upper lip", "an"),
    _Target("lower_lip", ("lower_lip",), "lower lip", "a"),
    _Target("teeth", ("mouth_interior",), "teeth"),
    _Target("skin", _SKIN_GROUP, "skin"),
    _Target("face", ("skin", "nose"), "face", "a"),
    _Target("nose", ("nose",), "nose", "a"),
    _Target("ears", _EARS, "ears"),
    _Target("left_ear", ("left_ear",), "left ear", "a"),
    _Target("right_ear", ("right_ear",), "right ear", "a"),
    _Target("neck", ("neck",), "neck", "a"),
    _Target("clothes", ("clothes",), None, wear=True),
)}

_TARGET_WORDS: dict[str, tuple[str, ...]] = {
    "hair": ("hair", "hairs", "hairstyle", "hair style", "haircut", "hairdo", "locks", "bangs", "fringe",
             "ponytail", "pony tail", "braid", "braids", "curls", "hair colour", "mane"),
    "brows": ("eyebrows", "eyebrow", "brows", "brow", "unibrow"),
    "left_brow": ("left eyebrow", "left brow"),
    "right_brow": ("right eyebrow", "right brow"),
    "eyes": ("eyes", "eye", "irises", "iris", "pupils", "eye colour", "eyelashes", "lashes"),
    "left_eye": ("left eye", "left iris"),
    "right_eye": ("right eye", "right iris"),
    "lips": ("lips", "lip", "lipstick", "lip colour", "mouth"),
    "upper_lip": ("upper lip", "top lip"),
    "lower_lip": ("lower lip", "bottom lip"),
    "teeth": ("teeth", "tooth", "tongue"),
    "skin": ("skin", "skin tone", "complexion", "body"),
    "face": ("face", "cheeks", "cheek", "forehead", "chin"),
    "nose": ("nose",),
    "ears": ("ears", "ear"),
    "left_ear": ("left ear",),
    "right_ear": ("right ear",),
    "neck": ("neck", "throat"),
    "clothes": ("clothes", "clothing", "outfit", "shirt", "t shirt", "tshirt", "tee", "top", "blouse", "jacket",
                "coat", "sweater", "jumper", "hoodie", "dress", "suit", "uniform", "collar", "vest", "cardigan",
                "turtleneck", "tank top", "jersey", "robe", "kimono", "blazer"),
}


@dataclasses.dataclass(frozen=True)
class _Item:
    """Something worn or added on the head: it can be added, removed or (when present) changed."""

    key: str
    regions: tuple[str, ...]  # the labels the object covers (what an add/remove may change)
    own_label: str | None = None  # the label of the object itself, when the label set has one
    add_kind: str = "accessory"  # makeup and freckles are appearance edits, not objects
    wear: bool = True  # "wearing glasses" vs "with a beard"
    hair_like: bool = False


_ITEMS: dict[str, _Item] = {i.key: i for i in (
    # glasses sit on the nose and cover the eyes and the skin around them
    _Item("glasses", ("eyeglasses", *_EYES, "nose", "skin"), "eyeglasses"),
    _Item("headwear", ("headwear", "hair"), "headwear"),
    _Item("headphones", ("headwear", "hair", *_EARS), "headwear"),
    _Item("earrings", _EARS),
    _Item("nose_ring", ("nose",)),
    _Item("neckwear", ("neck", "clothes")),
    _Item("mask", ("skin", "nose", *_LIPS)),
    _Item("beard", ("skin",), wear=False, hair_like=True),  # no beard label: facial hair grows on skin
    _Item("makeup", ("skin", *_LIPS, *_EYES), add_kind="appearance"),
    _Item("eye_makeup", ("skin", *_EYES), add_kind="appearance"),
    _Item("skin_detail", ("skin", "nose"), add_kind="appearance", wear=False),
    _Item("tattoo", ("skin", "neck"), add_kind="appearance", wear=False),
)}

_ITEM_WORDS: dict[str, tuple[str, ...]] = {
    "glasses": ("glasses", "eyeglasses", "spectacles", "specs", "sunglasses", "sun glasses", "shades", "goggles",
                "monocle", "aviators"),
    "headwear": ("hat", "hats", "cap", "caps", "baseball cap", "beanie", "beret", "fedora", "helmet", "crown",
                 "tiara", "headband", "head band", "bandana", "turban", "hood", "top hat", "cowboy hat", "sombrero",
                 "headscarf", "head scarf", "hijab", "wizard hat", "witch hat", "party hat", "bucket hat", "visor",
                 "hair clip", "hairclip", "hair bow", "flower crown", "wreath", "bonnet", "halo"),
    "headphones": ("headphones", "earphones", "headset", "earbuds"),
    "earrings": ("earrings", "earring", "ear rings", "ear ring", "hoop earrings", "hoops", "studs",
                 "ear piercing", "ear piercings"),
    "nose_ring": ("nose ring", "nose piercing", "nose stud"),
    "neckwear": ("necklace", "choker", "pendant", "chain", "scarf", "tie", "necktie", "bow tie", "bowtie", "pearls",
                 "pearl necklace", "medallion"),
    "mask": ("mask", "face mask", "surgical mask"),
    "beard": ("beard", "beards", "moustache", "mustache", "stubble", "goatee", "sideburns", "facial hair"),
    "makeup": ("makeup", "make up", "clown makeup"),
    "eye_makeup": ("eyeshadow", "eye shadow", "eyeliner", "eye liner", "mascara"),
    "skin_detail": ("freckles", "freckle", "scar", "scars", "wrinkles", "acne", "pimples", "beauty mark", "mole",
                    "blush", "face paint", "war paint", "dimples"),
    "tattoo": ("tattoo", "tattoos"),
}
_MASS_NOUNS = frozenset({"makeup", "make up", "clown makeup", "stubble", "facial hair", "eyeshadow", "eye shadow",
                         "eyeliner", "eye liner", "mascara", "blush", "face paint", "war paint", "acne"})

_MATERIAL_WORDS: dict[str, tuple[str, ...]] = {
    "metallic": ("metallic", "metal", "chrome plated", "chromed", "liquid metal"),
    "glossy": ("glossy", "gloss", "shiny", "shine", "lustrous", "wet look", "polished", "glassy", "sleek"),
    "matte": ("matte", "matt", "dull", "powdery", "powdered"),
    "velvet": ("velvet", "velvety", "suede", "plush", "fuzzy"),
}
_MATERIAL_ADJ = {"metallic": "metallic", "glossy": "glossy", "matte": "matte", "velvet": "velvety"}

# Bare tone words a person uses for hair, skin and eyes ("dark hair", "fair skin").
_TONES: dict[str, dict[str, str]] = {
    "hair": {"dark": "#2a1c14", "light": "#c8aa78", "fair": "#dcc396"},
    "skin": {"dark": "#5c3a26", "light": "#ecccb4", "fair": "#f0d2be", "pale": "#f4dcd0", "tanned": "#b98a62"},
    "eyes": {"dark": "#3a2414", "light": "#8cb4c8"},
}

_PERSON_RE = re.compile(r"\b(?:her|him|them|she|he|they|the (?:person|man|woman|guy|girl|boy|lady|avatar|character"
                        r"|subject|model)|everything|everyone)\b")
_VERBS = frozenset({"make", "turn", "change", "give", "add", "put", "dye", "paint", "colour", "recolour", "set",
                    "let", "have", "remove", "take", "get", "delete", "erase", "shave", "render", "transform",
                    "convert", "apply", "swap", "replace", "switch", "keep", "please", "can", "could", "show",
                    "tint", "bleach", "style", "draw", "wear", "place", "attach", "lighten", "darken"})
_ADD_VERB_RE = re.compile(r"\b(?:add|adds|adding|give|gives|giving|put|puts|putting|wear|wears|wearing|with|don|"
                          r"equip|place|attach|draw|paint on|apply)\b")
_DEFINITE = frozenset({"the", "his", "her", "their", "its", "those", "these", "this", "that", "my", "your"})
_STOP = frozenset("""a an the his her him their them they he she it its to of with and but into in on onto at for
    from by as please person man woman guy girl boy lady avatar character subject model look looks looking like be
    is are was so that this these those some more make makes turn turns change changes give gives add adds put
    dye dyed paint painted colour coloured recolour set have let me my your our also then both all now just want
    would should can could up bit little slightly very really super extra quite rather lot tad touch hint
    somewhat subtle subtly faint faintly mildly barely i we you wearing wear wears one pair colours colour
    light pale pastel dark deep bright vivid vibrant neon muted dusty soft rich same new different s""".split())

_LOW_ADVERB = (r"\b(?:slightly|slight|a (?:little )?bit(?: of)?|a little|a tad|a touch(?: of)?|a hint(?: of)?"
               r"|hint of|subtle|subtly|faint|faintly|somewhat|mildly|barely|partially|partly)\b")
_LOW_EXPR = _LOW_ADVERB[:-3] + r"|small|gentle|gently|soft|softly|half|mild|tiny|little)\b"
_HIGH_EXPR = (r"\b(?:very|big|bigger|wide|widely|broad|broadly|huge|hugely|really|strongly|strong|a lot|lots"
              r"|super|intense|intensely|so|extra|exaggerated|extreme|extremely|fully|completely|totally|deep|deeply"
              r"|wide open)\b")
_PERCENT = re.compile(r"\b(\d{1,3})\s*%")


def _alternation(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


def _lexicon(words: dict[str, tuple[str, ...]]) -> tuple[re.Pattern, dict[str, str]]:
    """A regex matching any phrase (longest first) and the phrase -> key table."""
    table = {p: k for k, ps in words.items() for p in ps}
    return re.compile(r"\b(?:" + _alternation(table) + r")\b"), table


_TARGET_RE, _TARGET_OF = _lexicon(_TARGET_WORDS)
_ITEM_RE, _ITEM_OF = _lexicon(_ITEM_WORDS)
_MATERIAL_RE, _MATERIAL_OF = _lexicon(_MATERIAL_WORDS)

# ---------------------------------------------------------------- negation ("keep X", "not X")
_NEG_RE = re.compile(
    r"\b(?:but\s+)?(?:not|except(?:\s+for)?|excluding|apart\s+from|other\s+than|keep(?:s|ing)?|preserv(?:e|es|ing)"
    r"|protect(?:s|ing)?|leav(?:e|es|ing)|don'?t\s+(?:change|touch|alter|modify|edit|affect|recolour|colour)"
    r"|do\s+not\s+(?:change|touch|alter|modify|edit|affect|recolour|colour)|never\s+(?:change|touch)"
    r"|without\s+(?:changing|touching|altering|modifying|editing|affecting|recolouring|colouring)"
    r"|no\s+changes?\s+(?:to|on|in)|only\s+not)\b")
_NO_RE = re.compile(r"\b(?:without|no|with\s+no|minus)\s+(?:(?:any|the|his|her|their|a|an|more)\s+)?")
_POSTFIX_NEG_RE = re.compile(r"\b(?:unchanged|untouched|as\s+is|as\s+they\s+are|as\s+it\s+is|the\s+same|intact"
                             r"|alone|stays?|remains?)\b")
_BUT_RE = re.compile(r"\bbut\b")
# "keep everything else the same" says what the region mask does anyway: not an edit, not a region
_REST_RE = re.compile(r"\b(?:keep|keeping|leave|leaving|preserve|preserving|don'?t\s+change|do\s+not\s+change)\s+"
                      r"(?:everything|all|anything|the\s+rest)(?:\s+else)?(?:\s+(?:the\s+same|unchanged|untouched"
                      r"|as\s+(?:it\s+)?is|intact|alone))?\b")

# ---------------------------------------------------------------- removal
_REMOVE_VERB_RE = re.compile(r"\b(?:remove[sd]?|removing|take\s+off|takes\s+off|taking\s+off|take\s+away"
                             r"|get\s+rid\s+of|delete|erase|strip|shave\s+off|shave[sd]?|shaving|lose)\b")
_BALD_RE = re.compile(r"\b(?:bald|hairless|shaved\s+head|shaven\s+head)\b")
_SHAVEN_RE = re.compile(r"\b(?:clean\s+shaven|clean\s+shaved|beardless|shaved\s+face|smooth\s+shaven)\b")
_TAKE_OFF_RE = re.compile(r"\btake\s+((?:\S+\s+){1,4}?)off\b")

# ---------------------------------------------------------------- expressions
_DET = r"(?:(?:the|his|her|their|its|both|your)\s+)?"
_EXPRESSION_PATTERNS: tuple[tuple[str, str], ...] = (
    ("neutral", r"\b(?:neutral(?:\s+expression|\s+face)?|expressionless|straight\s+face|poker\s+face"
                r"|blank\s+(?:face|expression|stare)|stop\s+(?:smiling|frowning)|no\s+(?:smile|expression)"
                r"|not\s+smiling|(?:do\s+not|don'?t)\s+smile|relaxed\s+face|resting\s+face)\b"),
    ("laugh", r"\blaugh(?:s|ed|ing)?\b"),
    ("smile", r"\b(?:smil(?:e|es|ed|ing)|grin(?:s|ned|ning)?|happy|happier|cheerful|joyful|beaming)\b"),
    ("frown", r"\b(?:frown(?:s|ed|ing)?|scowl(?:s|ed|ing)?)\b"),
    ("angry", r"\b(?:angry|angrier|anger|furious|mad|annoyed|grumpy|rage|enraged)\b"),
    ("sad", r"\b(?:sad|sadder|unhappy|upset|cry|crying|sorrowful|gloomy|depressed|melancholy|tearful)\b"),
    ("surprise", r"\b(?:surprise[ds]?|surprising|shock(?:ed)?|astonish(?:ed)?|amazed|stunned|startled"
                 r"|awestruck)\b"),
    ("open_mouth", r"\b(?:open(?:s|ed|ing)?\s+" + _DET + r"mouth(?:\s+wide)?|mouth\s+(?:wide\s+)?open"
                   r"|open\s+mouth(?:ed)?|yawn(?:s|ed|ing)?|jaw\s+drop(?:ped)?|drop(?:s|ped)?\s+" + _DET
                   + r"jaw|gaping|gasp(?:s|ed|ing)?)\b"),
    ("close_mouth", r"\b(?:close[sd]?\s+" + _DET + r"mouth|closed\s+mouth|mouth\s+(?:closed|shut)|shut\s+" + _DET
                    + r"mouth)\b"),
    ("closed_eyes", r"\b(?:(?:half\s+)?close[sd]?\s+" + _DET + r"eyes|(?:half\s+)?closed\s+eyes|eyes\s+(?:are\s+)?"
                    r"(?:half\s+)?(?:closed|shut)|shut\s+" + _DET + r"eyes|blink(?:s|ed|ing)?|sleep(?:s|ing|y)?"
                    r"|asleep)\b"),
    ("open_eyes", r"\b(?:open(?:s|ed)?\s+" + _DET + r"eyes|eyes\s+(?:wide\s+)?open|wide\s+eyed)\b"),
    ("raised_brows", r"\b(?:rais(?:e|es|ed|ing)\s+" + _DET + r"(?:eye)?brows?|lift(?:s|ed|ing)?\s+" + _DET
                     + r"(?:eye)?brows?|(?:eye)?brows?\s+(?:raised|up|lifted)|raised\s+(?:eye)?brows?)\b"),
    ("wink", r"\bwink(?:s|ed|ing)?\b(?:\s+(?:with\s+)?" + _DET + r"(?:left|right)(?:\s+eye)?)?"),
    ("pucker", r"\b(?:pucker(?:s|ed|ing)?|kiss(?:y|ing)?|pout(?:s|ed|ing|y)?|duck\s+face)\b"),
)
_EXPRESSION_RES = tuple((name, re.compile(p)) for name, p in _EXPRESSION_PATTERNS)
# default intensity of each expression when no adverb is given
_EXPR_DEFAULT = {"smile": 0.7, "frown": 0.6, "angry": 0.7, "sad": 0.7, "surprise": 0.7, "open_mouth": 0.6,
                 "closed_eyes": 1.0, "raised_brows": 0.7, "wink_left": 1.0, "wink_right": 1.0, "pucker": 0.7,
                 "neutral": 1.0}
_EXPR_REGIONS: dict[str, tuple[str, ...]] = {
    "smile": (*_LIPS, "mouth_interior", "skin"),
    "frown": (*_BROWS, "skin", *_LIPS),
    "angry": (*_BROWS, *_EYES, "skin", *_LIPS),
    "sad": (*_BROWS, *_EYES, "skin", *_LIPS),
    "surprise": (*_BROWS, *_EYES, *_LIPS, "mouth_interior", "skin"),
    "open_mouth": (*_LIPS, "mouth_interior", "skin"),
    "closed_eyes": (*_EYES, "skin"),
    "raised_brows": (*_BROWS, "skin"),
    "wink_left": ("left_eye", "skin"),
    "wink_right": ("right_eye", "skin"),
    "pucker": (*_LIPS, "skin"),
    "neutral": (*_BROWS, *_EYES, *_LIPS, "mouth_interior", "skin"),
}
assert set(_EXPR_DEFAULT) == set(_EXPR_REGIONS) == set(EXPRESSIONS)

_SPLIT_RE = re.compile(r"\s*(?:[,;]|\s(?:and\s+then|and\s+also|then|also|plus|&)\s|(?<!salt)\sand\s)\s*")


# ====================================================================== text helpers
def _normalise(text: str) -> str:
    """Lower case, one spelling (colour, grey), no hyphens, sentence ends as clause breaks."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"\bcolor", "colour", t)
    t = re.sub(r"\bgray", "grey", t)
    t = re.sub(r"\beye\s+brows?\b", lambda m: m.group(0).replace(" ", ""), t)
    t = re.sub(r"\beye\s+lashes\b", "eyelashes", t)
    t = t.replace("-", " ")
    t = re.sub(r"[.!?:]+", ",", t)
    t = re.sub(r"[^a-z0-9,;&%' ]+", " ", t)
    t = re.sub(r"\s+", " ", t)
    return t.strip(" ,;")


def _blank(text: str, start: int, end: int) -> str:
    """Replace a span by spaces, keeping every other index where it was."""
    return text[:start] + " " * (end - start) + text[end:]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text)


def _join(parts: list[str], conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" {conj} " + parts[-1]


def _pretty(noun: str) -> str:
    return re.sub(r"\bt shirt\b", "t-shirt", noun)


def _with_article(phrase: str) -> str:
    """'red hat' -> 'a red hat'; plural and mass nouns and phrases with an article stay as they are."""
    words = phrase.split()
    if not words or words[0] in ("a", "an", "some") or words[0] in _DEFINITE:
        return phrase
    last = words[-1]
    if (last.endswith("s") and not last.endswith("ss")) or phrase in _MASS_NOUNS or any(
            phrase.endswith(m) for m in _MASS_NOUNS):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _pronouns(norm: str) -> tuple[str, str]:
    """(object, possessive) for the person the prompt talks about: ('her', 'her'), ('him', 'his')..."""
    if re.search(r"\b(?:she|her|hers|herself|woman|girl|lady)\b", norm):
        return "her", "her"
    if re.search(r"\b(?:he|him|his|himself|man|guy|boy)\b", norm):
        return "him", "his"
    return "the person", "their"


# ====================================================================== clause analysis
@dataclasses.dataclass
class _Draft:
    """One edit found in a clause, before it is rendered into an EditPlan."""

    kind: str
    pos: int  # where in the clause it was found (drafts keep the prompt's order)
    targets: list[tuple[_Target, str]] = dataclasses.field(default_factory=list)  # (target, as said)
    items: list[tuple[_Item, str]] = dataclasses.field(default_factory=list)  # (item, phrase as said)
    colour: ColourMatch | None = None
    material: str | None = None
    expression: dict[str, float] | None = None
    low: bool = False  # "slightly", "a bit": a weaker edit
    percent: float | None = None  # "50%" said explicitly
    text: str = ""  # the clause, for instructions of free-form edits
    residual: list[str] = dataclasses.field(default_factory=list)  # content words no rule explained
    special: str | None = None  # "bald", "clean_shaven"


@dataclasses.dataclass
class _Clause:
    text: str
    drafts: list[_Draft]
    preserve: set[str]
    has_target: bool  # names a region, an object or an expression
    has_content: bool  # has words no rule explained (a free-form edit)
    starts_with_verb: bool

    @property
    def complete(self) -> bool:
        return bool(self.drafts) or bool(self.preserve) or (self.has_content and not self.has_target)

    @property
    def target_only(self) -> bool:
        return not self.complete and self.has_target


def _mentions(text: str) -> list[tuple[str, Any, re.Match]]:
    """Items and targets named in ``text`` (items first, so 'hair clip' is not 'hair')."""
    found: list[tuple[str, Any, re.Match]] = []
    for m in _ITEM_RE.finditer(text):
        found.append(("item", _ITEMS[_ITEM_OF[m.group(0)]], m))
        text = _blank(text, m.start(), m.end())
    for m in _TARGET_RE.finditer(text):
        found.append(("target", _TARGETS[_TARGET_OF[m.group(0)]], m))
    return sorted(found, key=lambda f: f[2].start())


def _preserved_labels(mentions) -> set[str]:
    out: set[str] = set()
    for what, obj, _ in mentions:
        if what == "target":
            out.update(obj.regions)
        elif obj.own_label:
            out.add(obj.own_label)
    return out


def _find_negations(text: str) -> tuple[str, set[str]]:
    """Blank the spans the user protects ("but keep the brows"); return (rest, protected labels).

    A span runs from its trigger to the next "but" or the clause end, and counts only if it names a
    region or object (so "not too dark" stays a modifier). "without"/"no" followed by an object are
    removals, handled elsewhere; followed by a region they protect it.
    """
    preserve: set[str] = set()
    starts = [m.start() for m in _NEG_RE.finditer(text)]
    for m in _NO_RE.finditer(text):
        rest = text[m.end():]
        first = _mentions(rest)
        if first and first[0][2].start() == 0 and first[0][0] == "target":
            starts.append(m.start())
    for s in sorted(starts, reverse=True):
        nxt = _BUT_RE.search(text, s + 4)
        e = nxt.start() if nxt else len(text)
        found = _mentions(text[s:e])
        if found:
            preserve |= _preserved_labels(found)
            text = _blank(text, s, e)
    if not starts:
        post = _POSTFIX_NEG_RE.search(text)
        before = _mentions(text[:post.start()]) if post else []
        if post and before:
            last = before[-1]
            preserve |= _preserved_labels([last])
            text = _blank(text, last[2].start(), post.end())
    return text, preserve


def _find_expressions(text: str) -> tuple[str, dict[str, float], set[str], int]:
    """Expression words -> ({name: default intensity}, names said with an exact amount, first position).

    Their spans are blanked so "close the eyes" does not also name the eyes as a region.
    """
    found: dict[str, float] = {}
    exact: set[str] = set()
    first = len(text)
    for name, rx in _EXPRESSION_RES:
        for m in rx.finditer(text):
            first = min(first, m.start())
            span = m.group(0)
            text = _blank(text, m.start(), m.end())
            if name == "laugh":
                found["smile"] = max(found.get("smile", 0.0), 0.9)
                found["open_mouth"] = max(found.get("open_mouth", 0.0), 0.6)
            elif name == "close_mouth":
                found["open_mouth"] = 0.0
            elif name == "open_eyes":
                found["closed_eyes"] = 0.0
            elif name == "wink":
                found["wink_right" if re.search(r"\bright\b", span) else "wink_left"] = 1.0
            elif name == "closed_eyes" and "half" in span:
                found["closed_eyes"] = 0.5
                exact.add("closed_eyes")
            else:
                found[name] = _EXPR_DEFAULT[name]
    if "neutral" in found:
        found.pop("smile", None)
    return text, found, exact, first


def _scale_expression(expr: dict[str, float], exact: set[str], low: bool, high: bool,
                      percent: float | None) -> dict[str, float]:
    """Adverbs move every non-zero intensity: low halves it, high lifts it to at least 0.95."""
    out = {}
    for k, v in expr.items():
        if v > 0.0 and k != "neutral" and k not in exact:
            if percent is not None:
                v = percent
            elif low and not high:
                v = v * 0.5
            elif high and not low:
                v = max(v, 0.95)
        out[k] = round(min(max(v, 0.0), 1.0), 3)
    return out


def _find_removals(text: str) -> tuple[str, list[tuple[Any, str]], str | None, int]:
    """Objects and regions the clause removes -> (rest, [(item or target, phrase)], special, position)."""
    removed: list[tuple[Any, str]] = []
    special = None
    pos = len(text)
    for rx, key in ((_BALD_RE, "bald"), (_SHAVEN_RE, "clean_shaven")):
        m = rx.search(text)
        if m:
            special, pos = key, min(pos, m.start())
            text = _blank(text, m.start(), m.end())
    for m in _NO_RE.finditer(text):  # "no beard", "without glasses"
        rest = text[m.end():]
        first = _mentions(rest)
        if first and first[0][0] == "item" and re.fullmatch(r"(?:\S+\s+){0,2}", rest[:first[0][2].start()]):
            im = first[0][2]
            s, e = m.end() + im.start(), m.end() + im.end()
            removed.append((first[0][1], _item_phrase(text, s, e, definite_ok=True)))
            pos = min(pos, m.start())
            text = _blank(text, m.start(), e)
    verb = _REMOVE_VERB_RE.search(text)
    if verb:
        pos = min(pos, verb.start())
        stop = _BUT_RE.search(text, verb.end())
        end = stop.start() if stop else len(text)
        objs = _mentions(text[verb.end():end])
        if not objs and re.search(r"\bhead\b", text[verb.end():end]) and verb.group(0).startswith("shav"):
            special = "bald"
        elif not objs and verb.group(0).startswith("shav"):
            special = special or "clean_shaven"
        for what, obj, m in objs:
            s, e = verb.end() + m.start(), verb.end() + m.end()
            phrase = _item_phrase(text, s, e, definite_ok=True) if what == "item" else (obj.noun or m.group(0))
            removed.append((obj, phrase))
        text = _blank(text, verb.start(), end)
    return text, removed, special, pos


_PHRASE_STOP = _VERBS | _DEFINITE | {"and", "or", "with", "on", "onto", "to", "in", "into", "of", "for", "him",
                                     "them", "wearing", "wears", "no", "without", "any", "off", "away", "rid",
                                     "but", "also", "then", "plus", "she", "he", "they", "it", "person", "s",
                                     "slightly", "very", "bit", "little"}


def _phrase_start(text: str, start: int) -> int:
    """Where the object's phrase begins: up to four adjectives and an article before its noun."""
    begin = start
    for n, w in enumerate(reversed(list(re.finditer(r"[a-z0-9']+", text[:start])))):
        if w.group(0) in ("a", "an"):
            return w.start()
        if w.group(0) in _PHRASE_STOP or n >= 4:
            break
        begin = w.start()
    return begin


def _item_phrase(text: str, start: int, end: int, definite_ok: bool = False) -> str:
    """The object as said with its adjectives: 'give her a red baseball cap' -> 'a red baseball cap'.

    ``definite_ok``: drop a leading a/an (the phrase will follow "the": "remove the glasses").
    """
    phrase = " ".join(_words(text[_phrase_start(text, start):end]))
    if definite_ok and phrase.startswith(("a ", "an ")):
        phrase = phrase.split(" ", 1)[1]
    return _pretty(phrase)


def _item_is_definite(text: str, start: int) -> bool:
    """True when the word before the object's phrase points at one already there ('the hat', 'his glasses')."""
    before = _words(text[:start])
    for w in reversed(before):
        if w in _DEFINITE:
            return True
        if w in _PHRASE_STOP or w in ("a", "an"):
            return False
    return False


def _colour_for(text: str, targets: list[_Target] | list[_Item]) -> ColourMatch | None:
    """The first colour in ``text``, read for the first target (hair, eyes and skin have their own readings)."""
    first = targets[0] if targets else None
    overrides = None
    if first is not None and getattr(first, "hair_like", False):
        overrides = HAIR_LIKE_OVERRIDES
    elif isinstance(first, _Target) and first.key in ("eyes", "left_eye", "right_eye"):
        overrides = EYE_OVERRIDES
    elif isinstance(first, _Target) and first.key in ("skin", "face"):
        overrides = SKIN_OVERRIDES
    return find_colour(text, overrides)


def _tone_for(text: str, target: _Target) -> ColourMatch | None:
    """'dark hair', 'fair skin', 'light eyes': a tone word without a colour name."""
    family = {"hair": "hair", "brows": "hair", "skin": "skin", "face": "skin", "eyes": "eyes"}.get(target.key)
    if family is None:
        return None
    tones = _TONES[family]
    m = re.search(r"\b(" + "|".join(tones) + r")\b", text)
    if not m:
        return None
    return ColourMatch(name=m.group(1), base=m.group(1), rgb=hex_to_rgb(tones[m.group(1)]), start=m.start(),
                       end=m.end())


def _material_in(text: str) -> str | None:
    m = _MATERIAL_RE.search(text)
    return _MATERIAL_OF[m.group(0)] if m else None


def _implied_material(colour: ColourMatch | None, material: str | None, hair_like_or_eyes: bool) -> str | None:
    """Metal names mean metal, except on hair and eyes (see the module docstring)."""
    if material is None and colour is not None and colour.is_metal and not hair_like_or_eyes:
        return "metallic"
    return material


def _analyse(clause: str) -> _Clause:
    """Everything one clause asks for: drafts of edits, protected labels, and how complete it is."""
    text = _TAKE_OFF_RE.sub(lambda m: "take off " + m.group(1), _REST_RE.sub(" ", clause))
    starts_with_verb = bool(_words(text)) and _words(text)[0] in _VERBS
    text, preserve = _find_negations(text)
    text, expression, exact, expr_pos = _find_expressions(text)
    text, removed, special, remove_pos = _find_removals(text)
    low = bool(re.search(_LOW_ADVERB, text))
    pct = _PERCENT.search(text)
    percent = min(int(pct.group(1)), 100) / 100.0 if pct else None
    drafts: list[_Draft] = []
    if removed or special:
        drafts.append(_Draft("remove", remove_pos, items=[(o, p) for o, p in removed if isinstance(o, _Item)],
                             targets=[(o, p) for o, p in removed if isinstance(o, _Target)], special=special,
                             text=clause))
    if expression:
        low_expr, high_expr = bool(re.search(_LOW_EXPR, clause)), bool(re.search(_HIGH_EXPR, clause))
        expr = _scale_expression(expression, exact, low_expr, high_expr, percent)
        drafts.append(_Draft("expression", expr_pos, expression=expr, text=clause))
    item_drafts, targets_text, modified = _item_drafts(text, low, percent, clause)
    drafts.extend(item_drafts)
    target_drafts, residual, has_targets = _target_drafts(targets_text, text, modified, low, percent, clause,
                                                          quiet=bool(drafts))
    drafts.extend(target_drafts)
    has_target = has_targets or bool(expression) or bool(removed) or bool(item_drafts) or bool(special)
    return _Clause(clause, sorted(drafts, key=lambda d: d.pos), preserve, has_target, bool(residual),
                   starts_with_verb)


def _item_drafts(text: str, low: bool, percent: float | None, clause: str):
    """Objects to add (accessory/appearance drafts) and objects already there to change.

    Returns (drafts, text with the objects blanked for the region search, [(item, noun) to modify]).
    """
    add_verb = bool(_ADD_VERB_RE.search(text))
    added: dict[str, _Draft] = {}
    modified: list[tuple[_Item, str, int]] = []
    rest = text
    for m in _ITEM_RE.finditer(text):
        item = _ITEMS[_ITEM_OF[m.group(0)]]
        phrase = _item_phrase(text, m.start(), m.end())
        rest = _blank(rest, m.start(), m.end())
        if _item_is_definite(text, m.start()) and not add_verb:
            modified.append((item, m.group(0), m.start()))
            continue
        ph_start = _phrase_start(text, m.start())
        span = text[ph_start:m.end()]
        d = added.setdefault(item.add_kind, _Draft(item.add_kind, m.start(), low=low, percent=percent, text=clause))
        d.items.append((item, phrase))
        colour = find_colour(span, HAIR_LIKE_OVERRIDES if item.hair_like else None)
        if colour is not None and d.colour is None:
            d.colour = colour
            rest = _blank(rest, ph_start + colour.start, ph_start + colour.end)
        material = _material_in(span)
        d.material = _implied_material(colour, d.material or material, item.hair_like)
    return list(added.values()), rest, modified


def _item_as_target(item: _Item, said: str) -> _Target:
    """An object already worn, named as a region to recolour ('make the glasses red')."""
    regions = (item.own_label,) if item.own_label else item.regions
    article = _with_article(said).split(" ")[0] if _with_article(said) != said else ""
    return _Target("item:" + item.key, regions, said, article, wear=item.wear, hair_like=item.hair_like,
                   labelless=item.own_label is None)


def _target_drafts(targets_text: str, text: str, modified, low: bool, percent: float | None, clause: str,
                   quiet: bool):
    """Colour / material / free-form drafts on named regions (and on objects already there).

    ``quiet``: the clause already has another edit, so regions without a colour or material are
    context ("add earrings to the ears"), not a free-form edit of their own.
    """
    found = [(_TARGETS[_TARGET_OF[m.group(0)]], m.group(0), m.start(), m.end())
             for m in _TARGET_RE.finditer(targets_text)]
    found += [(_item_as_target(i, said), said, s, s + len(said)) for i, said, s in modified]
    found.sort(key=lambda f: f[2])
    rest = targets_text
    for _, _, s, e in found:
        rest = _blank(rest, s, e)
    targets = [t for t, *_ in found]
    colour = _colour_for(rest, targets)
    if colour is None and targets:
        colour = _tone_for(rest, targets[0])
    if colour is None:
        colour = _colour_for(rest, [])
    material = _material_in(rest)
    if colour is not None:
        rest = _blank(rest, colour.start, colour.end)
    if material is not None:
        m = _MATERIAL_RE.search(rest)
        rest = _blank(rest, m.start(), m.end()) if m else rest
    rest = re.sub(_LOW_ADVERB, " ", rest)
    words = [w[:-2] if w.endswith("'s") else w for w in _words(rest)]  # "the person's hair"
    residual = [w for w in words if w not in _STOP and not w.isdigit() and not _PERSON_RE.fullmatch(w)]
    if not found and colour is not None and (colour.base in HAIR_ONLY_NAMES):
        found, targets = [(_TARGETS["hair"], "hair", colour.start, colour.end)], [_TARGETS["hair"]]
    elif not found and colour is not None and _PERSON_RE.search(text) and not quiet:
        found, targets = [(_TARGETS["skin"], "skin", colour.start, colour.end)], [_TARGETS["skin"]]
    if not found:
        return [], residual, False
    if colour is None and material is None and (quiet or not residual):
        return [], residual, True
    return _split_by_label(found, colour, material, low, percent, clause, residual), residual, True


def _split_by_label(found, colour, material, low, percent, clause, residual) -> list[_Draft]:
    """Regions with a label get a colour draft; objects without one (beards, earrings) an appearance draft."""
    drafts = []
    for labelless in (False, True):
        group = [(t, said) for t, said, s, e in found if t.labelless == labelless]
        if not group:
            continue
        pos = min(s for t, said, s, e in found if t.labelless == labelless)
        hairish = any(t.hair_like or t.key in ("eyes", "left_eye", "right_eye") for t, _ in group)
        mat = _implied_material(colour, material, hairish)
        kind = "colour" if colour is not None and not labelless else "appearance"
        drafts.append(_Draft(kind, pos, targets=group, colour=colour, material=mat, low=low, percent=percent,
                             text=clause, residual=residual))
    return drafts


# ====================================================================== clauses of a prompt
def _clauses(norm: str) -> list[_Clause]:
    """Split on 'and' / ',' / ';' / 'then', then glue back the pieces that are not edits on their own.

    "red hair and lips": "lips" names a region but asks nothing -> joins the clause before it.
    "make the hair and the eyes blue": "make the hair" -> joins the clause after it (it starts with a verb).
    "red and blue hair": "red" names nothing -> joins the clause after it.
    """
    parts = [p for p in _SPLIT_RE.split(norm) if p and p.strip(" ,;")]
    clauses = [_analyse(p.strip()) for p in parts] or [_analyse(norm)]
    changed = True
    while changed and len(clauses) > 1:
        changed = False
        for i, c in enumerate(clauses):
            if c.complete:
                continue
            if c.target_only and i > 0 and not c.starts_with_verb:
                j = i - 1
            else:
                j = i + 1 if i + 1 < len(clauses) else i - 1
            lo, hi = min(i, j), max(i, j)
            clauses[lo:hi + 1] = [_analyse(clauses[lo].text + " and " + clauses[hi].text)]
            changed = True
            break
    return clauses


# ====================================================================== rendering drafts into plans
def _names(targets) -> str:
    return _join([f"the {_pretty(t.noun or said)}" for t, said in targets])


def _descriptor(d: _Draft) -> str:
    """'metallic gold', 'glossy', 'red' -- the words that describe the new look."""
    words = []
    if d.material and not (d.colour is not None and d.material == "metallic" and d.colour.name.startswith("metal")):
        words.append(_MATERIAL_ADJ[d.material])
    if d.colour is not None:
        words.append(d.colour.name)
    return " ".join(words)


def _described(targets, desc: str) -> str:
    """'a photo of a person with red hair and red lips, wearing a red shirt'."""
    having, wearing = [], []
    for t, said in targets:
        noun = _pretty(t.noun or said)
        phrase = f"{desc} {noun}".strip()
        if t.wear:
            wearing.append(_with_article(phrase))
        else:
            having.append(f"{t.article} {phrase}".strip() if t.article else phrase)
    out = "a photo of a person"
    if having:
        out += " with " + _join(having)
    if wearing:
        out += (", wearing " if having else " wearing ") + _join(wearing)
    return out


def _regions(*groups) -> list[str]:
    seen: list[str] = []
    for g in groups:
        for r in g:
            if r not in seen:
                seen.append(r)
    return seen


def _strength(d: _Draft) -> float:
    if d.percent is not None:
        return max(d.percent, 0.05)
    return 0.5 if d.low else 1.0


def _render_colour(d: _Draft, obj: str) -> dict[str, Any]:
    desc = _descriptor(d)
    return dict(regions=_regions(*(t.regions for t, _ in d.targets)), instruction=f"make {_names(d.targets)} {desc}",
                positive_prompt=_described(d.targets, desc), colour=d.colour.rgb, colour_name=d.colour.name,
                material=d.material, strength=_strength(d))


def _render_appearance(d: _Draft, obj: str) -> dict[str, Any]:
    regions = _regions(*(t.regions for t, _ in d.targets), *(i.regions for i, _ in d.items))
    if d.items:  # makeup, freckles, tattoos
        phrases = [p for _, p in d.items]
        instruction = f"add {_join(phrases)}"
        positive = f"a photo of a person with {_join(phrases)}"
        if all(i.wear for i, _ in d.items):
            positive = f"a photo of a person wearing {_join(phrases)}"
        return dict(regions=regions, instruction=instruction, positive_prompt=positive, strength=_strength(d))
    desc = _descriptor(d)
    if desc:  # a material on its own, or a colour on something without a label of its own
        # Objects without a label (a beard) keep colour and material in words only: a palette
        # editor given them would restyle the whole region they sit on (all the skin).
        labelless = any(t.labelless for t, _ in d.targets)
        return dict(regions=regions, instruction=f"make {_names(d.targets)} {desc}",
                    positive_prompt=_described(d.targets, desc), material=None if labelless else d.material,
                    strength=_strength(d))
    words = _words(d.text)
    instruction = d.text if words and words[0] in _VERBS else f"give {obj} {d.text}"
    return dict(regions=regions, instruction=instruction,
                positive_prompt=_described(d.targets, " ".join(d.residual)), strength=_strength(d))


def _render_accessory(d: _Draft, obj: str) -> dict[str, Any]:
    phrases = [_with_article(p) for _, p in d.items]
    worn = [p for (i, _), p in zip(d.items, phrases) if i.wear]
    had = [p for (i, _), p in zip(d.items, phrases) if not i.wear]
    positive = "a photo of a person" + (" wearing " + _join(worn) if worn else "") + (
        (" and" if worn else "") + " with " + _join(had) if had else "")
    out = dict(regions=_regions(*(i.regions for i, _ in d.items)), instruction=f"add {_join(phrases)}",
               positive_prompt=positive, material=d.material)
    if d.colour is not None:
        out.update(colour=d.colour.rgb, colour_name=d.colour.name)
    return out


def _render_remove(d: _Draft, obj: str) -> dict[str, Any]:
    regions = _regions(*(i.regions for i, _ in d.items), *(t.regions for t, _ in d.targets))
    things = [p for _, p in d.items] + [_pretty(t.noun or said) for t, said in d.targets]
    instructions, without = [], []
    if d.special == "bald":
        regions = _regions(regions, ("hair",))
        instructions.append(f"make {obj} bald")
    if d.special == "clean_shaven" and not any(i.key == "beard" for i, _ in d.items):
        regions = _regions(regions, _ITEMS["beard"].regions)
        things.insert(0, "beard")
    if things:
        instructions.insert(0, "remove " + _join([f"the {t}" for t in things]))
        without = [_with_article(t) for t in things]
    positive = "a photo of a " + ("bald " if d.special == "bald" else "") + "person"
    if without:
        positive += " without " + _join(without, "or")
    return dict(regions=regions, instruction=" and ".join(instructions), positive_prompt=positive)


# expression -> (instruction verb phrase, description), with {poss}; low/high variants by suffix
_EXPR_PHRASES: dict[str, tuple[str, str]] = {
    "smile": ("smile", "smiling"), "frown": ("frown", "frowning"), "angry": ("look angry", "looking angry"),
    "sad": ("look sad", "looking sad"), "surprise": ("look surprised", "looking surprised"),
    "open_mouth": ("open {poss} mouth", "with an open mouth"), "closed_eyes": ("close {poss} eyes", "with closed eyes"),
    "raised_brows": ("raise {poss} eyebrows", "with raised eyebrows"),
    "wink_left": ("wink {poss} left eye", "winking the left eye"),
    "wink_right": ("wink {poss} right eye", "winking the right eye"),
    "pucker": ("pucker {poss} lips", "with puckered lips"), "neutral": ("look neutral", "with a neutral expression"),
}
_EXPR_ZERO: dict[str, tuple[str, str]] = {"open_mouth": ("close {poss} mouth", "with a closed mouth"),
                                          "closed_eyes": ("open {poss} eyes", "with open eyes")}


def _expression_phrase(name: str, v: float, poss: str) -> tuple[str, str]:
    """Instruction and description for one expression at intensity ``v``."""
    if v <= 0.0:
        verb, desc = _EXPR_ZERO.get(name, _EXPR_PHRASES[name])
    else:
        verb, desc = _EXPR_PHRASES[name]
        if v <= 0.5 and name != "neutral":
            verb = verb.replace("look ", "look slightly ") if verb.startswith("look") else verb + " slightly"
            desc = (desc.replace("with ", "with slightly ", 1) if desc.startswith("with")
                    else desc.replace("looking ", "looking slightly ", 1) if desc.startswith("looking")
                    else desc + " slightly")
        elif v >= 0.9 and name in ("smile", "open_mouth", "raised_brows", "surprise", "angry", "sad", "frown"):
            verb = verb.replace("look ", "look very ") if verb.startswith("look") else verb + {
                "smile": " broadly", "open_mouth": " wide", "raised_brows": " high", "frown": " deeply"}[name]
            desc = desc.replace("looking ", "looking very ") if desc.startswith("looking") else {
                "smile": "smiling broadly", "open_mouth": "with the mouth wide open",
                "raised_brows": "with high raised eyebrows", "frown": "frowning deeply"}[name]
    return verb.format(poss=poss), desc


def _render_expression(d: _Draft, obj: str, poss: str) -> dict[str, Any]:
    phrases = [_expression_phrase(k, v, poss) for k, v in d.expression.items()]
    regions = _regions(*(_EXPR_REGIONS[k] for k in d.expression))
    return dict(regions=regions, instruction=f"make {obj} " + _join([p[0] for p in phrases]),
                positive_prompt="a photo of a person " + _join([p[1] for p in phrases]),
                expression=dict(d.expression))


def _render(d: _Draft, prompt: str, preserve: set[str], pronouns: tuple[str, str]) -> EditPlan:
    """A draft -> a validated plan; protected labels leave ``regions`` (unless nothing would remain)."""
    obj, poss = pronouns
    if d.kind == "colour":
        fields = _render_colour(d, obj)
    elif d.kind == "accessory":
        fields = _render_accessory(d, obj)
    elif d.kind == "remove":
        fields = _render_remove(d, obj)
    elif d.kind == "expression":
        fields = _render_expression(d, obj, poss)
    elif d.targets or d.items:
        fields = _render_appearance(d, obj)
    else:  # free-form: the user's words are the instruction
        fields = dict(regions=["skin", "hair"], instruction=d.text, positive_prompt=f"a photo of a person, {d.text}")
    regions = list(fields.pop("regions"))
    kept = [r for r in regions if r not in preserve]
    if kept or d.kind == "expression":
        regions = kept
    plan_preserve = [r for r in LABEL_NAMES if r in preserve and r not in regions]
    params = kind_defaults(d.kind)
    params["strength"] = fields.pop("strength", params["strength"])
    return EditPlan(prompt=prompt, kind=d.kind, regions=regions, preserve=plan_preserve, refiner="rule",
                    **fields, **params).validate()


def _mergeable(a: _Draft, b: _Draft) -> bool:
    """Two drafts that one plan can carry without losing either."""
    if a.kind != b.kind or a.kind == "appearance":
        return False
    if a.kind == "colour":
        return a.colour.rgb == b.colour.rgb and a.material == b.material and a.low == b.low
    if a.kind == "accessory":
        return (a.colour is None or b.colour is None or a.colour.rgb == b.colour.rgb)
    return True


def _merge(a: _Draft, b: _Draft) -> _Draft:
    """One draft doing both; an expression said twice keeps its stronger intensity."""
    expression = None
    if a.expression is not None or b.expression is not None:
        expression = dict(a.expression or {})
        for k, v in (b.expression or {}).items():
            expression[k] = max(expression.get(k, 0.0), v)
    return dataclasses.replace(a, targets=a.targets + b.targets, items=a.items + b.items,
                               colour=a.colour or b.colour, material=a.material or b.material,
                               expression=expression, special=a.special or b.special,
                               text=f"{a.text} and {b.text}")


# ====================================================================== the rule refiner
class RuleRefiner:
    """Offline, deterministic refinement by a small grammar of edit requests (see the module docstring)."""

    name = "rule"

    def refine(self, prompt: str) -> EditPlan:
        """One plan for the prompt: mergeable edits are merged; otherwise the first clause wins (warned)."""
        drafts, preserve, pronouns = self._drafts(prompt)
        merged = [drafts[0]]
        for d in drafts[1:]:
            if _mergeable(merged[0], d):
                merged[0] = _merge(merged[0], d)
            else:
                merged.append(d)
        if len(merged) > 1:
            logger.warning("prompt %r asks for %d separate edits; refine() returns the first (%s); use "
                           "refine_all() for all of them", prompt, len(merged), merged[0].kind)
        return _render(merged[0], prompt, preserve, pronouns)

    def refine_all(self, prompt: str) -> list[EditPlan]:
        """One plan per independent edit, in the prompt's order; expressions combine into one face."""
        drafts, preserve, pronouns = self._drafts(prompt)
        out: list[_Draft] = []
        for d in drafts:
            same = next((o for o in out if o.kind == "expression" == d.kind), None)
            if same is not None:
                out[out.index(same)] = _merge(same, d)
            else:
                out.append(d)
        return [_render(d, prompt, preserve, pronouns) for d in out]

    def _drafts(self, prompt: str) -> tuple[list[_Draft], set[str], tuple[str, str]]:
        """The prompt's edits in order, the labels it protects, and the pronouns for instructions."""
        prompt = _check_prompt(prompt)
        norm = _normalise(prompt)
        clauses = _clauses(norm) if norm else []
        preserve: set[str] = set().union(*(c.preserve for c in clauses)) if clauses else set()
        drafts: list[_Draft] = []
        for c in clauses:  # in the prompt's order; a free-form clause among others is an edit of its own
            if c.drafts:
                drafts.extend(c.drafts)
            elif c.has_content and not c.has_target and len(clauses) > 1:
                drafts.append(_Draft("appearance", 0, text=c.text))
        if not drafts:  # nothing the rules understand: the user's words go to the editor as they are
            drafts = [_Draft("appearance", 0, text=re.sub(r"\s+", " ", prompt).strip().rstrip("."))]
        return drafts, preserve, _pronouns(norm)


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise EditPlanError(f"an edit prompt must be a non-empty string, got {prompt!r}")
    return prompt


# ====================================================================== model refiners: shared code
@functools.lru_cache(maxsize=1)
def build_system_prompt() -> str:
    """The schema, the rules of thumb and three worked examples (made by RuleRefiner, so they agree)."""
    labels = ", ".join(f'"{n}"' for n in LABEL_NAMES if n != "background")
    lines = [
        "You turn a request to edit a 3D head avatar into ONE JSON object, an edit plan. Reply with the JSON "
        "object only: no prose, no code fences.",
        "",
        "Fields:",
        f'- "kind": one of {", ".join(repr(k).replace(chr(39), chr(34)) for k in EDIT_KINDS)}. "colour": recolour '
        'regions to one colour; "accessory": add an object (glasses, hat, earrings, beard); "remove": take '
        'something away; "expression": change the facial expression; "appearance": anything else.',
        f'- "regions": labels the edit may change, from: {labels}. Eyes are "left_eye" and "right_eye"; brows '
        '"left_brow" and "right_brow"; lips "upper_lip" and "lower_lip". Glasses: "eyeglasses" plus the eyes, '
        'nose and skin they cover; hats: "headwear" plus "hair"; earrings: the ears; beards: "skin". '
        'Non-empty unless kind is "expression".',
        '- "instruction": a short imperative sentence for an image editor, e.g. "make the hair red".',
        '- "positive_prompt": a description of the result, e.g. "a photo of a person with red hair".',
        '- "preserve": labels that must not change ("keep the X", "not the X", "without changing the X"); '
        "never also in regions.",
        '- "colour": [r, g, b] sRGB numbers in [0, 1]; required when kind is "colour", else null.',
        '- "colour_name": the colour as the user said it, or null.',
        f'- "material": one of {", ".join(MATERIALS)}, or null.',
        f'- "expression": an object {{name: intensity in [0, 1]}} with names from {", ".join(EXPRESSIONS)}; '
        'required when kind is "expression", else null. "slightly" about 0.35, plain about 0.7, "very"/"big" 0.95.',
        '- optional numbers: "strength" 0..1 (default 1), "text_guidance" 0..50 (default 7.5, colour edits 5), '
        '"image_guidance" 0..20 (default 1.5), "num_steps" integer 1..1000 (default 20), "mask_dilation" integer '
        "pixels 0..128 (default 6, accessories 16). Leave them out to use the defaults.",
        "Use no other fields.",
        "",
        "Examples:",
    ]
    rule = RuleRefiner()
    for example in ("red hair but keep the eyebrows", "add round glasses", "make her smile slightly"):
        d = rule.refine(example).to_dict()
        short = {k: v for k, v in d.items() if k not in ("prompt", "refiner", "negative_prompt", "text_guidance",
                                                         "image_guidance", "num_steps", "mask_dilation", "strength")
                 and v not in (None, [], "")}
        lines += [f"Request: {example}", json.dumps(short)]
    return "\n".join(lines)


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's reply, despite code fences and chatter before or after it.

    Fenced blocks are tried first, then the whole text; each also with trailing commas and curly
    quotes repaired. An object that has plan fields wins over one that has none (a nested
    ``{"smile": 0.7}`` alone is not a plan).
    """
    if not isinstance(text, str) or not text.strip():
        raise EditPlanError("the model returned no text")
    fenced = [m.group(1) for m in re.finditer(r"```(?:json|JSON)?\s*(.*?)```", text, re.S)]
    decoder = json.JSONDecoder()
    fields = {f.name for f in dataclasses.fields(EditPlan)} | {"color"}
    fallback = None
    for candidate in fenced + [text]:
        for variant in (candidate, _lenient_json(candidate)):
            for i, ch in enumerate(variant):
                if ch != "{":
                    continue
                try:
                    obj, _ = decoder.raw_decode(variant, i)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    if fields & set(obj):
                        return obj
                    fallback = fallback if fallback is not None else obj
    if fallback is not None:
        return fallback
    raise EditPlanError(f"no JSON object in the model's reply: {text[:160]!r}")


def _lenient_json(text: str) -> str:
    t = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r",\s*([}\]])", r"\1", t)


def _coerce_colour(c: Any) -> Any:
    """'#ff0000' and [255, 0, 0] -> [1.0, 0.0, 0.0]; anything else is left for validation to judge."""
    if isinstance(c, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", c.strip()):
        return list(hex_to_rgb(c.strip()))
    if isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, (int, float)) for v in c):
        if max(c) > 1.0 and max(c) <= 255:
            return [round(v / 255.0, 4) for v in c]
    return c


def _coerce(d: dict[str, Any]) -> dict[str, Any]:
    """Benign fixes of a model's plan: US spelling, nulls for defaults, kind defaults, 255-scale colours.

    Unknown keys stay, so EditPlan.from_dict still rejects typos (and the repair re-ask names them).
    """
    d = dict(d)
    for us, uk in (("color", "colour"), ("color_name", "colour_name")):
        if us in d and uk not in d:
            d[uk] = d.pop(us)
    defaults = {f.name: f for f in dataclasses.fields(EditPlan)}
    for k in list(d):
        f = defaults.get(k)
        if d[k] is None and f is not None and f.default is not None and f.default is not dataclasses.MISSING:
            del d[k]
        elif d[k] is None and f is not None and f.default_factory is not dataclasses.MISSING:
            del d[k]
    for k in ("regions", "preserve"):
        if isinstance(d.get(k), str):
            d[k] = [d[k]]
    if "colour" in d and d["colour"] is not None:
        d["colour"] = _coerce_colour(d["colour"])
    if isinstance(d.get("kind"), str) and d["kind"] in _KIND_DEFAULTS:
        for k, v in _KIND_DEFAULTS[d["kind"]].items():
            d.setdefault(k, v)
    for k in ("num_steps", "mask_dilation"):
        if isinstance(d.get(k), float) and d[k].is_integer():
            d[k] = int(d[k])
    if isinstance(d.get("regions"), list) and isinstance(d.get("preserve"), list):
        d["preserve"] = [p for p in d["preserve"] if p not in d["regions"]]
    return d


def plan_from_text(text: str, prompt: str, refiner: str) -> EditPlan:
    """A model's reply -> a validated plan for ``prompt`` (raises EditPlanError naming what is wrong)."""
    d = _coerce(extract_json_object(text))
    d["prompt"] = prompt
    d["refiner"] = refiner
    return EditPlan.from_dict(d)


class _GenerationError(DynavatarError):
    """The model could not be asked (network down, HTTP error, malformed response)."""


class _ChatRefiner:
    """Shared by the model refiners: messages, parsing, one repair re-ask, fallback to the rules.

    Subclasses implement ``generate_text(messages) -> str`` (OpenAI-style ``[{"role", "content"}]``);
    that is the only thing that differs between a local model and an HTTP endpoint, and the seam
    tests override.
    """

    name = "chat"
    strict = False

    def generate_text(self, messages: list[dict[str, str]]) -> str:
        raise NotImplementedError

    def messages_for(self, prompt: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": build_system_prompt()}, {"role": "user", "content": prompt}]

    def refine(self, prompt: str) -> EditPlan:
        prompt = _check_prompt(prompt)
        messages = self.messages_for(prompt)
        try:
            text = self.generate_text(messages)
            try:
                return plan_from_text(text, prompt, self.name)
            except EditPlanError as first:
                logger.info("%s: plan invalid (%s); asking once more", self.name, first)
                messages = messages + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That reply is not a valid edit plan: {first}. Reply with the "
                                                "corrected JSON object only."}]
                text = self.generate_text(messages)
                try:
                    return plan_from_text(text, prompt, self.name)
                except EditPlanError as second:
                    if self.strict:
                        raise
                    reason = f"invalid plan after one repair: {second}"
        except _GenerationError as e:
            if self.strict:
                raise DynavatarError(str(e)) from e
            reason = f"generation failed: {e}"
        return self._fallback(prompt, reason)

    def refine_all(self, prompt: str) -> list[EditPlan]:
        """The model writes one plan per prompt (use RuleRefiner.refine_all to split clauses)."""
        return [self.refine(prompt)]

    def _fallback(self, prompt: str, reason: str) -> EditPlan:
        reason = re.sub(r"\s+", " ", reason)
        reason = reason if len(reason) <= 240 else reason[:237] + "..."
        logger.warning("%s could not refine %r (%s); using the rule-based refiner", self.name, prompt, reason)
        plan = RuleRefiner().refine(prompt)
        plan.refiner = f"rule (fallback from {self.name}: {reason})"
        return plan.validate()


# ====================================================================== local transformers model
class TransformersRefiner(_ChatRefiner):
    """A local chat model through transformers (loaded lazily; nothing is downloaded by default).

    ``model``: a Hugging Face id (looked up in the local cache) or a folder. ``pipeline_or_model``
    and ``tokenizer`` inject ready objects (a text-generation pipeline, or a causal LM plus its
    tokenizer) — tests pass tiny random ones. Decoding is greedy, so a plan is reproducible.
    """

    def __init__(self, model: str = DEFAULT_LLM, device: str = "auto", local_files_only: bool = True,
                 pipeline_or_model: Any = None, tokenizer: Any = None, max_new_tokens: int = 300,
                 strict: bool = False):
        self.model_id = str(model)
        self.device = device
        self.local_files_only = local_files_only
        self.max_new_tokens = int(max_new_tokens)
        self.strict = strict
        self._model, self._tokenizer = self._unpack(pipeline_or_model, tokenizer)
        if self._model is not None and pipeline_or_model is not None and model == DEFAULT_LLM:
            cfg = getattr(self._model, "config", None)
            self.model_id = getattr(cfg, "_name_or_path", "") or type(self._model).__name__
        self.name = f"transformers:{self.model_id}"

    @staticmethod
    def _unpack(obj: Any, tokenizer: Any) -> tuple[Any, Any]:
        """A pipeline carries its model and tokenizer; a bare model needs the tokenizer beside it."""
        if obj is not None and not hasattr(obj, "generate") and hasattr(obj, "model"):
            return obj.model, tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
        return obj, tokenizer

    def _components(self) -> tuple[Any, Any]:
        if self._model is None or self._tokenizer is None:
            self._load()
        return self._model, self._tokenizer

    def _load(self) -> None:
        try:
            import torch
            import transformers
        except ImportError as e:
            raise MissingDependencyError(f"the transformers refiner needs transformers: pip install transformers "
                                         f"accelerate ({e})") from e
        from ..device import resolve_device

        device = resolve_device(self.device)
        source = self.model_id
        try:
            if self._tokenizer is None:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    source, local_files_only=self.local_files_only)
            if self._model is None:
                dtype = "auto" if device.type == "cuda" else torch.float32
                key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
                self._model = transformers.AutoModelForCausalLM.from_pretrained(
                    source, local_files_only=self.local_files_only, **{key: dtype}).to(device).eval()
        except (OSError, ValueError) as e:
            raise DynavatarError(self._missing_message(e)) from e
        if len(self._tokenizer) == 0:  # an empty tokenizer is what some offline lookups return
            raise DynavatarError(f"the tokenizer of {self.model_id!r} is empty; {self._fetch_hint()}")

    def _fetch_hint(self) -> str:
        return (f"fetch the weights once on a machine with internet: `huggingface-cli download {self.model_id}` "
                f"(or `hf download {self.model_id}`), or use get_refiner('rule')")

    def _missing_message(self, e: Exception) -> str:
        from ..weights import hf_hub_cache

        if os.path.isdir(self.model_id):
            return f"could not load the prompt-refinement model from {self.model_id}: {e}"
        where = f"the local Hugging Face cache ({hf_hub_cache()})" if self.local_files_only else "the hub"
        return (f"the prompt-refinement model {self.model_id!r} could not be loaded from {where}; "
                f"{self._fetch_hint()}. ({type(e).__name__}: {str(e)[:200]})")

    def _chat_text(self, messages: list[dict[str, str]], tokenizer: Any) -> str:
        """The tokenizer's chat template when it has one, else a plain role-prefixed transcript."""
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(turns) + "\n\nAssistant:"

    def _generation_config(self, model: Any, pad_id: Any) -> dict[str, Any]:
        """Greedy decoding, without the sampling settings a chat model's own config carries."""
        base = getattr(model, "generation_config", None)
        if base is None:
            return dict(max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad_id)
        import copy

        gc = copy.deepcopy(base)
        gc.do_sample, gc.num_beams, gc.max_new_tokens, gc.max_length = False, 1, self.max_new_tokens, None
        gc.temperature, gc.top_p, gc.top_k = 1.0, 1.0, 50  # the neutral values: no "ignored flags" warning
        if pad_id is not None:
            gc.pad_token_id = pad_id
        return dict(generation_config=gc)

    def generate_text(self, messages: list[dict[str, str]]) -> str:
        import torch

        model, tok = self._components()
        enc = tok(self._chat_text(messages, tok), return_tensors="pt")
        device = getattr(model, "device", None)
        if device is not None:
            enc = {k: v.to(device) for k, v in enc.items()}
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, **self._generation_config(model, pad_id))
        new = out[0, enc["input_ids"].shape[1]:]
        return tok.decode(new, skip_special_tokens=True)


# ====================================================================== OpenAI-compatible endpoint
_ENV_BASE = ("DYNAVATAR_LLM_BASE_URL", "OPENAI_BASE_URL")
_ENV_KEY = ("DYNAVATAR_LLM_API_KEY", "OPENAI_API_KEY")
_ENV_MODEL = ("DYNAVATAR_LLM_MODEL",)
_OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
_OPENAI_DEFAULT_MODEL = "gpt-4o-mini"


def _env(names: tuple[str, ...]) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def _chat_url(base: str) -> str:
    """Accept '.../v1/chat/completions', '.../v1' or a bare host."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if re.search(r"/v\d+$", base):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


class OpenAIRefiner(_ChatRefiner):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama...), via urllib.

    Settings come from the arguments, else ``DYNAVATAR_LLM_BASE_URL`` / ``OPENAI_BASE_URL``,
    ``DYNAVATAR_LLM_MODEL`` and ``DYNAVATAR_LLM_API_KEY`` / ``OPENAI_API_KEY`` (base URL default:
    OpenAI's; model default: gpt-4o-mini). Network errors fall back to the rules with a warning;
    ``strict=True`` raises instead (and also when the reply stays invalid after the repair).
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30, strict: bool = False, max_tokens: int = 400):
        self.base_url = base_url or _env(_ENV_BASE) or _OPENAI_DEFAULT_BASE
        self.url = _chat_url(self.base_url)
        self.model = model or _env(_ENV_MODEL) or _OPENAI_DEFAULT_MODEL
        self._api_key = api_key if api_key is not None else _env(_ENV_KEY)
        self.timeout = timeout
        self.strict = strict
        self.max_tokens = int(max_tokens)
        self.name = f"openai:{self.model}"

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIRefiner(url={self.url!r}, model={self.model!r}, strict={self.strict})"

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _post_checked(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST, retrying once without ``response_format`` for servers that reject it."""
        try:
            try:
                return self._post(body)
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code in (400, 422) and "response_format" in detail and "response_format" in body:
                    return self._post({k: v for k, v in body.items() if k != "response_format"})
                raise _GenerationError(f"{self.url} answered HTTP {e.code}: {detail}") from None
        except _GenerationError:
            raise
        except urllib.error.HTTPError as e:
            raise _GenerationError(f"{self.url} answered HTTP {e.code}: {e.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise _GenerationError(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _GenerationError(f"{self.url} did not answer with JSON: {e}") from None

    def generate_text(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens,
                "response_format": {"type": "json_object"}}
        data = self._post_checked(body)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _GenerationError(f"{self.url} returned no chat completion: {str(data)[:200]}") from None
        if not isinstance(content, str):
            raise _GenerationError(f"{self.url} returned a non-text message: {str(content)[:200]}")
        return content


# ====================================================================== choosing one
def _openai_configured() -> bool:
    """An endpoint was set up for dynavatar. OPENAI_API_KEY alone does not count: "auto" must not start
    sending prompts to a paid API because a key happens to be in the environment."""
    return bool(_env(_ENV_BASE) or os.environ.get("DYNAVATAR_LLM_API_KEY") or os.environ.get("DYNAVATAR_LLM_MODEL"))


def _local_llm_cached() -> bool:
    from ..weights import KNOWN_WEIGHTS, find_weights

    entry = next((w for w in KNOWN_WEIGHTS if w.name == _DEFAULT_LLM_WEIGHTS), None)
    return entry is not None and find_weights(entry) is not None


def _accepted(cls, kw: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kw.items() if k in params}


def get_refiner(name: str = "auto", **kw: Any) -> PromptRefiner:
    """A refiner by name: "rule", "transformers", "openai", or "auto".

    "auto": the OpenAI-compatible endpoint when ``DYNAVATAR_LLM_BASE_URL`` / ``OPENAI_BASE_URL`` /
    ``DYNAVATAR_LLM_API_KEY`` / ``DYNAVATAR_LLM_MODEL`` is set, else the local transformers model
    when its weights are in the Hugging Face cache, else the rules. With "auto", keyword arguments
    the chosen refiner does not take are ignored.
    """
    key = (name or "auto").lower()
    if key == "auto":
        if _openai_configured():
            return OpenAIRefiner(**_accepted(OpenAIRefiner, kw))
        if _local_llm_cached():
            return TransformersRefiner(**_accepted(TransformersRefiner, kw))
        return RuleRefiner()
    if key in ("rule", "rules"):
        if kw:
            raise DynavatarError(f"the rule refiner takes no options, got {sorted(kw)}")
        return RuleRefiner()
    if key in ("transformers", "local", "hf"):
        return TransformersRefiner(**kw)
    if key in ("openai", "http", "endpoint"):
        return OpenAIRefiner(**kw)
    raise DynavatarError(f"unknown refiner {name!r}; choose 'auto', 'rule', 'transformers' or 'openai'")
