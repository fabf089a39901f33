"""Delivery endpoints and deliveries, as ops set and read them (SPEC 9.1)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from app.schemas import examples as ex
from app.schemas.base import Schema, StorableStr, whole_number

EventName = Literal["reply.created", "ticket.tier_raised", "ticket.escalated", "sla.breached"]
DeliveryState = Literal["pending", "delivered", "failed"]
URL_EXAMPLE = "https://platform.example.com/triage/events"
EXAMPLE_ENDPOINT = {"id": "ep_4f1c2a9b7e3d5a60", "shop_id": ex.SHOP_ID, "url": URL_EXAMPLE,
                    "events": ["reply.created", "sla.breached"], "description": "Replies to buyers",
                    "enabled": True, "disabled_reason": None, "created_at": "2026-11-25T08:00:00Z",
                    "updated_at": "2026-11-25T08:00:00Z", "previous_secret_valid_until": None}
SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EXAMPLE_DELIVERY = {"id": 812, "endpoint_id": "ep_4f1c2a9b7e3d5a60", "type": "reply.created", "webhook_id": "msg_977",
                    "ticket_id": "6f1d2c3b-0000-4000-8000-000000000001", "message_id": 4411, "status": "pending",
                    "attempts": 2, "next_attempt_at": "2026-11-25T08:00:20Z", "last_status": 503,
                    "last_error": "HTTP 503", "created_at": "2026-11-25T08:00:00Z", "delivered_at": None}

Url = StorableStr


def _unique(events: list[str] | None) -> list[str] | None:
    # An event named twice is subscribed once.
    return None if events is None else list(dict.fromkeys(events))


class EndpointCreate(Schema):
    url: Url = Field(min_length=1, max_length=2000, examples=[URL_EXAMPLE],
                     description="http(s) URL; it may not reach loopback, private, link-local or metadata addresses")
    events: list[EventName] = Field(min_length=1, max_length=4, examples=[["reply.created"]])
    description: StorableStr = Field("", max_length=500)

    _events_unique = field_validator("events")(_unique)
    model_config = Schema.model_config | ex.examples({"url": URL_EXAMPLE, "events": ["reply.created", "sla.breached"],
                                                      "description": "Replies to buyers"})


class EndpointUpdate(Schema):
    url: Url | None = Field(None, min_length=1, max_length=2000)
    events: list[EventName] | None = Field(None, min_length=1, max_length=4)
    description: StorableStr | None = Field(None, max_length=500)
    enabled: bool | None = Field(None, description="false pauses deliveries (they wait); true resumes them, also after "
                                                   "a 410 disabled the endpoint")

    _events_unique = field_validator("events")(_unique)
    model_config = Schema.model_config | ex.examples({"enabled": True}, {"events": ["reply.created"]})


class EndpointRead(Schema):
    id: str
    shop_id: str
    url: str
    events: list[EventName]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why deliveries stopped (a 410 Gone), when they did")
    created_at: datetime
    updated_at: datetime
    previous_secret_valid_until: datetime | None = Field(
        None, description="Until when deliveries are also signed with the secret before the last rotation")

    model_config = Schema.model_config | ex.examples(EXAMPLE_ENDPOINT)


class EndpointCreated(EndpointRead):
    secret: str = Field(description="The signing secret, shown this once", examples=[SECRET_EXAMPLE])

    model_config = Schema.model_config | ex.examples({**EXAMPLE_ENDPOINT, "secret": SECRET_EXAMPLE})


class EndpointSecretRotate(Schema):
    previous_valid_seconds: whole_number(0, 30 * 86_400) | None = Field(  # type: ignore[valid-type]
        None, description="How long deliveries are also signed with the old secret; 0 stops at once. "
                          "Default: TRIAGE_SECRET_OVERLAP_HOURS.")

    model_config = Schema.model_config | ex.examples({"previous_valid_seconds": 3600})


class EndpointSecretRotated(Schema):
    secret: str = Field(examples=[SECRET_EXAMPLE])
    previous_valid_until: datetime | None

    model_config = Schema.model_config | ex.examples({"secret": SECRET_EXAMPLE,
                                                      "previous_valid_until": "2026-11-26T08:00:00Z"})


class DeliveryRead(Schema):
    id: int
    endpoint_id: str
    type: EventName
    webhook_id: str = Field(description="The `webhook-id` of every attempt: receivers dedupe on it")
    ticket_id: str | None
    message_id: int | None
    status: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="Pending only: when it goes next")
    last_status: int | None = Field(description="HTTP status of the last attempt, when one came back")
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    model_config = Schema.model_config | ex.examples(EXAMPLE_DELIVERY)


class DeliveryList(Schema):
    deliveries: list[DeliveryRead] = Field(description="Newest first")
    next_before: int | None = Field(None, description="More exist: ?before=<this> reads them")

    model_config = Schema.model_config | ex.examples({"deliveries": [EXAMPLE_DELIVERY], "next_before": None})


class AttemptRead(Schema):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryDetail(DeliveryRead):
    data: dict[str, Any] = Field(description="The event's data, as delivered")
    attempt_log: list[AttemptRead] = Field(description="Every attempt, oldest first")

    model_config = Schema.model_config | ex.examples({
        **EXAMPLE_DELIVERY, "data": {"shop_id": ex.SHOP_ID, "platform": "taobao", "conversation_id": "c-77",
                                     "ticket_id": EXAMPLE_DELIVERY["ticket_id"], "message_id": 4411,
                                     "text": "亲，已经帮您催快递了", "agent_id": "a-1",
                                     "created_at": "2026-11-25T08:00:00.000000Z"},
        "attempt_log": [{"at": "2026-11-25T08:00:00Z", "status_code": 503, "error": "HTTP 503", "duration_ms": 41},
                        {"at": "2026-11-25T08:00:05Z", "status_code": 503, "error": "HTTP 503", "duration_ms": 38}]})
