"""The learned model beside the rules: features, training, the shipped file, explanations, context and notices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.triage import Ruleset, classify, default_ruleset
from app.triage.features import character_codes, code, extract, word_features
from app.triage.learned import ModelError, TextModel, default_model
from app.triage.model import INTENTS
from app.triage.normalize import normalise
from app.triage.train import TrainingSettings, load_rows, train

TINY = [
    {"text": "快递怎么还没到", "primary": "logistics", "emotion": "negative", "urgent": False},
    {"text": "物流三天没更新了", "primary": "logistics", "emotion": "negative", "urgent": False},
    {"text": "where is my parcel", "primary": "logistics", "emotion": "neutral", "urgent": False},
    {"text": "我要退款", "primary": "return_refund", "emotion": "neutral", "urgent": False},
    {"text": "退款什么时候到账", "primary": "return_refund", "emotion": "neutral", "urgent": True},
    {"text": "I want a refund", "primary": "return_refund", "emotion": "negative", "urgent": False},
    {"text": "谢谢亲", "primary": "other", "emotion": "positive", "urgent": False},
    {"text": "thanks a lot", "primary": "other", "emotion": "positive", "urgent": False},
    {"text": "这个有货吗", "primary": "presale", "emotion": "neutral", "urgent": False},
    {"text": "有没有大码", "primary": "presale", "emotion": "neutral", "urgent": False},
    {"text": "气死了 快递到底到哪了", "primary": "logistics", "emotion": "angry", "urgent": True},
    {"text": "质量太差了 想退款", "primary": "return_refund", "emotion": "angry", "urgent": False},
]


def tiny_model() -> TextModel:
    return train(TINY, name="tiny", settings=TrainingSettings(min_count=1, rule_signals=False))


@given(st.text(alphabet=st.sampled_from(list("快递没到退款差评好的 abc refund's!!？？😡★，.#1234567890\u3000")), max_size=60))
@settings(max_examples=300, deadline=None)
def test_every_character_feature_is_the_text_it_was_read_from(text: str) -> None:
    norm = normalise(text).text
    codes, starts, lengths = character_codes(norm)
    for value, start, length in zip(codes.tolist(), starts.tolist(), lengths.tolist()):
        piece = norm[start:start + length]
        assert value == code(piece) and not piece.isspace()
    for feature, start, end in word_features(norm):
        assert feature.startswith(("~", "#")) or " " in feature or norm[start:end] == feature


def test_features_of_chinese_english_and_numbers() -> None:
    features = set(extract(normalise("refund什么时候到账 order 2024112512345 refunded!!").text))
    assert {"refund", "~refun", "什么", "么时候", "order", "#long", "order #long", "refunded", "!!"} <= features
    assert "2024112512345" not in features  # an order number is one feature, whatever its digits


def test_training_is_deterministic_and_the_file_round_trips(tmp_path: Path) -> None:
    first, second = tiny_model(), tiny_model()
    assert first.version == second.version
    path = tmp_path / "tiny.npz"
    path.write_bytes(first.to_bytes())
    loaded = TextModel.load(path)
    assert loaded.version == first.version
    assert loaded.metadata["rows"] == len(TINY)
    different = train(TINY[:-1], name="tiny", settings=TrainingSettings(min_count=1, rule_signals=False))
    assert different.version != first.version


def test_a_trained_model_reads_its_own_kind_of_text() -> None:
    model = tiny_model()
    assert model.predict(normalise("快递还没到").text).best_intent()[0] == "logistics"
    assert model.predict(normalise("refund please").text).best_intent()[0] == "return_refund"
    assert model.predict(normalise("谢谢").text).best_emotion()[0] == "positive"
    prediction = model.predict(normalise("退款").text)
    assert sum(prediction.intents) == pytest.approx(1.0)
    assert len(prediction.intents) == len(INTENTS)


def test_a_broken_model_file_is_refused() -> None:
    with pytest.raises(ModelError):
        TextModel.from_bytes(b"not a model")


def test_the_explanation_names_spans_of_the_text() -> None:
    model = tiny_model()
    norm = normalise("快递到底到哪了").text
    explained = model.explain(norm, "logistics")
    assert explained
    for feature, start, end, push in explained:
        assert norm[start:end] == feature and push > 0


def test_the_package_ships_a_model_and_the_default_ruleset_uses_it() -> None:
    model = default_model()
    assert model is not None and model.version.startswith("default@")
    assert model.metadata["rows"] >= 8_000
    triage = classify("这个杯子到手就裂了一条缝")
    assert triage.model == model.version
    assert triage.to_dict()["model"] == model.version


def test_a_ruleset_without_the_model_decides_by_rules_alone() -> None:
    rules_only = Ruleset.from_mapping({**default_ruleset().to_mapping(), "model": "none"})
    triage = classify("我要投诉", rules_only)
    assert triage.model is None and triage.primary == "complaint"


def test_a_ruleset_naming_an_unknown_model_is_refused() -> None:
    from app.triage import RulesetError

    with pytest.raises(RulesetError) as error:
        Ruleset.from_mapping({**default_ruleset().to_mapping(), "model": "gpt"})
    assert error.value.path == "model"


@pytest.mark.parametrize("text", [
    "这个杯子到手就裂了一条缝",
    "充电宝用了两天鼓包了",
    "only 2 towels in the box, the listing says 6",
    "the kettle doesn't shut off by itself",
])
def test_model_decisions_carry_evidence_from_the_text(text: str) -> None:
    triage = classify(text)
    for hit in triage.intents:
        for evidence in hit.evidence:
            assert text[evidence.start:evidence.end] == evidence.text
    assert triage.intents[0].evidence, triage.to_dict()


def test_a_pasted_notice_does_not_trigger_intents_by_its_boilerplate() -> None:
    rules_only = Ruleset.from_mapping({**default_ruleset().to_mapping(), "model": "none"})
    notice = "【京东】您的价格保护申请已受理，退款将原路退回"
    triage = classify(notice, rules_only)
    assert all(not hit.evidence or hit.evidence[0].start < 0 for hit in triage.intents) or triage.primary == "other"
    own_words = classify(notice + "\n我不要了，直接退货", rules_only)
    assert own_words.primary == "return_refund"
    evidence = own_words.intents[0].evidence[0]
    assert evidence.start >= len(notice)  # the evidence is the buyer's own words, after the notice


def test_an_order_field_is_not_a_reason() -> None:
    rules_only = Ruleset.from_mapping({**default_ruleset().to_mapping(), "model": "none"})
    text = "订单号：2024112512345678"
    for hit in classify(text, rules_only).intents:
        assert all(not (0 <= item.start < len(text)) or item.start >= len(text) for item in hit.evidence), hit


def test_a_fragment_is_read_in_its_conversation() -> None:
    read = classify("订单只有一个", context=["付款扣了两次钱"])
    assert read.primary == "payment_order"
    assert read.intents[0].evidence[0].rule == "context.payment_order"
    assert read.tier != "P1"
    evidence = read.intents[0].evidence[0]
    assert evidence.text == "订单只有一个"[evidence.start:evidence.end]


def test_context_never_makes_a_p1_by_itself() -> None:
    read = classify("在吗", context=["我要去12315投诉你们", "再不处理就找律师"])
    assert read.tier != "P1"


def test_the_corpus_rows_load_with_their_labels(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in TINY) + "\n", encoding="utf-8")
    rows = load_rows([path])
    assert [row["text"] for row in rows] == [row["text"] for row in TINY]
    assert all(row["source"] == "rows" for row in rows)
