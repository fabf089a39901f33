"""Ruleset loading, validation messages, round trips and custom rulesets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.triage import Ruleset, RulesetError, classify, default_ruleset

MINIMAL: dict[str, Any] = {
    "name": "tiny",
    "version": 3,
    "intents": {
        "complaint": {"rules": [{"id": "zh.complaint.file", "phrases": ["投诉"], "negatable": True}]},
        "return_refund": {"rules": [{"id": "en.refund.word", "phrases": ["refund"]},
                                    {"id": "en.refund.family", "phrases": ["reimburse*"]}]},
    },
    "scope": {"adjacent_negators": ["不"]},
}


def broken(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return data


@pytest.mark.parametrize(("data", "path", "problem"), [
    (broken(intents__complaint__rules__0__phrases=["我要投诉", "投诉", "  "]),
     "intents.complaint.rules[0].phrases[2]", "empty phrase"),                      # blank phrase
    (broken(intents__complaint__rules__0__phrases=[12315]),
     "intents.complaint.rules[0].phrases[0]", "expected a string"),                 # YAML number, not quoted
    (broken(intents__complaint__rules__0__phrases=[]),
     "intents.complaint.rules[0].phrases", "at least one phrase"),                  # a rule with nothing to match
    (broken(intents__complaint__base=650), "intents.complaint.base", "outside the P1 band"),  # base outside its band
    (broken(intents__presale={"rules": [], "weight": 2}), "intents.presale.weight", "unknown key"),  # typo'd key
    (broken(intents__greeting={"rules": []}), "intents.greeting", "unknown key"),   # not one of the 11 intents
    (broken(intents__return_refund__rules__1__id="en.refund.word"),
     "intents.return_refund.rules[1].id", "duplicate rule id"),                     # ids must be unique
    (broken(intents__return_refund__rules__0__id="Refund"),
     "intents.return_refund.rules[0].id", "dotted lower-case id"),                  # id format
    (broken(intents__return_refund__rules__0__weight=0),
     "intents.return_refund.rules[0].weight", "greater than 0"),                  # a weight that never counts
    (broken(intents__complaint__rules__0__negatable="yes"),
     "intents.complaint.rules[0].negatable", "true or false"),                    # a string, not a boolean
    (broken(routes={"complaint": "VIP Queue"}), "routes.complaint", "queue name"),  # bad queue name
    (broken(routes={"greeting": "presale"}), "routes.greeting", "unknown key"),     # route for no intent
    (broken(version=0), "version", "outside"),                                      # versions start at 1
    (broken(version="2"), "version", "expected an integer"),                        # not a number
    (broken(name="my rules!"), "name", "expected 1-64"),                            # name charset
    (broken(scope={"window_zh": -1}), "scope.window_zh", "outside"),                # negative window
    (broken(cues={"furious": ["😡"]}), "cues.furious", "unknown key"),              # unknown cue kind
    (broken(emotion_baseline={"complaint": "sad"}), "emotion_baseline.complaint", "expected one of"),  # not an emotion
    (broken(modifiers={"urgent": -5}), "modifiers.urgent", "outside"),              # negative points
    (broken(masks="差评"), "masks", "expected a list"),                             # a string, not a list
])
def test_validation_names_entry_and_problem(data: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(RulesetError) as caught:
        Ruleset.from_mapping(data)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: ")
    assert isinstance(caught.value, ValueError)


def test_missing_required_keys() -> None:
    with pytest.raises(RulesetError, match="^intents: required"):
        Ruleset.from_mapping({"name": "x", "version": 1})
    with pytest.raises(RulesetError, match=r"^\(root\): expected a mapping"):
        Ruleset.from_mapping(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_load_reports_yaml_errors_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nintents: {complaint: [\n", encoding="utf-8")
    with pytest.raises(RulesetError, match="not valid YAML"):
        Ruleset.load(bad)
    with pytest.raises(RulesetError, match="cannot read file"):
        Ruleset.load(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("name: file-rules\nversion: 2\nintents:\n  complaint:\n    rules:\n"
                    "      - {id: zh.complaint.file, phrases: [投诉]}\n", encoding="utf-8")
    assert Ruleset.load(good).id == "file-rules@2"


def test_round_trip_through_json() -> None:
    original = default_ruleset()
    mapping = json.loads(json.dumps(original.to_mapping(), ensure_ascii=False))
    again = Ruleset.from_mapping(mapping)
    assert again == original and again.to_mapping() == original.to_mapping()
    assert again.id == original.id
    text = "物流太慢了，再不到就差评"
    assert classify(text, again).to_dict() == classify(text, original).to_dict()


def test_name_and_version_override() -> None:
    ruleset = Ruleset.from_mapping(default_ruleset().to_mapping(), name="shop-42", version=7)
    assert (ruleset.name, ruleset.version, ruleset.id) == ("shop-42", 7, "shop-42@7")
    assert classify("我要投诉", ruleset).ruleset == "shop-42@7"


def test_to_mapping_is_a_copy() -> None:
    ruleset = Ruleset.from_mapping(MINIMAL)
    mapping = ruleset.to_mapping()
    mapping["intents"]["complaint"]["rules"][0]["phrases"].append("changed")
    assert ruleset.to_mapping() != mapping


def test_custom_ruleset_word_rules_and_defaults() -> None:
    # The rules' own semantics, without the learned model beside them.
    ruleset = Ruleset.from_mapping({**MINIMAL, "model": "none"})
    assert ruleset.routes["complaint"] == "complaints" and ruleset.routes["other"] == "presale"
    assert classify("I want a refund", ruleset).primary == "return_refund"
    assert classify("I was refunded", ruleset).primary == "other"            # "refund" is a whole word here
    assert classify("please reimburse me", ruleset).primary == "return_refund"
    assert classify("I was reimbursed", ruleset).primary == "return_refund"  # "reimburse*" lets the word continue
    assert classify("不投诉", ruleset).primary == "other"                    # adjacent negator
    assert classify("投诉", ruleset).intents[0].evidence[0].rule == "zh.complaint.file"


def test_routes_and_bases_are_data() -> None:
    data = copy.deepcopy(MINIMAL)
    data["routes"] = {"complaint": "vip-desk"}
    data["intents"]["complaint"]["base"] = 999
    ruleset = Ruleset.from_mapping(data)
    triage = classify("我要投诉", ruleset)
    assert triage.queue == "vip-desk" and triage.priority == 999


def test_phrases_written_in_traditional_match_simplified_text() -> None:
    data = copy.deepcopy(MINIMAL)
    data["intents"]["complaint"]["rules"][0]["phrases"] = ["投訴"]
    assert classify("我要投诉", Ruleset.from_mapping(data)).primary == "complaint"


def test_default_ruleset_is_cached_and_large() -> None:
    ruleset = default_ruleset()
    assert ruleset is default_ruleset()
    assert ruleset.phrase_count >= 500
    assert ruleset.id == "default@1"


def test_a_phrase_shared_by_weak_rules_is_rejected() -> None:
    data = copy.deepcopy(MINIMAL)
    data["intents"]["false_advertising"] = {"rules": [
        {"id": "zh.false_ad.listing", "weight": 0.5, "phrases": ["图片", "listing"]},
        {"id": "en.false_ad.listing", "weight": 0.5, "phrases": ["listing", "photos"]},
    ]}
    with pytest.raises(RulesetError) as caught:
        Ruleset.from_mapping(data)
    assert caught.value.path == "intents.false_advertising.rules[1].phrases"
    assert "'listing'" in caught.value.problem


def test_a_ruleset_without_phrases_classifies_everything_as_other() -> None:
    ruleset = Ruleset.from_mapping({"name": "empty", "version": 1, "intents": {}, "model": "none"})
    triage = classify("我要投诉，再不发货就差评", ruleset)
    assert (triage.primary, triage.queue, triage.ruleset) == ("other", "presale", "empty@1")
