"""The rule refiner's vocabulary: what a prompt can name, and the patterns that find it.

Words are grouped by what they mean to an edit: *targets* (parts of the head with labels: hair,
eyes, lips...), *items* (things worn or added: glasses, hats, beards, makeup), materials, tone
words, verbs and stop words, and the regexes for negations ("keep the brows"), removals and
expressions with their default intensities and the regions each one changes. Colour names live in
``colour_names.py``. Nothing here parses: ``grammar.py`` does that.

Decisions a reader may question, and why:

- **Beards.** The label set has no beard/facial-hair label. Adding, removing or recolouring a
  beard edits the ``skin`` region through a diffusion editor; the same holds for any object without
  a label of its own (earrings, necklaces...): ``Item.own_label`` is None for them.
- **Expressions** list the regions whose appearance the new expression changes (lips and mouth
  for a smile), so a 2D editor may refine texture there; FLAME does the geometry.
"""

from __future__ import annotations

import dataclasses
import re

from ..plan import EXPRESSIONS

__all__ = ["Target", "Item", "TARGETS", "ITEMS", "MASS_NOUNS", "MATERIAL_ADJ", "TONES", "PERSON_RE", "VERBS",
           "ADD_VERB_RE", "DEFINITE", "STOP_WORDS", "FILLER_WORDS", "PHRASE_STOP", "LOW_ADVERB", "LOW_EXPR",
           "HIGH_EXPR", "PERCENT_RE", "TARGET_RE", "TARGET_OF", "ITEM_RE", "ITEM_OF", "MATERIAL_RE", "MATERIAL_OF",
           "NEG_RE", "NO_RE", "POSTFIX_NEG_RE", "BUT_RE", "REST_RE", "REMOVE_VERB_RE", "BALD_RE", "SHAVEN_RE",
           "TAKE_OFF_RE", "EXPRESSION_RES", "EXPR_DEFAULT", "EXPR_REGIONS", "SPLIT_RE"]


@dataclasses.dataclass(frozen=True)
class Target:
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
# What an eye colour changes: the iris (avatars labelled since iris existed) or, on older avatars,
# the eye labels, of which the recolour moves the iris only (``palette_recolour.iris_membership``).
_IRISES = ("iris", "left_eye", "right_eye")
_EYE_PARTS = (*_EYES, "iris", "sclera")  # the whole eye opening: what glasses cover, what closing the eyes changes
_LIPS = ("upper_lip", "lower_lip")
_EARS = ("left_ear", "right_ear")
_SKIN_GROUP = ("skin", "nose", "left_ear", "right_ear", "neck")  # "skin" means all visible skin

