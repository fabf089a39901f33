"""Candidate rulesets from the API: any JSON either compiles or is a 422 naming an entry; excerpts stay short."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import RulesetInvalid
from app.services.rules import EXCERPT_CHARS, compile_candidate, excerpt, stored_name
from app.triage import INTENTS, default_ruleset

QUEUES = {"presale", "aftersale", "complaints", "escalations"}
KEYS = ["name", "version", "intents", "routes", "scope", "cues", "masks", "modifiers", "threshold", "rules", "id",
        "phrases", "weight", "negatable", "base", "emotion", "urgent", "negators", "window_zh", *INTENTS]
# What a JSON body can hold, with the strings and numbers a validator trips over.
JSON_LEAVES = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.sampled_from(["", " ", "*", "差评", "refund*", "complaints", "vip", "\x00", "\ud800", "P1", "x" * 300])
               | st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5),
                           max_leaves=30)


def _mutated_default(draw: Any) -> dict[str, Any]:
    body = default_ruleset().to_mapping()
    intent = draw(st.sampled_from(INTENTS))
    section = draw(st.sampled_from(["base", "rules", "rule", "phrase", "route", "top"]))
    value = draw(JSON_VALUES)
    entry = body["intents"][intent]
    if section == "base":
        entry["base"] = value
    elif section == "rules":
        entry["rules"] = value
    elif section == "rule" and entry["rules"]:
        entry["rules"][0][draw(st.sampled_from(["id", "phrases", "weight", "negatable", "extra"]))] = value
    elif section == "phrase" and entry["rules"]:
        entry["rules"][0]["phrases"].append(value)
    elif section == "route":
        body["routes"][intent] = value
    else:
        body[draw(st.sampled_from(KEYS))] = value
    return body


CANDIDATES = st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6) | st.composite(
    lambda draw: _mutated_default(draw))()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=CANDIDATES)
def test_any_candidate_compiles_or_names_an_entry(data: dict[str, Any]) -> None:
    try:
        name = stored_name("shop-1", data, None)
        ruleset = compile_candidate(data, name=name, version=3, queues=QUEUES)
    except RulesetInvalid as error:
        assert error.status == 422 and error.code == "invalid_ruleset"
        assert error.details[0]["field"].startswith(("body.ruleset", "body.name"))
        assert error.details[0]["reason"]
        return
    assert ruleset.version == 3 and set(ruleset.routes.values()) <= QUEUES
    json.dumps(ruleset.to_mapping(), allow_nan=False)  # storable as JSON as it is


@pytest.mark.parametrize(("given_name", "requested", "stored"), [
    (None, None, "shop-1"),                 # no name anywhere: the shop id
    ("default", None, "shop-1"),            # a copy of the shipped rules does not take the shipped name
    ("summer", None, "summer"),             # the mapping's own name
    ("summer", "winter", "winter"),         # the request's name wins
])
def test_stored_name(given_name: str | None, requested: str | None, stored: str) -> None:
    data = {} if given_name is None else {"name": given_name}
    assert stored_name("shop-1", data, requested) == stored


def test_the_shipped_name_cannot_be_requested() -> None:
    with pytest.raises(RulesetInvalid) as caught:
        stored_name("shop-1", {}, "default")
    assert caught.value.details[0]["field"] == "body.name"


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=400), data=st.data())
def test_excerpt_is_short_and_shows_the_focus(text: str, data: st.DataObject) -> None:
    focus = data.draw(st.integers(0, len(text) - 1))
    cut = excerpt(text, focus)
    assert len(cut) <= EXCERPT_CHARS
    if len(text) <= EXCERPT_CHARS:
        assert cut == text.replace("\r", " ").replace("\n", " ")
    else:
        flat = text.replace("\r", " ").replace("\n", " ")
        assert flat[focus] in cut and cut.strip("…") in flat
