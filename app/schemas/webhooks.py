"""The webhook a shop platform posts buyer messages to."""

from pydantic import Field

from app.schemas import examples as ex
from app.schemas.base import Rfc3339, Schema, StorableStr, whole_number


class WebhookCustomer(Schema):
    id: StorableStr = Field(min_length=1, max_length=128, examples=["tb_buyer_42"])
    nick: StorableStr | None = Field(None, max_length=200, examples=["小王"])
    vip_level: whole_number(0, 10) = Field(  # type: ignore[valid-type]
        0, description="The platform's membership level; higher ranks sooner")


class WebhookMessage(Schema):
    message_id: StorableStr = Field(min_length=1, max_length=128, examples=["m-1001"],
                                    description="Unique per shop and platform; a repeat is answered, not stored again")
    conversation_id: StorableStr = Field(min_length=1, max_length=128, examples=["c-77"])
    sent_at: Rfc3339 = Field(examples=["2026-11-25T08:00:00Z"])
    customer: WebhookCustomer
    text: StorableStr = Field(min_length=1, max_length=10_000, examples=["亲，快递三天没动了，再不到就给差评"])
    order_id: StorableStr | None = Field(None, max_length=128, examples=["o-9"])


class WebhookBatch(Schema):
    platform: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$", examples=["taobao"])
    messages: list[WebhookMessage] = Field(min_length=1, max_length=100)

    model_config = Schema.model_config | {
        "json_schema_extra": {"examples": [{
            "platform": "taobao",
            "messages": [{"message_id": "m-1001", "conversation_id": "c-77", "sent_at": "2026-11-25T08:00:00Z",
                          "customer": {"id": "tb_buyer_42", "nick": "小王", "vip_level": 2},
                          "text": "亲，快递三天没动了，再不到就给差评", "order_id": "o-9"}],
        }]},
    }


class IngestedMessage(Schema):
    message_id: str
    ticket_id: str
    duplicate: bool = Field(description="True when this message was received before; the first answer is repeated")
    primary: str = Field(examples=["bad_review_threat"])
    tier: str = Field(examples=["P1"])
    priority: int = Field(ge=0, le=999, examples=[845])
    queue: str = Field(examples=["complaints"])


class IngestResult(Schema):
    results: list[IngestedMessage]

    model_config = Schema.model_config | ex.examples({"results": [
        {"message_id": "m-1001", "ticket_id": ex.TICKET_ID, "duplicate": False, "primary": "bad_review_threat",
         "tier": "P1", "priority": 845, "queue": "complaints"}]})
