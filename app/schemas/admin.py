"""Shops, webhook secrets, queues and agents, as ops create and read them."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.schemas import examples as ex
from app.schemas.base import QueueName, ReadSchema, Schema, SlaTargets, Slug, StorableStr, whole_number

Level = Literal["junior", "mid", "senior"]


class ShopCreate(Schema):
    id: Slug
    name: StorableStr = Field(min_length=1, max_length=200, examples=["Demo shop"])
    sla_targets: SlaTargets | None = None

    model_config = Schema.model_config | ex.examples({"id": ex.SHOP_ID, "name": "Demo shop",
                                                      "sla_targets": ex.SLA_TARGETS})


class ShopUpdate(Schema):
    name: StorableStr | None = Field(None, min_length=1, max_length=200)
    sla_targets: SlaTargets | None = None

    model_config = Schema.model_config | ex.examples({"sla_targets": {"P1": 15, "P2": 30, "P3": 40, "P4": 60}})


class ShopCreated(Schema):
    id: str = Field(examples=["demo"])
    name: str = Field(examples=["Demo shop"])
    webhook_secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])

    model_config = Schema.model_config | ex.examples({"id": ex.SHOP_ID, "name": "Demo shop",
                                                      "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class ShopRead(ReadSchema):
    id: str
    name: str
    sla_targets: SlaTargets
    active_ruleset_version: int | None
    created_at: datetime

    model_config = ReadSchema.model_config | ex.examples(ex.SHOP)


class SecretRotate(Schema):
    previous_valid_seconds: whole_number(0, 30 * 86_400) | None = Field(  # type: ignore[valid-type]
        None, description="How long the secrets in use keep verifying; 0 revokes them now (a leaked secret). "
                          "Default: TRIAGE_SECRET_OVERLAP_HOURS.")

    model_config = Schema.model_config | ex.examples({"previous_valid_seconds": 0}, {"previous_valid_seconds": 3600})


class SecretRotated(Schema):
    webhook_secret: str = Field(examples=["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"])
    previous_valid_until: datetime | None = Field(
        None, description="Until when the secrets in use before this rotation keep verifying")

    model_config = Schema.model_config | ex.examples({"webhook_secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                                                      "previous_valid_until": "2026-11-26T08:00:00Z"})


class QueueCreate(Schema):
    name: QueueName
    description: StorableStr = Field("", max_length=500)
    sla_targets: SlaTargets | None = Field(None, description="Overrides the shop's targets for this queue")

    model_config = Schema.model_config | ex.examples({"name": "vip", "description": "VIP buyers",
                                                      "sla_targets": {"P1": 10, "P2": 20, "P3": 30, "P4": 45}})


class QueueUpdate(Schema):
    description: StorableStr | None = Field(None, max_length=500)
    sla_targets: SlaTargets | None = None

    model_config = Schema.model_config | ex.examples({"sla_targets": {"P1": 15, "P2": 25, "P3": 40, "P4": 60}})


class QueueRead(ReadSchema):
    name: str
    description: str
    sla_targets: SlaTargets = Field(description="Targets in force for this queue (its own or the shop's)")
    sla_override: bool
    created_at: datetime

    model_config = ReadSchema.model_config | ex.examples(ex.QUEUE)


class AgentCreate(Schema):
    name: StorableStr = Field(min_length=1, max_length=200, examples=["Lin"])
    queues: list[QueueName] = Field(min_length=1, max_length=64, examples=[["presale", "aftersale"]])
    level: Level = "junior"
    capacity: whole_number(1, 50) | None = Field(None, description="Open tickets at once; the service default when omitted")

    model_config = Schema.model_config | ex.examples({"name": "Lin", "queues": ["presale", "aftersale", "complaints"],
                                                      "level": "senior", "capacity": 5})


class AgentUpdate(Schema):
    name: StorableStr | None = Field(None, min_length=1, max_length=200)
    queues: list[QueueName] | None = Field(None, min_length=1, max_length=64)
    level: Level | None = None
    capacity: whole_number(1, 50) | None = None  # type: ignore[valid-type]
    active: bool | None = None

    model_config = Schema.model_config | ex.examples({"capacity": 8}, {"active": False})


class AgentRead(ReadSchema):
    id: str
    shop_id: str
    name: str
    queues: list[str]
    level: Level
    capacity: int
    active: bool
    created_at: datetime
    presence: Literal["online", "away", "offline"] = Field(
        description="Now: what the agent set (or online from a claim), offline once silent for "
                    "TRIAGE_PRESENCE_TIMEOUT_SECONDS")
    seen_at: datetime | None = Field(description="Its last claim, ticket heartbeat or presence call")

    model_config = ReadSchema.model_config | ex.examples(ex.AGENT)


class AgentCreated(AgentRead):
    token: str = Field(description="Shown this once; only its hash is stored", examples=["agt_3q2n..."])

    model_config = ReadSchema.model_config | ex.examples({**ex.AGENT, "presence": "offline", "seen_at": None,
                                                          "token": "agt_ZyGWMrhF2mpmYsSA2sNfVP1ZwzXAXWr2dcl5pivM2kA"})
