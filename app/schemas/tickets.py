"""Tickets, replies and queues as agent consoles see them (README, "Agent consoles")."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, model_validator

from app.domain import MAX_SNOOZE_DAYS
from app.schemas import examples as ex
from app.schemas.base import QueueName, Schema, StorableStr

TierName = Literal["P1", "P2", "P3", "P4"]


class CustomerRead(BaseModel):
    id: str = Field(description="The buyer's id on the platform", examples=["tb_buyer_42"])
    platform: str = Field(examples=["taobao"])
    nick: str | None = Field(examples=["小王"])
    vip_level: int
    contacts: int = Field(description="Conversations this buyer opened or reopened with the shop")


class MessageDelivery(BaseModel):
    status: Literal["pending", "delivered", "failed"] = Field(
        description="Over the shop's endpoints taking reply.created: pending while any is, failed if any failed")
    attempts: int
    last_error: str | None = None


class MessageRead(BaseModel):
    id: int
    direction: Literal["inbound", "outbound"]
    kind: str = Field("text", description="text, image, video, voice, sticker, product, order or system (SPEC 9.2)")
    text: str = Field(description="The message, or the caption of a non-text one (empty when it has none)")
    content: dict[str, Any] | None = Field(
        None, description="What it carries besides text: attachments (URLs and metadata), product, order, event, "
                          "rating; `{\"auto_reply\": \"off_hours\"}` on the shop's off-hours reply")
    sent_at: datetime
    received_at: datetime
    order_id: str | None = None
    agent_id: str | None = Field(None, description="The agent who wrote an outbound message")
    triage: dict[str, Any] | None = Field(
        None, description="Inbound only: intents with evidence, emotion, urgency, language, priority, queue, ruleset, "
                          "and priority_context: the buyer's standing the priority counted (VIP level, prior "
                          "contacts, seconds waited for an answer)")
    delivery: MessageDelivery | None = Field(
        None, description="Outbound only: where its reply.created deliveries stand; null when no endpoint took it")


class TicketRead(BaseModel):
    id: str
    shop_id: str
    platform: str
    conversation_id: str
    queue: str = Field(examples=["complaints"])
    status: Literal["queued", "assigned", "resolved", "pending"] = Field(
        description="queued: waiting in its queue; assigned: held by `assigned_agent_id` under a lease; pending: "
                    "snoozed, in no queue until `snoozed_until` or the buyer's next message; resolved: closed")
    tier: TierName
    priority: int = Field(ge=0, le=999)
    primary: str = Field(examples=["bad_review_threat"])
    intents: list[str]
    escalated: bool = Field(description="Raised to a more urgent tier while held, or moved to escalations")
    customer: CustomerRead | None
    messages: list[MessageRead] = Field(description="The latest messages of the thread (TRIAGE_THREAD_PAGE, 50 unless "
                                                    "changed), oldest first")
    messages_before: int | None = Field(None, description="Older messages exist: GET /v1/tickets/{id}/messages?before="
                                                          "<this> reads them; null when `messages` is the whole thread")
    assigned_agent_id: str | None
    lease_expires_at: datetime | None
    deliveries: int = Field(description="Leases that ran out in this episode")
    unread: int = Field(description="Buyer messages since the last agent reply")
    created_at: datetime
    opened_at: datetime = Field(description="Start of the current episode: the 'oldest first' key of the queue")
    awaiting_since: datetime | None = Field(description="First buyer message not yet answered")
    first_response_due_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    episodes: int = Field(description="1, plus one per reopening after resolve")
    updated_at: datetime
    snoozed_until: datetime | None = Field(None, description="Pending only: when it goes back to its queue by itself")
    held_for: str | None = Field(None, description="The agent the ticket is offered to first (the buyer's last agent, "
                                                   "or the agent that snoozed it): while `held_until` is ahead and "
                                                   "that agent is online, only it may claim the ticket")
    held_until: datetime | None = Field(None, description="When the hold for `held_for` ends")

    model_config = ex.examples(ex.TICKET)


class TicketEventRead(BaseModel):
    id: int = Field(description="Increasing in the order the events happened")
    at: datetime
    kind: str = Field(examples=["claimed"], description="message_received, created, reopened, reranked, routed, "
                      "escalated, claimed, lease_extended, replied, resolved, released, transferred, lease_expired, "
                      "sla_breached, auto_replied (the off-hours reply)")
    actor: str = Field(description="`webhook`, `agent:<id>`, `admin` or `system`", examples=["webhook"])
    data: dict[str, Any] = Field(description="What changed, by kind (tiers, queues, agent, lease, reason)")


class TicketEvents(BaseModel):
    ticket_id: str
    events: list[TicketEventRead] = Field(description="Oldest first")
    next_after: int | None = Field(description="More events follow: pass this as `after` for the next page; null on "
                                               "the last page")

    model_config = ex.examples({"ticket_id": ex.TICKET_ID, "events": ex.EVENTS, "next_after": None})


class TicketMessages(BaseModel):
    ticket_id: str
    messages: list[MessageRead] = Field(description="Oldest first")
    next_before: int | None = Field(description="Older messages exist: pass this as `before` for the page before; "
                                                "null on the first page of the thread")

    model_config = ex.examples({"ticket_id": ex.TICKET_ID, "messages": [ex.INBOUND], "next_before": None})


class TicketList(BaseModel):
    tickets: list[TicketRead]

    model_config = ex.examples({"tickets": [ex.TICKET]})


class ReplyCreate(Schema):
    text: StorableStr = Field(min_length=1, max_length=10_000, examples=[ex.REPLY_TEXT])

    model_config = Schema.model_config | ex.examples({"text": ex.REPLY_TEXT})


class ReplyCreated(BaseModel):
    message: MessageRead
    ticket: TicketRead

    model_config = ex.examples({"message": ex.OUTBOUND, "ticket": ex.TICKET_REPLIED})


class ReleaseRequest(Schema):
    reason: StorableStr | None = Field(None, max_length=500, examples=["end of shift"])

    model_config = Schema.model_config | ex.examples({"reason": "end of shift"})


class AdminTicketAction(Schema):
    reason: StorableStr | None = Field(None, max_length=500, examples=["spam"])

    model_config = Schema.model_config | ex.examples({"reason": "spam"}, {"reason": "console stuck on it"})


def _one_target(schema: dict[str, Any]) -> None:
    schema["examples"] = [{"queue": "complaints", "reason": "needs a senior agent"},
                          {"agent_id": ex.OTHER_AGENT_ID, "reason": "she served this buyer yesterday"}]
    # Exactly one of the two, as the validator below requires; the one left out has no value (not even null).
    schema["oneOf"] = [{"required": ["queue"]}, {"required": ["agent_id"]}]
    for name in ("queue", "agent_id"):
        schema["properties"][name].pop("default", None)


AgentId = Annotated[StorableStr, Field(min_length=1, max_length=36, examples=[ex.OTHER_AGENT_ID])]


class TransferRequest(Schema):
    # Either may be left out, not sent as null: the schema says so (oneOf below), and the model holds to it.
    queue: QueueName = Field(None, description="Queue the ticket in another queue of the shop, keeping its age")  # type: ignore[assignment]
    agent_id: AgentId = Field(None, description="Hand the ticket to this agent of the shop, who holds it from "  # type: ignore[assignment]
                                                "now")
    reason: StorableStr = Field("", max_length=500, examples=["needs a senior agent"])

    model_config = Schema.model_config | {"json_schema_extra": _one_target}

    @model_validator(mode="after")
    def _exactly_one_target(self) -> "TransferRequest":
        if (self.queue is None) == (self.agent_id is None):
            raise ValueError("give exactly one of queue and agent_id")
        return self


class HandOverRequest(Schema):
    agent_id: AgentId = Field(description="The agent of the shop who holds the ticket from now")
    reason: StorableStr | None = Field(None, max_length=500, examples=["served this buyer yesterday"])

    model_config = Schema.model_config | ex.examples({"agent_id": ex.OTHER_AGENT_ID, "reason": "served this buyer yesterday"})


class SnoozeRequest(Schema):
    until: AwareDatetime = Field(description="When the ticket goes back to its queue unless the buyer writes first: "
                                             f"after now, at most {MAX_SNOOZE_DAYS} days ahead, with its offset",
                                 examples=["2026-11-26T01:00:00Z"])
    reason: StorableStr | None = Field(None, max_length=500, examples=["waiting for the buyer's photos"])

    model_config = Schema.model_config | ex.examples({"until": "2026-11-26T01:00:00Z",
                                                      "reason": "waiting for the buyer's photos"})


PresenceStatus = Literal["online", "away", "offline"]


class PresenceUpdate(Schema):
    status: PresenceStatus = Field(description="online: taking work (and sticky tickets); away: at the console, not "
                                               "offered sticky tickets; offline: gone")

    model_config = Schema.model_config | ex.examples({"status": "online"}, {"status": "away"})


class AgentPresence(BaseModel):
    agent_id: str
    presence: PresenceStatus = Field(description="Now: what the agent set (or online from a claim), or offline once "
                                                 "it has been silent for TRIAGE_PRESENCE_TIMEOUT_SECONDS")
    set: PresenceStatus = Field(description="What the agent last set, or online from its last claim")
    seen_at: datetime | None = Field(description="Its last claim, ticket heartbeat or presence call (claims and "
                                                 "heartbeats are written every few seconds at most)")
    offline_at: datetime | None = Field(description="When silence makes it offline unless it acts again; null while "
                                                    "offline")

    model_config = ex.examples(ex.PRESENCE)


class Colleague(BaseModel):
    id: str
    name: str
    queues: list[str] = Field(description="The queues it serves: a held ticket goes only to one serving its queue")
    presence: PresenceStatus = Field(description="Now: a ticket goes only to an agent online or away")


class ColleagueList(BaseModel):
    agents: list[Colleague] = Field(description="The other active agents of the shop, oldest first")

    model_config = ex.examples({"agents": [{"id": ex.OTHER_AGENT_ID, "name": "Wang", "queues": ["presale", "aftersale"],
                                            "presence": "online"}]})


class QueueDepth(BaseModel):
    name: str = Field(examples=["aftersale"])
    depth: dict[TierName, int] = Field(description="Queued tickets per tier", examples=[{"P1": 0, "P2": 3, "P3": 5, "P4": 0}])
    total: int
    oldest_wait_seconds: float | None = Field(description="Age of the oldest queued episode; null when empty")


class QueueList(BaseModel):
    shop_id: str
    queues: list[QueueDepth]

    model_config = ex.examples(ex.QUEUES)
