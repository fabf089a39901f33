"""`triage classify` and `triage evaluate` from the command line."""

import json
from pathlib import Path

import pytest

from app.cli import main


def test_classify_prints_the_triage_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "物流太慢了，再不到就差评"]) == 0
    triage = json.loads(capsys.readouterr().out)
    assert triage["primary"] == "bad_review_threat" and triage["tier"] == "P1"
    assert [hit["intent"] for hit in triage["intents"]][:2] == ["bad_review_threat", "logistics"]


def test_evaluate_prints_precision_recall_and_confusion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"text": "我要退款", "primary": "return_refund", "script": "zh-Hans", "tags": []},
            {"text": "再不发货就差评", "primary": "bad_review_threat", "script": "zh-Hans", "tags": ["conditional"]}]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    assert main(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "confusion matrix" in out and "return_refund" in out
