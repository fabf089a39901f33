"""The service's vocabulary: tiers, statuses, event kinds, queues and targets, and a ticket's state.

Defined once here and imported wherever they are used. Standard library only: the web layer, the
database layer and the triage core may all import it.
"""

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any


class Tier(IntEnum):
    """Urgency tiers, most urgent first; stored as their number, shown as their name ("P1")."""

    P1 = 1
    P2 = 2
    P3 = 3
    P4 = 4


TIER_NAMES: tuple[str, ...] = tuple(tier.name for tier in Tier)


_TIER_NAME = {tier.value: tier.name for tier in Tier}
_TIER_NUMBER = {tier.name: tier.value for tier in Tier}


def tier_name(number: int) -> str:
    """"P1" for 1 (a dict lookup: the hot path calls this per message)."""
    return _TIER_NAME[number]


def tier_number(name: str) -> int:
    """1 for "P1"."""
    return _TIER_NUMBER[name]


class Status(StrEnum):
    """Where a ticket is: waiting in its queue, held by an agent under a lease, snoozed until a time or the buyer's next
    message (out of every queue), or closed."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    PENDING = "pending"


class Presence(StrEnum):
    """Whether an agent is at its console: online (taking work), away (signed in, not taking work), offline."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


# Seconds of silence after which an agent is offline, unless TRIAGE_PRESENCE_TIMEOUT_SECONDS says otherwise.
DEFAULT_PRESENCE_TIMEOUT = 120


def presence_touch_before(now: datetime, timeout: float) -> datetime:
    """A claim or heartbeat writes its agent's row only when the agent was last seen before this: at most every
    tenth of the timeout (10 s at most), so a busy agent writes its row rarely and is never seen as silent."""
    return now - timedelta(seconds=min(10.0, timeout / 10))


def presence_at(stored: str, seen_at: datetime | None, *, online_after: datetime) -> str:
    """An agent's presence now: what it last set (or a claim set), until it has been silent since `online_after`
    (now minus the presence timeout); silent that long, it is offline whatever it set."""
    if stored == Presence.OFFLINE or seen_at is None or seen_at <= online_after:
        return Presence.OFFLINE
    return stored


class EventKind(StrEnum):
    """The kinds of a ticket's audit events (`ticket_events.kind`)."""

    MESSAGE_RECEIVED = "message_received"
    CREATED = "created"
    REOPENED = "reopened"
    RERANKED = "reranked"
    ROUTED = "routed"
    ESCALATED = "escalated"
    CLAIMED = "claimed"
    LEASE_EXTENDED = "lease_extended"
    REPLIED = "replied"
    RESOLVED = "resolved"
    RELEASED = "released"
    TRANSFERRED = "transferred"
    LEASE_EXPIRED = "lease_expired"
    SLA_BREACHED = "sla_breached"
    AUTO_REPLIED = "auto_replied"
    SNOOZED = "snoozed"
    WOKEN = "woken"
    HELD = "held"


class DeliveryEvent(StrEnum):
    """What a shop's delivery endpoints can subscribe to (SPEC 9.1)."""

    REPLY_CREATED = "reply.created"
    TIER_RAISED = "ticket.tier_raised"
    ESCALATED = "ticket.escalated"
    SLA_BREACHED = "sla.breached"


# An endpoint's subscriptions are stored as a bit set, so both databases test one with `mask & bit`.
DELIVERY_EVENT_BITS: dict[str, int] = {event.value: 1 << i for i, event in enumerate(DeliveryEvent)}


def event_mask(events: Iterable[str]) -> int:
    """The bit set of a list of event names."""
    mask = 0
    for event in events:
        mask |= DELIVERY_EVENT_BITS[event]
    return mask


def mask_events(mask: int) -> list[str]:
    """The event names of a bit set, in DeliveryEvent's order."""
    return [name for name, bit in DELIVERY_EVENT_BITS.items() if mask & bit]


def rfc3339(value: datetime) -> str:
    """A UTC time as event data carries it: 2026-11-25T08:00:00.000000Z."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ticket_event_data(*, ticket_id: str, shop_id: str, platform: str, conversation_id: str, tier: int, priority: int,
                      primary: str, queue: str, **more: Any) -> dict[str, Any]:
    """The data of a ticket's outbound event (SPEC 9.1): which conversation, how urgent, where; plus `more`."""
    return {"shop_id": shop_id, "platform": platform, "conversation_id": conversation_id, "ticket_id": ticket_id,
            "tier": tier_name(tier), "priority": priority, "primary": primary, "queue": queue, **more}


