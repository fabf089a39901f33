"""Value types of the triage core: intents, tiers, bands and the decision itself."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Mapping

Intent = str
Tier = Literal["P1", "P2", "P3", "P4"]
Emotion = Literal["angry", "negative", "neutral", "positive"]

# Precedence order of SPEC 2.1: earlier wins when a message shows several intents.
INTENTS: tuple[str, ...] = (
    "rights_protection",
    "complaint",
    "bad_review_threat",
    "quality_issue",
    "false_advertising",
    "return_refund",
    "price_protection",
    "logistics",
    "payment_order",
    "presale",
    "other",
)

TIERS: Mapping[str, Tier] = MappingProxyType({
    "rights_protection": "P1",
    "complaint": "P1",
    "bad_review_threat": "P1",
    "quality_issue": "P2",
    "false_advertising": "P2",
    "return_refund": "P2",
    "price_protection": "P2",
    "logistics": "P3",
    "payment_order": "P3",
    "presale": "P4",
    "other": "P4",
})

BANDS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "P1": (700, 999),
    "P2": (500, 699),
    "P3": (300, 499),
    "P4": (0, 299),
})

EMOTIONS: tuple[str, ...] = ("angry", "negative", "neutral", "positive")
LANGUAGES: tuple[str, ...] = ("zh-Hans", "zh-Hant", "en")


@dataclass(frozen=True, slots=True)
class PriorityContext:
    """Facts about the buyer and the wait that raise priority; time is passed in."""

    vip_level: int = 0
    prior_contacts: int = 0
    waiting_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """One rule that matched: text == message[start:end] of the original, unnormalised message."""

    rule: str
    start: int
    end: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        """The evidence as plain JSON types."""
        return {"rule": self.rule, "start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True, slots=True)
class IntentHit:
    """An intent found in a message, with its score and the evidence that fired."""

    intent: Intent
    tier: Tier
    score: float
    evidence: tuple[Evidence, ...]

    def to_dict(self) -> dict[str, Any]:
        """The hit as plain JSON types."""
        return {
            "intent": self.intent,
            "tier": self.tier,
            "score": self.score,
            "evidence": [item.to_dict() for item in self.evidence],
        }


@dataclass(frozen=True, slots=True)
class Triage:
    """The decision for one message; intents are in precedence order, primary first."""

    primary: Intent
    tier: Tier
    priority: int
    intents: tuple[IntentHit, ...]
    emotion: Emotion
    urgent: bool
    language: str
    queue: str
    ruleset: str
    # Version of the learned model that decided with the rules; None when the ruleset runs without one.
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The whole decision, evidence included, as plain JSON types."""
        return {
            "primary": self.primary,
            "tier": self.tier,
            "priority": self.priority,
            "intents": [hit.to_dict() for hit in self.intents],
            "emotion": self.emotion,
            "urgent": self.urgent,
            "language": self.language,
            "queue": self.queue,
            "ruleset": self.ruleset,
            "model": self.model,
        }
