"""The serving path of the learned model's features: one compiled pass over a text's code points.

features.py defines the features (training reads them there, as strings and exact codes); this module finds the
same features in one loop compiled by numba and sums the model's rows for them, instead of a few dozen numpy calls
and a regular expression per message (docs/triage.md, "Speed"). `tests/unit/test_triage_reader.py` holds the two
equal on every kind of text.

A character n-gram is looked up by its exact code (features.code). A word, stem or word bigram is looked up by a
62-bit hash of its characters (`word_key`), set apart from the codes by bit 62; `FeatureTable` refuses a model whose
words collide, so the only possible error is an unknown word taken for a known one, about once in 10^14 words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from app.triage.features import KINDS, NOTHING, HAN, MARK, SYMBOL, LONG_NUMBER, STEM, BASE

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_WORD_FLAG = 1 << 62
_WORD_BITS = _WORD_FLAG - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = -1
# Code points that words are made of, and the ones that matter to their shape.
_A, _Z, _ZERO, _NINE, _APOSTROPHE, _DOT, _SPACE, _TAB, _TILDE = (ord(c) for c in "az09'. \t~")
# How a word is written as a feature: its own characters, "#dec" or "#long".
_PLAIN, _DECIMAL, _LONG = range(3)


def word_key(word: str) -> int:
    """The table key of a word feature ("refund", "~refun", "order status", "#long")."""
    value = 0xCBF29CE484222325
    for char in word:
        value = ((value ^ ord(char)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (value & _WORD_BITS) | _WORD_FLAG


@njit(cache=True, nogil=True)
def _slot(key: np.int64, bits: int) -> int:
    return np.int64((np.uint64(key) * _MIX) >> np.uint64(64 - bits))


@njit(cache=True, nogil=True)
def _find(table: np.ndarray, bits: int, key: np.int64) -> int:
    mask = (1 << bits) - 1
    slot = _slot(key, bits)
    while True:
        found = table[2 * slot]
        if found == key:
            return table[2 * slot + 1]
        if found == _EMPTY:
            return -1
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True)
def _hash_step(value: np.uint64, point: np.uint64) -> np.uint64:
    return (value ^ point) * _FNV_PRIME


@njit(cache=True, nogil=True)
def _finish(value: np.uint64) -> np.int64:
    return np.int64(value & np.uint64(_WORD_BITS)) | np.int64(_WORD_FLAG)


@njit(cache=True, nogil=True)
def _is_word_char(point: int) -> bool:
    return _A <= point <= _Z or _ZERO <= point <= _NINE


@njit(cache=True, nogil=True)
def _is_digit(point: int) -> bool:
    return _ZERO <= point <= _NINE


@njit(cache=True, nogil=True)
def _word_end(points: np.ndarray, start: int) -> tuple[int, bool]:
    """Where the word starting at `start` ends (features._WORD), and whether it is a decimal."""
    size = len(points)
    if _is_digit(points[start]):
        # A decimal first: digits, then at least one ".digits".
        end = start
        while end < size and _is_digit(points[end]):
            end += 1
        decimal_end = end
        while decimal_end + 1 < size and points[decimal_end] == _DOT and _is_digit(points[decimal_end + 1]):
            decimal_end += 2
            while decimal_end < size and _is_digit(points[decimal_end]):
                decimal_end += 1
        if decimal_end > end:
            return decimal_end, True
    end = start
    while end < size and _is_word_char(points[end]):
        end += 1
    if end + 1 < size and points[end] == _APOSTROPHE and _A <= points[end + 1] <= _Z:
        end += 1
        while end < size and _A <= points[end] <= _Z:
            end += 1
    return end, False


@njit(cache=True, nogil=True)
def _add(found: np.ndarray, spans: np.ndarray, count: int, seen: np.ndarray, seen_bits: int, row: int, start: int,
         end: int) -> int:
    """Append a row once, with the span of its first occurrence (seen is a small open-addressing set of rows)."""
    if row < 0:
        return count
    mask = (1 << seen_bits) - 1
    slot = _slot(np.int64(row), seen_bits)
    while seen[slot] != _EMPTY:
        if seen[slot] == row:
            return count
        slot = (slot + 1) & mask
    seen[slot] = row
    found[count] = row
    spans[count, 0] = start
    spans[count, 1] = end
    return count + 1


@njit(cache=True, nogil=True)
def _read(points: np.ndarray, kinds: np.ndarray, table: np.ndarray, bits: int,
          extra: np.ndarray) -> np.ndarray:
    """The distinct rows of every feature of a normalised text (as code points), then of `extra` rows."""
    return _rows_of(points, kinds, table, bits, extra)[0]


# Reading and summing in one call: each call from Python into compiled code costs about as much as summing a
# short message's rows.
@njit(cache=True, nogil=True)
def _predict(points: np.ndarray, kinds: np.ndarray, table: np.ndarray, bits: int,
             extra: np.ndarray, weights: np.ndarray, bias: np.ndarray, intents: int,
             emotions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    found, spans = _rows_of(points, kinds, table, bits, extra)
    return found, spans, _probabilities(weights, bias, found, intents, emotions)


@njit(cache=True, nogil=True)
def _rows_of(points: np.ndarray, kinds: np.ndarray, table: np.ndarray, bits: int,
             extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows, each with the [start, end) of its first occurrence in the text ((-1, -1) for `extra`)."""
    size = len(points)
    capacity = 3 * size + len(extra) + 1
    seen_bits = 4
    while (1 << seen_bits) < 2 * capacity:
        seen_bits += 1
    seen = np.full(1 << seen_bits, _EMPTY, dtype=np.int64)
    found = np.empty(capacity, dtype=np.int64)
    spans = np.empty((capacity, 2), dtype=np.int64)
    count = 0
    base = np.int64(BASE)
    # Character features: each visible character, Han (and mark) pairs, Han triples.
    previous_kind, before_kind = NOTHING, NOTHING
    previous_point, before_point = np.int64(0), np.int64(0)
    has_word = False
    for index in range(size):
        point = np.int64(points[index])
        kind = SYMBOL if point > 0xFFFF else kinds[point]
        shifted = point + 1
        if kind != NOTHING:
            count = _add(found, spans, count, seen, seen_bits, _find(table, bits, shifted * base * base),
                         index, index + 1)
            if kind == previous_kind and (kind == HAN or kind == MARK):
                count = _add(found, spans, count, seen, seen_bits,
                             _find(table, bits, (previous_point * base + shifted) * base), index - 1, index + 1)
                if kind == HAN and before_kind == HAN:
                    count = _add(found, spans, count, seen, seen_bits,
                                 _find(table, bits, (before_point * base + previous_point) * base + shifted),
                                 index - 2, index + 1)
        elif not has_word and _is_word_char(point):
            has_word = True
        before_kind, before_point = previous_kind, previous_point
        previous_kind, previous_point = kind, shifted
    if has_word:
        count = _read_words(points, table, bits, found, spans, count, seen, seen_bits)
    for row in extra:
        count = _add(found, spans, count, seen, seen_bits, row, -1, -1)
    return found[:count], spans[:count]


