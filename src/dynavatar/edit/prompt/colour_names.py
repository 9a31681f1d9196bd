"""A colour vocabulary for text edits: names a person uses -> sRGB in [0, 1], with modifiers.

Why a table and not a colour model: edit prompts use a small, stable set of words ("platinum blonde",
"teal", "pastel pink"), and the region-palette editor needs a concrete target colour it can mix
towards. Values are typical sRGB renderings of each name (CSS / hair-dye charts as a guide), picked
so that they read as the named colour on a lit head, not as the most saturated extreme.

Modifiers ("light", "pastel", "dark", "bright", "muted", stacked with "very") act in HLS/HSV so the
hue is kept; ``-ish`` forms ("reddish") are the colour, muted. Target-specific readings live here
too: on hair, brows and beards "golden" means golden blonde and "platinum" platinum blonde, and
only on other targets do metal names (gold, silver, bronze, copper, chrome) imply a metallic
material.
"""

from __future__ import annotations

import colorsys
import dataclasses
import re

__all__ = ["SHADES", "shade_colours", "QUALIFIERS", "split_qualifiers", "find_qualifiers", "nearest_colour", "COLOURS", "HAIR_LIKE_OVERRIDES", "EYE_OVERRIDES", "SKIN_OVERRIDES", "HAIR_ONLY_NAMES", "METAL_NAMES",
           "ColourMatch", "find_colour", "apply_modifier", "hex_to_rgb"]


def hex_to_rgb(h: str) -> tuple[float, float, float]:
    """'#RRGGBB' -> sRGB floats in [0, 1] (rounded to 4 decimals so plans print cleanly)."""
    h = h.lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", h):
        raise ValueError(f"not a #RRGGBB colour: {h!r}")
    return tuple(round(int(h[i:i + 2], 16) / 255.0, 4) for i in (0, 2, 4))  # type: ignore[return-value]


