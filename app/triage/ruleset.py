"""Rulesets: validated data (phrases, negators, cues, bases, modifiers, routes) compiled into one automaton.

The shape of a ruleset (YAML file or JSON mapping); only name, version and intents are required:

    name: default                 # letters, digits, '.', '_', '-'
    version: 1                    # positive integer; Triage.ruleset is "name@version"
    threshold: 1.0                # an intent counts when its rules' weights reach this
    intents:
      <intent>:                   # one of INTENTS
        base: 800                 # priority base, inside the intent's tier band
        rules:
          - id: zh.bad_review.threat      # unique dotted id, named in the evidence
            phrases: [差评, 给差评]        # matched on normalised text; "word*" lets an English word continue
            weight: 1.0                   # below threshold: needs another weak rule nearby (scope.weak_window_*)
            negatable: true               # negators and reassurance can govern it
    masks: [很多差评]              # spans inside which no rule hit counts
    scope: {negators, adjacent_negators, post_negators, breakers, request_negators: [...],
            window_zh, window_en, post_window_zh, post_window_en, weak_window_zh, weak_window_en: chars,
            clause_marks: "，。!?"}
    cues: {angry, negative, positive, urgent, calm, neutral: [...]}
    emotion_baseline: {<intent>: angry|negative|neutral|positive}
    modifiers: {emotion: {...}, urgent, prior_contact: {points, max}, vip_level: {points, max},
                waiting: {points_per_minute, max}}
    routes: {<intent>: <queue>}   # defaults to SPEC 2.4
    model: default                # the learned model beside the rules: "default" (shipped) or "none"
"""

from __future__ import annotations

import copy
import re
import unicodedata
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import ahocorasick
import yaml

from app.triage.learned import TextModel, default_model
from app.triage.model import BANDS, EMOTIONS, INTENTS, TIERS
from app.triage.normalize import normalise_phrase, prepare

DEFAULT_ROUTES: Mapping[str, str] = MappingProxyType({
    "presale": "presale", "payment_order": "presale", "other": "presale",
    "logistics": "aftersale", "return_refund": "aftersale", "quality_issue": "aftersale",
    "false_advertising": "aftersale", "price_protection": "aftersale",
    "bad_review_threat": "complaints", "complaint": "complaints", "rights_protection": "complaints",
})

DEFAULT_BASES: Mapping[str, int] = MappingProxyType({
    "rights_protection": 880, "complaint": 840, "bad_review_threat": 800,
    "quality_issue": 600, "false_advertising": 580, "return_refund": 560, "price_protection": 540,
    "logistics": 400, "payment_order": 380, "presale": 150, "other": 100,
})

DEFAULT_MODIFIERS: Mapping[str, Any] = MappingProxyType({
    "emotion": {"angry": 60, "negative": 25, "neutral": 0, "positive": 0},
    "urgent": 50,
    "prior_contact": {"points": 20, "max": 60},
    "vip_level": {"points": 10, "max": 50},
    "waiting": {"points_per_minute": 2, "max": 60},
})

CUE_KINDS: tuple[str, ...] = ("angry", "negative", "positive", "urgent", "calm", "neutral")
# A cue written only in punctuation ("!!!", "？？？") is counted under its kind plus this offset: it only
# intensifies what the words say, so the engine weighs it separately.
PUNCTUATION_CUE = len(CUE_KINDS)
SCOPE_LISTS: tuple[str, ...] = ("negators", "adjacent_negators", "post_negators", "breakers", "request_negators")
DEFAULT_SCOPE_NUMBERS: Mapping[str, int] = MappingProxyType({
    "window_zh": 8, "window_en": 30, "post_window_zh": 6, "post_window_en": 24, "weak_window_zh": 24, "weak_window_en": 60})
DEFAULT_CLAUSE_MARKS = ",.!?;:\n~…，。！？；：、～"

# Models a ruleset can name: the one shipped in the package, or none (rules alone decide).
MODEL_NAMES: tuple[str, ...] = ("default", "none")

_RULE_ID = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$")
_QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

# Kinds of automaton entries: intent phrases and masks share one layer, cues another, scope words a third.
RULE, MASK, NEGATOR, ADJACENT_NEGATOR, POST_NEGATOR, BREAKER, CUE, REQUEST_NEGATOR = range(8)


