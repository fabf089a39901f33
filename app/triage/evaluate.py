"""Accuracy of a ruleset on labelled messages: per-intent precision/recall/F1, tiers, P1 recall, false threats,
and the detected language against each row's script label.

Run: python -m app.triage.evaluate tests/unit/data/devset.jsonl
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.triage.engine import classify
from app.triage.model import EMOTIONS, INTENTS, LANGUAGES, TIERS
from app.triage.ruleset import Ruleset

P1_INTENTS: tuple[str, ...] = tuple(intent for intent in INTENTS if TIERS[intent] == "P1")
TIER_NAMES: tuple[str, ...] = ("P1", "P2", "P3", "P4")


@dataclass(frozen=True, slots=True)
class IntentScore:
    intent: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True, slots=True)
class Miss:
    text: str
    expected: str
    predicted: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report:
    ruleset: str
    total: int
    accuracy: float
    per_intent: tuple[IntentScore, ...]
    macro_f1: float
    tier_accuracy: float
    per_tier_accuracy: Mapping[str, float]
    p1_recall: Mapping[str, float]
    negation_cases: int
    false_threats: int
    false_threat_rate: float
    also_recall: float
    per_tag_accuracy: Mapping[str, tuple[int, int]]
    confusion: Mapping[str, Mapping[str, int]]
    misses: tuple[Miss, ...]
    language_scored: int
    language_accuracy: float
    language_misses: tuple[Miss, ...]
    model: str | None = None
    # Share of the P1 rows whose primary came out in P1, and of the other rows put in P1.
    p1_tier_recall: float = 1.0
    non_p1_in_p1: float = 0.0
    emotion_scored: int = 0
    emotion_accuracy: float = 0.0
    urgent_scored: int = 0
    urgent_accuracy: float = 0.0


def _ratio(numerator: int, denominator: int, *, empty: float = 1.0) -> float:
    return numerator / denominator if denominator else empty


class _Tally:
    """The counts `evaluate` gathers, one labelled row at a time."""

    def __init__(self) -> None:
        self.confusion = {expected: dict.fromkeys(INTENTS, 0) for expected in INTENTS}
        self.tier_total = dict.fromkeys(TIER_NAMES, 0)
        self.tier_right = dict.fromkeys(TIER_NAMES, 0)
        self.negation_cases = self.false_threats = self.also_expected = self.also_found = 0
        self.misses: list[Miss] = []
        self.language_misses: list[Miss] = []
        self.language_scored = 0
        self.tag_counts: dict[str, list[int]] = {}
        self.ruleset_id = ""
        self.model_id: str | None = None
        self.p1_rows = self.p1_kept = self.other_rows = self.put_in_p1 = 0
        self.emotion_scored = self.emotion_right = self.urgent_scored = self.urgent_right = 0

    def add(self, row: Mapping[str, Any], triage: Any) -> None:
        text, expected, predicted = row["text"], row["primary"], triage.primary
        self.ruleset_id, self.model_id = triage.ruleset, triage.model
        self.confusion[expected][predicted] += 1
        self.tier_total[TIERS[expected]] += 1
        self.tier_right[TIERS[expected]] += TIERS[predicted] == TIERS[expected]
        self._tiers_emotion_urgency(row, triage)
        # Rows written with one "style" (the blind set, the corpus) count it as a tag.
        tags = tuple(row.get("tags", ())) + ((row["style"],) if isinstance(row.get("style"), str) else ())
        also = set(row.get("also", ()))
        if any(tag.startswith("negation") for tag in tags):
            self.negation_cases += 1
            # A false threat: a P1 primary that the label does not hold anywhere.
            self.false_threats += predicted in P1_INTENTS and predicted != expected and predicted not in also
        self.also_expected += len(also)
        self.also_found += len(also & {hit.intent for hit in triage.intents})
        for tag in tags:
            counts = self.tag_counts.setdefault(tag, [0, 0])
            counts[0] += predicted == expected
            counts[1] += 1
        if predicted != expected:
            self.misses.append(Miss(text, expected, predicted, tags))
        # Rows labelled "mixed" (or not labelled) have no single right answer, so they are not scored.
        script = row.get("script")
        if script in LANGUAGES:
            self.language_scored += 1
            if triage.language != script:
                self.language_misses.append(Miss(text, script, triage.language, tags))

    def _tiers_emotion_urgency(self, row: Mapping[str, Any], triage: Any) -> None:
        if TIERS[row["primary"]] == "P1":
            self.p1_rows += 1
            self.p1_kept += triage.tier == "P1"
        else:
            self.other_rows += 1
            self.put_in_p1 += triage.tier == "P1"
        if row.get("emotion") in EMOTIONS:
            self.emotion_scored += 1
            self.emotion_right += triage.emotion == row["emotion"]
        if isinstance(row.get("urgent"), bool):
            self.urgent_scored += 1
            self.urgent_right += triage.urgent == row["urgent"]

    def per_intent(self) -> list[IntentScore]:
        scores = []
        for intent in INTENTS:
            true_positive = self.confusion[intent][intent]
            support = sum(self.confusion[intent].values())
            predicted_count = sum(self.confusion[expected][intent] for expected in INTENTS)
            precision = _ratio(true_positive, predicted_count, empty=0.0 if support else 1.0)
            recall = _ratio(true_positive, support)
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            scores.append(IntentScore(intent, precision, recall, f1, support, predicted_count))
        return scores

    def report(self) -> Report:
        total = sum(self.tier_total.values())
        per_intent = self.per_intent()
        scored = [score for score in per_intent if score.support or score.predicted]
        return Report(
            ruleset=self.ruleset_id,
            total=total,
            accuracy=_ratio(sum(self.confusion[intent][intent] for intent in INTENTS), total),
            per_intent=tuple(per_intent),
            macro_f1=_ratio(sum(score.f1 for score in scored), len(scored)),
            tier_accuracy=_ratio(sum(self.tier_right.values()), total),
            per_tier_accuracy={tier: _ratio(self.tier_right[tier], self.tier_total[tier]) for tier in TIER_NAMES},
            p1_recall={score.intent: score.recall for score in per_intent if score.intent in P1_INTENTS},
            negation_cases=self.negation_cases,
            false_threats=self.false_threats,
            false_threat_rate=_ratio(self.false_threats, self.negation_cases, empty=0.0),
            also_recall=_ratio(self.also_found, self.also_expected),
            per_tag_accuracy={tag: (right, seen) for tag, (right, seen) in sorted(self.tag_counts.items())},
            confusion={expected: dict(row) for expected, row in self.confusion.items()},
            misses=tuple(self.misses),
            language_scored=self.language_scored,
            language_accuracy=_ratio(self.language_scored - len(self.language_misses), self.language_scored),
            language_misses=tuple(self.language_misses),
            model=self.model_id,
            p1_tier_recall=_ratio(self.p1_kept, self.p1_rows),
            non_p1_in_p1=_ratio(self.put_in_p1, self.other_rows, empty=0.0),
            emotion_scored=self.emotion_scored,
            emotion_accuracy=_ratio(self.emotion_right, self.emotion_scored, empty=0.0),
            urgent_scored=self.urgent_scored,
            urgent_accuracy=_ratio(self.urgent_right, self.urgent_scored, empty=0.0),
        )


def evaluate(rows: Iterable[Mapping[str, Any]], ruleset: Ruleset | None = None) -> Report:
    """Classify every labelled row and score the primary intents, tiers, P1s, negation cases, emotion, urgency and
    languages."""
    tally = _Tally()
    for row in rows:
        if row["primary"] not in TIERS:
            raise ValueError(f"unknown intent {row['primary']!r} in labelled row {row['text']!r}")
        tally.add(row, classify(row["text"], ruleset))
    return tally.report()


@dataclass(frozen=True, slots=True)
class ConversationReport:
    conversations: int
    trajectories_right: int
    messages: int
    tiers_right: int
    primaries_right: int


def evaluate_conversations(rows: Iterable[Mapping[str, Any]], ruleset: Ruleset | None = None) -> ConversationReport:
    """The ticket's tier after each message (the highest so far, as a ticket never drops while open), each message
    classified with the conversation's earlier messages as context; a trajectory is right when every tier is."""
    conversations = trajectories = messages = tiers_right = primaries_right = 0
    for row in rows:
        texts, expected_tiers = row["conversation"], row["tiers"]
        expected_primaries = row.get("primaries") or [None] * len(texts)
        conversations += 1
        best = 4
        all_right = True
        for index, (text, tier, primary) in enumerate(zip(texts, expected_tiers, expected_primaries, strict=True)):
            triage = classify(text, ruleset, context=texts[:index])
            best = min(best, int(triage.tier[1]))
            messages += 1
            right = f"P{best}" == tier
            tiers_right += right
            all_right = all_right and right
            primaries_right += triage.primary == primary
        trajectories += all_right
    return ConversationReport(conversations, trajectories, messages, tiers_right, primaries_right)


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Labelled rows from a JSON-lines file, skipping blank lines."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


