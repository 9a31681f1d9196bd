"""Is a prompt English? The rule refiner reads English only, and must say so rather than pass
"pelo rojo" to an image editor as if it were a style.

Two signs, used only when the rules understood nothing in the prompt (a prompt that names a region
in English keeps working whatever else it holds):

- most of its letters are outside ASCII ("赤い髪", "рыжие волосы", "cheveux très bouclés" is not:
  one accented letter among many);
- it uses a common word of an edit request in a European language written in Latin letters
  (hair, eyes, lips, skin, beard, glasses, hat, a few colours and articles), from the short lists
  below. Made-up words ("asdf qwerty") are neither: they stay a free-form edit, as before.
"""

from __future__ import annotations

import re

__all__ = ["looks_non_english", "FOREIGN_WORDS"]

# Words an edit request in Spanish, Portuguese, French, Italian, German or Dutch is likely to use,
# chosen not to be English words too ("rot", "die", "hut", "rode", "sans", "noir" are left out).
FOREIGN_WORDS = frozenset("""
    pelo cabello cabellos cabelo cabelos ojos olhos labios lábios piel pele barba gafas oculos óculos
    sombrero chapeu chapéu rojo roja rojos rojas azul azules verde verdes negro negra amarillo rubio rubia
    vermelho vermelha preto preta castaño moreno haz ponle ponme quiero hazla hazlo
    cheveux yeux lèvres levres peau barbe lunettes chapeau rouges bleu bleus bleue verts noirs
    blancs fais mettez avec les des une
    capelli occhi labbra pelle occhiali cappello rosso rossi rossa azzurri azzurro neri bianchi
    haare haar augen lippen brille rote roten rotes blaue blauen grüne grünen schwarze schwarzen
    weiße mach mache und mit ohne einen eine
    ogen blauwe groene zwarte baard bril
""".split())

_WORD_RE = re.compile(r"[^\W\d_]+")


def looks_non_english(prompt: str) -> bool:
    """True when most letters are not ASCII, or a word is in ``FOREIGN_WORDS``."""
    letters = [ch for ch in prompt if ch.isalpha()]
    if not letters:
        return False
    if sum(not ch.isascii() for ch in letters) * 2 > len(letters):
        return True
    return any(w in FOREIGN_WORDS for w in _WORD_RE.findall(prompt.lower()))
