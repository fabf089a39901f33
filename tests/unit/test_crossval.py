"""Cross-writer validation (app/triage/crossval.py, `triage crossval`) on a small corpus of two writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.triage import default_ruleset
from app.triage.crossval import held_seventh, leave_out, score
from app.triage.train import TrainingSettings, corpus_paths, load_rows

_WRITERS = {
    "alpha": [("我要退货退款", "return_refund"), ("快递到哪了", "logistics"), ("这个有黑色的吗", "presale"),
              ("收到就坏了", "quality_issue"), ("where is my parcel", "logistics"), ("I want a refund", "return_refund"),
              ("does it come in blue", "presale"), ("it arrived broken", "quality_issue")],
    "beta": [("麻烦给我退款吧", "return_refund"), ("物流怎么不动了", "logistics"), ("有大码吗", "presale"),
             ("用了一天就坏", "quality_issue"), ("parcel still not here", "logistics"), ("refund me please", "return_refund"),
             ("is there a larger size", "presale"), ("stopped working after a day", "quality_issue")],
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "ours").mkdir()
    for writer, rows in _WRITERS.items():
        lines = [json.dumps({"text": text, "primary": intent, "emotion": "neutral"}, ensure_ascii=False)
                 for text, intent in rows * 3]
        (tmp_path / "ours" / f"{writer}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "external").mkdir()
    (tmp_path / "external" / "reviews.jsonl").write_text(
        json.dumps({"text": "质量很好", "emotion": "positive"}, ensure_ascii=False) + "\n", encoding="utf-8")
    return tmp_path


def test_a_writer_left_out_is_held_whole_and_never_trained_on(corpus: Path) -> None:
    rows = load_rows(corpus_paths(corpus))
    training, held = leave_out(rows, "beta")
    assert len(held) == 24 and {row["source"] for row in held} == {"beta"}
    assert {row["source"] for row in training} == {"alpha", "reviews"}
    with pytest.raises(ValueError, match="reviews"):
        leave_out(rows, "reviews")  # no row of it carries an intent


def test_the_held_seventh_takes_ours_by_the_texts_digest_alone(corpus: Path) -> None:
    rows = load_rows(corpus_paths(corpus))
    training, held = held_seventh(rows, ours={"alpha", "beta"})
    again_training, again_held = held_seventh(rows, ours={"alpha", "beta"})
    assert held == again_held and training == again_training
    assert held and all(row["source"] in ("alpha", "beta") for row in held)
    assert not {row["text"] for row in held} & {row["text"] for row in training}
    assert any(row["source"] == "reviews" for row in training)


def test_the_held_rows_are_scored_beside_the_model_trained_without_them(corpus: Path) -> None:
    training, held = leave_out(load_rows(corpus_paths(corpus)), "beta")
    report = score(training, held, TrainingSettings(intent_c=16.0))
    assert report.total == 24
    assert report.model is not None and report.model != default_ruleset().model_version
    assert default_ruleset().model is not None and default_ruleset().model_version != report.model


def test_the_command_prints_a_row_per_held_set_and_c(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crossval", "--corpus", str(corpus), "--hold", "beta", "val", "--intent-c", "1", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("held set | intent C")
    assert [line.split(" | ")[:2] for line in lines[1:]] == [["beta", "1"], ["beta", "64"], ["val", "1"], ["val", "64"]]
    assert all(line.split(" | ")[3] == "24" for line in lines[1:3])


@pytest.mark.parametrize("name", ["gamma", "reviews"])  # not in the corpus; in it, with no intent labels
def test_the_command_refuses_a_file_it_cannot_score(corpus: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crossval", "--corpus", str(corpus), "--hold", name]) == 2
    captured = capsys.readouterr()
    assert name in captured.err and not captured.out
