"""Rules admin: candidate rulesets, stored versions, validation summaries and backtest reports (SPEC 2.5, 5.5)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.base import Schema

TierName = Literal["P1", "P2", "P3", "P4"]

RULESET_DESCRIPTION = (
    "A ruleset mapping, in the shape of the shipped one (`GET /v1/shops/{shop_id}/rules` answers it as `body`; "
    "edit that and send it back). Only `intents` is required: `name` defaults to the shop id, `version` is always "
    "assigned by the service. An intent left out has no rules and a phrase list left out is empty; numbers "
    "(bases, threshold, windows, modifiers) and `routes` left out take the shipped defaults. Intents: `rights_protection`, `complaint`, "
    "`bad_review_threat`, `quality_issue`, `false_advertising`, `return_refund`, `price_protection`, `logistics`, "
    "`payment_order`, `presale`, `other`; each has a `base` priority inside its tier's band and `rules` "
    "(`id`, `phrases`, `weight`, `negatable`). `routes` maps intents to queues of the shop.")

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

_RULESET_FIELD = Field(description=RULESET_DESCRIPTION, examples=[EXAMPLE_RULESET])


class RulesetCandidate(Schema):
    ruleset: dict[str, Any] = _RULESET_FIELD


class RulesetActivate(Schema):
    ruleset: dict[str, Any] = _RULESET_FIELD
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["summer-sale"],
                             description="Stored name; overrides the mapping's `name`. `default` is reserved for "
                                         "the shipped ruleset.")


class BacktestRequest(Schema):
    ruleset: dict[str, Any] = _RULESET_FIELD
    limit: int = Field(1000, ge=1, le=10_000, description="How many of the shop's latest inbound messages to replay")


class RollbackRequest(Schema):
    version: int | None = Field(ge=1, le=10**9, examples=[1],
                                description="A stored version of the shop, or null for the shipped default ruleset")


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