@njit(cache=True, nogil=True)
def _read_words(points: np.ndarray, table: np.ndarray, bits: int, found: np.ndarray,
                spans: np.ndarray, count: int, seen: np.ndarray, seen_bits: int) -> int:
    """Words, stems and word bigrams, as features.word_features reads them."""
    size = len(points)
    index = 0
    previous = np.uint64(0)
    previous_start = previous_end = -1
    while index < size:
        if not _is_word_char(points[index]):
            index += 1
            continue
        end, decimal = _word_end(points, index)
        form = _DECIMAL if decimal else _LONG if _is_long_number(points, index, end) else _PLAIN
        value = _hash_form(_FNV_OFFSET, points, index, end, form)
        count = _add(found, spans, count, seen, seen_bits, _find(table, bits, _finish(value)), index, end)
        if form == _PLAIN and end - index > STEM:
            stem = _hash_form(_hash_step(_FNV_OFFSET, np.uint64(_TILDE)), points, index, index + STEM, _PLAIN)
            count = _add(found, spans, count, seen, seen_bits, _find(table, bits, _finish(stem)), index, end)
        if previous_end >= 0 and _only_spaces(points, previous_end, index):
            pair = _hash_form(_hash_step(previous, np.uint64(_SPACE)), points, index, end, form)
            count = _add(found, spans, count, seen, seen_bits, _find(table, bits, _finish(pair)),
                         previous_start, end)
        previous, previous_start, previous_end, index = value, index, end, end
    return count


