"""Tables of the service. Every invariant the API promises that a database can hold is a constraint here."""

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from app.db.base import Base, JSONType, UTCDateTime
from app.domain import DEFAULT_AUTO_CLOSE_HOURS, DEFAULT_STICKY_HOURS, MAX_STICKY_HOURS
from app.hours import DEFAULT_SHIFTS, DEFAULT_TIMEZONE


def default_shifts() -> list[dict[str, Any]]:
    return [shift.as_dict() for shift in DEFAULT_SHIFTS]


# What shops made before migration 0015 get, and the column's default.
DEFAULT_SHIFTS_JSON = json.dumps(default_shifts(), separators=(",", ":"))

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")

AGENT_LEVELS = ("junior", "mid", "senior")


def _domain(base: TypeEngine[Any], name: str, check: str) -> TypeEngine[Any]:
    """`base`, and on PostgreSQL a domain over it with `check` (migration 0006)."""
    domain = DOMAIN(name, base, check=text(check), constraint_name=f"ck_{name}")
    domain.operator_classes = base.operator_classes  # compares as its base type does
    return base.with_variant(domain, "postgresql")


class Shop(Base):
    __tablename__ = "shops"
    # SQLite would copy the table to add a check to it (migration 0016); the API holds the range there.
    __table_args__ = (CheckConstraint("auto_close_after_hours BETWEEN 0 AND 8760",
                                      name="auto_close_range").ddl_if(dialect="postgresql"),
                      CheckConstraint(f"sticky_hours BETWEEN 0 AND {MAX_STICKY_HOURS}",
                                      name="sticky_range").ddl_if(dialect="postgresql"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # First-response targets in seconds per tier, e.g. {"P1": 20, ...}; queues may override.
    sla_targets: Mapped[dict[str, Any]] = mapped_column(JSONType)
    active_ruleset_version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime]
    # Service hours (app/hours.py, migration 0015): shifts as [{"name", "start", "end", "days"}], closed dates as
    # ISO dates, holidays "CN" or null for none.
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE, server_default=DEFAULT_TIMEZONE)
    shifts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=lambda: default_shifts(),
                                                         server_default=DEFAULT_SHIFTS_JSON)
    # No server default here, though the column has one (migration 0015): the ORM would leave out a None and let
    # the database's "CN" in, where None means no holidays.
    holidays: Mapped[str | None] = mapped_column(String(8))
    closed_dates: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default="[]")
    off_hours_reply: Mapped[str | None] = mapped_column(Text, default=None)
    # A queued ticket silent this long is resolved by the auto-close worker; 0: never (migration 0016).
    auto_close_after_hours: Mapped[int] = mapped_column(Integer, default=DEFAULT_AUTO_CLOSE_HOURS,
                                                        server_default=str(DEFAULT_AUTO_CLOSE_HOURS))
    # A buyer's new conversation within this many hours of an agent's last reply is held for that agent first; 0:
    # never (migration 0024).
    sticky_hours: Mapped[int] = mapped_column(Integer, default=DEFAULT_STICKY_HOURS,
                                              server_default=str(DEFAULT_STICKY_HOURS))


