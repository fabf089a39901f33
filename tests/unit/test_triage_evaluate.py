"""Unit tests of the evaluation arithmetic on small hand-made row sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.triage.evaluate import evaluate, format_report, load_rows, main


def test_perfect_rows_score_one() -> None:
    rows = [
        {"text": "我要投诉你们", "primary": "complaint", "tags": []},
        {"text": "请问有现货吗", "primary": "presale", "tags": []},
        {"text": "放心，不会给差评的", "primary": "other", "tags": ["negation"]},
    ]
    report = evaluate(rows)
    assert report.accuracy == 1.0 and report.tier_accuracy == 1.0
    assert report.macro_f1 == 1.0
    assert report.negation_cases == 1 and report.false_threats == 0
    assert report.confusion["complaint"]["complaint"] == 1


def test_wrong_prediction_counts_in_confusion_and_false_threats() -> None:
    rows = [
        {"text": "再不发货就差评", "primary": "logistics", "tags": ["negation"]},   # deliberately mislabelled
        {"text": "快递到哪了", "primary": "logistics", "tags": []},
    ]
    report = evaluate(rows)
    assert report.confusion["logistics"]["bad_review_threat"] == 1
    assert report.false_threats == 1 and report.false_threat_rate == 1.0
    logistics = next(score for score in report.per_intent if score.intent == "logistics")
    assert (logistics.precision, logistics.recall, logistics.support) == (1.0, 0.5, 2)
    assert report.tier_accuracy == 0.5
    assert report.misses[0].predicted == "bad_review_threat"


def test_also_label_is_not_a_false_threat() -> None:
    rows = [{"text": "再不发货就差评", "primary": "logistics", "also": ["bad_review_threat"], "tags": ["negation"]}]
    assert evaluate(rows).false_threats == 0


def test_language_is_scored_on_single_script_rows() -> None:
    rows = [
        {"text": "請問什麼時候發貨", "primary": "logistics", "script": "zh-Hant"},     # detected right
        {"text": "Where is my parcel? 😡😡", "primary": "logistics", "script": "en"},  # emoji do not make it Chinese
        {"text": "这个多少钱", "primary": "presale", "script": "en"},                # deliberately mislabelled
        {"text": "refund什么时候到账", "primary": "return_refund", "script": "mixed"},  # mixed: not scored
        {"text": "hello", "primary": "other"},                                       # no label: not scored
    ]
    report = evaluate(rows)
    assert report.language_scored == 3
    assert report.language_accuracy == 2 / 3
    assert [(miss.expected, miss.predicted) for miss in report.language_misses] == [("en", "zh-Hans")]
    assert "language (rows with one script) 0.667" in format_report(report)


def test_unknown_label_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown intent"):
        evaluate([{"text": "hi", "primary": "greeting"}])


def test_command_prints_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in [
        {"text": "怎么申请退款", "primary": "return_refund", "tags": ["question"]},
        {"text": "hello", "primary": "other", "tags": []},
    ]) + "\n\n", encoding="utf-8")
    assert len(load_rows(path)) == 2
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "return_refund" in out
    assert format_report(evaluate(load_rows(path))).splitlines()[0].startswith("ruleset default@")
    assert main([]) == 2
