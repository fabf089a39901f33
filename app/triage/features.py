"""Features of the learned model: n-grams of the normalised text, each with the span it came from.

Chinese has no spaces, so a run of Han characters gives its character unigrams, bigrams and trigrams; English
gives words, word bigrams and a five-letter stem ("refunded" and "refunds" share "~refun"). Long digit runs
(order and tracking numbers) are one feature, "#long"; short ones ("12315", "3") stay as they are written.
Every other visible character (emoji, stars, punctuation) is a feature of its own, and two exclamation or
question marks in a row are one more ("!!").

A message is the set of its features: `feature_list` reads them fast for serving, `extract_spans` reads each
with the span it came from, to train and to explain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_RUN = re.compile(f"[{_HAN_CLASS}]+")
# A decimal ("4.1", as in "4.1 stars") is one word, so its last digit never reads as a rating of its own.
_WORD = re.compile(r"[0-9]+(?:\.[0-9]+)+|[a-z0-9]+(?:'[a-z]+)?")
_MARK_RUN = re.compile(r"[!?！？]{2,}")
# Characters that are never a feature on their own: spaces, and the apostrophe that belongs to words ("can't").
_SYMBOL = re.compile(f"[^\\s{_HAN_CLASS}a-z0-9']")
_LONG_NUMBER = 6
_STEM = 5


def _word_features(text: str) -> Iterator[tuple[str, int, int]]:
    previous_word = ""
    previous_start = previous_end = -1
    for match in _WORD.finditer(text):
        word = match.group()
        start, end = match.span()
        if word[0].isdigit():
            if "." in word:
                word = "#dec"
            elif word.isdigit() and len(word) >= _LONG_NUMBER:
                word = "#long"
        yield word, start, end
        if len(word) > _STEM and word[0] != "#":
            yield "~" + word[:_STEM], start, end
        # A bigram only across spaces: "order, please" is two remarks.
        if previous_word and previous_end >= 0 and not text[previous_end:start].strip(" \t"):
            yield previous_word + " " + word, previous_start, end
        previous_word, previous_start, previous_end = word, start, end


def extract_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """Every feature of a normalised text with the [start, end) span it was read from."""
    for match in _HAN_RUN.finditer(text):
        run, offset = match.group(), match.start()
        for size in (1, 2, 3):
            for index in range(len(run) - size + 1):
                yield run[index:index + size], offset + index, offset + index + size
    for match in _SYMBOL.finditer(text):
        yield match.group(), match.start(), match.end()
    for match in _MARK_RUN.finditer(text):
        run, offset = match.group(), match.start()
        for index in range(len(run) - 1):
            yield run[index:index + 2], offset + index, offset + index + 2
    yield from _word_features(text)


def extract(text: str) -> list[str]:
    """The features of a normalised text (repeats included; the model reads them as a set)."""
    return [feature for feature, _start, _end in extract_spans(text)]


def feature_list(text: str) -> list[str]:
    """The same features as `extract`, read without spans: the serving path, several times faster."""
    features: list[str] = []
    for run in _HAN_RUN.findall(text):
        size = len(run)
        features.extend(run)
        if size > 1:
            features.extend([run[index:index + 2] for index in range(size - 1)])
            if size > 2:
                features.extend([run[index:index + 3] for index in range(size - 2)])
    features.extend(_SYMBOL.findall(text))
    if "!" in text or "?" in text or "！" in text or "？" in text:
        for run in _MARK_RUN.findall(text):
            features.extend([run[index:index + 2] for index in range(len(run) - 1)])
    if _WORD.search(text) is not None:
        features.extend([feature for feature, _start, _end in _word_features(text)])
    return features


def vocabulary(texts: list[list[str]], *, min_count: int) -> dict[str, int]:
    """Features seen in at least min_count texts, numbered in sorted order so the numbering is reproducible."""
    counts: dict[str, int] = {}
    for features in texts:
        for feature in set(features):
            counts[feature] = counts.get(feature, 0) + 1
    kept = sorted(feature for feature, count in counts.items() if count >= min_count)
    return {feature: index for index, feature in enumerate(kept)}