class DeliveryStatus(StrEnum):
    """Where one event's delivery to one endpoint is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# The off-hours reply's mark on its message (`messages.content`) and in its reply.created event: an answer the service
# sent by itself, which neither stops the first-response clock nor ends a buyer's round.
AUTO_REPLY_MARK = {"auto_reply": "off_hours"}

# Hours a queued ticket's conversation may stay silent before the auto-close worker resolves it, unless the shop
# sets its own (0: never).
DEFAULT_AUTO_CLOSE_HOURS = 72
# A buyer's new conversation or reopened ticket within this many hours of an agent's last reply to that buyer is held
# for that agent first (a shop's sticky_hours; 0: never), for TRIAGE_STICKY_HOLD_SECONDS unless changed.
DEFAULT_STICKY_HOURS = 72
MAX_STICKY_HOURS = 720
DEFAULT_STICKY_HOLD_SECONDS = 60
# An agent's reply writes its buyer's last agent only when another agent replied last, or its own last reply is older
# than this: an agent answering one buyer many times a minute writes the buyer's row once. A sticky window may so
# start up to this much before the true last reply.
LAST_AGENT_SLACK_SECONDS = 60

# How far ahead a snooze may reach: a conversation put off longer is one to resolve, not to park.
MAX_SNOOZE_DAYS = 30

# The actor of what the service does by itself (lease expiry, auto-close, SLA breaches) in a ticket's trail.
SYSTEM_ACTOR = "system"

# Every shop starts with these queues; routing rules point intents at the first three.
DEFAULT_QUEUES: dict[str, str] = {
    "presale": "Consulting before purchase: stock, size, price, payment and order questions",
    "aftersale": "Logistics, returns and refunds, quality, false advertising, price protection",
    "complaints": "Senior agents: bad-review threats, complaints, rights protection",
    "escalations": "Supervisors: tickets whose lease expired too often, and manual escalations",
}
# Where an intent goes when its route names no queue of the shop.
FALLBACK_QUEUE = "presale"
# Where a ticket goes after too many expired leases; a ticket moved there is flagged escalated.
ESCALATIONS = "escalations"

# First-response targets in seconds per tier of a new shop; a tier a shop's targets leave out gets the last.
DEFAULT_SLA_TARGETS: dict[str, int] = {"P1": 20, "P2": 30, "P3": 40, "P4": 60}
DEFAULT_TARGET_SECONDS = 60
# A buyer round's response time counts at most this (an unanswered round counts this), as the platforms measure it.
ROUND_CAP_SECONDS = 600


def route(routes: Mapping[str, str], intent: str, *, queues: Container[str]) -> str:
    """The queue an intent goes to; a route naming a queue the shop lacks falls back to FALLBACK_QUEUE."""
    queue = routes.get(intent, FALLBACK_QUEUE)
    return queue if queue in queues else FALLBACK_QUEUE


def target_seconds(targets: Mapping[str, Any], tier: str) -> int:
    """A tier's first-response target in `targets` (a shop's or a queue's), DEFAULT_TARGET_SECONDS if unset."""
    return int(targets.get(tier, DEFAULT_TARGET_SECONDS))


def first_response_target(*, shop_targets: Mapping[str, Any], queue_targets: Mapping[str, Any] | None,
                          tier: str) -> int:
    """A queue's own target for the tier, else the shop's."""
    targets = queue_targets or shop_targets
    return int(targets.get(tier, target_seconds(shop_targets, tier)))


@dataclass(slots=True)
class TicketState:
    """A ticket as stored (the columns of `tickets`), the one shape every layer passes around."""

    id: str
    shop_id: str
    platform: str
    conversation_id: str
    customer_id: int | None
    queue: str
    status: str
    tier: int
    priority: int
    primary_intent: str
    intents: list[str]
    escalated: bool
    assigned_agent_id: str | None
    lease_expires_at: datetime | None
    deliveries: int
    unread: int
    ruleset: str
    created_at: datetime
    updated_at: datetime
    opened_at: datetime
    opened_seq: int
    awaiting_since: datetime | None
    first_response_due_at: datetime | None
    first_response_at: datetime | None
    last_message_at: datetime
    resolved_at: datetime | None
    episodes: int
    # While pending (snoozed): when it comes back to its queue by itself; None in every other status.
    snoozed_until: datetime | None = None
    # Offered to this agent first: only it may claim the ticket until held_until while it is online (sticky owner,
    # a snooze's return); anyone serving the queue after, or at once when that agent is not online.
    held_for: str | None = None
    held_until: datetime | None = None
    # The opened_at of the episode whose first-response breach the SLA watch recorded (migration 0029).
    breach_recorded_for: datetime | None = None
    is_new: bool = field(default=False, compare=False)

    @classmethod
    def from_row(cls, row: Any) -> "TicketState":
        mapping = row._mapping if hasattr(row, "_mapping") else row
        return cls(*[mapping[name] for name in TICKET_FIELDS])

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TICKET_FIELDS}


# The stored columns, in table order; dataclasses.fields() is too slow for the hot path, which calls this per ticket.
TICKET_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TicketState) if f.name != "is_new")