# name (as normalised prompt text: lower case, single spaces, "grey" spelling) -> #RRGGBB
_HEX: dict[str, str] = {
    # reds
    "red": "#c81414", "crimson": "#b0102a", "scarlet": "#e0241a", "cherry": "#b2102c", "cherry red": "#b2102c",
    "blood red": "#8a0b0b", "fire red": "#e8251a", "fire engine red": "#ce2029", "ruby": "#9b111e",
    "maroon": "#6e0f1a", "burgundy": "#800020", "wine": "#722f37", "wine red": "#722f37",
    "copper red": "#b0401c", "rust": "#b7410e",
    # oranges / yellows
    "orange": "#f07818", "tangerine": "#f28500", "amber": "#ffb000", "yellow": "#f2d61e", "lemon": "#fff44f",
    "mustard": "#d6a81e", "gold": "#d4af37", "golden": "#d4af37", "honey": "#c8963c",
    # greens
    "green": "#1e9e32", "lime": "#7ed321", "lime green": "#7ed321", "neon green": "#39ff14",
    "olive": "#6b7a1f", "olive green": "#6b7a1f", "emerald": "#0f8a4f", "emerald green": "#0f8a4f",
    "forest green": "#1f5a2a", "mint": "#98e0b4", "mint green": "#98e0b4", "sage": "#9caf88",
    "sea green": "#2e8b57", "jade": "#00a86b",
    # blues / cyans
    "teal": "#108080", "turquoise": "#30d5c8", "cyan": "#00c8e0", "aqua": "#1ec8d2", "aquamarine": "#7fffd4",
    "blue": "#1e50d2", "navy": "#14245a", "navy blue": "#14245a", "sky blue": "#78b4f0",
    "baby blue": "#9cc8f0", "ice blue": "#a0d2f0", "royal blue": "#2a50c8", "cobalt": "#0047ab",
    "cobalt blue": "#0047ab", "electric blue": "#2c75ff", "midnight blue": "#191970", "denim": "#1560bd",
    "sapphire": "#0f52ba", "steel blue": "#4682b4",
    # purples / pinks
    "indigo": "#3f1e8c", "purple": "#7a28b4", "violet": "#8a3cdc", "lavender": "#b49be6", "lilac": "#c8a2c8",
    "plum": "#8e4585", "magenta": "#d21ea0", "fuchsia": "#e01e9a", "pink": "#f08cb4", "hot pink": "#ff3c96",
    "baby pink": "#f4c2d0", "bubblegum pink": "#ff8fc0", "rose": "#e8648c", "coral": "#f07860",
    "peach": "#f8bc98", "salmon": "#f08c78", "mauve": "#b07890", "berry": "#8a2a4e",
    # browns / neutrals
    "brown": "#6e4123", "chocolate": "#4b2a16", "chocolate brown": "#4b2a16", "chestnut": "#7a3e1e",
    "chestnut brown": "#7a3e1e", "mahogany": "#6a2a1e", "caramel": "#b47838", "tan": "#c8a078",
    "beige": "#e0cca8", "nude": "#c8907c", "brick": "#a0402c", "brick red": "#a0402c", "terracotta": "#c0623c",
    "cream": "#f5ecd2", "ivory": "#f8f4e4", "khaki": "#c3b091",
    "white": "#f4f4f2", "snow white": "#fafafa", "pure white": "#fcfcfc", "off white": "#eeeadf",
    "black": "#101010", "jet black": "#0a0a0c", "raven": "#141418", "raven black": "#141418",
    "grey": "#808080", "ash grey": "#a4a6a4", "steel grey": "#71797e", "charcoal": "#3a3a3c",
    "charcoal grey": "#3a3a3c", "silver": "#c0c0c4", "silver grey": "#b4b6b8", "platinum": "#e4e2da",
    "bronze": "#a0642a", "copper": "#b8642a", "rose gold": "#d49a8c", "chrome": "#d8dce0",
    # hair colours
    "blonde": "#dcb978", "blond": "#dcb978", "platinum blonde": "#eee6c8", "platinum blond": "#eee6c8",
    "golden blonde": "#e0b45a", "golden blond": "#e0b45a", "honey blonde": "#c8963c", "honey blond": "#c8963c",
    "strawberry blonde": "#e0a078", "strawberry blond": "#e0a078", "ash blonde": "#c8bc9c",
    "ash blond": "#c8bc9c", "dirty blonde": "#a88c5a", "dirty blond": "#a88c5a", "sandy blonde": "#d2b48c",
    "sandy": "#d2b48c", "auburn": "#8c3218", "ginger": "#c85a1e", "brunette": "#4a2e1a",
    "salt and pepper": "#8c8c8c",
    # eye colours
    "hazel": "#8e7618",
    # skin tones (reached through SKIN_OVERRIDES, so "olive skin" is not olive green)
    "olive tone": "#b08a60", "tan tone": "#c08c64",
}
COLOURS: dict[str, tuple[float, float, float]] = {k: hex_to_rgb(v) for k, v in _HEX.items()}

# On hair-like targets metal names are natural hair colours, not metal.
HAIR_LIKE_OVERRIDES = {"gold": "golden blonde", "golden": "golden blonde", "platinum": "platinum blonde",
                       "honey": "honey blonde"}
# On eyes "golden" / "gold" eyes are amber.
EYE_OVERRIDES = {"gold": "amber", "golden": "amber"}
# On skin "olive" and "tan" are skin tones.
SKIN_OVERRIDES = {"olive": "olive tone", "tan": "tan tone"}
# Names that only ever describe hair: "make her blonde" needs no "hair" to mean the hair.
HAIR_ONLY_NAMES = frozenset({"blonde", "blond", "platinum blonde", "platinum blond", "golden blonde", "golden blond",
                             "honey blonde", "honey blond", "strawberry blonde", "strawberry blond", "ash blonde",
                             "ash blond", "dirty blonde", "dirty blond", "sandy blonde", "auburn", "ginger",
                             "brunette", "salt and pepper", "raven black"})
# Names that imply a metallic material on skin, lips, clothes, glasses, hats.
METAL_NAMES = frozenset({"gold", "golden", "silver", "bronze", "copper", "chrome", "platinum", "rose gold"})