class WebhookSecret(Base):
    __tablename__ = "webhook_secrets"
    __table_args__ = (Index("ix_webhook_secrets_shop", "shop_id", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    # Kept in the clear on purpose: HMAC verification needs the key itself.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class Queue(Base):
    __tablename__ = "queues"

    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    sla_targets: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    created_at: Mapped[datetime]


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        CheckConstraint("capacity BETWEEN 1 AND 50", name="capacity_range"),
        CheckConstraint("level IN ('junior', 'mid', 'senior')", name="level_known"),
        CheckConstraint("presence IN ('online', 'away', 'offline')", name="presence_known"),
        Index("ix_agents_shop", "shop_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(16))
    capacity: Mapped[int] = mapped_column(SmallInteger)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # What the agent last set, or `online` from a claim (migration 0013); app.domain.presence_at turns it offline
    # once the agent has been silent since seen_at for the presence timeout.
    presence: Mapped[str] = mapped_column(String(16), default="offline", server_default="offline")
    # Its last claim, ticket heartbeat or presence call (a claim writes it at most every few seconds).
    seen_at: Mapped[datetime | None] = mapped_column(default=None)
    # Names of the shop's shifts the agent works (coverage); null: every shift (migration 0015).
    shifts: Mapped[list[str] | None] = mapped_column(JSONType, default=None)


class AgentQueue(Base):
    __tablename__ = "agent_queues"
    __table_args__ = (
        ForeignKeyConstraint(["shop_id", "queue"], ["queues.shop_id", "queues.name"], ondelete="CASCADE"),
    )

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    shop_id: Mapped[str] = mapped_column(String(64))


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("shop_id", "platform", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    nick: Mapped[str | None] = mapped_column(String(200), default=None)
    vip_level: Mapped[int] = mapped_column(SmallInteger, default=0)
    contacts: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    # The agent who last replied to this buyer and when, kept by the reply write (within LAST_AGENT_SLACK_SECONDS):
    # what a new conversation's sticky owner is read from, with no scan (migration 0024).
    last_agent_id: Mapped[str | None] = mapped_column(String(36), default=None)
    last_agent_reply_at: Mapped[datetime | None] = mapped_column(default=None)


# ix_tickets_unanswered's predicate, the same words as the SLA watch's query (app/db/sla.py), which the planners
# need to use the index: open, unanswered, and the current episode's breach not recorded.
UNANSWERED = "first_response_at IS NULL AND status <> 'resolved'"
UNBREACHED_POSTGRES = f"{UNANSWERED} AND breach_recorded_for IS DISTINCT FROM opened_at"
UNBREACHED_SQLITE = f"{UNANSWERED} AND breach_recorded_for IS NOT opened_at"


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # One ticket per conversation, ever: a message on a resolved conversation reopens it.
        UniqueConstraint("shop_id", "platform", "conversation_id"),
        ForeignKeyConstraint(["shop_id", "queue"], ["queues.shop_id", "queues.name"]),
        # On PostgreSQL the one-column rules are domains (the column types below), which cost a claim or a
        # resolve far less than table checks (migration 0006).
        *(CheckConstraint(check, name=name).ddl_if(dialect="sqlite") for name, check in (
            ("status_known", "status IN ('queued', 'assigned', 'resolved', 'pending')"),
            ("tier_range", "tier BETWEEN 1 AND 4"),
            ("priority_range", "priority BETWEEN 0 AND 999"),
            ("deliveries_positive", "deliveries >= 0"))),
        # A ticket is held by an agent exactly when it is assigned, and never without a lease.
        CheckConstraint(
            "(status = 'assigned') = (assigned_agent_id IS NOT NULL)"
            " AND (assigned_agent_id IS NULL OR lease_expires_at IS NOT NULL)",
            name="holder_matches_status",
        ),
        # Queued tickets by shop and queue, then the claim order: tier, priority (highest first), the oldest
        # episode, its opening message (migrations 0002, 0003). A claim reads the first entry of each queue its
        # agent serves and takes the best of them (0021).
        Index(
            "ix_tickets_claim",
            "shop_id", "queue", "tier", text("priority DESC"), "opened_at", "opened_seq",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # Held tickets only (the holder check makes that status = 'assigned'), by agent, then lease: capacity
        # counts and "my tickets" read an agent's entries; the lease reaper reads every entry's lease in the
        # index itself. One index for both: a claim, reply or heartbeat adds one entry, not two (0007).
        Index("ix_tickets_held", "assigned_agent_id", "lease_expires_at",
              postgresql_where=text("assigned_agent_id IS NOT NULL"), sqlite_where=text("assigned_agent_id IS NOT NULL")),
        # Queued tickets only, by shop, queue, tier and episode start: the oldest wait of a queue and tier is its
        # first entry, and the auto-close worker reads the episodes opened before its cut-off here (migrations
        # 0016, 0018).
        Index("ix_tickets_queued", "shop_id", "queue", "tier", "opened_at",
              postgresql_where=text("status = 'queued'"), sqlite_where=text("status = 'queued'")),
        # Snoozed tickets, by the time they come back: the lease reaper wakes the due ones from its first entries
        # (migration 0022).
        Index("ix_tickets_snoozed", "snoozed_until",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        # A shop's snoozed tickets, for the auto-close worker, which reads their last message on the row: an index
        # on last_message_at, which every buyer message moves, would cost each ticket update an entry in every
        # index (migration 0034; PostgreSQL's tickets also keep a fifth of each page free for those updates).
        Index("ix_tickets_pending", "shop_id",
              postgresql_where=text("status = 'pending'"), sqlite_where=text("status = 'pending'")),
        # Open tickets still unanswered whose breach is not recorded yet, by due time: the SLA watch finds breaches
        # here (migrations 0011, 0029).
        Index("ix_tickets_unanswered", "first_response_due_at",
              postgresql_where=text(UNBREACHED_POSTGRES), sqlite_where=text(UNBREACHED_SQLITE)),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    conversation_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), default=None)
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(_domain(String(16), "ticket_status",
                                                "VALUE IN ('queued', 'assigned', 'resolved', 'pending')"))
    tier: Mapped[int] = mapped_column(_domain(SmallInteger(), "ticket_tier", "VALUE BETWEEN 1 AND 4"))
    priority: Mapped[int] = mapped_column(_domain(Integer(), "ticket_priority", "VALUE BETWEEN 0 AND 999"))
    primary_intent: Mapped[str] = mapped_column(String(32))
    intents: Mapped[list[str]] = mapped_column(JSONType)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    # No foreign key (migration 0006): only triage_claim() sets it, after reading the agent under its lock.
    assigned_agent_id: Mapped[str | None] = mapped_column(String(36), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    deliveries: Mapped[int] = mapped_column(_domain(Integer(), "ticket_deliveries", "VALUE >= 0"), default=0)
    unread: Mapped[int] = mapped_column(Integer, default=0)
    ruleset: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Start of the current episode (creation or reopening): the "oldest first" key.
    opened_at: Mapped[datetime]
    # Id of the message that opened the episode: breaks ties of opened_at (one commit gives many tickets
    # the same time) in the order the messages were received. Kept on release, expiry and transfer;
    # 0 only on tickets resolved before migration 0003 (a reopening sets it).
    opened_seq: Mapped[int] = mapped_column(BigId, server_default="0")
    # First buyer message not yet answered by an agent; the first-response clock runs from it.
    awaiting_since: Mapped[datetime | None] = mapped_column(default=None)
    first_response_due_at: Mapped[datetime | None] = mapped_column(default=None)
    first_response_at: Mapped[datetime | None] = mapped_column(default=None)
    last_message_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    episodes: Mapped[int] = mapped_column(Integer, default=1)
    # Pending (snoozed) only: when the lease reaper puts it back in its queue, unless the buyer writes first.
    snoozed_until: Mapped[datetime | None] = mapped_column(default=None)
    # Offered first to this agent until held_until, while it is online (claims check it; migration 0024).
    held_for: Mapped[str | None] = mapped_column(String(36), default=None)
    held_until: Mapped[datetime | None] = mapped_column(default=None)
    # The opened_at of the episode whose first-response breach the SLA watch recorded (migration 0029): that
    # episode leaves ix_tickets_unanswered, and a reopening, which moves opened_at, puts the ticket back in it.
    breach_recorded_for: Mapped[datetime | None] = mapped_column(default=None)
    # The open episode's latest buyer texts (at most app/triage/hybrid.py's CONTEXT_MESSAGES), oldest first: what a
    # fragment is read with. Kept by ingestion alone, which writes the ticket with each message anyway (migration
    # 0033); [] until the first buyer text, and again from a reopening.
    context: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default="[]")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("direction IN ('inbound', 'outbound')", name="direction_known"),
        Index("ix_messages_ticket", "ticket_id", "id"),
        Index("ix_messages_shop_received", "shop_id", "received_at"),
        # On PostgreSQL one partition per month of received_at, keyed by (id, received_at), so that retention drops
        # whole months (migration 0017, app/db/retention.py). A partitioned table's unique keys must hold the
        # partition key, so a message's idempotency key lives in message_keys, on both databases.
        {"postgresql_partition_by": "RANGE (received_at)"},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(128), default=None)
    direction: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime]
    received_at: Mapped[datetime]
    order_id: Mapped[str | None] = mapped_column(String(128), default=None)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"), default=None)
    primary_intent: Mapped[str | None] = mapped_column(String(32), default=None)
    tier: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    priority: Mapped[int | None] = mapped_column(Integer, default=None)
    triage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    # Outbound only: where its reply.created deliveries stand, {"status", "attempts", "last_error"} over the
    # shop's endpoints (migration 0010); null when no endpoint took it. Kept here so threads read it for free.
    delivery: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    # What the message is (SPEC 9.2: text, image, ..., system) and what it carries besides its text: attachments'
    # URLs and metadata, a product or order card, a system event and its rating (migration 0012).
    kind: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)


class MessageIdempotencyKey(Base):
    """The idempotency key of every message a webhook delivered, with the answer its first receipt got: a resend
    answers as before without reading the message (migration 0017). Kept as long as the message is."""

    __tablename__ = "message_keys"
    __table_args__ = ({"sqlite_with_rowid": False},)

    shop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime]
    ticket_id: Mapped[str] = mapped_column(String(36))
    # The message's own triage as answered (null for a seller's message).
    primary_intent: Mapped[str | None] = mapped_column(String(32), default=None)
    tier: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    priority: Mapped[int | None] = mapped_column(Integer, default=None)
    queue: Mapped[str | None] = mapped_column(String(64), default=None)


