"""The learned model: linear heads over the features of features.py, loaded from a shipped .npz file.

One weight matrix holds every head: the intents (softmax over INTENTS), the emotions (softmax over EMOTIONS)
and urgency (a logistic output). Its rows are the character features first (their codes, sorted, in `codes`),
then the word features and the rules' signals (`words`). A message's scores are the sum of the rows of the
features it contains, scaled by 1/sqrt(their count), so a decision is explained by the features whose rows pushed
the chosen column most (see `explain`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from app.triage.model import EMOTIONS, INTENTS
from app.triage.reader import FeatureTable, scores, strongest

N_INTENTS = len(INTENTS)
N_EMOTIONS = len(EMOTIONS)
URGENT_COLUMN = N_INTENTS + N_EMOTIONS
N_COLUMNS = URGENT_COLUMN + 1
FORMAT = 2
_NO_ROWS = np.zeros(0, dtype=np.int64)
_INTENT_INDEX = {intent: index for index, intent in enumerate(INTENTS)}
# The rules' readings that recur are few (a few hundred in the corpus): their rows are kept, up to this many.
_SIGNAL_CACHE = 4096


class ModelError(ValueError):
    """A model file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the model reads in one text: a probability per intent and per emotion, and of urgency."""

    intents: tuple[float, ...]
    emotions: tuple[float, ...]
    urgent: float
    # The model's rows of the features found and the [start, end) of each one's first occurrence in the text
    # ((-1, -1) for the rules' signals), for `TextModel.explain`.
    rows: np.ndarray
    spans: np.ndarray

    def intent_probability(self, intent: str) -> float:
        return self.intents[_INTENT_INDEX[intent]]

    def best_intent(self, *, exclude: frozenset[str] = frozenset()) -> tuple[str, float]:
        best, probability = "other", -1.0
        for intent, value in zip(INTENTS, self.intents):
            if intent not in exclude and value > probability:
                best, probability = intent, value
        return best, probability

    def best_of(self, candidates: Sequence[int]) -> tuple[str, float]:
        """The likeliest of the intents at these ascending indexes of INTENTS, the first one on a tie (as
        `best_intent` with the others excluded)."""
        intents = self.intents
        best = candidates[0]
        for index in candidates[1:]:
            if intents[index] > intents[best]:
                best = index
        return INTENTS[best], intents[best]

    def best_emotion(self) -> tuple[str, float]:
        emotions = self.emotions
        best = max(emotions)
        return EMOTIONS[emotions.index(best)], best


class TextModel:
    """Feature codes and words, weights and biases of the linear heads; `version` names the exact content."""

    __slots__ = ("name", "codes", "words", "weights", "bias", "version", "metadata", "_pushes", "_table",
                 "_signal_rows")

    def __init__(self, name: str, codes: np.ndarray, words: Sequence[str], weights: np.ndarray, bias: np.ndarray,
                 metadata: dict[str, Any]) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        if weights.shape != (len(codes) + len(words), N_COLUMNS) or bias.shape != (N_COLUMNS,):
            raise ModelError(f"weights {weights.shape} and bias {bias.shape} do not fit {len(codes)} + {len(words)} "
                             f"features and {N_COLUMNS} outputs")
        if len(codes) > 1 and not bool(np.all(codes[1:] > codes[:-1])):
            raise ModelError("feature codes must be sorted and distinct")
        self.name = name
        self.codes = codes
        self.words: dict[str, int] = {word: len(codes) + index for index, word in enumerate(words)}
        try:
            self._table = FeatureTable(self.codes, list(words))
        except ValueError as error:
            raise ModelError(str(error)) from error
        # Weights are stored as float16; rounding here too makes a freshly trained model equal its loaded file.
        self.weights = np.ascontiguousarray(weights.astype(np.float16), dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.metadata = metadata
        self._signal_rows: dict[tuple[str, ...], np.ndarray] = {}
        # How much each feature pushes each intent above the intents' mean: what `explain` ranks by.
        # One contiguous row per intent: explaining an intent reads one array.
        intent_block = self.weights[:, :N_INTENTS]
        self._pushes = np.ascontiguousarray((intent_block - intent_block.mean(axis=1, keepdims=True)).T)
        digest = hashlib.sha256(self.weights.tobytes() + self.bias.tobytes() + self.codes.tobytes()
                                + "\n".join(words).encode()).hexdigest()
        self.version = f"{name}@{digest[:12]}"

    @property
    def feature_count(self) -> int:
        return len(self.codes) + len(self.words)

    def rows(self, text: str, signals: Sequence[str] = ()) -> np.ndarray:
        """Rows of the distinct features of a normalised text and of the rules' signals."""
        return self._table.read(text, self._rows_of_signals(signals))

    def _rows_of_signals(self, signals: Sequence[str]) -> np.ndarray:
        if not signals:
            return _NO_ROWS
        key = tuple(signals)
        extra = self._signal_rows.get(key)
        if extra is None:
            known = [row for row in map(self.words.get, key) if row is not None]
            extra = np.array(known, dtype=np.int64) if known else _NO_ROWS
            if len(self._signal_rows) >= _SIGNAL_CACHE:
                self._signal_rows.clear()
            self._signal_rows[key] = extra
        return extra

    def scores(self, rows: np.ndarray) -> list[float]:
        """Each output's score: the features are present (1) or absent, scaled by 1/sqrt(count) as in training."""
        return scores(self.weights, self.bias, rows).tolist()

    def predict(self, text: str, signals: Sequence[str] = ()) -> Prediction:
        """Probabilities of every head for a normalised text and what the rules read in it (`rule_signals`)."""
        rows, spans, outputs = self._table.predict(text, self._rows_of_signals(signals), self.weights, self.bias,
                                                   N_INTENTS, N_EMOTIONS)
        values = outputs.tolist()
        return Prediction(tuple(values[:N_INTENTS]), tuple(values[N_INTENTS:URGENT_COLUMN]), values[URGENT_COLUMN],
                          rows, spans)

    def strongest_spans(self, intent: str, prediction: Prediction, limit: int = 3) -> list[tuple[int, int]]:
        """The [start, end) spans of the normalised text whose features pushed `intent` most, strongest first: what
        `explain` names, without the features' texts and pushes (the triage's evidence needs only the spans)."""
        return [(start, end) for start, end, _push in strongest(self._pushes[_INTENT_INDEX[intent]], prediction.rows,
                                                                 prediction.spans, limit)]

    def explain(self, text: str, intent: str, *, prediction: Prediction | None = None,
                limit: int = 3) -> list[tuple[str, int, int, float]]:
        """The features of the text that pushed `intent` most above the other intents, strongest first, each with
        the span of the normalised text it was read from (its first occurrence).

        A feature's push is its weight for the intent minus its mean weight over all intents, so a feature that
        raises every intent alike (a common character) explains nothing. `prediction` is the text's, when known.
        """
        if prediction is None:
            prediction = self.predict(text)
        chosen = [(text[start:end], start, end, round(push, 3))
                  for start, end, push in strongest(self._pushes[_INTENT_INDEX[intent]], prediction.rows,
                                                    prediction.spans, limit)]
        return chosen

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        words = "\n".join(sorted(self.words, key=self.words.__getitem__))
        np.savez_compressed(
            buffer, format=np.array([FORMAT]), weights=self.weights.astype(np.float16), bias=self.bias,
            codes=self.codes, words=np.frombuffer(words.encode(), dtype=np.uint8),
            metadata=np.frombuffer(json.dumps({"name": self.name, **self.metadata}, ensure_ascii=False,
                                              sort_keys=True).encode(), dtype=np.uint8))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TextModel:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                if int(archive["format"][0]) != FORMAT:
                    raise ModelError(f"model format {int(archive['format'][0])} is not {FORMAT}")
                words = archive["words"].tobytes().decode()
                metadata = json.loads(archive["metadata"].tobytes().decode())
                weights = archive["weights"].astype(np.float32)
                bias = archive["bias"].astype(np.float32)
                codes = archive["codes"].astype(np.int64)
        except (OSError, KeyError, ValueError) as error:
            raise ModelError(f"not a triage model file: {error}") from error
        name = metadata.pop("name", "model")
        return cls(name, codes, words.split("\n") if words else [], weights, bias, metadata)

    @classmethod
    def load(cls, path: str | Path) -> TextModel:
        return cls.from_bytes(Path(path).read_bytes())


@cache
def default_model() -> TextModel | None:
    """The model shipped in the package, or None when the package carries none (rules alone then decide)."""
    resource = resources.files("app.triage").joinpath("models/default.npz")
    if not resource.is_file():
        return None
    return TextModel.from_bytes(resource.read_bytes())
