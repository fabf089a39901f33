"""Cross-writer validation: how the engine reads phrasing its model never saw, measured without a blind set.

Each file of `data/corpus/ours/` is one writer's. `leave_out` trains on every other file (the external sets too)
and scores the one left out; `held_seventh` holds out the rows of ours whose text's MD5 is 0 mod 7 ("val" in
docs/triage.md). Both train as `triage train` does, with the settings given, so a choice of settings (the heads'
C, the sources' weights) is measured on writers the model did not learn from. Blind sets are never read here.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.triage.evaluate import Report, evaluate
from app.triage.ruleset import Ruleset, default_ruleset
from app.triage.train import PRUNE_BELOW, TrainingSettings, prune, train

Rows = list[dict[str, Any]]
SEVENTH = "val"


def held_seventh(rows: Iterable[dict[str, Any]], ours: Iterable[str]) -> tuple[Rows, Rows]:
    """(training rows, held rows): the held rows are ours whose text's MD5 is 0 mod 7 and that carry an intent."""
    sources = frozenset(ours)
    training: Rows = []
    held: Rows = []
    for row in rows:
        if row.get("source") in sources and int(hashlib.md5(row["text"].encode()).hexdigest(), 16) % 7 == 0:
            if row.get("primary"):
                held.append(row)
        else:
            training.append(row)
    return training, held


def leave_out(rows: Iterable[dict[str, Any]], source: str) -> tuple[Rows, Rows]:
    """(training rows, held rows): every row of the other sources, and the rows of `source` that carry an intent."""
    training: Rows = []
    held: Rows = []
    for row in rows:
        if row.get("source") != source:
            training.append(row)
        elif row.get("primary"):
            held.append(row)
    if not held:
        raise ValueError(f"no labelled row comes from {source!r}")
    return training, held


def score(training: Sequence[Mapping[str, Any]], held: Sequence[Mapping[str, Any]], settings: TrainingSettings,
          ruleset: Ruleset | None = None) -> Report:
    """The held rows scored by `ruleset`'s rules (the shipped ones by default) beside a model trained on `training`."""
    model = prune(train(training, settings=settings), threshold=PRUNE_BELOW)
    # A copy that decides with the experiment's model; its name and mapping still say the model it was built with,
    # so it serves scoring only.
    deciding = copy.copy(ruleset or default_ruleset())
    deciding.model = model
    deciding.model_version = model.version
    return evaluate(held, deciding)


def held_sets(rows: Sequence[dict[str, Any]], names: Sequence[str], ours: Iterable[str]) -> Iterable[tuple[str, Rows, Rows]]:
    """(name, training rows, held rows) for each name: SEVENTH for the held-out seventh, else a source left out."""
    for name in names:
        training, held = held_seventh(rows, ours) if name == SEVENTH else leave_out(rows, name)
        yield name, training, held