class TicketEvent(Base):
    __tablename__ = "ticket_events"
    __table_args__ = (
        # A ticket's trail in order. PostgreSQL has it as the table's key, (ticket_id, id) (migration 0007);
        # SQLite numbers events by their rowid key and keeps this index beside it.
        Index("ix_ticket_events_ticket", "ticket_id", "id").ddl_if(dialect="sqlite"),
        # Read only for episode starts (stats); on PostgreSQL it holds only those, so the claimed, replied and
        # resolved events of the agent hot path skip it (migration 0006).
        Index("ix_ticket_events_shop_kind", "shop_id", "kind", "at",
              postgresql_where=text("kind IN ('created', 'reopened')")),
        # SQLite's retention deletes events by their time (migration 0017); PostgreSQL drops whole months.
        Index("ix_ticket_events_at", "at").ddl_if(dialect="sqlite"),
        # On PostgreSQL one partition per month of `at`, keyed by (ticket_id, id, at) (migration 0017).
        {"postgresql_partition_by": "RANGE (at)"},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key (migration 0006): events are appended by the statement that writes their ticket.
    ticket_id: Mapped[str] = mapped_column(String(36))
    shop_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    # "system", "webhook", "admin" or "agent:<id>".
    actor: Mapped[str] = mapped_column(String(80))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    # The purge of expired keys reads them oldest first (migration 0003).
    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Method, path and body hash: the same key with another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(SmallInteger)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime]