class RulesetError(ValueError):
    """A ruleset that cannot be used; path names the faulty entry, problem says what is wrong."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def split_wildcard(phrase: str) -> tuple[str, bool]:
    """A trailing '*' after a letter lets an English word continue ("refund*"); elsewhere '*' is literal ("1*")."""
    if len(phrase) > 1 and phrase.endswith("*") and phrase[-2].isascii() and phrase[-2].isalpha():
        return phrase[:-1], True
    return phrase, False


def _type_name(value: Any) -> str:
    return type(value).__name__


class _Validator:
    """Hand-written schema check that returns the canonical mapping (defaults filled in)."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.rule_ids: dict[str, str] = {}

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise RulesetError(path, f"expected a mapping, got {_type_name(value)}")
        for key in value:
            if key not in allowed:
                raise RulesetError(f"{path}.{key}" if path != "(root)" else str(key),
                                   f"unknown key (expected one of: {', '.join(allowed)})")
        return dict(value)

    def integer(self, value: Any, path: str, *, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RulesetError(path, f"expected an integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise RulesetError(path, f"{value} is outside {low}..{high}")
        return value

    def positive_number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RulesetError(path, f"expected a number, got {_type_name(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise RulesetError(path, "expected a finite number")
        if value <= 0:
            raise RulesetError(path, f"must be greater than 0, got {value}")
        return float(value)

    def phrases(self, value: Any, path: str, *, allow_empty_list: bool = True) -> list[str]:
        if not isinstance(value, list):
            raise RulesetError(path, f"expected a list of phrases, got {_type_name(value)}")
        if not value and not allow_empty_list:
            raise RulesetError(path, "needs at least one phrase")
        result = []
        for index, phrase in enumerate(value):
            item_path = f"{path}[{index}]"
            if not isinstance(phrase, str):
                raise RulesetError(item_path, f"expected a string, got {_type_name(phrase)} {phrase!r} (quote it)")
            stripped = phrase.strip()
            if not stripped or stripped == "*":
                raise RulesetError(item_path, "empty phrase")
            if not normalise_phrase(split_wildcard(stripped)[0]).strip():
                raise RulesetError(item_path, f"phrase {phrase!r} is empty after normalisation")
            result.append(stripped)
        return result

    def validate(self) -> dict[str, Any]:
        top = self.mapping(self.data, "(root)", (
            "name", "version", "description", "threshold", "intents", "masks", "scope", "cues",
            "emotion_baseline", "modifiers", "routes", "model"))
        for key in ("name", "version", "intents"):
            if key not in top:
                raise RulesetError(key, "required")
        name = top["name"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise RulesetError("name", f"expected 1-64 letters, digits, '.', '_' or '-', got {name!r}")
        canonical: dict[str, Any] = {
            "name": name,
            "version": self.integer(top["version"], "version", low=1, high=10**9),
            "description": self.description(top.get("description", "")),
            "threshold": self.positive_number(top.get("threshold", 1.0), "threshold"),
            "intents": self.intents(top["intents"]),
            "masks": self.phrases(top.get("masks", []), "masks"),
            "scope": self.scope(top.get("scope", {})),
            "cues": self.cues(top.get("cues", {})),
            "emotion_baseline": self.emotion_baseline(top.get("emotion_baseline", {})),
            "modifiers": self.modifiers(top.get("modifiers", {})),
            "routes": self.routes(top.get("routes", {})),
            "model": self.model(top.get("model", "default")),
        }
        return canonical

    def model(self, value: Any) -> str:
        if value not in MODEL_NAMES:
            raise RulesetError("model", f"expected one of: {', '.join(MODEL_NAMES)}, got {value!r}")
        return str(value)

    def description(self, value: Any) -> str:
        if not isinstance(value, str):
            raise RulesetError("description", f"expected a string, got {_type_name(value)}")
        return value

    def intents(self, value: Any) -> dict[str, Any]:
        section = self.mapping(value, "intents", INTENTS)
        result = {}
        for intent in INTENTS:
            path = f"intents.{intent}"
            entry = self.mapping(section.get(intent, {}), path, ("base", "rules"))
            low, high = BANDS[TIERS[intent]]
            base = self.integer(entry.get("base", DEFAULT_BASES[intent]), f"{path}.base", low=0, high=999)
            if not low <= base <= high:
                raise RulesetError(f"{path}.base", f"{base} is outside the {TIERS[intent]} band {low}-{high}")
            rules_value = entry.get("rules", [])
            if not isinstance(rules_value, list):
                raise RulesetError(f"{path}.rules", f"expected a list of rules, got {_type_name(rules_value)}")
            rules = [self.rule(rule, f"{path}.rules[{index}]") for index, rule in enumerate(rules_value)]
            result[intent] = {"base": base, "rules": rules}
        return result

    def rule(self, value: Any, path: str) -> dict[str, Any]:
        entry = self.mapping(value, path, ("id", "phrases", "weight", "negatable"))
        if "id" not in entry:
            raise RulesetError(f"{path}.id", "required")
        rule_id = entry["id"]
        if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
            raise RulesetError(f"{path}.id",
                               f"expected a dotted lower-case id like 'zh.bad_review.threat', got {rule_id!r}")
        if rule_id in self.rule_ids:
            raise RulesetError(f"{path}.id", f"duplicate rule id {rule_id!r} (first at {self.rule_ids[rule_id]})")
        self.rule_ids[rule_id] = path
        if "phrases" not in entry:
            raise RulesetError(f"{path}.phrases", "required")
        negatable = entry.get("negatable", False)
        if not isinstance(negatable, bool):
            raise RulesetError(f"{path}.negatable", f"expected true or false, got {negatable!r}")
        return {
            "id": rule_id,
            "phrases": self.phrases(entry["phrases"], f"{path}.phrases", allow_empty_list=False),
            "weight": self.positive_number(entry.get("weight", 1.0), f"{path}.weight"),
            "negatable": negatable,
        }

    def scope(self, value: Any) -> dict[str, Any]:
        section = self.mapping(value, "scope", (*SCOPE_LISTS, *DEFAULT_SCOPE_NUMBERS, "clause_marks"))
        result: dict[str, Any] = {key: self.phrases(section.get(key, []), f"scope.{key}") for key in SCOPE_LISTS}
        for key, default in DEFAULT_SCOPE_NUMBERS.items():
            result[key] = self.integer(section.get(key, default), f"scope.{key}", low=0, high=200)
        marks = section.get("clause_marks", DEFAULT_CLAUSE_MARKS)
        if not isinstance(marks, str) or not marks:
            raise RulesetError("scope.clause_marks", "expected a non-empty string of punctuation characters")
        result["clause_marks"] = marks
        return result

    def cues(self, value: Any) -> dict[str, list[str]]:
        section = self.mapping(value, "cues", CUE_KINDS)
        return {kind: self.phrases(section.get(kind, []), f"cues.{kind}") for kind in CUE_KINDS}

    def emotion_baseline(self, value: Any) -> dict[str, str]:
        section = self.mapping(value, "emotion_baseline", INTENTS)
        for intent, emotion in section.items():
            if emotion not in EMOTIONS:
                raise RulesetError(f"emotion_baseline.{intent}",
                                   f"expected one of {', '.join(EMOTIONS)}, got {emotion!r}")
        return {intent: section[intent] for intent in INTENTS if intent in section}

    def modifiers(self, value: Any) -> dict[str, Any]:
        section = self.mapping(value, "modifiers", tuple(DEFAULT_MODIFIERS))
        result = copy.deepcopy(dict(DEFAULT_MODIFIERS))
        if "emotion" in section:
            emotion = self.mapping(section["emotion"], "modifiers.emotion", EMOTIONS)
            for key, points in emotion.items():
                result["emotion"][key] = self.integer(points, f"modifiers.emotion.{key}", low=0, high=999)
        if "urgent" in section:
            result["urgent"] = self.integer(section["urgent"], "modifiers.urgent", low=0, high=999)
        for key in ("prior_contact", "vip_level", "waiting"):
            if key in section:
                allowed = tuple(DEFAULT_MODIFIERS[key])
                entry = self.mapping(section[key], f"modifiers.{key}", allowed)
                for field, points in entry.items():
                    result[key][field] = self.integer(points, f"modifiers.{key}.{field}", low=0, high=999)
        return result

    def routes(self, value: Any) -> dict[str, str]:
        section = self.mapping(value, "routes", INTENTS)
        result = {}
        for intent in INTENTS:
            queue = section.get(intent, DEFAULT_ROUTES[intent])
            if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
                raise RulesetError(f"routes.{intent}",
                                   f"expected a queue name (lower-case letters, digits, '_', '-'), got {queue!r}")
            result[intent] = queue
        return result


class Ruleset:
    """A validated ruleset with its phrase automaton, built once."""

    __slots__ = ("name", "version", "_data", "automaton", "rules", "rule_intent", "rule_weight",
                 "rule_negatable", "threshold", "bases", "modifiers", "emotion_baseline", "clause_marks",
                 "scope_numbers", "_routes", "phrase_count", "weak_rules", "adjacent_chars", "longest_breaker",
                 "windows", "weak_windows", "rule_phrases", "model", "id", "model_version")

    def __init__(self, data: Mapping[str, Any]) -> None:
        prepare()
        canonical = _Validator(data).validate()
        self.name: str = canonical["name"]
        self.version: int = canonical["version"]
        self._data = canonical
        self.threshold: float = canonical["threshold"]
        self.bases: dict[str, int] = {intent: canonical["intents"][intent]["base"] for intent in INTENTS}
        self.modifiers: dict[str, Any] = canonical["modifiers"]
        self.emotion_baseline: dict[str, str] = canonical["emotion_baseline"]
        marks = canonical["scope"]["clause_marks"]
        self.clause_marks = frozenset(normalise_phrase(marks) + marks)
        self.scope_numbers: dict[str, int] = {key: canonical["scope"][key] for key in DEFAULT_SCOPE_NUMBERS}
        numbers = self.scope_numbers
        self.windows = (numbers["window_zh"], numbers["window_en"], numbers["post_window_zh"], numbers["post_window_en"])
        self.weak_windows = (numbers["weak_window_zh"], numbers["weak_window_en"])
        self._routes: Mapping[str, str] = MappingProxyType(dict(canonical["routes"]))
        self.rules: list[str] = []
        self.rule_intent: list[int] = []
        self.rule_weight: list[float] = []
        self.rule_negatable: list[bool] = []
        self._compile(canonical)
        self.model: TextModel | None = default_model() if canonical["model"] == "default" else None
        # Named in every triage: kept, not formatted per message.
        self.id = f"{self.name}@{self.version}"
        # The version of the learned model that decides with the rules, None when rules decide alone.
        self.model_version = self.model.version if self.model is not None else None
        self.weak_rules = frozenset(index for index, weight in enumerate(self.rule_weight) if weight < self.threshold)

    def _compile(self, canonical: dict[str, Any]) -> None:
        entries: dict[str, list[tuple[int, int, bool]]] = {}

        def add(phrase: str, kind: int, ref: int) -> None:
            literal, suffix_ok = split_wildcard(phrase)
            key = normalise_phrase(literal)
            entries.setdefault(key, []).append((kind, ref, suffix_ok))

        for intent_index, intent in enumerate(INTENTS):
            for rule in canonical["intents"][intent]["rules"]:
                rule_index = len(self.rules)
                self.rules.append(rule["id"])
                self.rule_intent.append(intent_index)
                self.rule_weight.append(rule["weight"])
                self.rule_negatable.append(rule["negatable"])
                for phrase in rule["phrases"]:
                    add(phrase, RULE, rule_index)
        for phrase in canonical["masks"]:
            add(phrase, MASK, 0)
        scope_kinds = {"negators": NEGATOR, "adjacent_negators": ADJACENT_NEGATOR,
                       "post_negators": POST_NEGATOR, "breakers": BREAKER, "request_negators": REQUEST_NEGATOR}
        adjacent_chars = set()
        for key, kind in scope_kinds.items():
            for phrase in canonical["scope"][key]:
                normalised = normalise_phrase(phrase)
                # A one-character Chinese negator right before a phrase is a lookup, not worth an automaton hit
                # on every 不 of every message.
                if kind == ADJACENT_NEGATOR and len(normalised) == 1 and not normalised.isascii():
                    adjacent_chars.add(normalised)
                else:
                    add(phrase, kind, 0)
        self.adjacent_chars = frozenset(adjacent_chars)
        self.longest_breaker = max((len(normalise_phrase(phrase)) for phrase in canonical["scope"]["breakers"]), default=0)
        for cue_index, cue_kind in enumerate(CUE_KINDS):
            for phrase in canonical["cues"][cue_kind]:
                punctuation = all(unicodedata.category(char).startswith("P") for char in normalise_phrase(phrase))
                add(phrase, CUE, cue_index + PUNCTUATION_CUE if punctuation else cue_index)
        self._check_weak_phrases(canonical, entries)
        self.rule_phrases = frozenset(key for key, key_entries in entries.items()
                                      if any(kind == RULE for kind, _, _ in key_entries))
        automaton = ahocorasick.Automaton()
        for key, key_entries in entries.items():
            automaton.add_word(key, _automaton_value(key, list(dict.fromkeys(key_entries))))
        automaton.make_automaton()
        # pyahocorasick refuses to search with an empty automaton; a ruleset without phrases matches nothing.
        self.automaton = automaton if entries else None
        self.phrase_count = len(entries)

    def _check_weak_phrases(self, canonical: dict[str, Any], entries: dict[str, list[tuple[int, int, bool]]]) -> None:
        """Reject a phrase shared by weak rules of one intent: alone it would reach the threshold they exist to avoid."""
        for key, key_entries in entries.items():
            weak_by_intent: dict[int, list[int]] = {}
            for kind, ref, _ in key_entries:
                if kind == RULE and self.rule_weight[ref] < canonical["threshold"]:
                    weak_by_intent.setdefault(self.rule_intent[ref], []).append(ref)
            for intent_index, refs in weak_by_intent.items():
                refs = sorted(set(refs))
                if len(refs) > 1 and sum(self.rule_weight[ref] for ref in refs) >= canonical["threshold"]:
                    intent = INTENTS[intent_index]
                    rules = canonical["intents"][intent]["rules"]
                    position = next(index for index, rule in enumerate(rules) if rule["id"] == self.rules[refs[1]])
                    raise RulesetError(f"intents.{intent}.rules[{position}].phrases",
                                       f"phrase {key!r} is also in weak rule {self.rules[refs[0]]!r}: "
                                       f"together they reach the threshold on one word")

    @classmethod
    def load(cls, path: str | Path) -> Ruleset:
        """Read and validate a YAML ruleset file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise RulesetError(str(path), f"cannot read file: {error.strerror or error}") from error
        return cls.from_yaml(text)

    @classmethod
    def from_yaml(cls, text: str) -> Ruleset:
        """Parse and validate a ruleset written as YAML."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"(yaml line {mark.line + 1})" if mark is not None else "(yaml)"
            raise RulesetError(where, f"not valid YAML: {getattr(error, 'problem', None) or error}") from error
        return cls(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, name: str | None = None, version: int | None = None) -> Ruleset:
        """Validate a ruleset given as a mapping; name and version, when given, override the mapping's."""
        if not isinstance(data, Mapping):
            raise RulesetError("(root)", f"expected a mapping, got {_type_name(data)}")
        merged = dict(data)
        if name is not None:
            merged["name"] = name
        if version is not None:
            merged["version"] = version
        return cls(merged)

    def to_mapping(self) -> dict[str, Any]:
        """The canonical, JSON-serialisable form; from_mapping of it gives an equal ruleset."""
        return copy.deepcopy(self._data)

    @property
    def routes(self) -> Mapping[str, str]:
        return self._routes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ruleset) and self._data == other._data

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Ruleset {self.id}: {len(self.rules)} rules, {self.phrase_count} phrases>"


def _automaton_value(key: str, entries: list[tuple[int, int, bool]]) -> tuple[Any, ...]:
    """What a hit of one key means, pre-split by layer, for all hits and for hits glued to a following ASCII word."""

    def split(selected: list[tuple[int, int, bool]]) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[int, ...]]:
        layer = tuple((kind, ref) for kind, ref, _ in selected if kind in (RULE, MASK))
        if any(kind == MASK for kind, _ in layer):
            layer = ((MASK, 0),)
        cues = tuple(ref for kind, ref, _ in selected if kind == CUE)
        scope = tuple(kind for kind, _, _ in selected
                      if kind in (NEGATOR, ADJACENT_NEGATOR, POST_NEGATOR, BREAKER, REQUEST_NEGATOR))
        return layer, cues, scope

    # Boundary checks are needed only where the phrase itself starts or ends with an ASCII letter/digit.
    return (len(key), key[0] in _ASCII_ALNUM, key[-1] in _ASCII_ALNUM,
            *split(entries), split([entry for entry in entries if entry[2]]))


DEFAULT_RULESET_FILE = "default.yaml"


@cache
def default_rules_only() -> Ruleset:
    """The shipped ruleset without the learned model: what the model is trained to read beside."""
    text = resources.files("app.triage").joinpath("rules", DEFAULT_RULESET_FILE).read_text(encoding="utf-8")
    return Ruleset.from_mapping({**yaml.safe_load(text), "model": "none"})


@cache
def default_ruleset() -> Ruleset:
    """The ruleset shipped with the service, loaded and compiled once per process."""
    text = resources.files("app.triage").joinpath("rules", DEFAULT_RULESET_FILE).read_text(encoding="utf-8")
    return Ruleset.from_yaml(text)
