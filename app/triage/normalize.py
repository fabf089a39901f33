"""Text normalisation for matching, with a map from every normalised index back to the original."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import opencc

# Beyond NFKC and case folding: star glyphs fold to one pair so that "1⭐" and "★☆☆☆☆" are
# single phrases, and typographic quotes fold so "won’t" matches "won't".
_EXTRA_FOLDS = {
    "⭐": "★", "🌟": "★", "✭": "★", "✮": "★", "✯": "★", "✪": "★",
    "✩": "☆", "✰": "☆",
    "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"',
}

# Full-width punctuation is left as typed: folding "，" to "," buys nothing (the ruleset lists both forms)
# and would make almost every Chinese message take the slow translate path.
_KEPT_AS_TYPED = frozenset(
    chr(cp) for block in (range(0xFF01, 0xFF10), range(0xFF1A, 0xFF21), range(0xFF3B, 0xFF41), range(0xFF5B, 0xFF66),
                          range(0x3000, 0x3001))
    for cp in block)

_SUPPLEMENTARY_BLOCKS = (
    range(0x1D400, 0x1D800),   # mathematical alphanumerics used as "fancy" letters
    range(0x1F100, 0x1F200),   # enclosed alphanumerics
    range(0x2F800, 0x2FA20),   # CJK compatibility ideographs
)

_CANTONESE_MARKERS = re.compile("[唔冇咗嘅佢哋喺啲咁嚟嘢乜噉睇揾攞嗰啱咩]")
_LATIN_WORD = re.compile(r"[a-z]+")
# Han ideographs only (unified, extension A, compatibility, the astral extensions): emoji, stars, kana and
# punctuation are no evidence of Chinese.
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


@cache
def _fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for codepoint in (*range(0x10000), *(cp for block in _SUPPLEMENTARY_BLOCKS for cp in block)):
        if 0xD800 <= codepoint <= 0xDFFF:
            table[codepoint] = "\ufffd"
            continue
        char = chr(codepoint)
        folded = unicodedata.normalize("NFKC", char).casefold()
        if folded and folded != char and char not in _KEPT_AS_TYPED:
            table[codepoint] = folded
    for char, folded in _EXTRA_FOLDS.items():
        table[ord(char)] = folded
    return table


@cache
def _bmp_table() -> tuple[str | int, ...]:
    """The fold table as a tuple indexed by code point: str.translate reads it about twice as fast as a dict."""
    table = _fold_table()
    return tuple(table.get(codepoint, codepoint) for codepoint in range(0x10000))


_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


@cache
def _needs_fold() -> re.Pattern[str]:
    """Any character the fold table changes, any surrogate and any astral character (checked one by one)."""
    bmp = "".join(re.escape(chr(cp)) for cp in sorted(_fold_table()) if cp < 0xD800 or 0xDFFF < cp < 0x10000)
    return re.compile("[" + bmp + "\ud800-\udfff\U00010000-\U0010ffff]")


@cache
def _converter(config: str) -> opencc.OpenCC:
    return opencc.OpenCC(config)


class Normalised:
    """Matching form of a text; origin[i] is the original index of normalised character i (None: the same)."""

    __slots__ = ("text", "origin", "folded")

    def __init__(self, text: str, origin: tuple[int, ...] | None, folded: str) -> None:
        self.text = text
        self.origin = origin
        self.folded = folded


def _fold(text: str) -> tuple[str, tuple[int, ...] | None]:
    if text.isascii():
        return text.lower(), None
    if not _needs_fold().search(text):
        return text, None
    folded = text.translate(_bmp_table())
    if _ASTRAL.search(folded):
        table = _fold_table()
        folded = _ASTRAL.sub(lambda match: table.get(ord(match.group()), match.group()), folded)
    # Folds never produce an empty string, so equal length means every character mapped 1:1.
    if len(folded) == len(text):
        return folded, None
    table = _fold_table()
    pieces: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        piece = table.get(ord(char), char)
        pieces.append(piece)
        origin.extend([index] * len(piece))
    return "".join(pieces), tuple(origin)


def _to_simplified(folded: str) -> str:
    # Plain t2s: tw2s also turns some Simplified 么 into 幺 ("是么" → "是幺"), and hk2s/tw2s differ from t2s only
    # on variants such as 著急/衞生, which the ruleset lists. Cantonese (唔, 冇, 咗, 俾) has no Simplified
    # form to convert to, so the ruleset carries Cantonese phrases.
    if not _script_patterns()[0].search(folded):
        return folded
    converted = _converter("t2s").convert(folded)
    if len(converted) == len(folded):
        return converted
    # A phrase conversion changed the length: convert character by character to keep alignment.
    convert = _converter("t2s").convert
    out = []
    for char in folded:
        single = convert(char)
        out.append(single if len(single) == 1 else char)
    return "".join(out)


@cache
def _script_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Traditional-only and Simplified-only characters as regex classes, derived from OpenCC's own tables."""
    ideographs = [chr(cp) for block in (range(0x3400, 0x4DC0), range(0x4E00, 0xA000), range(0xF900, 0xFB00))
                  for cp in block]
    # One conversion call over newline-separated characters: the separator stops phrase rules from firing.
    joined = "\n".join(ideographs)
    to_simplified = _converter("t2s").convert(joined).split("\n")
    to_traditional = _converter("s2t").convert(joined).split("\n")
    traditional_only = {char for char, simple in zip(ideographs, to_simplified) if simple != char}
    simplified_only = {char for char, trad in zip(ideographs, to_traditional) if trad != char} - traditional_only
    return (re.compile("[" + "".join(sorted(traditional_only)) + "]"),
            re.compile("[" + "".join(sorted(simplified_only)) + "]"))


def prepare() -> None:
    """Build the fold and script tables now (at ruleset load) rather than on the first message."""
    _bmp_table()
    _needs_fold()
    _script_patterns()
    _converter("t2s")


def normalise(text: str) -> Normalised:
    """NFKC, case folding, star/quote folding and Traditional-to-Simplified conversion."""
    folded, origin = _fold(text)
    if folded.isascii():
        return Normalised(folded, origin, folded)
    return Normalised(_to_simplified(folded), origin, folded)


def normalise_phrase(phrase: str) -> str:
    """The same normalisation applied to a ruleset phrase."""
    return normalise(phrase).text


def detect_language(normalised: Normalised) -> str:
    """zh-Hans, zh-Hant or en: the dominant script, weighing Han ideographs against English words."""
    folded = normalised.folded
    if folded.isascii():
        return "en" if _LATIN_WORD.search(folded) else "zh-Hans"
    if _LATIN_WORD.search(folded):
        words = len(_LATIN_WORD.findall(folded))
        # Counting stops once the Han characters match the English words: a long Chinese message is not walked.
        han = 0
        for _ in _HAN.finditer(folded):
            han += 1
            if han >= words:
                break
        else:
            return "en"
    if normalised.text == folded:
        return "zh-Hant" if _CANTONESE_MARKERS.search(folded) else "zh-Hans"
    traditional, simplified = _script_patterns()
    return "zh-Hant" if len(traditional.findall(folded)) >= len(simplified.findall(folded)) else "zh-Hans"
