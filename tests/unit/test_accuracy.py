"""Accuracy gate of the default ruleset on the labelled development set (issue 3, "Prove it")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.triage.evaluate import Report, evaluate, format_report, load_rows

DEVSET = Path(__file__).parent / "data" / "devset.jsonl"
# Every tag the devset README defines; a row with any other tag is a typo that would escape the coverage check.
KNOWN_TAGS = frozenset({"negation", "conditional", "mixed_intent", "form", "long", "word_boundary", "question",
                        "cantonese"})


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    # A missing devset fails the gate: skipping would let a lost file pass CI silently.
    assert DEVSET.is_file(), f"labelled development set not found at {DEVSET}"
    return load_rows(DEVSET)


@pytest.fixture(scope="module")
def report(rows: list[dict[str, Any]]) -> Report:
    return evaluate(rows)


def test_devset_file_is_present() -> None:
    assert DEVSET.is_file(), f"labelled development set not found at {DEVSET}"


def test_devset_is_substantial(report: Report) -> None:
    assert report.total >= 400
    assert all(score.support >= 25 for score in report.per_intent)


@pytest.mark.parametrize(("script", "share"), [
    ("zh-Hant", 0.15),   # Taiwan and Hong Kong buyers, written Cantonese included
    ("en", 0.25),        # English-speaking buyers
])
def test_devset_covers_each_script(rows: list[dict[str, Any]], script: str, share: float) -> None:
    count = sum(row.get("script") == script for row in rows)
    assert count >= share * len(rows), f"{script}: {count}/{len(rows)} rows"


@pytest.mark.parametrize("tag", [
    "negation",        # negated or reassuring mentions that must not count (tests/unit/data/README.md)
    "conditional",     # conditional threats that do count
    "mixed_intent",    # several intents, precedence decides
    "form",            # full-width, emoji, star bars, shorthand, homophones
    "long",            # the key intent at the end of a rambling message
    "word_boundary",   # "issue" vs "sue", English touching Chinese
    "question",        # process questions
    "cantonese",       # written Cantonese
])
def test_devset_covers_each_hard_case(rows: list[dict[str, Any]], tag: str) -> None:
    count = sum(tag in row.get("tags", ()) for row in rows)
    assert count >= 15, f"{tag}: {count} rows"


def test_devset_uses_only_known_tags(rows: list[dict[str, Any]]) -> None:
    tags = {tag for row in rows for tag in row.get("tags", ())}
    assert tags <= KNOWN_TAGS, f"unknown tags: {sorted(tags - KNOWN_TAGS)}"


def test_macro_f1(report: Report) -> None:
    assert report.macro_f1 >= 0.92, format_report(report, show_misses=40)


def test_recall_of_each_p1_intent(report: Report) -> None:
    assert all(recall >= 0.97 for recall in report.p1_recall.values()), format_report(report, show_misses=40)


def test_false_threats_on_negation_cases(report: Report) -> None:
    assert report.negation_cases >= 20
    assert report.false_threat_rate <= 0.03, format_report(report, show_misses=40)


def test_tier_accuracy(report: Report) -> None:
    assert report.tier_accuracy >= 0.95, format_report(report, show_misses=40)


def test_language_accuracy(report: Report) -> None:
    assert report.language_scored >= 400
    assert report.language_accuracy >= 0.98, format_report(report, show_misses=40)


def test_report_formats_as_table(report: Report) -> None:
    text = format_report(report)
    assert "macro-F1" in text and "confusion matrix" in text
    assert all(intent in text for intent in ("rights_protection", "presale", "other"))
