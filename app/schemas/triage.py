"""The triage of one message, as the API shows it (README, "How a ticket is ranked")."""

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas import examples as ex
from app.schemas.base import Schema, StorableStr


class ClassifyRequest(Schema):
    text: StorableStr = Field(min_length=1, max_length=10_000, examples=["亲，快递三天没动了，再不到就给差评"])
    shop_id: StorableStr | None = Field(None, description="Use this shop's active ruleset instead of the default",
                                        examples=["demo"])

    model_config = Schema.model_config | ex.examples({"text": ex.BUYER_TEXT}, {"text": ex.BUYER_TEXT,
                                                                               "shop_id": ex.SHOP_ID})


class EvidenceRead(BaseModel):
    rule: str = Field(examples=["zh.bad_review.threat"])
    start: int = Field(description="Offset in the original text")
    end: int
    text: str = Field(description="text[start:end] of the original message", examples=["给差评"])


class IntentHitRead(BaseModel):
    intent: str
    tier: str
    score: float
    evidence: list[EvidenceRead]


class TriageRead(BaseModel):
    primary: str = Field(examples=["bad_review_threat"])
    tier: Literal["P1", "P2", "P3", "P4"]
    priority: int = Field(ge=0, le=999)
    intents: list[IntentHitRead]
    emotion: Literal["angry", "negative", "neutral", "positive"]
    urgent: bool
    language: str = Field(examples=["zh-Hans"])
    queue: str = Field(examples=["complaints"])
    ruleset: str = Field(examples=["default@1"])
    model: str | None = Field(default=None, description="Version of the learned model that decided beside the "
                              "rules (null: the rules alone decided)", examples=["default@3f0c2a9e51d4"])

    model_config = ex.examples(ex.TRIAGE)