TARGETS: dict[str, Target] = {t.key: t for t in (
    Target("hair", ("hair",), "hair", hair_like=True),
    Target("brows", _BROWS, "eyebrows", hair_like=True),
    Target("left_brow", ("left_brow",), "left eyebrow", "a", hair_like=True),
    Target("right_brow", ("right_brow",), "right eyebrow", "a", hair_like=True),
    Target("eyes", _IRISES, "eyes"),
    Target("left_eye", ("iris", "left_eye"), "left eye", "a"),
    Target("right_eye", ("iris", "right_eye"), "right eye", "a"),
    Target("lips", _LIPS, "lips"),
    Target("upper_lip", ("upper_lip",), "upper lip", "an"),
    Target("lower_lip", ("lower_lip",), "lower lip", "a"),
    Target("teeth", ("teeth",), "teeth"),
    Target("tongue", ("mouth_interior",), "tongue"),
    Target("skin", _SKIN_GROUP, "skin"),
    Target("face", ("skin", "nose"), "face", "a"),
    Target("nose", ("nose",), "nose", "a"),
    Target("ears", _EARS, "ears"),
    Target("left_ear", ("left_ear",), "left ear", "a"),
    Target("right_ear", ("right_ear",), "right ear", "a"),
    Target("neck", ("neck",), "neck", "a"),
    Target("clothes", ("clothes",), None, wear=True),
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
    "teeth": ("teeth", "tooth"),
    "tongue": ("tongue",),
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
class Item:
    """Something worn or added on the head: it can be added, removed or (when present) changed."""

    key: str
    regions: tuple[str, ...]  # the labels the object covers (what an add/remove may change)
    own_label: str | None = None  # the label of the object itself, when the label set has one
    add_kind: str = "accessory"  # makeup and freckles are appearance edits, not objects
    wear: bool = True  # "wearing glasses" vs "with a beard"
    hair_like: bool = False


#: words the glasses editor reads from the prompt itself (``apply.glasses.glasses_request``): a plan
#: that adds glasses passes them on, so they are not reported as ignored
GLASSES_DETAIL_WORDS = frozenset({"tortoiseshell", "tortoise", "havana", "lens", "lenses", "lensed", "tint", "tinted",
                                  "tints", "frame", "frames", "rim", "rims", "rimmed"})


#: a tan, in any wording ("a light tan", "sun-kissed", "bronzed"), and the skin it colours (the
#: "skin" target's regions): without a named target it is the skin's edit, not the free-form
#: default's skin and hair
TAN_WORDS = r"\bsun ?tan(ned)?\b|\btan(ned)?\b|\bbronzed?\b|\bsun-?kissed\b"
TAN_REGIONS = TARGETS["skin"].regions


ITEMS: dict[str, Item] = {i.key: i for i in (
    # glasses sit on the nose and cover the eyes and the skin around them
    Item("glasses", ("eyeglasses", *_EYE_PARTS, "nose", "skin"), "eyeglasses"),
    Item("headwear", ("headwear", "hair"), "headwear"),
    Item("headphones", ("headwear", "hair", *_EARS), "headwear"),
    Item("earrings", _EARS),
    Item("nose_ring", ("nose",)),
    Item("neckwear", ("neck", "clothes")),
    Item("mask", ("skin", "nose", *_LIPS)),
    Item("beard", ("skin",), wear=False, hair_like=True),  # no beard label: facial hair grows on skin
    Item("makeup", ("skin", *_LIPS, *_EYE_PARTS), add_kind="appearance"),
    Item("eye_makeup", ("skin", *_EYE_PARTS), add_kind="appearance"),
    Item("skin_detail", ("skin", "nose"), add_kind="appearance", wear=False),
    Item("tattoo", ("skin", "neck"), add_kind="appearance", wear=False),
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
MASS_NOUNS = frozenset({"makeup", "make up", "clown makeup", "stubble", "facial hair", "eyeshadow", "eye shadow",
                         "eyeliner", "eye liner", "mascara", "blush", "face paint", "war paint", "acne"})

_MATERIAL_WORDS: dict[str, tuple[str, ...]] = {
    "metallic": ("metallic", "metal", "chrome plated", "chromed", "liquid metal"),
    "glossy": ("glossy", "gloss", "shiny", "shine", "lustrous", "wet look", "polished", "glassy", "sleek"),
    "matte": ("matte", "matt", "dull", "powdery", "powdered"),
    "velvet": ("velvet", "velvety", "suede", "plush", "fuzzy"),
}
MATERIAL_ADJ = {"metallic": "metallic", "glossy": "glossy", "matte": "matte", "velvet": "velvety"}

# Bare tone words a person uses for hair, skin and eyes ("dark hair", "fair skin").
TONES: dict[str, dict[str, str]] = {
    "hair": {"dark": "#2a1c14", "light": "#c8aa78", "fair": "#dcc396"},
    "skin": {"dark": "#5c3a26", "light": "#ecccb4", "fair": "#f0d2be", "pale": "#f4dcd0", "tanned": "#b98a62"},
    "eyes": {"dark": "#3a2414", "light": "#8cb4c8"},
}

PERSON_RE = re.compile(r"\b(?:her|him|them|she|he|they|the (?:person|man|woman|guy|girl|boy|lady|avatar|character"
                        r"|subject|model)|everything|everyone)\b")
VERBS = frozenset({"make", "turn", "change", "give", "add", "put", "dye", "paint", "colour", "recolour", "set",
                    "let", "have", "remove", "take", "get", "delete", "erase", "shave", "render", "transform",
                    "convert", "apply", "swap", "replace", "switch", "keep", "please", "can", "could", "show",
                    "tint", "bleach", "style", "draw", "wear", "place", "attach", "lighten", "darken"})
ADD_VERB_RE = re.compile(r"\b(?:add|adds|adding|give|gives|giving|put|puts|putting|wear|wears|wearing|with|don|"
                          r"equip|place|attach|draw|paint on|apply)\b")
DEFINITE = frozenset({"the", "his", "her", "their", "its", "those", "these", "this", "that", "my", "your"})
STOP_WORDS = frozenset("""a an the his her him their them they he she it its to of with and but into in on onto at for
    from by as please person man woman guy girl boy lady avatar character subject model look looks looking like be
    is are was so that this these those some more make makes turn turns change changes give gives add adds put
    dye dyed paint painted colour coloured recolour set have let me my your our also then both all now just want
    would should can could up bit little slightly very really super extra quite rather lot tad touch hint
    somewhat subtle subtly faint faintly mildly barely i we you wearing wear wears one pair colours colour
    light pale pastel dark deep bright vivid vibrant neon muted dusty soft rich same new different s""".split())

# Words with no edit of their own, never reported as "ignored" (reporting only: parsing uses STOP_WORDS).
FILLER_WORDS = STOP_WORDS | frozenset("""or not no too than much many any even still rather kind sort way thing
    things something do does did done don't doesn't want wanted need needs get got go going will shall may might
    must been being has had having hey hi thanks thank ok okay well there here what which who else everything
    anything rest""".split())

LOW_ADVERB = (r"\b(?:slightly|slight|a (?:little )?bit(?: of)?|a little|a tad|a touch(?: of)?|a hint(?: of)?"
               r"|hint of|subtle|subtly|faint|faintly|somewhat|mildly|barely|partially|partly)\b")
LOW_EXPR = LOW_ADVERB[:-3] + r"|small|gentle|gently|soft|softly|half|mild|tiny|little)\b"
HIGH_EXPR = (r"\b(?:high|higher|very|big|bigger|wide|widely|broad|broadly|huge|hugely|really|strongly|strong|a lot|lots"
              r"|super|intense|intensely|so|extra|exaggerated|extreme|extremely|fully|completely|totally|deep|deeply"
              r"|wide open)\b")
PERCENT_RE = re.compile(r"\b(\d{1,3})\s*%")


def _alternation(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


def _lexicon(words: dict[str, tuple[str, ...]]) -> tuple[re.Pattern, dict[str, str]]:
    """A regex matching any phrase (longest first) and the phrase -> key table."""
    table = {p: k for k, ps in words.items() for p in ps}
    return re.compile(r"\b(?:" + _alternation(table) + r")\b"), table


TARGET_RE, TARGET_OF = _lexicon(_TARGET_WORDS)
ITEM_RE, ITEM_OF = _lexicon(_ITEM_WORDS)
MATERIAL_RE, MATERIAL_OF = _lexicon(_MATERIAL_WORDS)

# ---------------------------------------------------------------- negation ("keep X", "not X")
NEG_RE = re.compile(
    r"\b(?:but\s+)?(?:not|except(?:\s+for)?|excluding|apart\s+from|other\s+than|keep(?:s|ing)?|preserv(?:e|es|ing)"
    r"|protect(?:s|ing)?|leav(?:e|es|ing)|don'?t\s+(?:change|touch|alter|modify|edit|affect|recolour|colour)"
    r"|do\s+not\s+(?:change|touch|alter|modify|edit|affect|recolour|colour)|never\s+(?:change|touch)"
    r"|without\s+(?:changing|touching|altering|modifying|editing|affecting|recolouring|colouring)"
    r"|no\s+changes?\s+(?:to|on|in)|only\s+not)\b")
NO_RE = re.compile(r"\b(?:without|no|with\s+no|minus)\s+(?:(?:any|the|his|her|their|a|an|more)\s+)?")
POSTFIX_NEG_RE = re.compile(r"\b(?:unchanged|untouched|as\s+is|as\s+they\s+are|as\s+it\s+is|the\s+same|intact"
                             r"|alone|stays?|remains?)\b")
BUT_RE = re.compile(r"\bbut\b")
# "keep everything else the same" says what the region mask does anyway: not an edit, not a region
REST_RE = re.compile(r"\b(?:keep|keeping|leave|leaving|preserve|preserving|don'?t\s+change|do\s+not\s+change)\s+"
                      r"(?:everything|all|anything|the\s+rest)(?:\s+else)?(?:\s+(?:the\s+same|unchanged|untouched"
                      r"|as\s+(?:it\s+)?is|intact|alone))?\b")

# ---------------------------------------------------------------- removal
REMOVE_VERB_RE = re.compile(r"\b(?:remove[sd]?|removing|take\s+off|takes\s+off|taking\s+off|take\s+away"
                             r"|get\s+rid\s+of|delete|erase|strip|shave\s+off|shave[sd]?|shaving|lose)\b")
BALD_RE = re.compile(r"\b(?:bald|hairless|shaved\s+head|shaven\s+head)\b")
SHAVEN_RE = re.compile(r"\b(?:clean\s+shaven|clean\s+shaved|beardless|shaved\s+face|smooth\s+shaven)\b")
TAKE_OFF_RE = re.compile(r"\btake\s+((?:\S+\s+){1,4}?)off\b")

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
EXPRESSION_RES = tuple((name, re.compile(p)) for name, p in _EXPRESSION_PATTERNS)
# default intensity of each expression when no adverb is given
EXPR_DEFAULT = {"smile": 0.7, "frown": 0.6, "angry": 0.7, "sad": 0.7, "surprise": 0.7, "open_mouth": 0.6,
                 "closed_eyes": 1.0, "raised_brows": 0.7, "wink_left": 1.0, "wink_right": 1.0, "pucker": 0.7,
                 "neutral": 1.0}
EXPR_REGIONS: dict[str, tuple[str, ...]] = {
    "smile": (*_LIPS, "mouth_interior", "teeth", "skin"),
    "frown": (*_BROWS, "skin", *_LIPS),
    "angry": (*_BROWS, *_EYE_PARTS, "skin", *_LIPS),
    "sad": (*_BROWS, *_EYE_PARTS, "skin", *_LIPS),
    "surprise": (*_BROWS, *_EYE_PARTS, *_LIPS, "mouth_interior", "teeth", "skin"),
    "open_mouth": (*_LIPS, "mouth_interior", "teeth", "skin"),
    "closed_eyes": (*_EYE_PARTS, "skin"),
    "raised_brows": (*_BROWS, "skin"),
    "wink_left": ("left_eye", "skin"),
    "wink_right": ("right_eye", "skin"),
    "pucker": (*_LIPS, "skin"),
    "neutral": (*_BROWS, *_EYE_PARTS, *_LIPS, "mouth_interior", "teeth", "skin"),
}
assert set(EXPR_DEFAULT) == set(EXPR_REGIONS) == set(EXPRESSIONS)

SPLIT_RE = re.compile(r"\s*(?:[,;]|\s(?:and\s+then|and\s+also|then|also|plus|&)\s|(?<!salt)\sand\s)\s*")

PHRASE_STOP = VERBS | DEFINITE | {"and", "or", "with", "on", "onto", "to", "in", "into", "of", "for", "him",
                                     "them", "wearing", "wears", "no", "without", "any", "off", "away", "rid",
                                     "but", "also", "then", "plus", "she", "he", "they", "it", "person", "s",
                                     "slightly", "very", "bit", "little"}
