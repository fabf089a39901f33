"""Rules admin: candidate rulesets, stored versions, validation summaries and backtest reports."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from app.schemas.base import Schema, whole_number
from app.triage import BANDS, INTENTS, TIERS
from app.triage.model import EMOTIONS
from app.triage.ruleset import CUE_KINDS, DEFAULT_MODIFIERS, DEFAULT_SCOPE_NUMBERS, SCOPE_LISTS

TierName = Literal["P1", "P2", "P3", "P4"]

RULESET_DESCRIPTION = (
    "A ruleset mapping, in the shape of the shipped one (`GET /v1/shops/{shop_id}/rules` answers it as `body`; "
    "edit that and send it back). Only `intents` is required: `name` defaults to the shop id, `version` is always "
    "assigned by the service. An intent left out has no rules and a phrase list left out is empty; numbers "
    "(bases, threshold, windows, modifiers) and `routes` left out take the shipped defaults. Intents: `rights_protection`, `complaint`, "
    "`bad_review_threat`, `quality_issue`, `false_advertising`, `return_refund`, `price_protection`, `logistics`, "
    "`payment_order`, `presale`, `other`; each has a `base` priority inside its tier's band and `rules` "
    "(`id`, `phrases`, `weight`, `negatable`). `routes` maps intents to queues of the shop. Checked beyond this "
    "schema: rule ids are unique, every route names a queue the shop has, a phrase is not empty once normalised, "
    "and weak rules (weight below `threshold`) of one intent share no phrase.")

EXAMPLE_RULESET: dict[str, Any] = {
    "name": "summer-sale",
    "description": "大促期间：差评威胁仍进投诉队列，退款 refund 进售后",
    "intents": {
        "bad_review_threat": {"rules": [
            {"id": "zh.bad_review.threat", "phrases": ["差评", "给差评", "一星", "差評"], "negatable": True},
            {"id": "en.bad_review.threat", "phrases": ["bad review", "1-star", "one star"], "negatable": True}]},
        "return_refund": {"rules": [
            {"id": "zh.refund.ask", "phrases": ["退款", "退货", "七天无理由"]},
            {"id": "en.refund.ask", "phrases": ["refund*", "return it", "money back"]}]},
        "logistics": {"rules": [
            {"id": "zh.logistics.stuck", "phrases": ["物流不动", "还没发货", "快递丢了"]},
            {"id": "en.logistics.late", "phrases": ["where is my parcel", "not shipped"]}]},
    },
    "scope": {"negators": ["不会", "不给", "won't", "not"]},
    "routes": {"bad_review_threat": "complaints", "return_refund": "aftersale", "logistics": "aftersale"},
}

# A candidate that moves 差评 / "1-star" from bad_review_threat (P1) to quality_issue (P2).
EXAMPLE_MOVE_BAD_REVIEWS: dict[str, Any] = {
    "name": "reviews-as-quality",
    "intents": {
        "bad_review_threat": {"rules": []},
        "quality_issue": {"rules": [
            {"id": "zh.quality.broken", "phrases": ["坏了", "破损", "质量太差"], "negatable": True},
            {"id": "zh.review.as_quality", "phrases": ["差评", "给差评", "一星"], "negatable": True},
            {"id": "en.review.as_quality", "phrases": ["bad review", "1-star"], "negatable": True}]},
    },
}



def _object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False, **extra}


def _integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def ruleset_json_schema() -> dict[str, Any]:
    """The documented shape of a candidate; the service's own validator has the last word and names the entry."""
    phrases = {"type": "array", "items": {"type": "string", "pattern": r"^(?!\s*\*?\s*$)"}}
    rule = _object({
        "id": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$", "examples": ["zh.bad_review.threat"]},
        "phrases": {**phrases, "minItems": 1},
        "weight": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "negatable": {"type": "boolean", "default": False},
    }, required=["id", "phrases"])
    intents = _object({intent: _object({"base": _integer(*BANDS[TIERS[intent]]), "rules": {"type": "array", "items": rule}})
                       for intent in INTENTS})
    numbers = {key: _integer(0, 200) for key in DEFAULT_SCOPE_NUMBERS}
    scope = _object({**{key: phrases for key in SCOPE_LISTS}, **numbers,
                     "clause_marks": {"type": "string", "minLength": 1}})
    modifiers = _object({key: _integer(0, 999) if isinstance(value, int) else
                         _object({field: _integer(0, 999) for field in value})
                         for key, value in DEFAULT_MODIFIERS.items()})
    return _object({
        "name": {"anyOf": [{"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"}, {"type": "null"}],
                 "description": "Defaults to the shop id; `default` is kept for the shipped ruleset"},
        "version": {"description": "Ignored: the service numbers a shop's versions"},
        "description": {"type": "string"},
        "threshold": {"type": "number", "exclusiveMinimum": 0},
        "intents": intents,
        "masks": phrases,
        "scope": scope,
        "cues": _object({kind: phrases for kind in CUE_KINDS}),
        "emotion_baseline": _object({intent: {"enum": list(EMOTIONS)} for intent in INTENTS}),
        "modifiers": modifiers,
        "routes": _object({intent: {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,63}$"} for intent in INTENTS}),
    }, required=["intents"], description=RULESET_DESCRIPTION, examples=[EXAMPLE_RULESET])


# Parsed as a plain mapping so that the ruleset validator, not pydantic, reports the faulty entry.
RulesetMapping = Annotated[dict[str, Any], WithJsonSchema(ruleset_json_schema())]


class RulesetCandidate(Schema):
    ruleset: RulesetMapping


class RulesetActivate(Schema):
    ruleset: RulesetMapping
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["summer-sale"],
                             description="Stored name; overrides the mapping's `name`. `default` is reserved for "
                                         "the shipped ruleset.")


class BacktestRequest(Schema):
    ruleset: RulesetMapping
    limit: whole_number(1, 10_000) = Field(1000,  # type: ignore[valid-type]
                       description="How many of the shop's latest inbound messages to replay")


class RollbackRequest(Schema):
    version: whole_number(1, 10**9) | None = Field(examples=[1],  # type: ignore[valid-type]
                                description="A stored version of the shop, or null for the shipped default ruleset")

    model_config = Schema.model_config | {"json_schema_extra": {"examples": [{"version": 1}, {"version": None}]}}


class RulesetRead(BaseModel):
    id: str = Field(description="`name@version`, as every message and ticket records it", examples=["summer-sale@2"])
    name: str = Field(examples=["summer-sale"])
    version: int = Field(description="The shop's version number (the shipped ruleset's own version when `source` "
                                     "is `shipped`)", examples=[2])
    source: Literal["shipped", "shop"] = Field(description="`shipped`: the default ruleset that ships with the "
                                                           "service; `shop`: a version stored for this shop")
    created_at: datetime | None = Field(description="Null for the shipped ruleset")
    activated_at: datetime | None = Field(description="When this version was last activated; null for the shipped "
                                                      "ruleset")
    body: dict[str, Any] = Field(description="The canonical mapping, every default filled in")

    model_config = {"json_schema_extra": {"examples": [{
        "id": "summer-sale@2", "name": "summer-sale", "version": 2, "source": "shop",
        "created_at": "2026-11-24T12:00:00Z", "activated_at": "2026-11-24T12:00:00Z",
        "body": {**EXAMPLE_RULESET, "version": 2}}]}}


class RulesetVersionRead(BaseModel):
    version: int
    name: str
    id: str = Field(examples=["summer-sale@2"])
    created_at: datetime
    activated_at: datetime | None = Field(description="When this version was last activated")
    active: bool


class RulesetVersions(BaseModel):
    active: str = Field(description="Id of the ruleset in force", examples=["default@1"])
    active_version: int | None = Field(description="The active stored version; null while the shipped default "
                                                   "ruleset is in force")
    versions: list[RulesetVersionRead] = Field(description="Newest first, without bodies")

    model_config = {"json_schema_extra": {"examples": [{"active": "summer-sale@2", "active_version": 2, "versions": [
        {"version": 2, "name": "summer-sale", "id": "summer-sale@2", "created_at": "2026-11-24T12:00:00Z",
         "activated_at": "2026-11-24T12:00:00Z", "active": True},
        {"version": 1, "name": "summer-sale", "id": "summer-sale@1", "created_at": "2026-11-20T09:30:00Z",
         "activated_at": "2026-11-20T09:30:00Z", "active": False}]}]}}


class IntentSummary(BaseModel):
    tier: TierName
    base: int = Field(description="Priority base inside the tier's band")
    rules: int
    phrases: int


class RulesetSummary(BaseModel):
    valid: Literal[True] = True
    id: str = Field(description="The id it would get if activated now", examples=["summer-sale@3"])
    name: str
    intents: dict[str, IntentSummary]
    phrases: int = Field(description="Phrases over all intents")
    masks: int
    routes: dict[str, str] = Field(examples=[{"bad_review_threat": "complaints", "logistics": "aftersale"}])

    model_config = {"json_schema_extra": {"examples": [{
        "valid": True, "id": "summer-sale@3", "name": "summer-sale",
        "intents": {"bad_review_threat": {"tier": "P1", "base": 800, "rules": 2, "phrases": 7},
                    "return_refund": {"tier": "P2", "base": 560, "rules": 2, "phrases": 6},
                    "logistics": {"tier": "P3", "base": 400, "rules": 2, "phrases": 5},
                    "other": {"tier": "P4", "base": 100, "rules": 0, "phrases": 0}},
        "phrases": 18, "masks": 0,
        "routes": {"bad_review_threat": "complaints", "return_refund": "aftersale", "logistics": "aftersale",
                   "other": "presale"}}]}}


class DecisionRead(BaseModel):
    primary: str = Field(examples=["bad_review_threat"])
    tier: TierName
    queue: str = Field(examples=["complaints"])


class BacktestExample(BaseModel):
    message_id: int = Field(description="The stored message's id (as in a ticket's `messages`)")
    external_id: str | None = Field(description="The platform's message id", examples=["m-1001"])
    ticket_id: str
    received_at: datetime
    excerpt: str = Field(description="At most 80 characters around the evidence; '…' marks a cut",
                         examples=["亲，快递三天没动了，再不到就给差评"])
    before: DecisionRead = Field(description="Under the active ruleset")
    after: DecisionRead = Field(description="Under the candidate")


class ChangeCounts(BaseModel):
    primary: int
    tier: int
    queue: int
    any: int


class BacktestExamples(BaseModel):
    primary: list[BacktestExample]
    tier: list[BacktestExample]
    queue: list[BacktestExample]


_MOVED_REVIEW = {
    "message_id": 4, "external_id": "m-1003", "ticket_id": "ff95e471-309a-46c6-acb3-fa9786d2fa47",
    "received_at": "2026-11-25T09:12:40Z", "excerpt": "东西坏了，给你一星",
    "before": {"primary": "bad_review_threat", "tier": "P1", "queue": "complaints"},
    "after": {"primary": "quality_issue", "tier": "P2", "queue": "aftersale"}}


class BacktestReport(BaseModel):
    active: str = Field(description="Id of the ruleset in force, replayed as the baseline", examples=["default@1"])
    candidate: str = Field(description="Id the candidate would get if activated now", examples=["summer-sale@3"])
    messages: int = Field(description="Inbound messages replayed")
    since: datetime | None = Field(description="Receipt time of the oldest message replayed")
    until: datetime | None = Field(description="Receipt time of the newest message replayed")
    changed: ChangeCounts = Field(description="Messages whose primary intent, tier or queue would change")
    tickets: ChangeCounts = Field(description="Distinct tickets with at least one such message")
    tier_moves: dict[TierName, dict[TierName, int]] = Field(
        description="Messages by tier under the active ruleset (outer key) and under the candidate (inner key); "
                    "the diagonal is unchanged",
        examples=[{"P1": {"P1": 40, "P2": 3, "P3": 0, "P4": 0}, "P2": {"P1": 0, "P2": 120, "P3": 0, "P4": 0},
                   "P3": {"P1": 0, "P2": 0, "P3": 300, "P4": 0}, "P4": {"P1": 0, "P2": 0, "P3": 0, "P4": 537}}])
    examples: BacktestExamples = Field(description="Up to 20 messages of each kind of change, newest first")

    model_config = {"json_schema_extra": {"examples": [{
        "active": "default@1", "candidate": "reviews-as-quality@1", "messages": 3,
        "since": "2026-11-25T08:00:01Z", "until": "2026-11-25T09:12:40Z",
        "changed": {"primary": 2, "tier": 2, "queue": 2, "any": 2},
        "tickets": {"primary": 2, "tier": 2, "queue": 2, "any": 2},
        "tier_moves": {"P1": {"P1": 0, "P2": 2, "P3": 0, "P4": 0}, "P2": {"P1": 0, "P2": 0, "P3": 0, "P4": 0},
                       "P3": {"P1": 0, "P2": 0, "P3": 0, "P4": 0}, "P4": {"P1": 0, "P2": 0, "P3": 0, "P4": 1}},
        "examples": {kind: [_MOVED_REVIEW] for kind in ("primary", "tier", "queue")}}]}}
