"""Features of the learned model: n-grams of the normalised text, each with the span it came from.

Chinese has no spaces, so a run of Han characters gives its character unigrams, bigrams and trigrams; every other
visible character (emoji, stars, punctuation) is a feature of its own, and two exclamation or question marks in a
row are one more ("!!"). A character feature is an integer (`code`) that holds the n-gram's code points exactly,
so there are no collisions.

English gives words, word bigrams and a five-letter stem ("refunded" and "refunds" share "~refun"); a decimal
("4.1") is "#dec" and a long digit run (an order or tracking number) is "#long"; these are strings, few per message.

This module is the definition, read by training, explanations and tests; serving finds the same features in one
compiled pass (reader.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_HAN_CLASS = "".join(f"\\u{low:04x}-\\u{high:04x}" for low, high in _HAN_RANGES)
# A decimal ("4.1", as in "4.1 stars") is one word, so its last digit never reads as a rating of its own.
_WORD = re.compile(r"[0-9]+(?:\.[0-9]+)+|[a-z0-9]+(?:'[a-z]+)?")
LONG_NUMBER = 6
_DIGITS = frozenset("0123456789")
STEM = 5
# What each character of the Basic Multilingual Plane is to the character features: nothing (white space and the
# ASCII letters, digits and apostrophe that words are made of), a Han character, a symbol, or an exclamation or
# question mark (a symbol that also pairs). Astral characters (emoji) are symbols.
NOTHING, HAN, SYMBOL, MARK = range(4)


def _kinds() -> np.ndarray:
    kinds = np.full(0x10000, SYMBOL, dtype=np.uint8)
    for low, high in _HAN_RANGES:
        kinds[low:high + 1] = HAN
    for char in "abcdefghijklmnopqrstuvwxyz0123456789'":
        kinds[ord(char)] = NOTHING
    for point in range(0x10000):
        if chr(point).isspace():
            kinds[point] = NOTHING
    for char in "!?！？":
        kinds[ord(char)] = MARK
    # Surrogates never occur in a decoded str; upper-case letters never occur in normalised text.
    return kinds


KINDS = _kinds()

# Code points shifted by one, so an absent position (0) differs from every character; three such fields fit int64.
BASE = 0x110001


def code(chars: str) -> int:
    """The integer code of a character n-gram of one to three characters."""
    fields = [ord(char) + 1 for char in chars] + [0] * (3 - len(chars))
    return (fields[0] * BASE + fields[1]) * BASE + fields[2]


def decode(value: int) -> str:
    """The characters of a code."""
    head, third = divmod(value, BASE)
    first, second = divmod(head, BASE)
    # Shorter n-grams leave their last fields 0.
    if not second:
        return chr(first - 1)
    return chr(first - 1) + chr(second - 1) + (chr(third - 1) if third else "")


def character_codes(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of every character feature of a normalised text, with the start and length of each."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    size = len(points)
    kinds = KINDS[points & 0xFFFF]
    if size and points.max() > 0xFFFF:
        kinds[points > 0xFFFF] = SYMBOL
    han = kinds == HAN
    single = kinds != NOTHING
    shifted = points + 1
    positions = np.flatnonzero(single)
    codes = [shifted[positions] * (BASE * BASE)]
    starts = [positions]
    lengths = [np.ones(len(positions), dtype=np.int64)]
    if size > 1:
        pair = han[:-1] & han[1:]
        marks = kinds == MARK
        pair |= marks[:-1] & marks[1:]
        pairs = np.flatnonzero(pair)
        codes.append((shifted[pairs] * BASE + shifted[pairs + 1]) * BASE)
        starts.append(pairs)
        lengths.append(np.full(len(pairs), 2, dtype=np.int64))
        if size > 2:
            triples = np.flatnonzero(han[:-2] & han[1:-1] & han[2:])
            codes.append((shifted[triples] * BASE + shifted[triples + 1]) * BASE + shifted[triples + 2])
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
            elif len(word) >= LONG_NUMBER and word.isdigit():
                word = "#long"
        add((word, start, end))
        if len(word) > STEM and word[0] != "#":
            add(("~" + word[:STEM], start, end))
        # A bigram only across spaces: "order, please" is two remarks.
        if previous_word and (previous_end == start - 1 and text[previous_end] == " " or
                              not text[previous_end:start].strip(" \t")):
            add((previous_word + " " + word, previous_start, end))
        previous_word, previous_start, previous_end = word, start, end
    return found


def extract_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """Every feature of a normalised text as a string, with its span: the readable form, for tests and tools."""
    codes, starts, lengths = character_codes(text)
    for start, length in zip(starts.tolist(), lengths.tolist()):
        yield text[start:start + length], start, start + length
    yield from word_features(text)


def extract(text: str) -> list[str]:
    """The features of a normalised text as strings (repeats included; the model reads them as a set)."""
    return [feature for feature, _start, _end in extract_spans(text)]
