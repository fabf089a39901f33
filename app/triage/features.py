"""Features of the learned model: n-grams of the normalised text, each with the span it came from.

Chinese has no spaces, so a run of Han characters gives its character unigrams, bigrams and trigrams; every other
visible character (emoji, stars, punctuation) is a feature of its own, and two exclamation or question marks in a
row are one more ("!!"). These character features are integers, computed for the whole text at once with numpy
(`character_codes`): a code holds the n-gram's code points exactly, so there are no collisions, and a model looks
codes up in one sorted array. That keeps a 150-character message at tens of microseconds.

English gives words, word bigrams and a five-letter stem ("refunded" and "refunds" share "~refun"); a decimal
("4.1") is "#dec" and a long digit run (an order or tracking number) is "#long"; these are strings, few per message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_HAN_CLASS = "".join(f"\\u{low:04x}-\\u{high:04x}" for low, high in _HAN_RANGES)
_HAN_RUN = re.compile(f"[{_HAN_CLASS}]+")
# A decimal ("4.1", as in "4.1 stars") is one word, so its last digit never reads as a rating of its own.
_WORD = re.compile(r"[0-9]+(?:\.[0-9]+)+|[a-z0-9]+(?:'[a-z]+)?")
_LONG_NUMBER = 6
_DIGITS = frozenset("0123456789")
_STEM = 5
# What each character of the Basic Multilingual Plane is to the character features: nothing (white space and the
# ASCII letters, digits and apostrophe that words are made of), a Han character, a symbol, or an exclamation or
# question mark (a symbol that also pairs). Astral characters (emoji) are symbols.
_NOTHING, _HAN, _SYMBOL, _MARK = range(4)


def _kinds() -> np.ndarray:
    kinds = np.full(0x10000, _SYMBOL, dtype=np.uint8)
    for low, high in _HAN_RANGES:
        kinds[low:high + 1] = _HAN
    for char in "abcdefghijklmnopqrstuvwxyz0123456789'":
        kinds[ord(char)] = _NOTHING
    for point in range(0x10000):
        if chr(point).isspace():
            kinds[point] = _NOTHING
    for char in "!?！？":
        kinds[ord(char)] = _MARK
    # Surrogates never occur in a decoded str; upper-case letters never occur in normalised text.
    return kinds


_KINDS = _kinds()
_NO_SPANS = np.zeros(0, dtype=np.int64)

# Code points shifted by one, so an absent position (0) differs from every character; three such fields fit int64.
_BASE = 0x110001


def code(chars: str) -> int:
    """The integer code of a character n-gram of one to three characters."""
    fields = [ord(char) + 1 for char in chars] + [0] * (3 - len(chars))
    return (fields[0] * _BASE + fields[1]) * _BASE + fields[2]


def decode(value: int) -> str:
    """The characters of a code."""
    fields = []
    for _ in range(3):
        value, field = divmod(value, _BASE)
        fields.append(field)
    return "".join(chr(field - 1) for field in reversed(fields) if field)


def character_codes(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of every character feature of a normalised text, with the start and length of each."""
    return _character_codes(text, spans=True)


def distinct_codes(text: str) -> np.ndarray:
    """The distinct codes of the character features of a normalised text: what serving needs."""
    return np.unique(_character_codes(text, spans=False)[0])


def _character_codes(text: str, *, spans: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    size = len(points)
    kinds = _KINDS[points & 0xFFFF]
    if size and points.max() > 0xFFFF:
        kinds[points > 0xFFFF] = _SYMBOL
    han = kinds == _HAN
    single = kinds != _NOTHING
    shifted = points + 1
    positions = np.flatnonzero(single)
    codes = [shifted[positions] * (_BASE * _BASE)]
    if not spans:
        if size > 1:
            pair = han[:-1] & han[1:]
            marks = kinds == _MARK
            pair |= marks[:-1] & marks[1:]
            codes.append((shifted[:-1] * _BASE + shifted[1:])[pair] * _BASE)
            if size > 2:
                triple = pair[:-1] & han[2:] & han[:-2]
                codes.append(((shifted[:-2] * _BASE + shifted[1:-1]) * _BASE + shifted[2:])[triple])
        return np.concatenate(codes), _NO_SPANS, _NO_SPANS
    starts = [positions]
    lengths = [np.ones(len(positions), dtype=np.int64)]
    if size > 1:
        pair = han[:-1] & han[1:]
        marks = kinds == _MARK
        pair |= marks[:-1] & marks[1:]
        pairs = np.flatnonzero(pair)
        codes.append((shifted[pairs] * _BASE + shifted[pairs + 1]) * _BASE)
        starts.append(pairs)
        lengths.append(np.full(len(pairs), 2, dtype=np.int64))
        if size > 2:
            triples = np.flatnonzero(han[:-2] & han[1:-1] & han[2:])
            codes.append((shifted[triples] * _BASE + shifted[triples + 1]) * _BASE + shifted[triples + 2])
            starts.append(triples)
            lengths.append(np.full(len(triples), 3, dtype=np.int64))
    return np.concatenate(codes), np.concatenate(starts), np.concatenate(lengths)


def word_features(text: str) -> list[tuple[str, int, int]]:
    """English words, stems and bigrams, "#dec" and "#long", each with its [start, end) span."""
    found: list[tuple[str, int, int]] = []
    add = found.append
    previous_word = ""
    previous_start = previous_end = -1
    for match in _WORD.finditer(text):
        word = match.group()
        start, end = match.span()
        if word[0] in _DIGITS:
            if "." in word:
                word = "#dec"
            elif len(word) >= _LONG_NUMBER and word.isdigit():
                word = "#long"
        add((word, start, end))
        if len(word) > _STEM and word[0] != "#":
            add(("~" + word[:_STEM], start, end))
        # A bigram only across spaces: "order, please" is two remarks.
        if previous_word and (previous_end == start - 1 and text[previous_end] == " " or
                              not text[previous_end:start].strip(" \t")):
            add((previous_word + " " + word, previous_start, end))
        previous_word, previous_start, previous_end = word, start, end
    return found


_SYMBOL_CHARS = re.compile(f"[^\\s{_HAN_CLASS}a-z0-9']")
_MARK_RUN = re.compile("[!?！？]{2,}")


def character_strings(text: str) -> list[str]:
    """The character features of `character_codes` as strings, read with the standard library: cheaper than numpy's
    fixed cost of a few dozen calls on a short message."""
    features: list[str] = []
    for run in _HAN_RUN.findall(text):
        size = len(run)
        features.extend(run)
        if size > 1:
            features.extend([run[index:index + 2] for index in range(size - 1)])
            if size > 2:
                features.extend([run[index:index + 3] for index in range(size - 2)])
    features.extend(_SYMBOL_CHARS.findall(text))
    if "!" in text or "?" in text or "！" in text or "？" in text:
        for run in _MARK_RUN.findall(text):
            features.extend([run[index:index + 2] for index in range(len(run) - 1)])
    return features


def has_words(text: str) -> bool:
    return _WORD.search(text) is not None


def extract_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """Every feature of a normalised text as a string, with its span: the readable form, for tests and tools."""
    codes, starts, lengths = character_codes(text)
    for start, length in zip(starts.tolist(), lengths.tolist()):
        yield text[start:start + length], start, start + length
    yield from word_features(text)


def extract(text: str) -> list[str]:
    """The features of a normalised text as strings (repeats included; the model reads them as a set)."""
    return [feature for feature, _start, _end in extract_spans(text)]