@njit(cache=True, nogil=True)
def _is_long_number(points: np.ndarray, start: int, end: int) -> bool:
    if end - start < LONG_NUMBER:
        return False
    for position in range(start, end):
        if not _is_digit(points[position]):
            return False
    return True


@njit(cache=True, nogil=True)
def _hash_form(value: np.uint64, points: np.ndarray, start: int, end: int, form: int) -> np.uint64:
    """The hash continued with a word as features.word_features writes it: "#dec", "#long" or its characters."""
    if form == _DECIMAL:
        for char in "#dec":
            value = _hash_step(value, np.uint64(ord(char)))
    elif form == _LONG:
        for char in "#long":
            value = _hash_step(value, np.uint64(ord(char)))
    else:
        for position in range(start, end):
            value = _hash_step(value, np.uint64(points[position]))
    return value


@njit(cache=True, nogil=True)
def _only_spaces(points: np.ndarray, start: int, end: int) -> bool:
    """Whether two words are one remark: nothing but spaces and tabs between them ("order, please" is two)."""
    for position in range(start, end):
        if points[position] != _SPACE and points[position] != _TAB:
            return False
    return True


@njit(cache=True, nogil=True)
def _summed(weights: np.ndarray, bias: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Each output's score: the rows summed, scaled by 1/sqrt(their count), plus the bias."""
    columns = weights.shape[1]
    total = np.zeros(columns, dtype=np.float64)
    for row in found:
        for column in range(columns):
            total[column] += weights[row, column]
    scale = 1.0 / np.sqrt(len(found)) if len(found) else 0.0
    for column in range(columns):
        total[column] = total[column] * scale + bias[column]
    return total


# Called from Python only: numba's cache loses an array result's type when one compiled function is called both
# from Python and from another compiled function ("'descr' is NULL"), so each entry point has its own.
@njit(cache=True, nogil=True)
def _scores(weights: np.ndarray, bias: np.ndarray, found: np.ndarray) -> np.ndarray:
    return _summed(weights, bias, found)


@njit(cache=True, nogil=True)
def _softmax_in_place(values: np.ndarray, start: int, end: int) -> None:
    top = values[start:end].max()
    total = 0.0
    for index in range(start, end):
        values[index] = np.exp(values[index] - top)
        total += values[index]
    for index in range(start, end):
        values[index] /= total


@njit(cache=True, nogil=True)
def _probabilities(weights: np.ndarray, bias: np.ndarray, found: np.ndarray, intents: int,
                      emotions: int) -> np.ndarray:
    """The heads' outputs: a softmax over the intent columns, one over the emotion columns, then a logistic."""
    values = _summed(weights, bias, found)
    _softmax_in_place(values, 0, intents)
    _softmax_in_place(values, intents, intents + emotions)
    last = intents + emotions
    values[last] = 1.0 / (1.0 + np.exp(-values[last])) if values[last] > -60 else 0.0
    return values


@njit(cache=True, nogil=True)
def _strongest(pushes: np.ndarray, rows: np.ndarray, spans: np.ndarray, limit: int) -> np.ndarray:
    """Up to `limit` spans of the text whose features pushed most, strongest first, as rows of (start, end, push).

    Candidates are taken in order of push (then row, higher first), at most 4 * limit of them: a candidate with no
    push left, or read from no span (a rule signal), or inside an already chosen span, is passed over."""
    count = len(rows)
    taken = np.zeros(count, dtype=np.bool_)
    chosen = np.empty((limit, 3), dtype=np.float64)
    found = 0
    for _ in range(min(count, 4 * limit)):
        best = -1
        for index in range(count):
            if taken[index]:
                continue
            if best < 0 or pushes[rows[index]] > pushes[rows[best]] or (
                    pushes[rows[index]] == pushes[rows[best]] and rows[index] > rows[best]):
                best = index
        taken[best] = True
        push = pushes[rows[best]]
        if push <= 0:
            break
        start, end = spans[best, 0], spans[best, 1]
        if start < 0:
            continue
        inside = False
        for other in range(found):
            if start >= chosen[other, 0] and end <= chosen[other, 1]:
                inside = True
                break
        if inside:
            continue
        chosen[found, 0], chosen[found, 1], chosen[found, 2] = start, end, push
        found += 1
        if found == limit:
            break
    return chosen[:found]


class FeatureTable:
    """The model's features in one open-addressing table: character codes as they are, words by `word_key`.

    Each slot is a key and its row side by side (`table[2 * slot]`, `table[2 * slot + 1]`): a lookup touches one
    cache line, not one in a key array and another in a row array. In the service a message's few hundred lookups
    find the table cold, after the request's other work, so lines touched are what a lookup costs."""

    __slots__ = ("table", "bits")

    def __init__(self, codes: np.ndarray, words: Sequence[str]) -> None:
        count = len(codes) + len(words)
        # At most two thirds full: an absent key's probe run stays short.
        bits = 4
        while (1 << bits) * 2 < 3 * count:
            bits += 1
        table = np.full(2 << bits, _EMPTY, dtype=np.int64)
        word_keys = np.array([word_key(word) for word in words], dtype=np.int64)
        if len(np.unique(word_keys)) != len(word_keys):
            raise ValueError("two word features of the model share a key")
        _fill(table, bits, np.concatenate((np.asarray(codes, dtype=np.int64), word_keys)))
        self.table, self.bits = table, bits
        # Compiles (or loads from numba's cache) the reader now, at model load, not on the first message.
        self.read("a", np.zeros(0, dtype=np.int64))
        self.predict("", np.zeros(0, dtype=np.int64), np.zeros((1, 3), dtype=np.float32),
                     np.zeros(3, dtype=np.float32), 1, 1)
        strongest(np.zeros(1, dtype=np.float32), np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64), 1)

    def read(self, text: str, extra: np.ndarray) -> np.ndarray:
        """The distinct rows of a normalised text's features, then of the `extra` rows."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return _read(points, KINDS, self.table, self.bits, extra)

    def predict(self, text: str, extra: np.ndarray, weights: np.ndarray, bias: np.ndarray, intents: int,
                emotions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows `read` finds, the span of each one's first occurrence ((-1, -1) for `extra`) and the heads'
        outputs for them (`_probabilities`), in one compiled call."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return _predict(points, KINDS, self.table, self.bits, extra, weights, bias, intents, emotions)


@njit(cache=True)
def _fill(table: np.ndarray, bits: int, features: np.ndarray) -> None:
    mask = (1 << bits) - 1
    for row in range(len(features)):
        slot = _slot(features[row], bits)
        while table[2 * slot] != _EMPTY:
            slot = (slot + 1) & mask
        table[2 * slot] = features[row]
        table[2 * slot + 1] = row


def scores(weights: np.ndarray, bias: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Each output's score for the rows found (see `_scores`)."""
    return _scores(weights, bias, found)



def strongest(pushes: np.ndarray, rows: np.ndarray, spans: np.ndarray, limit: int) -> list[tuple[int, int, float]]:
    """The spans whose features pushed most (see `_strongest`), as (start, end, push)."""
    return [(int(start), int(end), push) for start, end, push in _strongest(pushes, rows, spans, limit).tolist()]
