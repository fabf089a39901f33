"""Shops, webhook secrets, queues and agents, as ops create and read them (SPEC 5.5)."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.schemas.base import QueueName, ReadSchema, Schema, SlaTargets, Slug, StorableStr, whole_number

Level = Literal["junior", "mid", "senior"]


class ShopCreate(Schema):
    id: Slug
    name: StorableStr = Field(min_length=1, max_length=200, examples=["Demo shop"])
    sla_targets: SlaTargets | None = None


class ShopUpdate(Schema):
    name: StorableStr | None = Field(None, min_length=1, max_length=200)
    sla_targets: SlaTargets | None = None


class ShopCreated(Schema):
    id: str = Field(examples=["demo"])
    name: str = Field(examples=["Demo shop"])
    webhook_secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class ShopRead(ReadSchema):
    id: str
    name: str
    sla_targets: SlaTargets
    active_ruleset_version: int | None
    created_at: datetime


class SecretRotated(Schema):
    webhook_secret: str = Field(examples=["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"])
    previous_valid_until: datetime | None = Field(
        None, description="Until when the secrets in use before this rotation keep verifying")


class QueueCreate(Schema):
    name: QueueName
    description: StorableStr = Field("", max_length=500)
    sla_targets: SlaTargets | None = Field(None, description="Overrides the shop's targets for this queue")


class QueueUpdate(Schema):
    description: StorableStr | None = Field(None, max_length=500)
    sla_targets: SlaTargets | None = None


class QueueRead(ReadSchema):
    name: str
    description: str
    sla_targets: SlaTargets = Field(description="Targets in force for this queue (its own or the shop's)")
    sla_override: bool
    created_at: datetime


class AgentCreate(Schema):
    name: StorableStr = Field(min_length=1, max_length=200, examples=["Lin"])
    queues: list[QueueName] = Field(min_length=1, max_length=64, examples=[["presale", "aftersale"]])
    level: Level = "junior"
    capacity: whole_number(1, 50) | None = Field(None, description="Open tickets at once; the service default when omitted")


class AgentUpdate(Schema):
    name: StorableStr | None = Field(None, min_length=1, max_length=200)
    queues: list[QueueName] | None = Field(None, min_length=1, max_length=64)
    level: Level | None = None
    capacity: whole_number(1, 50) | None = None  # type: ignore[valid-type]
    active: bool | None = None


class AgentRead(ReadSchema):
    id: str
    shop_id: str
    name: str
    queues: list[str]
    level: Level
    capacity: int
    active: bool
    created_at: datetime


class AgentCreated(AgentRead):
    token: str = Field(description="Shown this once; only its hash is stored", examples=["agt_3q2n..."])