# "-ish" forms -> base colour (rendered muted)
_ISH = {"reddish": "red", "orangish": "orange", "orangey": "orange", "yellowish": "yellow", "greenish": "green",
        "bluish": "blue", "blueish": "blue", "purplish": "purple", "pinkish": "pink", "brownish": "brown",
        "greyish": "grey", "blackish": "black", "whitish": "white"}

_MODIFIERS = ("light", "pale", "pastel", "dark", "deep", "bright", "vivid", "vibrant", "neon", "muted", "dusty",
              "soft", "rich")
_INTENSIFIERS = ("very", "really", "super", "extra")


@dataclasses.dataclass(frozen=True)
class ColourMatch:
    name: str  # the colour as said, modifiers included ("pastel pink")
    base: str  # the vocabulary entry it resolved to ("pink")
    rgb: tuple[float, float, float]  # sRGB in [0, 1], modifiers applied
    start: int  # span in the searched text
    end: int

    @property
    def is_metal(self) -> bool:
        return self.base in METAL_NAMES


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_COLOUR_RE = re.compile(
    r"\b(?P<mods>(?:(?:" + _alternation(_INTENSIFIERS) + r")\s+)?(?:(?:" + _alternation(_MODIFIERS)
    + r")\s+(?:(?:" + _alternation(_INTENSIFIERS) + r")\s+)?)*)"
    + r"(?P<name>" + _alternation(list(COLOURS) + list(_ISH)) + r")\b")


def apply_modifier(rgb: tuple[float, float, float], modifier: str) -> tuple[float, float, float]:
    """One modifier word applied to an sRGB colour; the hue is kept (unknown words change nothing)."""
    r, g, b = rgb
    h, l, s = colorsys.rgb_to_hls(r, g, b)
    if modifier == "light":
        l = l + (1.0 - l) * 0.4
    elif modifier == "pale":
        l, s = l + (1.0 - l) * 0.55, s * 0.7
    elif modifier in ("pastel", "soft"):
        l, s = max(l, 0.82), min(s, 0.75)
    elif modifier == "dark":
        l = l * 0.55
    elif modifier in ("deep", "rich"):
        l, s = l * 0.7, min(1.0, s * 1.15)
    elif modifier in ("bright", "vivid", "vibrant", "neon"):
        hv, sv, vv = colorsys.rgb_to_hsv(r, g, b)
        if sv > 0.05:  # brightening a grey only makes it lighter
            sv = min(1.0, sv * 1.2 + 0.05)
        r, g, b = colorsys.hsv_to_rgb(hv, sv, max(vv, 0.95))
        return _clip((r, g, b))
    elif modifier in ("muted", "dusty", "ish"):
        s, l = s * 0.55, l * 0.95 + 0.03
    else:
        return rgb
    return _clip(colorsys.hls_to_rgb(h, min(max(l, 0.0), 1.0), min(max(s, 0.0), 1.0)))


def _clip(rgb) -> tuple[float, float, float]:
    return tuple(round(min(max(float(c), 0.0), 1.0), 4) for c in rgb)  # type: ignore[return-value]


def _resolve(words: list[str], name: str, overrides: dict[str, str] | None) -> tuple[str, tuple[float, float, float]]:
    """Apply modifiers right-to-left (the nearest word binds first); "very X" applies X twice."""
    base = _ISH.get(name, name)
    if overrides and base in overrides:
        base = overrides[base]
    rgb = COLOURS[base]
    if name in _ISH:
        rgb = apply_modifier(rgb, "ish")
    for i in range(len(words) - 1, -1, -1):
        w = words[i]
        if w in _INTENSIFIERS:
            continue
        times = 2 if i > 0 and words[i - 1] in _INTENSIFIERS else 1
        for _ in range(times):
            rgb = apply_modifier(rgb, w)
    return base, rgb


