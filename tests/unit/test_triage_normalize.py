"""Normalisation: what the automaton sees, and the map back to the original text."""

from __future__ import annotations

import pytest

from app.triage.normalize import detect_language, normalise, normalise_phrase


@pytest.mark.parametrize(("text", "expected"), [
    ("ＲＥＦＵＮＤ１２３１５", "refund12315"),        # full-width letters and digits, case folded
    ("給差評", "给差评"),                             # Traditional to Simplified
    ("唔該幾時發貨", "唔该几时发货"),                  # Cantonese characters survive, the rest converts
    ("1⭐", "1★"),                                   # star emoji folds to the star glyph
    ("✩✰☆", "☆☆☆"),                                  # hollow stars fold together
    ("won’t", "won't"),                              # typographic apostrophe
    ("，！？", "，！？"),                              # full-width punctuation is kept as typed
    ("ﬁ", "fi"),                                     # a ligature expands
    ("a\ud800b", "a\ufffdb"),                        # a lone surrogate becomes U+FFFD, never an error
    ("𝐑𝐞𝐟𝐮𝐧𝐝", "refund"),                             # mathematical letters used as fancy text
])
def test_normalised_text(text: str, expected: str) -> None:
    assert normalise(text).text == expected


def test_equal_length_keeps_identity_offsets() -> None:
    assert normalise("給差評！！ＡＢ").origin is None


def test_length_changing_fold_maps_back() -> None:
    text = "ﬁ½差評"
    normalised = normalise(text)
    assert normalised.text == "fi1⁄2差评"
    origin = normalised.origin
    assert origin is not None and len(origin) == len(normalised.text)
    start = normalised.text.index("差评")
    assert text[origin[start]:origin[start + 1] + 1] == "差評"


def test_phrases_normalise_like_messages() -> None:
    assert normalise_phrase("給差評") == normalise("給差評").text == "给差评"


@pytest.mark.parametrize(("text", "language"), [
    ("", "zh-Hans"),                     # nothing to go on: the shops' main language
    ("😡😡", "zh-Hans"),                  # emoji only
    ("ok thanks", "en"),                 # English
    ("這個多少錢", "zh-Hant"),            # Traditional characters
    ("这个多少钱", "zh-Hans"),            # Simplified characters
    ("佢哋話冇貨", "zh-Hant"),            # Cantonese
    ("亲 order还没ship吗", "zh-Hans"),    # mixed, more Chinese than English
    ("Terrible!!! 😡😡", "en"),          # emoji are no Chinese characters
    ("Thank you so much! ❤️❤️", "en"),    # nor are hearts with a variation selector
    ("5 stars ⭐⭐⭐⭐⭐ love it", "en"),    # nor star glyphs
    ("😡😡😡 where is my parcel", "en"),   # however many there are
    ("★☆☆☆☆ review posted.", "en"),      # a star bar before English
    ("ありがとう ok", "en"),              # kana are not Han: the one English word wins
    ("退款 refund 😡😡😡", "zh-Hans"),     # two Han against one word: emoji do not tip it
])
def test_language(text: str, language: str) -> None:
    assert detect_language(normalise(text)) == language
