"""The compiled reader (reader.py) finds exactly the features that features.py defines, and the model's scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.triage.features import character_codes, word_features
from app.triage.learned import N_COLUMNS, ModelError, TextModel, default_model
from app.triage.normalize import normalise
from app.triage.reader import FeatureTable, word_key

# Han characters, the two kinds of marks, words with apostrophes and decimals, separators that do and do not join
# a word bigram, an emoji (astral) and a few symbols.
ALPHABET = list("快递没到退款差评好 abcrfund'.09 \t,!?！？😡★#~é\n")


def defined_features(norm: str) -> tuple[set[int], set[str]]:
    return set(character_codes(norm)[0].tolist()), {word for word, _start, _end in word_features(norm)}


def model_of(codes: set[int], words: set[str], seed: int = 7) -> TextModel:
    ordered_words = sorted(words)
    weights = np.random.default_rng(seed).normal(size=(len(codes) + len(ordered_words), N_COLUMNS))
    return TextModel("probe", np.array(sorted(codes), dtype=np.int64), ordered_words, weights.astype(np.float32),
                     np.zeros(N_COLUMNS, dtype=np.float32), {})


def defined_rows(model: TextModel, norm: str) -> set[int]:
    codes, words = defined_features(norm)
    places = {value: row for row, value in enumerate(model.codes.tolist())}
    return {places[value] for value in codes if value in places} | {model.words[w] for w in words if w in model.words}


@given(st.text(alphabet=st.sampled_from(ALPHABET), max_size=80), st.text(alphabet=st.sampled_from(ALPHABET),
                                                                         max_size=80))
@settings(max_examples=400, deadline=None)
def test_the_reader_finds_the_defined_features_known_to_the_model(known: str, text: str) -> None:
    # The model knows the features of one text; the other text has some of them and some it does not know.
    codes, words = defined_features(normalise(known).text)
    codes_here, words_here = defined_features(normalise(text).text)
    half_codes = set(sorted(codes_here)[::2])
    half_words = set(sorted(words_here)[::2])
    model = model_of(codes | half_codes, words | half_words)
    norm = normalise(text).text
    rows = model.rows(norm)
    assert len(set(rows.tolist())) == len(rows), "a feature counted twice"
    assert set(rows.tolist()) == defined_rows(model, norm)


def test_words_decimals_long_numbers_stems_and_bigrams_are_read_as_defined() -> None:
    norm = normalise("Order 12345678 arrived, rated 4.1 stars; it's refunded? don't\tknow 3.5.2x").text
    codes, words = defined_features(norm)
    assert {"#long", "#dec", "~refun", "it's", "don't know", "order #long", "rated #dec"} <= words
    assert "arrived rated" not in words  # a comma parts two remarks
    model = model_of(codes, words)
    assert sorted(model.rows(norm).tolist()) == list(range(model.feature_count))


def test_signals_are_rows_too_and_unknown_signals_are_skipped() -> None:
    model = model_of({code for code in defined_features("退款")[0]}, {"R:return_refund"})
    rows = model.rows("退款", ["R:return_refund", "R:never_seen", "R:return_refund"])
    assert sorted(rows.tolist()) == list(range(model.feature_count))


def test_scores_are_the_rows_summed_and_scaled() -> None:
    model = model_of(defined_features("快递没到")[0], {"parcel"})
    rows = model.rows("快递没到 parcel")
    expected = model.weights[rows].astype(np.float64).sum(axis=0) / np.sqrt(len(rows)) + model.bias
    assert np.allclose(model.scores(rows), expected, atol=1e-5)
    assert model.scores(model.rows("")) == pytest.approx(model.bias.tolist())


def test_the_shipped_model_reads_real_messages_as_defined() -> None:
    model = default_model()
    assert model is not None
    for text in ("亲，快递三天没动了，再不到就给差评！！", "where is my parcel?? 😡 order 12345678", "評分4.1星的店",
                 "I was charged twice for order #A1234, please refund asap", "我的order还没到，tracking一直不动"):
        norm = normalise(text).text
        assert set(model.rows(norm).tolist()) == defined_rows(model, norm)


def test_a_model_whose_words_share_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.triage.reader as reader

    monkeypatch.setattr(reader, "word_key", lambda word: 1 << 62)
    with pytest.raises(ModelError, match="share a key"):
        model_of(set(), {"refund", "parcel"})


def test_word_keys_stay_apart_from_character_codes() -> None:
    # Character codes are below BASE**3 < 2**62; word keys have bit 62 set.
    assert all(word_key(word) >= 1 << 62 for word in ("a", "refund", "#long", "~refun", "order status"))
    assert word_key("refund") != word_key("refunds")


def test_an_empty_model_reads_nothing() -> None:
    table = FeatureTable(np.zeros(0, dtype=np.int64), [])
    assert table.read("快递 parcel 😡", np.zeros(0, dtype=np.int64)).tolist() == []


def test_probabilities_are_softmaxes_of_the_heads_and_a_logistic() -> None:
    from app.triage.learned import N_EMOTIONS, N_INTENTS, URGENT_COLUMN

    model = model_of(defined_features("气死了快递没到")[0], {"parcel"}, seed=11)
    norm = "气死了快递没到 parcel"
    scores = np.array(model.scores(model.rows(norm)))
    prediction = model.predict(norm)

    def softmax(values: np.ndarray) -> np.ndarray:
        shifted = np.exp(values - values.max())
        return shifted / shifted.sum()

    assert np.allclose(prediction.intents, softmax(scores[:N_INTENTS]))
    assert np.allclose(prediction.emotions, softmax(scores[N_INTENTS:URGENT_COLUMN]))
    assert prediction.urgent == pytest.approx(1 / (1 + np.exp(-scores[URGENT_COLUMN])))
    assert sum(prediction.intents) == pytest.approx(1.0) and len(prediction.emotions) == N_EMOTIONS