def find_colour(text: str, overrides: dict[str, str] | None = None) -> ColourMatch | None:
    """The first colour phrase in normalised ``text`` (longest name wins at a position), or None.

    ``overrides`` maps base names to other entries for a target ("golden" -> "golden blonde" on hair).
    """
    m = _COLOUR_RE.search(text)
    if m is None:
        return None
    words = m.group("mods").split()
    base, rgb = _resolve(words, m.group("name"), overrides)
    said = " ".join(words + [m.group("name")])
    return ColourMatch(name=said, base=base, rgb=rgb, start=m.start(), end=m.end())


# ---------------------------------------------------------------------------------------------
# Targets as distributions: a colourist's shade is not one colour but a range, from its darkest
# strands (in shadow, at the roots) to its lightest (highlights), each with its own hue and chroma.
# (dark, light) sRGB per family: the colours at about the 5th and 95th lightness percentile of a
# lit head of that shade, from hair-dye charts and photographs, with plausible chroma (auburn is
# a deep red-brown, not orange; platinum is nearly grey, not paper white). The recolour maps the
# region's lightness ranks onto this range (``editors/palette_recolour.colourist_oklab``).
SHADES: dict[str, dict[str, tuple[str, str]]] = {
    "hair": {
        # natural
        "black": ("#0a0909", "#3c3632"), "jet black": ("#060607", "#2e2c2e"), "raven black": ("#07070a", "#34323a"),
        "brown": ("#24160d", "#8a6240"), "chocolate": ("#1c110a", "#6a4428"), "chestnut": ("#2e140a", "#94562e"),
        "brunette": ("#1e120a", "#76502f"), "auburn": ("#2a0c0a", "#7e3024"), "mahogany": ("#2a0d0a", "#80322a"),
        "copper": ("#4a1c0a", "#c06a34"), "ginger": ("#55200b", "#d88444"), "strawberry blonde": ("#7a4a32", "#e8b896"),
        "blonde": ("#6a4e2e", "#ecd49c"), "golden blonde": ("#6e4a1c", "#f0cc80"), "honey blonde": ("#5e3c18", "#dcae6a"),
        "ash blonde": ("#6a6252", "#dcd4bc"), "dirty blonde": ("#4a3a24", "#b8a078"), "sandy blonde": ("#6a5238", "#e2c8a0"),
        "platinum blonde": ("#8c8676", "#f6f2e6"), "grey": ("#3e3e3e", "#bcbcb8"), "silver": ("#5e6066", "#e2e4e8"),
        "white": ("#8a8a88", "#f6f6f2"), "salt and pepper": ("#242424", "#c4c4c0"),
        # dyed
        "red": ("#3a0808", "#b0301f"), "pink": ("#6e2a48", "#f6aacc"), "hot pink": ("#6a0e36", "#ff70b0"),
        "blue": ("#0a1440", "#5a8ae4"), "green": ("#0a3018", "#5ac07e"), "purple": ("#240c3a", "#a474d6"),
        "teal": ("#062a2a", "#40b0a8"), "orange": ("#5a1e06", "#f08a3a"), "lavender": ("#4a3a62", "#d8c8f4"),
    },
    "eyes": {
        "blue": ("#1c3554", "#86b0d4"), "green": ("#23401e", "#86a860"), "brown": ("#24130a", "#80502a"),
        "hazel": ("#33260e", "#a0803c"), "grey": ("#363c44", "#a4acb4"), "amber": ("#4e2c08", "#cc9434"),
        "black": ("#0c0a0a", "#3a302c"), "violet": ("#2e1c46", "#9a78c8"), "purple": ("#2e1c46", "#9a78c8"),
        "red": ("#3a0a0a", "#b03a34"),
    },
    "lips": {
        "red": ("#4a0a12", "#b8283a"), "pink": ("#6e2440", "#f08cb0"), "nude": ("#6a3a30", "#d09a88"),
        "plum": ("#3a1020", "#9a4466"), "coral": ("#6a2418", "#f07c64"), "burgundy": ("#300810", "#8c2036"),
        "black": ("#0c0808", "#3a3034"), "purple": ("#2a0c30", "#8a4aa0"), "mauve": ("#4e2a38", "#c08aa0"),
        "berry": ("#300a1c", "#9a3060"),
    },
}
SHADES["brows"] = SHADES["hair"]