class Ruleset(Base):
    __tablename__ = "rulesets"
    __table_args__ = (UniqueConstraint("shop_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(80))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None] = mapped_column(default=None)


class ReplyTemplates(Base):
    """A shop's own reply templates, the whole set as one value; no row: the shipped defaults (migration 0009)."""

    __tablename__ = "reply_templates"

    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True)
    templates: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class DeliveryEndpoint(Base):
    """Where a shop wants its events delivered (SPEC 9.1)."""

    __tablename__ = "delivery_endpoints"
    __table_args__ = (Index("ix_delivery_endpoints_shop", "shop_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    # The subscribed events as bits (app.domain.DELIVERY_EVENT_BITS).
    event_mask: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(500), default="")
    # Kept in the clear on purpose: signing needs the key itself. The previous one signs too until
    # previous_valid_until, so a receiver can switch without refusing a delivery.
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_valid_until: Mapped[datetime | None] = mapped_column(default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OutboxEvent(Base):
    """An event, written in the transaction of the change that caused it; its deliveries fan it out."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shop_id: Mapped[str] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    ticket_id: Mapped[str | None] = mapped_column(String(36), default=None)
    message_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime]


class Delivery(Base):
    """One event to one endpoint: pending until a 2xx, failed after TRIAGE_DELIVERY_MAX_HOURS or a 410."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
        # The relay's pick: pending heads of their lines, per endpoint by due time (migration 0014).
        Index("ix_deliveries_ready", "endpoint_id", "next_attempt_at", sqlite_where=text("status = 'pending' AND head"),
              postgresql_where=text("status = 'pending' AND head")),
        # Per-conversation order: the pending deliveries of a conversation to an endpoint, the earliest first.
        Index("ix_deliveries_order", "endpoint_id", "order_key", "id", sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
        Index("ix_deliveries_shop", "shop_id", "id"),
        Index("ix_deliveries_message", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("delivery_endpoints.id", ondelete="CASCADE"))
    shop_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The ticket, for reply.created (a conversation's replies go in order); null for events without an order.
    order_key: Mapped[str | None] = mapped_column(String(36), default=None)
    status: Mapped[str] = mapped_column(String(16))
    # The next of its conversation to go to the endpoint (always, without an order_key): only heads are picked.
    head: Mapped[bool] = mapped_column(Boolean, default=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    # A relay sending it holds it until then (another process takes it only after, should that relay die).
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    locked_by: Mapped[str | None] = mapped_column(String(40), default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    # Start of the current round of attempts (creation, or an ops resend): `failed` MAX_HOURS after it.
    started_at: Mapped[datetime]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class DeliveryAttempt(Base):
    """Every request the relay made, with what came back."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    duration_ms: Mapped[int] = mapped_column(Integer)


class SlaBreach(Base):
    """An episode whose first response passed its due time, recorded once: its key makes the sla.breached event
    exactly once however many processes watch."""

    __tablename__ = "sla_breaches"

    ticket_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(primary_key=True)
    due_at: Mapped[datetime]
    at: Mapped[datetime]


class QueueCount(Base):
    """Per shop, queue and tier: queued tickets, and open tickets overdue for their first response, kept by
    triggers (migration 0018) and folded from queue_count_changes every second."""

    __tablename__ = "queue_counts"

    shop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    queued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    overdue: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# What the triggers append and the fold moves into queue_counts. No key: writers only insert (no claim waits for
# another's counter) and the fold takes every row.
queue_count_changes = Table(
    "queue_count_changes", Base.metadata,
    Column("shop_id", String(64), nullable=False), Column("queue", String(64), nullable=False),
    Column("tier", SmallInteger, nullable=False), Column("queued", Integer, nullable=False, server_default="0"),
    Column("overdue", Integer, nullable=False, server_default="0"),
)


# Running, unresolved, and answered by no agent: its breach waits for as_of and its agent is whoever holds the ticket.
OPEN_EPISODE = "NOT ended AND resolved_at IS NULL AND (first_response_at IS NULL OR responder IS NULL)"


class EpisodeFact(Base):
    """One episode of a ticket as the statistics read it (migration 0019): kept by a trigger on ticket_events in the
    transaction of each event, by the rules app/db/stats.py reads the trail with. Retention keeps them."""

    __tablename__ = "episode_facts"
    __table_args__ = (Index("ix_episode_facts_shop", "shop_id", "opened_at"),
                      # The episodes the daily rollup leaves to the summaries (migration 0028, app/db/rollups.py).
                      Index("ix_episode_facts_open", "shop_id", "opened_at", postgresql_where=text(OPEN_EPISODE),
                            sqlite_where=text(OPEN_EPISODE)))

    ticket_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(primary_key=True)
    shop_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The queue of the last move (start, re-route, transfer); the most urgent tier reached, as "P1"..."P4".
    queue: Mapped[str | None] = mapped_column(String(64), default=None)
    tier: Mapped[str | None] = mapped_column(String(2), default=None)
    # Seconds from the start to the tightest due time, in open hours as set.
    due_in: Mapped[float | None] = mapped_column(Float, default=None)
    first_response_at: Mapped[datetime | None] = mapped_column(default=None)
    responder: Mapped[str | None] = mapped_column(String(36), default=None)  # the agent; null for the seller
    answered_late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolver: Mapped[str | None] = mapped_column(String(36), default=None)
    closer: Mapped[str | None] = mapped_column(String(80), default=None)  # the resolved event's actor
    # A later episode of the ticket began (migration 0020): this one's figures no longer depend on the ticket row.
    ended: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class RoundFact(Base):
    """A buyer round (migration 0019): from its first buyer message to the next agent or seller reply, or cut by a
    new episode; kept by a trigger on messages in the transaction of each message."""

    __tablename__ = "round_facts"
    __table_args__ = (Index("ix_round_facts_ticket", "ticket_id", "episode"),
                      Index("ix_round_facts_shop", "shop_id", "episode"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(String(36))
    shop_id: Mapped[str] = mapped_column(String(64))
    episode: Mapped[datetime]  # the start of the episode the round belongs to
    started: Mapped[datetime]
    reply_at: Mapped[datetime | None] = mapped_column(default=None)
    replier: Mapped[str | None] = mapped_column(String(36), default=None)
    cut: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")  # 1: a new episode ended it


# The daily rollup of the statistics (migration 0027, app/db/rollups.py): per shop and UTC day, each episode's
# measures and each round's, packed (app/db/figures.py), with their queue, tier and agent names (JSON), and from
# when the figures hold (an unanswered episode breaches once its target has passed). Written whole by the worker.
stats_days = Table(
    "stats_days", Base.metadata,
    Column("shop_id", String(64), primary_key=True), Column("day", Date, primary_key=True),
    Column("settled_at", UTCDateTime(), nullable=False), Column("rolled_at", UTCDateTime(), nullable=False),
    Column("names", Text, nullable=False), Column("episodes", LargeBinary, nullable=False),
    Column("rounds", LargeBinary, nullable=False),
)

# Days a write changed after they may have been rolled, appended by triggers on the summaries; no key, so writers
# never wait for each other here. The worker rolls the day again and deletes the rows it saw.
stats_stale_days = Table(
    "stats_stale_days", Base.metadata,
    Column("id", BigId, primary_key=True, autoincrement=True), Column("shop_id", String(64), nullable=False),
    Column("day", Date, nullable=False),
    Index("ix_stats_stale_days_shop", "shop_id", "day"),
)