_SHORT = {
    "rights_protection": "rights", "complaint": "compl", "bad_review_threat": "badrev", "quality_issue": "qual",
    "false_advertising": "falsad", "return_refund": "refund", "price_protection": "price", "logistics": "logis",
    "payment_order": "pay", "presale": "presal", "other": "other",
}


def format_report(report: Report, *, show_misses: int = 0) -> str:
    """The report as a readable plain-text table."""
    lines = [f"ruleset {report.ruleset}, model {report.model or 'none'}: {report.total} messages, "
             f"primary accuracy {report.accuracy:.3f}", ""]
    lines.append(f"{'intent':<20}{'tier':>5}{'precision':>11}{'recall':>8}{'f1':>7}{'support':>9}{'predicted':>11}")
    for score in report.per_intent:
        lines.append(f"{score.intent:<20}{TIERS[score.intent]:>5}{score.precision:>11.3f}{score.recall:>8.3f}"
                     f"{score.f1:>7.3f}{score.support:>9}{score.predicted:>11}")
    lines += [
        "",
        f"macro-F1 (primary intent)       {report.macro_f1:.3f}",
        f"tier accuracy                   {report.tier_accuracy:.3f}  ("
        + ", ".join(f"{tier} {value:.3f}" for tier, value in report.per_tier_accuracy.items()) + ")",
        "P1 recall                       "
        + ", ".join(f"{intent} {value:.3f}" for intent, value in report.p1_recall.items()),
        f"P1 recall (tier)                {report.p1_tier_recall:.3f}",
        f"non-P1 put in P1                {report.non_p1_in_p1:.1%}",
        f"emotion accuracy                {report.emotion_accuracy:.3f}  ({report.emotion_scored} rows labelled)",
        f"urgency accuracy                {report.urgent_accuracy:.3f}  ({report.urgent_scored} rows labelled)",
        f"false threats on negation cases {report.false_threats}/{report.negation_cases}"
        f" = {report.false_threat_rate:.1%}",
        f"secondary intents found         {report.also_recall:.3f}",
        (f"language (rows with one script) {report.language_accuracy:.3f}"
         f"  ({report.language_scored - len(report.language_misses)}/{report.language_scored})"),
        "primary right per tag           "
        + ", ".join(f"{tag} {right}/{seen}" for tag, (right, seen) in report.per_tag_accuracy.items()),
        "",
        "confusion matrix (rows: expected, columns: predicted)",
        " " * 8 + "".join(f"{_SHORT[intent]:>7}" for intent in INTENTS),
    ]
    for expected in INTENTS:
        lines.append(f"{_SHORT[expected]:<8}" + "".join(f"{report.confusion[expected][predicted] or '.':>7}"
                                                     for predicted in INTENTS))
    if show_misses and report.misses:
        lines += ["", f"misses (first {min(show_misses, len(report.misses))} of {len(report.misses)})"]
        for miss in report.misses[:show_misses]:
            lines.append(f"  {miss.expected} -> {miss.predicted}: {miss.text}")
    if show_misses and report.language_misses:
        lines += ["", f"language misses ({len(report.language_misses)})"]
        for miss in report.language_misses[:show_misses]:
            lines.append(f"  {miss.expected} -> {miss.predicted}: {miss.text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the report of a labelled JSON-lines file (and the misses with --misses)."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_misses = 0
    if "--misses" in args:
        args.remove("--misses")
        show_misses = 10_000
    ruleset = None
    if "--rules" in args:
        index = args.index("--rules")
        ruleset = Ruleset.load(args[index + 1])
        del args[index:index + 2]
    if len(args) != 1:
        print("usage: python -m app.triage.evaluate DEVSET.jsonl [--rules RULES.yaml] [--misses]", file=sys.stderr)
        return 2
    print(format_report(evaluate(load_rows(args[0]), ruleset), show_misses=show_misses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