def shade_colours(base: str, family: str) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """The (dark, light) sRGB ends of ``base``'s shade for a region family ("hair", "brows",
    "eyes", "lips"), or None when the family has no such shade (the recolour then builds a range
    around the plan's single colour)."""
    pair = SHADES.get(family, {}).get(base)
    if pair is None and base.endswith(" blond"):
        pair = SHADES.get(family, {}).get(base + "e")
    if pair is None and family in ("hair", "brows") and base in HAIR_LIKE_OVERRIDES:
        pair = SHADES[family].get(HAIR_LIKE_OVERRIDES[base])
    return None if pair is None else (hex_to_rgb(pair[0]), hex_to_rgb(pair[1]))


# Qualifiers a colourist honours on top of a shade. They travel in the plan's ``colour_name``
# ("blonde with dark roots"), so a plan written by any refiner (or by hand) carries them.
#   dark roots: the top of the region (along the head's up axis) darker, fading out by a third;
#   ombre:      the shade grows from the old colour at the top to the new one at the ends;
#   highlights: the lightest strands lifted further (sun-lightened, no positions needed);
#   <colour> ends / <colour> roots: a second shade at the ends / the roots (two-tone).
QUALIFIERS = ("dark roots", "highlights", "ombre")
_QUAL_RE = re.compile(r"\b(?:with\s+)?(?:(?P<roots>(?:dark|darker|black|brown|natural|grown out)\s+roots)"
                      r"|(?P<highlights>(?:(?:blonde|blond|light|lighter|golden|caramel)\s+)?highlights|balayage"
                      r"|babylights|sun kissed)|(?P<ombre>ombre|ombré|dip dyed|dip dye|faded ends))\b")
_ENDS_RE = re.compile(r"\bwith\s+(?P<col>[a-z ]+?)\s+(?P<part>ends|tips|roots)\b")


def split_qualifiers(text: str) -> tuple[str, list[str]]:
    """'blonde with dark roots' -> ('blonde', ['dark roots']); 'red with blue ends' -> ('red',
    ['blue ends']). Text without qualifiers comes back as it was, with an empty list."""
    found: list[str] = []

    def take(m: re.Match) -> str:
        kind = next(k for k in ("roots", "highlights", "ombre") if m.group(k))
        found.append({"roots": "dark roots", "highlights": "highlights", "ombre": "ombre"}[kind])
        return " "

    def take_ends(m: re.Match) -> str:
        col = find_colour(m.group("col"))
        if col is None:
            return m.group(0)
        found.append(f"{col.name} {'roots' if m.group('part') == 'roots' else 'ends'}")
        return " "

    rest = _ENDS_RE.sub(take_ends, text)
    rest = _QUAL_RE.sub(take, rest)
    return re.sub(r"\s+", " ", rest).strip(" ,;"), found


def nearest_colour(word: str) -> str | None:
    """The vocabulary colour whose name is closest in spelling to ``word`` (a typo such as
    "purpel", "blnde"), or None when nothing is close (similarity below 0.75)."""
    import difflib

    hits = difflib.get_close_matches(word, list(COLOURS), n=1, cutoff=0.75)
    return hits[0] if hits else None


def find_qualifiers(text: str) -> tuple[str, list[str]]:
    """Qualifiers in a prompt's clause, blanked (spaces, so spans of the rest stay put): -> (text,
    ['dark roots', 'highlights', 'ombre', '<colour> ends' ...])."""
    found: list[str] = []

    def blank(m: re.Match, word: str) -> str:
        found.append(word)
        return " " * len(m.group(0))

    def ends(m: re.Match) -> str:
        col = find_colour(m.group("col"))
        if col is None:
            return m.group(0)
        return blank(m, f"{col.name} {'roots' if m.group('part') == 'roots' else 'ends'}")

    text = _ENDS_RE.sub(ends, text)
    text = _QUAL_RE.sub(lambda m: blank(m, next({"roots": "dark roots", "highlights": "highlights",
                                                 "ombre": "ombre"}[k] for k in ("roots", "highlights", "ombre")
                                                if m.group(k))), text)
    return text, found
