"""Accuracy gate of the default ruleset on the labelled development set (issue 3, "Prove it")."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.triage.evaluate import Report, evaluate, format_report, load_rows

DEVSET = Path(__file__).parent / "data" / "devset.jsonl"


@pytest.fixture(scope="module")
def report() -> Report:
    if not DEVSET.exists():
        pytest.skip(f"labelled development set not found at {DEVSET}")
    return evaluate(load_rows(DEVSET))


def test_devset_is_substantial(report: Report) -> None:
    assert report.total >= 400
    assert all(score.support >= 25 for score in report.per_intent)


def test_macro_f1(report: Report) -> None:
    assert report.macro_f1 >= 0.92, format_report(report, show_misses=40)


def test_recall_of_each_p1_intent(report: Report) -> None:
    assert all(recall >= 0.97 for recall in report.p1_recall.values()), format_report(report, show_misses=40)


def test_false_threats_on_negation_cases(report: Report) -> None:
    assert report.negation_cases >= 20
    assert report.false_threat_rate <= 0.03, format_report(report, show_misses=40)


def test_tier_accuracy(report: Report) -> None:
    assert report.tier_accuracy >= 0.95, format_report(report, show_misses=40)


def test_report_formats_as_table(report: Report) -> None:
    text = format_report(report)
    assert "macro-F1" in text and "confusion matrix" in text
    assert all(intent in text for intent in ("rights_protection", "presale", "other"))
