"""The learned model: linear heads over the n-gram features of features.py, loaded from a shipped .npz file.

One weight matrix holds every head: the intents (softmax over INTENTS), the emotions (softmax over EMOTIONS)
and urgency (a logistic output). A message's scores are the sum of the rows of the features it contains, so
a decision is explained by the features whose rows pushed the chosen column most (see `explain`).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from math import exp
from pathlib import Path
from typing import Any

import numpy as np

from app.triage.features import extract_spans, feature_list
from app.triage.model import EMOTIONS, INTENTS

N_INTENTS = len(INTENTS)
N_EMOTIONS = len(EMOTIONS)
URGENT_COLUMN = N_INTENTS + N_EMOTIONS
N_COLUMNS = URGENT_COLUMN + 1
FORMAT = 1


class ModelError(ValueError):
    """A model file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the model reads in one text: a probability per intent and per emotion, and of urgency."""

    intents: tuple[float, ...]
    emotions: tuple[float, ...]
    urgent: float
    features: int

    def intent_probability(self, intent: str) -> float:
        return self.intents[INTENTS.index(intent)]

    def best_intent(self, *, exclude: frozenset[str] = frozenset()) -> tuple[str, float]:
        best, probability = "other", -1.0
        for intent, value in zip(INTENTS, self.intents):
            if intent not in exclude and value > probability:
                best, probability = intent, value
        return best, probability

    def best_emotion(self) -> tuple[str, float]:
        index = max(range(N_EMOTIONS), key=self.emotions.__getitem__)
        return EMOTIONS[index], self.emotions[index]


def _softmax(scores: list[float]) -> tuple[float, ...]:
    # A dozen values: plain floats beat numpy's per-call overhead here.
    top = max(scores)
    shifted = [exp(score - top) for score in scores]
    total = sum(shifted)
    return tuple(value / total for value in shifted)


def _logistic(score: float) -> float:
    return 1.0 / (1.0 + exp(-score)) if score > -60 else 0.0


class TextModel:
    """Vocabulary, weights and biases of the linear heads; `version` names the exact file."""

    __slots__ = ("name", "vocabulary", "weights", "bias", "version", "metadata")

    def __init__(self, name: str, vocabulary: dict[str, int], weights: np.ndarray, bias: np.ndarray,
                 metadata: dict[str, Any]) -> None:
        if weights.shape != (len(vocabulary), N_COLUMNS) or bias.shape != (N_COLUMNS,):
            raise ModelError(f"weights {weights.shape} and bias {bias.shape} do not fit {len(vocabulary)} features "
                             f"and {N_COLUMNS} outputs")
        self.name = name
        self.vocabulary = vocabulary
        # Weights are stored as float16; rounding here too makes a freshly trained model equal its loaded file.
        self.weights = np.ascontiguousarray(weights.astype(np.float16), dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.metadata = metadata
        digest = hashlib.sha256(self.weights.tobytes() + self.bias.tobytes()
                                + "\n".join(vocabulary).encode()).hexdigest()
        self.version = f"{name}@{digest[:12]}"

    def rows(self, text: str, signals: list[str] = ()) -> list[int]:  # type: ignore[assignment]
        """Vocabulary rows of the distinct features of a normalised text and of the rules' signals."""
        features = feature_list(text)
        features.extend(signals)
        found = set(map(self.vocabulary.get, features))
        found.discard(None)
        return list(found)  # type: ignore[arg-type]

    def scores(self, rows: list[int]) -> list[float]:
        """Each output's score: the features are present (1) or absent, scaled by 1/sqrt(count) as in training."""
        if not rows:
            return self.bias.tolist()
        return (self.weights[rows].sum(axis=0) * (len(rows) ** -0.5) + self.bias).tolist()

    def predict(self, text: str, signals: list[str] = ()) -> Prediction:  # type: ignore[assignment]
        """Probabilities of every head for a normalised text and what the rules read in it (`rule_signals`)."""
        rows = self.rows(text, signals)
        scores = self.scores(rows)
        return Prediction(_softmax(scores[:N_INTENTS]), _softmax(scores[N_INTENTS:URGENT_COLUMN]),
                          _logistic(scores[URGENT_COLUMN]), len(rows))

    def explain(self, text: str, intent: str, *, limit: int = 3) -> list[tuple[str, int, int, float]]:
        """The features that pushed `intent` most above the other intents, strongest first, each with its span.

        A feature's push is its weight for the intent minus its mean weight over all intents, so a feature that
        raises every intent alike (a common character) explains nothing.
        """
        column = INTENTS.index(intent)
        pushes: dict[str, tuple[float, int, int]] = {}
        intent_block = self.weights[:, :N_INTENTS]
        for feature, start, end in extract_spans(text):
            if feature in pushes:
                continue
            row = self.vocabulary.get(feature)
            if row is None:
                continue
            weights = intent_block[row]
            push = float(weights[column] - weights.mean())
            if push > 0:
                pushes[feature] = (push, start, end)
        ranked = sorted(pushes.items(), key=lambda item: (-item[1][0], item[1][1]))
        chosen: list[tuple[str, int, int, float]] = []
        for feature, (push, start, end) in ranked:
            # A bigram inside an already chosen trigram adds nothing to the explanation.
            if any(start >= low and end <= high for _f, low, high, _p in chosen):
                continue
            chosen.append((feature, start, end, round(push, 3)))
            if len(chosen) == limit:
                break
        return chosen

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        words = "\n".join(sorted(self.vocabulary, key=self.vocabulary.__getitem__))
        np.savez_compressed(
            buffer, format=np.array([FORMAT]), weights=self.weights.astype(np.float16), bias=self.bias,
            vocabulary=np.frombuffer(words.encode(), dtype=np.uint8),
            metadata=np.frombuffer(json.dumps({"name": self.name, **self.metadata}, ensure_ascii=False,
                                              sort_keys=True).encode(), dtype=np.uint8))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TextModel:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                if int(archive["format"][0]) != FORMAT:
                    raise ModelError(f"model format {int(archive['format'][0])} is not {FORMAT}")
                words = archive["vocabulary"].tobytes().decode()
                metadata = json.loads(archive["metadata"].tobytes().decode())
                weights = archive["weights"].astype(np.float32)
                bias = archive["bias"].astype(np.float32)
        except (OSError, KeyError, ValueError) as error:
            raise ModelError(f"not a triage model file: {error}") from error
        vocabulary = {word: index for index, word in enumerate(words.split("\n"))} if words else {}
        name = metadata.pop("name", "model")
        return cls(name, vocabulary, weights, bias, metadata)

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
