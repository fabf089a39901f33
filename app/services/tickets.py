"""How a ticket changes when a buyer message arrives (README, "How a ticket is ranked"). Pure: no I/O, time
passed in."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.domain import ESCALATIONS, EventKind, Status, TicketState, rfc3339, tier_name, tier_number
from app.services.directory import ShopInfo


@dataclass(frozen=True, slots=True)
class InboundDecision:
    """The triage of one inbound message, as the ticket needs it."""

    message_id: str
    primary: str
    tier: str
    priority: int
    intents: tuple[str, ...]
    ruleset: str


Event = tuple[str, dict[str, Any]]


def new_ticket(*, ticket_id: str, shop: ShopInfo, platform: str, conversation_id: str, customer_id: int | None,
               decision: InboundDecision, now: datetime) -> TicketState:
    """A ticket as it is before its first message is applied (provisional; `receive` fills it in)."""
    queue = shop.route(decision.primary)
    return TicketState(
        id=ticket_id, shop_id=shop.id, platform=platform, conversation_id=conversation_id, customer_id=customer_id,
        queue=queue, status=Status.QUEUED, tier=tier_number(decision.tier), priority=decision.priority,
        primary_intent=decision.primary, intents=list(decision.intents), escalated=False, assigned_agent_id=None,
        lease_expires_at=None, deliveries=0, unread=0, ruleset=decision.ruleset, created_at=now, updated_at=now,
        opened_at=now, opened_seq=0, awaiting_since=None, first_response_due_at=None, first_response_at=None,
        last_message_at=now, resolved_at=None, episodes=1, is_new=True)


def _open_episode(ticket: TicketState, decision: InboundDecision, shop: ShopInfo, now: datetime, seq: int) -> None:
    ticket.status = Status.QUEUED
    ticket.queue = shop.route(decision.primary)
    ticket.tier = tier_number(decision.tier)
    ticket.priority = decision.priority
    ticket.primary_intent = decision.primary
    ticket.intents = list(decision.intents)
    ticket.ruleset = decision.ruleset
    ticket.escalated = False
    ticket.deliveries = 0
    ticket.opened_at = now
    ticket.opened_seq = seq
    ticket.awaiting_since = now
    ticket.first_response_at = None
    ticket.resolved_at = None
    ticket.unread = 0
    ticket.first_response_due_at = shop.first_response_due(now, queue=ticket.queue, tier=decision.tier)


def receive(ticket: TicketState, decision: InboundDecision, *, shop: ShopInfo, now: datetime, seq: int) -> list[Event]:
    """Append one inbound message (stored with id `seq`) to the ticket; return the events describing every change."""
    events: list[Event] = [(EventKind.MESSAGE_RECEIVED, {"message_id": decision.message_id, "primary": decision.primary,
                                                 "tier": decision.tier, "priority": decision.priority})]
    if ticket.status == Status.PENDING:
        # The buyer wrote before the snooze ran out: the ticket goes back to its queue at its place (as the lease
        # reaper would have put it back at its time), and a re-rank below applies as to any queued ticket.
        events.append((EventKind.WOKEN, {"reason": "message", "message_id": decision.message_id,
                                         "until": rfc3339(ticket.snoozed_until) if ticket.snoozed_until else None}))
        ticket.status = Status.QUEUED
        ticket.snoozed_until = None
    if ticket.is_new and ticket.awaiting_since is None:
        _open_episode(ticket, decision, shop, now, seq)
        ticket.episodes = 1  # also when the seller opened the conversation in this same group (seller_opened)
        events.append((EventKind.CREATED, _snapshot(ticket)))
    elif ticket.status == Status.RESOLVED:
        # A resolved episode's urgency does not carry over: the reopened ticket is triaged afresh.
        ticket.episodes += 1
        _open_episode(ticket, decision, shop, now, seq)
        events.append((EventKind.REOPENED, {**_snapshot(ticket), "episode": ticket.episodes}))
    elif decision.priority > ticket.priority:
        # Tier bands are disjoint, so a higher priority is at least as urgent a tier; it never drops while open.
        before = {"tier": tier_name(ticket.tier), "priority": ticket.priority, "primary": ticket.primary_intent}
        tier_rose = tier_number(decision.tier) < ticket.tier
        ticket.tier = tier_number(decision.tier)
        ticket.priority = decision.priority
        ticket.primary_intent = decision.primary
        ticket.ruleset = decision.ruleset
        reranked = {"from": before, "to": {"tier": decision.tier, "priority": decision.priority,
                                           "primary": decision.primary}, "message_id": decision.message_id}
        events.append((EventKind.RERANKED, reranked))
        if tier_rose and ticket.status == Status.ASSIGNED:
            ticket.escalated = True
            events.append((EventKind.ESCALATED, {"from_tier": before["tier"], "to_tier": decision.tier,
                                         "agent_id": ticket.assigned_agent_id}))
        if tier_rose and ticket.queue != ESCALATIONS:
            # A held ticket stays with its holder (who sees it whatever its queue), but if it goes back, by
            # release or expiry, it goes where its new intent is handled.
            route = shop.route(decision.primary)
            if route != ticket.queue:
                events.append((EventKind.ROUTED, {"from": ticket.queue, "to": route, "reason": "tier rose"}))
                ticket.queue = route
        # After any re-route: the queue the ticket now waits in sets its target.
        if tier_rose and ticket.first_response_at is None and ticket.awaiting_since is not None:
            tighter = shop.first_response_due(ticket.opened_at, queue=ticket.queue, tier=decision.tier)
            if ticket.first_response_due_at is None or tighter < ticket.first_response_due_at:
                ticket.first_response_due_at = tighter
                reranked["due_in"] = _due_in(ticket)
    for intent in decision.intents:
        if intent not in ticket.intents:
            ticket.intents.append(intent)
    if ticket.awaiting_since is None:
        ticket.awaiting_since = now
    ticket.unread += 1
    ticket.last_message_at = now
    ticket.updated_at = now
    return events


def offer_first(ticket: TicketState, *, agent_id: str, now: datetime, seconds: int, reason: str,
                **data: Any) -> Event:
    """Hold the queued ticket for `agent_id` for `seconds` (claims by others skip it while that agent is online); its
    `held` event. `reason`: "sticky" (the buyer's last agent) or "snooze" (the agent that snoozed it)."""
    ticket.held_for = agent_id
    ticket.held_until = now + timedelta(seconds=seconds)
    return EventKind.HELD, {"agent_id": agent_id, "until": rfc3339(ticket.held_until), "reason": reason, **data}


def sticky_owner(ticket: TicketState, *, last_agent: str | None, last_reply_at: datetime | None, sticky_hours: int,
                 now: datetime, seconds: int) -> Event | None:
    """The hold of a ticket whose episode just opened (a new conversation or a reopening) for the agent who last
    replied to its buyer, when that was within the shop's `sticky_hours`; None when there is none to hold for."""
    if (last_agent is None or last_reply_at is None or sticky_hours <= 0 or seconds <= 0
            or last_reply_at < now - timedelta(hours=sticky_hours)):
        return None
    return offer_first(ticket, agent_id=last_agent, now=now, seconds=seconds, reason="sticky",
                       last_reply_at=rfc3339(last_reply_at))


def _snapshot(ticket: TicketState) -> dict[str, Any]:
    return {"tier": tier_name(ticket.tier), "priority": ticket.priority, "primary": ticket.primary_intent,
            "queue": ticket.queue, "due_in": _due_in(ticket)}


def _due_in(ticket: TicketState) -> float | None:
    """Seconds from the episode's start to its due time, as the trail keeps it: the statistics judge a finished
    episode by it, since the due time counts open hours only and the ticket row keeps only the current episode's."""
    if ticket.first_response_due_at is None:
        return None
    return round((ticket.first_response_due_at - ticket.opened_at).total_seconds(), 3)


def seller_reply(ticket: TicketState, *, message_id: str, sent_at: datetime, now: datetime) -> list[Event]:
    """A reply the shop's staff typed on the platform (SPEC 9.2): like a console reply, it answers the buyer's
    waiting messages and the first one of an episode stops the first-response clock, at the time the platform
    says it was sent (within the episode, never in the future)."""
    data: dict[str, Any] = {"message_id": message_id, "sender": "seller", "first_response": False}
    if ticket.status != Status.RESOLVED:
        at = max(ticket.opened_at, min(sent_at, now))
        if ticket.first_response_at is None:
            ticket.first_response_at = at
            data["first_response"] = True
            if ticket.first_response_due_at is not None:
                data["within_target"] = at <= ticket.first_response_due_at
        ticket.awaiting_since = None
        ticket.unread = 0
    ticket.last_message_at = now
    ticket.updated_at = now
    return [(EventKind.REPLIED, data)]


def seller_opened(ticket: TicketState, *, now: datetime) -> None:
    """A conversation the seller started: its ticket exists for the thread but waits in no queue (closed) until the
    buyer writes, which opens its first episode."""
    ticket.status = Status.RESOLVED
    ticket.resolved_at = now
    ticket.episodes = 0
