"""Accuracy gate on the blind set: messages written from the intent definitions alone, by a writer who never saw
the rules, the training corpus or the classifier's errors (tests/unit/data/BLIND.md). Never tune on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.triage.evaluate import ConversationReport, Report, evaluate, evaluate_conversations, format_report, load_rows

DATA = Path(__file__).parent / "data"
BLIND = DATA / "blind.jsonl"
CONVERSATIONS = DATA / "blind_conversations.jsonl"

# Issue 13's bar (docs/triage.md has the figures reached: 37 of 40 conversations).
MACRO_F1 = 0.88
P1_RECALL = 0.95
NON_P1_IN_P1 = 0.03
NEGATION_FALSE_THREATS = 0.03
EMOTION = 0.75
CONVERSATIONS_RIGHT = 36


@pytest.fixture(scope="module")
def report() -> Report:
    assert BLIND.is_file(), f"blind set not found at {BLIND}"
    return evaluate(load_rows(BLIND))


@pytest.fixture(scope="module")
def conversations() -> ConversationReport:
    assert CONVERSATIONS.is_file(), f"blind conversations not found at {CONVERSATIONS}"
    return evaluate_conversations(load_rows(CONVERSATIONS))


def test_the_blind_set_is_substantial(report: Report) -> None:
    assert report.total >= 400
    assert all(score.support >= 30 for score in report.per_intent)
    assert report.negation_cases >= 20 and report.emotion_scored == report.total


def test_blind_macro_f1(report: Report) -> None:
    assert report.macro_f1 >= MACRO_F1, format_report(report)


def test_blind_p1_recall(report: Report) -> None:
    assert report.p1_tier_recall >= P1_RECALL, format_report(report)


def test_blind_non_p1_put_in_p1(report: Report) -> None:
    assert report.non_p1_in_p1 <= NON_P1_IN_P1, format_report(report)


def test_blind_negation_false_threats(report: Report) -> None:
    assert report.false_threat_rate <= NEGATION_FALSE_THREATS, format_report(report)


def test_blind_emotion(report: Report) -> None:
    assert report.emotion_accuracy >= EMOTION, format_report(report)


def test_blind_conversations(conversations: ConversationReport) -> None:
    assert conversations.conversations == 40
    assert conversations.trajectories_right >= CONVERSATIONS_RIGHT, conversations


# Two more blind sets in the styles of two held-back sets (tests/unit/data/BLIND.md), written later by two more
# writers under the same rules; their gates are those sets' bars in issue 13. Never tune on them either.
@pytest.mark.parametrize(("name", "accuracy", "p1_recall"), [
    ("blind_requests.jsonl", 0.70, None),  # English support requests: primary accuracy 0.70
    ("blind_marketplace.jsonl", 0.75, 0.80),  # short marketplace chat: primary accuracy 0.75, P1 recall 0.80
])
def test_the_later_blind_sets_hold_their_bars(name: str, accuracy: float, p1_recall: float | None) -> None:
    rows = load_rows(DATA / name)
    assert len(rows) >= 400
    report = evaluate(rows)
    assert report.accuracy >= accuracy, format_report(report)
    if p1_recall is not None:
        assert report.p1_tier_recall >= p1_recall, format_report(report)
    assert report.non_p1_in_p1 <= NON_P1_IN_P1, format_report(report)
    assert report.emotion_scored == report.total and report.emotion_accuracy >= 0.70, format_report(report)


def test_the_blind_set_of_other_styles_holds_its_bar() -> None:
    # Written at stop 31 in the styles of the held-back set of 240 (pasted notices, order fields, voice run-ons,
    # merged lines, extortion, review sites, card disputes, Cantonese, e-mails, capitals, stickers). Issue 13's bar
    # for that set is primary accuracy 0.85: this one measured 0.837 when it arrived and 0.860 on the model of stop
    # 32 (tests/unit/data/BLIND.md). Never tune on it either.
    rows = load_rows(DATA / "blind_styles.jsonl")
    assert len(rows) >= 300
    report = evaluate(rows)
    assert report.accuracy >= 0.85, format_report(report)
    assert report.non_p1_in_p1 <= NON_P1_IN_P1, format_report(report)
    assert report.emotion_scored == report.total and report.emotion_accuracy >= 0.70, format_report(report)
