"""The webhook a shop platform posts buyer messages to."""

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from app.schemas import examples as ex
from app.schemas.base import Rfc3339, Schema, StorableStr, whole_number


class WebhookCustomer(Schema):
    id: StorableStr = Field(min_length=1, max_length=128, examples=["tb_buyer_42"])
    nick: StorableStr | None = Field(None, max_length=200, examples=["小王"])
    vip_level: whole_number(0, 10) = Field(  # type: ignore[valid-type]
        0, description="The platform's membership level; higher ranks sooner")


# The error type of a field that does not fit the message's kind (a rule the JSON schema does not state).
KIND_RULE = "kind_rule"
MessageKind = Literal["text", "image", "video", "voice", "sticker", "product", "order", "system"]
_HTTP_URL = r"^https?://[^\s\x00]{1,2000}$"


class Attachment(Schema):
    """A file the platform keeps: the service stores where it is and what it is, never the file."""

    url: str = Field(pattern=_HTTP_URL, max_length=2008, examples=["https://img.example.com/p/123.jpg"])
    mime: StorableStr | None = Field(None, max_length=100, examples=["image/jpeg"])
    name: StorableStr | None = Field(None, max_length=300)


class ProductCard(Schema):
    id: StorableStr = Field(min_length=1, max_length=128, examples=["p-55"])
    title: StorableStr | None = Field(None, max_length=500)
    url: str | None = Field(None, pattern=_HTTP_URL, max_length=2008)


class OrderCard(Schema):
    id: StorableStr = Field(min_length=1, max_length=128, examples=["o-9"])
    status: StorableStr | None = Field(None, max_length=64, examples=["shipped"])


class WebhookMessage(Schema):
    message_id: StorableStr = Field(min_length=1, max_length=128, examples=["m-1001"],
                                    description="Unique per shop and platform; a repeat is answered, not stored again")
    conversation_id: StorableStr = Field(min_length=1, max_length=128, examples=["c-77"])
    sent_at: Rfc3339 = Field(examples=["2026-11-25T08:00:00Z"])
    customer: WebhookCustomer
    sender: Literal["buyer", "seller"] = Field(
        "buyer", description="`seller`: typed by the shop's staff on the platform; stored as an outbound message, it "
                             "stops the first-response clock like a console reply, and is neither triaged nor "
                             "delivered back")
    kind: MessageKind = Field("text", description="What the message is; `text` needs `text`, `system` an `event`")
    text: StorableStr | None = Field(None, validate_default=True, min_length=1, max_length=10_000,
                                     examples=["亲，快递三天没动了，再不到就给差评"],
                                     description="The message, or the caption of a non-text one")
    order_id: StorableStr | None = Field(None, max_length=128, examples=["o-9"])
    attachments: list[Attachment] | None = Field(None, max_length=20, description="URLs and metadata only")
    product: ProductCard | None = None
    order: OrderCard | None = None
    event: StorableStr | None = Field(
        None, validate_default=True, min_length=1, max_length=64, examples=["review_posted"],
        description="kind `system`: refund_requested, refund_cancelled, return_shipped, order_paid, order_cancelled, "
                    "order_shipped, order_delivered, dispute_opened, review_posted (with `rating`), or another")
    rating: whole_number(1, 5) | None = Field(None, description="review_posted: the stars given")  # type: ignore[valid-type]

    # Each check sits on the field it names, so a refusal points at body.messages[i].<field>; `kind` is validated
    # first (it is declared first), so the others can read it.
    @field_validator("text", mode="after")
    @classmethod
    def _text_of_a_text_message(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("kind", "text") == "text":
            raise PydanticCustomError(KIND_RULE, "required for a message of kind text")
        return value

    @field_validator("event", mode="after")
    @classmethod
    def _event_of_a_system_message(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind", "text")
        if (value is None) == (kind == "system"):
            raise PydanticCustomError(KIND_RULE, "required for a message of kind system, and only there")
        return value

    @field_validator("rating", mode="after")
    @classmethod
    def _rating_of_a_review(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("event") != "review_posted":
            raise PydanticCustomError(KIND_RULE, "belongs to a system message whose event is review_posted")
        return value

    def content(self) -> dict[str, Any] | None:
        """What the message carries besides its text, as stored (None for plain text)."""
        found: dict[str, Any] = {}
        if self.attachments:
            found["attachments"] = [a.model_dump(exclude_none=True) for a in self.attachments]
        for name in ("product", "order"):
            card = getattr(self, name)
            if card is not None:
                found[name] = card.model_dump(exclude_none=True)
        if self.event is not None:
            found["event"] = self.event
        if self.rating is not None:
            found["rating"] = self.rating
        return found or None


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
    sender: Literal["buyer", "seller"] = "buyer"
    primary: str | None = Field(examples=["bad_review_threat"], description="null for a seller's message (not triaged)")
    tier: str | None = Field(examples=["P1"])
    priority: int | None = Field(ge=0, le=999, examples=[845])
    queue: str | None = Field(examples=["complaints"])


class IngestResult(Schema):
    results: list[IngestedMessage]

    model_config = Schema.model_config | ex.examples({"results": [
        {"message_id": "m-1001", "ticket_id": ex.TICKET_ID, "duplicate": False, "primary": "bad_review_threat",
         "tier": "P1", "priority": 845, "queue": "complaints"}]})
