"""Agent work queues (README, "Agent consoles"): claim with lease and long poll, replies, resolve, release,
transfer, expiry."""

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from app import metrics
from app.clock import utcnow
from app.db.claims import KeyStore, StoredTicket, TicketStore, claim_store
from app.db.driver import Record
from app.db.models import Agent
from app.db.session import DriverConnections
from app.domain import (DEFAULT_PRESENCE_TIMEOUT, DEFAULT_STICKY_HOLD_SECONDS, ESCALATIONS, MAX_SNOOZE_DAYS, SYSTEM_ACTOR, TIER_NAMES,
                        DeliveryEvent, EventKind, Presence, Status, TicketState, presence_at, presence_touch_before,
                        rfc3339, ticket_event_data, tier_name)
from app.errors import (
    AgentAtCapacity,
    AgentOffline,
    AppError,
    AtCapacity,
    Conflict,
    IdempotencyMismatch,
    InvalidInput,
    ShopNotFound,
    TicketAlreadyResolved,
    TicketNotFound,
    TicketNotHeld,
    Unauthorized,
)
from app.schemas.tickets import (
    CustomerRead,
    MessageRead,
    QueueDepth,
    QueueList,
    ReplyCreated,
    TicketEventRead,
    TicketEvents,
    TicketList,
    TicketMessages,
    TicketRead,
)
from app.services.ingest import NOTIFY_CHANNEL
from app.services.notify import Notifier
from app.services.periodic import attempt

log = logging.getLogger("app.queues")

# A waiting claimer looks at the database at least this often, so a lost wake-up costs at most this long
# (TRIAGE_CLAIM_RECHECK_SECONDS).
RECHECK_SECONDS = 1.0
EXPIRY_BATCH = 500
# Idempotency keys past their retention are deleted this often, in batches of one short transaction each.
PURGE_SECONDS = 60.0
PURGE_BATCH = 1000

Model = TypeVar("Model", bound=BaseModel)


def _event(ticket: Record, kind: str, actor: str, now: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"ticket_id": ticket["id"], "shop_id": ticket["shop_id"], "at": now, "kind": kind, "actor": actor,
            "data": data}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def message_view(row: Record) -> MessageRead:
    return MessageRead(id=row["id"], direction=row["direction"], kind=row.get("kind") or "text", text=row["text"],
                       content=row.get("content"), sent_at=row["sent_at"],
                       received_at=row["received_at"], order_id=row["order_id"], agent_id=row["agent_id"],
                       triage=row["triage"] if row["direction"] == "inbound" else None,
                       delivery=row.get("delivery") if row["direction"] == "outbound" else None)


def ticket_view(row: TicketState, messages: Sequence[Record], *, page: int | None = None) -> TicketRead:
    """The API shape of a ticket from its state and its latest messages (which carry the customer): `page` of
    them, and the cursor to the older ones when there are more."""
    before = None
    if page is not None and len(messages) > page:
        messages = messages[-page:]
        before = messages[0]["id"]
    first = messages[0] if messages else None
    return TicketRead(
        id=row.id, shop_id=row.shop_id, platform=row.platform, conversation_id=row.conversation_id,
        queue=row.queue, status=row.status, tier=tier_name(row.tier), priority=row.priority,
        primary=row.primary_intent, intents=list(row.intents), escalated=row.escalated,
        customer=None if first is None or first["customer_external_id"] is None else CustomerRead(
            id=first["customer_external_id"], platform=first["customer_platform"], nick=first["customer_nick"],
            vip_level=first["customer_vip_level"], contacts=first["customer_contacts"]),
        messages=[message_view(m) for m in messages], messages_before=before,
        assigned_agent_id=row.assigned_agent_id,
        lease_expires_at=row.lease_expires_at, deliveries=row.deliveries, unread=row.unread,
        created_at=row.created_at, opened_at=row.opened_at, awaiting_since=row.awaiting_since,
        first_response_due_at=row.first_response_due_at, first_response_at=row.first_response_at,
        resolved_at=row.resolved_at, episodes=row.episodes, updated_at=row.updated_at,
        snoozed_until=row.snoozed_until, held_for=row.held_for, held_until=row.held_until)


async def _views(store: TicketStore, tickets: Sequence[StoredTicket]) -> list[TicketRead]:
    # A ticket may carry its thread, read by the statement that wrote it (PostgreSQL); the others are read here.
    missing = [t.state.id for t in tickets if t.thread is None]
    messages = await store.threads(missing) if missing else {}
    return [ticket_view(t.state, t.thread if t.thread is not None else messages[t.state.id], page=store.thread_page)
            for t in tickets]


async def _visible(store: TicketStore, *, agent: Agent, ticket: TicketState) -> bool:
    """An agent sees its own shop's tickets in the queues it serves, and the tickets it holds."""
    if ticket.shop_id != agent.shop_id:
        return False
    return ticket.assigned_agent_id == agent.id or ticket.queue in await store.served_queues(agent_id=agent.id)


async def _refusal(store: TicketStore, *, agent: Agent, ticket_id: str) -> AppError:
    """Why a holder-only write did not apply: 404 when the agent may not see the ticket, 409 otherwise."""
    stored = await store.ticket(ticket_id=ticket_id)
    if stored is None or not await _visible(store, agent=agent, ticket=stored.state):
        return TicketNotFound(f"no ticket '{ticket_id}'")
    ticket = stored.state
    if ticket.status == Status.ASSIGNED and ticket.assigned_agent_id == agent.id:
        return TicketNotHeld(f"your lease on this ticket ran out at {_iso(ticket.lease_expires_at)}; claim it again",
                             details={"status": ticket.status, "lease_expires_at": _iso(ticket.lease_expires_at)})
    return TicketNotHeld(details={"status": ticket.status})


# --- claim ---------------------------------------------------------------------------------------------------

async def claim_once(store: TicketStore, *, agent: Agent, now: datetime, lease_seconds: int,
                     presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT) -> TicketRead | None:
    """Claim the most urgent ticket of the agent's queues now, atomically; None when there is none. Either way the
    agent is online from now."""
    lease_until = now + timedelta(seconds=lease_seconds)
    row = await store.claim(agent_id=agent.id, shop_id=agent.shop_id, now=now, lease_until=lease_until,
                            event={"agent_id": agent.id, "lease_expires_at": _iso(lease_until)},
                            touch_before=presence_touch_before(now, presence_timeout),
                            online_after=now - timedelta(seconds=presence_timeout))
    if row is None:
        # No ticket: the claim itself enforced activity and capacity; this read only chooses the answer.
        state = await store.agent_state(agent_id=agent.id)
        if state is None or not state["active"]:
            raise Unauthorized("the agent is deactivated")
        if state["held"] >= state["capacity"]:
            raise AtCapacity(f"the agent holds {state['held']} open tickets, its capacity is {state['capacity']}",
                             details={"held": state["held"], "capacity": state["capacity"]})
        return None
    metrics.ticket_claimed(row.state.shop_id, row.state.queue)
    [view] = await _views(store, [row])
    return view


async def claim(drivers: DriverConnections, *, agent: Agent, notifier: Notifier, wait: float, lease_seconds: int,
                presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT, clock: Callable[[], datetime] = utcnow,
                gone: Callable[[], Awaitable[bool]] | None = None, recheck: float = RECHECK_SECONDS) -> TicketRead | None:
    """Claim the next ticket, waiting up to `wait` seconds for one to arrive (long poll); None if none did. Each
    look at the queues keeps the agent online."""
    deadline = time.monotonic() + wait
    # Subscribe before the first look, so a ticket queued between that look and the wait still wakes us.
    wake = notifier.subscribe(agent.shop_id)
    try:
        while True:
            wake.clear()
            # No connection is held between attempts: each one is its own short transaction.
            async with claim_store(drivers) as store:
                ticket = await claim_once(store, agent=agent, now=clock(), lease_seconds=lease_seconds,
                                          presence_timeout=presence_timeout)
            if ticket is not None:
                return ticket
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(wake.wait(), timeout=min(remaining, recheck))
            except TimeoutError:
                pass
            if gone is not None and await gone():
                return None
    finally:
        notifier.unsubscribe(agent.shop_id, wake)


# --- holder writes -------------------------------------------------------------------------------------------

def _request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


async def _write(drivers: DriverConnections, *, agent: Agent, key: str | None, request: dict[str, Any], now: datetime,
                 status_code: int, model: type[Model], act: Callable[[TicketStore], Awaitable[Model]]) -> Model:
    """Run one agent write atomically; with an Idempotency-Key, a replay answers as the first time did."""
    async with claim_store(drivers) as store:
        if key is None:
            return await act(store)
        request_hash = _request_hash(request)
        # The key, the effect and the stored answer commit together, or none of them does: a refused write
        # leaves nothing behind, its key included, so a retry under the key runs afresh.
        async with store.transaction():
            if await store.reserve_key(agent_id=agent.id, key=key, request_hash=request_hash, now=now):
                answer = await act(store)
                await store.store_answer(agent_id=agent.id, key=key, status_code=status_code,
                                         response=answer.model_dump(mode="json"))
                return answer
            replay = await store.key_record(agent_id=agent.id, key=key)
        if replay is None or replay["request_hash"] != request_hash:
            raise IdempotencyMismatch(details={"idempotency_key": key})
        return model.model_validate(replay["response"])


async def _held_write(store: TicketStore, *, agent: Agent, ticket_id: str, now: datetime, values: dict[str, Any],
                      event: tuple[str, dict[str, Any]]) -> StoredTicket:
    row = await store.write_held(ticket_id=ticket_id, agent_id=agent.id, now=now, values=values, event=event)
    if row is None:
        raise await _refusal(store, agent=agent, ticket_id=ticket_id)
    return row


async def heartbeat(drivers: DriverConnections, *, agent: Agent, ticket_id: str, now: datetime,
                    lease_seconds: int, presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT) -> TicketRead:
    """Extend the holder's lease; the agent is seen (its presence stays what it set)."""
    lease_until = now + timedelta(seconds=lease_seconds)

    async def act(store: TicketStore) -> TicketRead:
        row = await _held_write(store, agent=agent, ticket_id=ticket_id, now=now,
                                values={"lease_expires_at": lease_until},
                                event=(EventKind.LEASE_EXTENDED, {"lease_expires_at": _iso(lease_until)}))
        await store.touch_agent(agent_id=agent.id, now=now, touch_before=presence_touch_before(now, presence_timeout))
        [view] = await _views(store, [row])
        return view

    return await _write(drivers, agent=agent, key=None, request={}, now=now, status_code=200, model=TicketRead,
                        act=act)


async def reply(drivers: DriverConnections, *, agent: Agent, ticket_id: str, text: str, now: datetime,
                lease_seconds: int, idempotency_key: str | None, notifier: Notifier) -> ReplyCreated:
    """Store the holder's reply; it extends the lease, and the first one stops the first-response clock. Its
    reply.created event for the shop's endpoints commits with it, and the relay is woken."""
    lease_until = now + timedelta(seconds=lease_seconds)

    async def act(store: TicketStore) -> ReplyCreated:
        stored = await store.reply(ticket_id=ticket_id, agent_id=agent.id, now=now, lease_until=lease_until, text=text)
        if stored is None:
            raise await _refusal(store, agent=agent, ticket_id=ticket_id)
        row, message = stored
        if message.get("delivery") is not None:
            written.append(True)
        ticket = row.state
        if ticket.first_response_at == now:
            late = ticket.first_response_due_at is not None and now > ticket.first_response_due_at
            metrics.first_response(ticket.shop_id, ticket.tier, (now - ticket.opened_at).total_seconds(), late=late)
        [view] = await _views(store, [row])
        return ReplyCreated(message=message_view(message), ticket=view)

    written: list[bool] = []
    answer = await _write(drivers, agent=agent, key=idempotency_key, now=now, status_code=201, model=ReplyCreated,
                          request={"op": "reply", "ticket_id": ticket_id, "text": text}, act=act)
    if written:
        notifier.outbox_written()  # committed: the relay of this process goes at once
    return answer


def requeued() -> dict[str, Any]:
    """The columns that put a held ticket back in its queue, at its place (its episode start is kept)."""
    return {"status": Status.QUEUED, "assigned_agent_id": None, "lease_expires_at": None}


def resolution(now: Any) -> dict[str, Any]:
    """The columns a resolve sets."""
    return {"status": Status.RESOLVED, "assigned_agent_id": None, "lease_expires_at": None, "resolved_at": now}


async def resolve(drivers: DriverConnections, *, agent: Agent, ticket_id: str, now: datetime,
                  idempotency_key: str | None) -> TicketRead:
    """Close the holder's ticket; a later buyer message reopens it as a new episode."""

    async def act(store: TicketStore) -> TicketRead:
        row = await _held_write(store, agent=agent, ticket_id=ticket_id, now=now, values=resolution(now),
                                event=(EventKind.RESOLVED, {"agent_id": agent.id}))
        [view] = await _views(store, [row])
        return view

    return await _write(drivers, agent=agent, key=idempotency_key, now=now, status_code=200, model=TicketRead,
                        request={"op": "resolve", "ticket_id": ticket_id}, act=act)


async def release(drivers: DriverConnections, *, agent: Agent, ticket_id: str, reason: str | None, now: datetime,
                  notifier: Notifier, idempotency_key: str | None) -> TicketRead:
    """Hand the ticket back to its queue at its place in order (its age is kept; no delivery is counted)."""

    async def act(store: TicketStore) -> TicketRead:
        async with store.transaction():
            row = await _held_write(store, agent=agent, ticket_id=ticket_id, now=now, values=requeued(),
                event=(EventKind.RELEASED, {"agent_id": agent.id, "reason": reason}))
            await store.notify(NOTIFY_CHANNEL, [row.state.shop_id])
        [view] = await _views(store, [row])
        return view

    answer = await _write(drivers, agent=agent, key=idempotency_key, now=now, status_code=200, model=TicketRead,
                          request={"op": "release", "ticket_id": ticket_id, "reason": reason}, act=act)
    notifier.notify([agent.shop_id])
    return answer


async def transfer(drivers: DriverConnections, *, agent: Agent, ticket_id: str, queue: str, reason: str, now: datetime,
                   notifier: Notifier, idempotency_key: str | None) -> TicketRead:
    """Move the holder's ticket to another queue of the shop, queued there with its age kept."""

    async def act(store: TicketStore) -> TicketRead:
        if not await store.queue_exists(shop_id=agent.shop_id, name=queue):
            raise InvalidInput(f"no queue '{queue}' in this shop", details=[
                {"field": "body.queue", "reason": f"no queue '{queue}' in this shop", "type": "unknown_queue"}])
        values: dict[str, Any] = {**requeued(), "queue": queue}
        if queue == ESCALATIONS:
            values["escalated"] = True
        async with store.transaction():
            # Only the holder moves a held ticket, so its queue read here is the one the update leaves.
            before = await store.ticket(ticket_id=ticket_id)
            held = await _held_write(store, agent=agent, ticket_id=ticket_id, now=now, values=values, event=(
                EventKind.TRANSFERRED, {"agent_id": agent.id, "from": before.state.queue if before is not None else None,
                                "to": queue, "reason": reason}))
            await store.notify(NOTIFY_CHANNEL, [held.state.shop_id])
            if queue == ESCALATIONS and before is not None and before.state.queue != ESCALATIONS:
                state = held.state
                moved.append(await _escalated(store, {
                    "id": state.id, "shop_id": state.shop_id, "platform": state.platform,
                    "conversation_id": state.conversation_id, "tier": state.tier, "priority": state.priority,
                    "primary_intent": state.primary_intent}, queue=ESCALATIONS, from_queue=before.state.queue,
                    reason=reason, agent_id=agent.id, now=now))
        metrics.ticket_transferred(held.state.shop_id, queue)
        [view] = await _views(store, [held])
        return view

    moved: list[int] = []
    answer = await _write(drivers, agent=agent, key=idempotency_key, now=now, status_code=200, model=TicketRead,
                          request={"op": "transfer", "ticket_id": ticket_id, "queue": queue, "reason": reason},
                          act=act)
    notifier.notify([agent.shop_id])
    if any(moved):
        notifier.outbox_written()
    return answer


def _hand_over_refusal(card: Record | None, *, to_agent: str, shop_id: str, queue: str, holder: str | None,
                       online_after: datetime) -> AppError | None:
    """Why the agent named may not take the ticket now, or None: unknown, the holder itself, deactivated, not
    serving the ticket's queue (422), offline or at capacity (409)."""
    def invalid(kind: str, reason: str) -> InvalidInput:
        return InvalidInput(f"body.agent_id: {reason}", details=[
            {"field": "body.agent_id", "reason": reason, "type": kind}])

    if card is None or card["shop_id"] != shop_id:
        return invalid("unknown_agent", "no such agent in this shop")
    if to_agent == holder:
        return invalid("same_agent", "the agent named already holds the ticket")
    if not card["active"]:
        return invalid("agent_inactive", "the agent named is deactivated")
    if queue not in card["queues"]:
        return invalid("queue_not_served", f"the agent named does not serve the ticket's queue '{queue}'")
    if presence_at(card["presence"], card["seen_at"], online_after=online_after) == Presence.OFFLINE:
        return AgentOffline(details={"agent_id": to_agent, "presence": Presence.OFFLINE})
    if card["held"] >= card["capacity"]:
        return AgentAtCapacity(f"the agent named holds {card['held']} open tickets, its capacity is {card['capacity']}",
                               details={"agent_id": to_agent, "held": card["held"], "capacity": card["capacity"]})
    return None


def _handed_over(*, giver: str | None, to_agent: str, queue: str, reason: str | None,
                 lease_until: datetime) -> dict[str, Any]:
    # `from` and `to` name the queue, which a hand-over keeps (statistics follow a ticket's queue by them).
    return {"agent_id": giver, "to_agent": to_agent, "from": queue, "to": queue, "reason": reason,
            "lease_expires_at": _iso(lease_until)}


async def hand_over(drivers: DriverConnections, *, agent: Agent, ticket_id: str, to_agent: str, reason: str,
                    now: datetime, lease_seconds: int, presence_timeout: int,
                    idempotency_key: str | None) -> TicketRead:
    """The holder hands its ticket to another agent of the shop, who holds it from now under a fresh lease."""
    lease_until = now + timedelta(seconds=lease_seconds)

    async def act(store: TicketStore) -> TicketRead:
        async with store.transaction():
            # The target's lock first (its claims and hand-overs wait), then the ticket's: the order of every claim.
            card = await store.agent_card(agent_id=to_agent)
            before = await store.ticket(ticket_id=ticket_id)
            ticket = before.state if before is not None else None
            if (ticket is None or ticket.status != Status.ASSIGNED or ticket.assigned_agent_id != agent.id
                    or ticket.lease_expires_at is None or ticket.lease_expires_at <= now):
                raise await _refusal(store, agent=agent, ticket_id=ticket_id)
            refused = _hand_over_refusal(card, to_agent=to_agent, shop_id=agent.shop_id, queue=ticket.queue,
                                         holder=agent.id, online_after=now - timedelta(seconds=presence_timeout))
            if refused is not None:
                raise refused
            held = await _held_write(store, agent=agent, ticket_id=ticket_id, now=now,
                                     values={"assigned_agent_id": to_agent, "lease_expires_at": lease_until},
                                     event=(EventKind.TRANSFERRED, _handed_over(
                                         giver=agent.id, to_agent=to_agent, queue=ticket.queue, reason=reason,
                                         lease_until=lease_until)))
        [view] = await _views(store, [held])
        return view

    return await _write(drivers, agent=agent, key=idempotency_key, now=now, status_code=200, model=TicketRead,
                        request={"op": "transfer", "ticket_id": ticket_id, "agent_id": to_agent, "reason": reason},
                        act=act)


async def admin_hand_over(drivers: DriverConnections, *, shop_id: str, ticket_id: str, to_agent: str,
                          reason: str | None, now: datetime, lease_seconds: int, presence_timeout: int) -> TicketRead:
    """Ops give an open ticket (queued, held or snoozed) to a named agent of the shop, who holds it from now under
    a fresh lease; a holder loses it at once."""
    lease_until = now + timedelta(seconds=lease_seconds)
    async with claim_store(drivers) as store:
        if not await store.shop_exists(shop_id=shop_id):
            raise ShopNotFound(f"no shop with id '{shop_id}'")
        async with store.transaction():
            card = await store.agent_card(agent_id=to_agent)
            ticket = await store.shop_ticket(shop_id=shop_id, ticket_id=ticket_id)
            if ticket is None:
                raise TicketNotFound(f"no ticket '{ticket_id}' in shop '{shop_id}'")
            if ticket.status == Status.RESOLVED:
                raise TicketAlreadyResolved()
            refused = _hand_over_refusal(card, to_agent=to_agent, shop_id=shop_id, queue=ticket.queue,
                                         holder=ticket.assigned_agent_id,
                                         online_after=now - timedelta(seconds=presence_timeout))
            if refused is not None:
                raise refused
            data = {**_handed_over(giver=ticket.assigned_agent_id, to_agent=to_agent, queue=ticket.queue,
                                   reason=reason, lease_until=lease_until), "status_before": ticket.status}
            values = {"status": Status.ASSIGNED, "assigned_agent_id": to_agent, "lease_expires_at": lease_until,
                      "snoozed_until": None}
            if not await store.write_as_read(ticket=ticket, values=values, now=now,
                                             event=(EventKind.TRANSFERRED, "admin", data)):
                raise Conflict("the ticket changed meanwhile; read it and try again")
            return await _read(store, caller=None, ticket_id=ticket_id)


async def _escalated(store: TicketStore, ticket: Record, *, queue: str, from_queue: str, reason: str,
                     agent_id: str | None, now: datetime) -> int:
    """In the caller's transaction: the ticket.escalated event of a ticket moved to escalations; its deliveries."""
    return await store.outbox().enqueue(
        shop_id=ticket["shop_id"], event=DeliveryEvent.ESCALATED, ticket_id=ticket["id"], message_id=None, now=now,
        data=ticket_event_data(ticket_id=ticket["id"], shop_id=ticket["shop_id"], platform=ticket["platform"],
                               conversation_id=ticket["conversation_id"], tier=ticket["tier"],
                               priority=ticket["priority"], primary=ticket["primary_intent"], queue=queue,
                               from_queue=from_queue, reason=reason, agent_id=agent_id, escalated_at=rfc3339(now)))


async def admin_resolve(drivers: DriverConnections, *, shop_id: str, ticket_id: str, reason: str | None,
                        now: datetime) -> TicketRead:
    """Ops close an open ticket, queued or held (spam, a buyer who wrote elsewhere, a stuck console).

    A holder loses the ticket at once: its later writes are 409 ticket_not_held. The event names the holder.
    """
    def refusal(ticket: TicketState) -> AppError | None:
        return TicketAlreadyResolved() if ticket.status == Status.RESOLVED else None

    # A snoozed ticket may be resolved too: its time to come back goes with it.
    return await _ops_write(drivers, shop_id=shop_id, ticket_id=ticket_id, now=now, kind=EventKind.RESOLVED,
                            values={**resolution(now), "snoozed_until": None}, reason=reason, refusal=refusal)


async def admin_release(drivers: DriverConnections, *, shop_id: str, ticket_id: str, reason: str | None,
                        now: datetime, notifier: Notifier) -> TicketRead:
    """Ops hand a held ticket back to its queue, at its place and with no delivery counted (a console stuck on
    it, an agent gone for the day); the holder loses it at once. Waiting claimers are woken."""
    def refusal(ticket: TicketState) -> AppError | None:
        if ticket.status == Status.ASSIGNED:
            return None
        return TicketNotHeld(f"no agent holds the ticket (it is {ticket.status})", details={"status": ticket.status})

    ticket = await _ops_write(drivers, shop_id=shop_id, ticket_id=ticket_id, now=now, kind=EventKind.RELEASED,
                              reason=reason, refusal=refusal, values=requeued())
    notifier.notify([shop_id])
    return ticket


def _snooze_refusal(until: datetime, *, now: datetime) -> InvalidInput | None:
    """Why `until` is no time to come back at: not after now, or more than MAX_SNOOZE_DAYS ahead."""
    if until <= now:
        reason = f"must be after now ({rfc3339(now)})"
    elif until > now + timedelta(days=MAX_SNOOZE_DAYS):
        reason = f"must be at most {MAX_SNOOZE_DAYS} days ahead"
    else:
        return None
    return InvalidInput(f"body.until: {reason}", details=[{"field": "body.until", "reason": reason,
                                                           "type": "snooze_until"}])


def snoozed(until: datetime, *, held_for: str | None) -> dict[str, Any]:
    """The columns that take a ticket out of every queue until `until` (its episode start is kept, so it comes back
    at its place), to be offered first to `held_for` when it comes back."""
    return {"status": Status.PENDING, "assigned_agent_id": None, "lease_expires_at": None, "snoozed_until": until,
            "held_for": held_for, "held_until": None}


async def snooze(drivers: DriverConnections, *, agent: Agent, ticket_id: str, until: datetime, reason: str | None,
                 now: datetime, idempotency_key: str | None) -> TicketRead:
    """The holder puts its ticket aside until `until` or the buyer's next message, whichever comes first."""
    refused = _snooze_refusal(until, now=now)
    if refused is not None:
        raise refused

    async def act(store: TicketStore) -> TicketRead:
        row = await _held_write(store, agent=agent, ticket_id=ticket_id, now=now,
                                values=snoozed(until, held_for=agent.id),
                                event=(EventKind.SNOOZED, {"agent_id": agent.id, "until": rfc3339(until),
                                                           "reason": reason}))
        [view] = await _views(store, [row])
        return view

    return await _write(drivers, agent=agent, key=idempotency_key, now=now, status_code=200, model=TicketRead,
                        request={"op": "snooze", "ticket_id": ticket_id, "until": rfc3339(until), "reason": reason},
                        act=act)


async def admin_snooze(drivers: DriverConnections, *, shop_id: str, ticket_id: str, until: datetime,
                       reason: str | None, now: datetime) -> TicketRead:
    """Ops put an open ticket (queued, held or already snoozed) aside until `until` or the buyer's next message; a
    holder loses it at once."""
    refused = _snooze_refusal(until, now=now)
    if refused is not None:
        raise refused

    def refusal(ticket: TicketState) -> AppError | None:
        return TicketAlreadyResolved() if ticket.status == Status.RESOLVED else None

    # Back to anyone serving its queue: ops took it from whoever had it.
    return await _ops_write(drivers, shop_id=shop_id, ticket_id=ticket_id, now=now, kind=EventKind.SNOOZED,
                            values=snoozed(until, held_for=None), reason=reason, refusal=refusal,
                            data={"until": rfc3339(until)})


async def hand_back_all(store: TicketStore, *, agent_id: str, now: datetime) -> int:
    """In the caller's transaction, after the agent's row is written: every ticket the agent holds goes back to
    its queue, at its place, no delivery counted (the agent was deactivated); how many."""
    released = await store.release_all(agent_id=agent_id, now=now)
    await store.add_events([_event(t, EventKind.RELEASED, "admin", now, {
        "agent_id": agent_id, "reason": "agent deactivated"}) for t in released])
    await store.notify(NOTIFY_CHANNEL, {t["shop_id"] for t in released})
    return len(released)


async def _ops_write(drivers: DriverConnections, *, shop_id: str, ticket_id: str, now: datetime, kind: str,
                     values: dict[str, Any], reason: str | None,
                     refusal: Callable[[TicketState], AppError | None],
                     data: dict[str, Any] | None = None) -> TicketRead:
    """One ops change of a ticket, taken from whoever holds it, with its event naming the admin and that holder."""
    async with claim_store(drivers) as store:
        if not await store.shop_exists(shop_id=shop_id):
            raise ShopNotFound(f"no shop with id '{shop_id}'")
        async with store.transaction():
            ticket = await store.shop_ticket(shop_id=shop_id, ticket_id=ticket_id)
            if ticket is None:
                raise TicketNotFound(f"no ticket '{ticket_id}' in shop '{shop_id}'")
            refused = refusal(ticket)
            if refused is not None:
                raise refused
            data = {"agent_id": ticket.assigned_agent_id, "status_before": ticket.status, "reason": reason,
                    **(data or {})}
            if not await store.write_as_read(ticket=ticket, values=values, now=now, event=(kind, "admin", data)):
                # A guard: the read locked the row (FOR UPDATE on PostgreSQL, the write lock on SQLite).
                raise Conflict("the ticket changed meanwhile; read it and try again")
            if values["status"] == Status.QUEUED:
                await store.notify(NOTIFY_CHANNEL, [shop_id])
            # Read before the commit: the answer is the ticket as this write left it, even when a claimer woken
            # by the commit takes it at once.
            return await _read(store, caller=None, ticket_id=ticket_id)


# --- reads ---------------------------------------------------------------------------------------------------

async def find_conversation(drivers: DriverConnections, *, shop_id: str, platform: str,
                            conversation_id: str) -> TicketList:
    """The ticket of a platform's conversation, as the platform names it: what ops start from."""
    async with claim_store(drivers) as store:
        if not await store.shop_exists(shop_id=shop_id):
            raise ShopNotFound(f"no shop with id '{shop_id}'")
        ticket_id = await store.conversation_ticket(shop_id=shop_id, platform=platform,
                                                    conversation_id=conversation_id)
        if ticket_id is None:
            return TicketList(tickets=[])
        return TicketList(tickets=[await _read(store, caller=None, ticket_id=ticket_id)])


async def _readable(store: TicketStore, *, caller: Agent | None, ticket_id: str) -> StoredTicket:
    """The ticket, if the caller (the admin: None) may read it."""
    row = await store.ticket(ticket_id=ticket_id)
    if row is None or (caller is not None and not await _visible(store, agent=caller, ticket=row.state)):
        raise TicketNotFound(f"no ticket '{ticket_id}'")
    return row


async def _read(store: TicketStore, *, caller: Agent | None, ticket_id: str) -> TicketRead:
    [view] = await _views(store, [await _readable(store, caller=caller, ticket_id=ticket_id)])
    return view


async def read_ticket(drivers: DriverConnections, *, caller: Agent | None, ticket_id: str) -> TicketRead:
    """One ticket with its messages, for the admin or an agent who may see it."""
    async with claim_store(drivers) as store:
        return await _read(store, caller=caller, ticket_id=ticket_id)


async def ticket_messages(drivers: DriverConnections, *, caller: Agent | None, ticket_id: str, before: int | None,
                          limit: int) -> TicketMessages:
    """A page of the ticket's messages older than `before` (or the latest), for whoever may read the ticket."""
    async with claim_store(drivers) as store:
        await _readable(store, caller=caller, ticket_id=ticket_id)
        rows = await store.messages(ticket_id=ticket_id, before=before, limit=limit + 1)
    page = rows[-limit:]
    return TicketMessages(ticket_id=ticket_id, messages=[message_view(m) for m in page],
                          next_before=page[0]["id"] if len(rows) > limit else None)


async def ticket_events(drivers: DriverConnections, *, caller: Agent | None, ticket_id: str, after: int,
                        limit: int) -> TicketEvents:
    """A page of the ticket's audit trail, for the admin or an agent who may see the ticket."""
    async with claim_store(drivers) as store:
        await _readable(store, caller=caller, ticket_id=ticket_id)
        rows = await store.events(ticket_id=ticket_id, after=after, limit=limit + 1)
    page = rows[:limit]
    return TicketEvents(ticket_id=ticket_id, events=[TicketEventRead(**r) for r in page],
                        next_after=page[-1]["id"] if len(rows) > limit else None)


async def my_tickets(drivers: DriverConnections, *, agent: Agent) -> TicketList:
    """The tickets the agent holds, most urgent first, with unread counts and escalation flags."""
    return await held_tickets(drivers, agent_id=agent.id)


async def held_tickets(drivers: DriverConnections, *, agent_id: str) -> TicketList:
    """The tickets an agent holds, most urgent first (the caller checked who may read them)."""
    async with claim_store(drivers) as store:
        rows = await store.agent_tickets(agent_id=agent_id)
        views = await _views(store, rows)
    return TicketList(tickets=views)


async def queue_depths(drivers: DriverConnections, *, caller: Agent | None, shop_id: str | None,
                       now: datetime) -> QueueList:
    """Queued tickets per tier and the oldest wait of each queue the caller may see."""
    async with claim_store(drivers) as store:
        if caller is None:
            if shop_id is None:
                raise InvalidInput("the admin token must name a shop: ?shop_id=...", details=[
                    {"field": "query.shop_id", "reason": "required with the admin token", "type": "missing"}])
            if not await store.shop_exists(shop_id=shop_id):
                raise ShopNotFound(f"no shop with id '{shop_id}'")
            names = await store.queue_names(shop_id=shop_id)
        else:
            if shop_id is not None and shop_id != caller.shop_id:
                raise ShopNotFound(f"no shop with id '{shop_id}'")
            shop_id = caller.shop_id
            names = await store.served_queues(agent_id=caller.id)
        rows = await store.queue_depths(shop_id=shop_id, queues=names)
    depth: dict[str, dict[str, int]] = {name: {tier: 0 for tier in TIER_NAMES} for name in names}
    oldest: dict[str, datetime] = {}
    for row in rows:
        depth[row["queue"]][tier_name(row["tier"])] = row["n"]
        if row["queue"] not in oldest or row["opened_at"] < oldest[row["queue"]]:
            oldest[row["queue"]] = row["opened_at"]
    return QueueList(shop_id=shop_id, queues=[
        QueueDepth(name=name, depth=depth[name], total=sum(depth[name].values()),  # type: ignore[arg-type]
                   oldest_wait_seconds=round(max(0.0, (now - oldest[name]).total_seconds()), 3)
                   if name in oldest else None)
        for name in names])


# --- lease expiry --------------------------------------------------------------------------------------------

async def expire_leases(store: TicketStore, *, now: datetime, max_deliveries: int,
                        limit: int = EXPIRY_BATCH) -> tuple[int, set[str], bool]:
    """Put tickets whose lease ran out back in their queue, in one transaction, those expired too often moved to
    escalations with their ticket.escalated events; returns how many, the shops to wake and whether an event was
    written."""
    async with store.transaction():
        rows = await store.expiring(now=now, limit=limit)
        if not rows:
            return 0, set(), False
        can_escalate = await store.shops_with_queue(shop_ids={r["shop_id"] for r in rows}, name=ESCALATIONS)
        updates: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for r in rows:
            # The ticket keeps opened_at, so it goes back to the very place in the claim order it had.
            deliveries = r["deliveries"] + 1
            escalate = deliveries >= max_deliveries and r["queue"] != ESCALATIONS and r["shop_id"] in can_escalate
            queue = ESCALATIONS if escalate else r["queue"]
            updates.append({"id": r["id"], "agent_id": r["assigned_agent_id"],
                            "lease_expires_at": r["lease_expires_at"], "deliveries": deliveries, "queue": queue, "escalated": r["escalated"] or escalate})
            events.append(_event(r, EventKind.LEASE_EXPIRED, "system", now, {
                "agent_id": r["assigned_agent_id"], "lease_expires_at": _iso(r["lease_expires_at"]),
                "deliveries": deliveries}))
            if escalate:
                events.append(_event(r, EventKind.TRANSFERRED, "system", now, {
                    "from": r["queue"], "to": ESCALATIONS,
                    "reason": f"lease expired {deliveries} times (max_deliveries {max_deliveries})"}))
        await store.requeue_expired(updates, now=now)
        await store.add_events(events)
        escalated = [(r, u) for r, u in zip(rows, updates, strict=True)
                     if u["queue"] == ESCALATIONS and r["queue"] != ESCALATIONS]
        for r, u in escalated:
            await _escalated(store, r, queue=ESCALATIONS, from_queue=r["queue"], agent_id=r["assigned_agent_id"],
                             reason=f"lease expired {u['deliveries']} times (max_deliveries {max_deliveries})", now=now)
        shops = {r["shop_id"] for r in rows}
        await store.notify(NOTIFY_CHANNEL, shops)
    metrics.leases_expired([(r["shop_id"], r["queue"], u["queue"]) for r, u in zip(rows, updates, strict=True)])
    return len(rows), shops, bool(escalated)


async def wake_snoozed(store: TicketStore, *, now: datetime, hold_seconds: int = DEFAULT_STICKY_HOLD_SECONDS,
                       limit: int = EXPIRY_BATCH) -> tuple[int, set[str]]:
    """Put snoozed tickets whose time has come back in their queue at their place, in one transaction, each with a
    `woken` event, held `hold_seconds` for the agent that snoozed it (a `held` event); how many, and the shops to
    wake. The pick skips rows another process is waking, and each update applies only to a ticket still snoozed as
    picked, so a ticket is woken once however many reapers race."""
    async with store.transaction():
        rows = await store.snoozed_due(now=now, limit=limit)
        if not rows:
            return 0, set()
        held_until = now + timedelta(seconds=hold_seconds) if hold_seconds > 0 else None
        await store.wake(rows, now=now, held_until=held_until)
        events = []
        for r in rows:
            events.append(_event(r, EventKind.WOKEN, SYSTEM_ACTOR, now, {
                "reason": "time", "until": rfc3339(r["snoozed_until"])}))
            if held_until is not None and r["held_for"] is not None:
                events.append(_event(r, EventKind.HELD, SYSTEM_ACTOR, now, {
                    "agent_id": r["held_for"], "until": rfc3339(held_until), "reason": "snooze"}))
        await store.add_events(events)
        shops = {r["shop_id"] for r in rows}
        await store.notify(NOTIFY_CHANNEL, shops)
    return len(rows), shops


async def purge_idempotency_keys(keys: KeyStore, *, now: datetime, retention: timedelta,
                                 limit: int = PURGE_BATCH) -> int:
    """Forget up to `limit` Idempotency-Keys older than the retention (a later replay runs afresh); returns how many."""
    return await keys.purge_keys(before=now - retention, limit=limit)


class LeaseReaper:
    """Every process runs one: expired leases are found under SKIP LOCKED and requeued conditionally, so never twice;
    snoozed tickets whose time has come are woken alike.

    It also purges idempotency keys past their retention, every PURGE_SECONDS (first at start).
    """

    def __init__(self, drivers: DriverConnections, notifier: Notifier, *, max_deliveries: int,
                 interval: float, key_retention: timedelta, purge_interval: float = PURGE_SECONDS,
                 sticky_hold_seconds: int = DEFAULT_STICKY_HOLD_SECONDS) -> None:
        self._sticky_hold_seconds = sticky_hold_seconds
        self._drivers = drivers
        self._notifier = notifier
        self._max_deliveries = max_deliveries
        self._interval = interval
        self._key_retention = key_retention
        self._purge_interval = purge_interval

    async def run_once(self) -> int:
        """Expire every lease that has run out and wake every snoozed ticket whose time has come; returns how many
        tickets went back to a queue."""
        total = 0
        while True:
            async with claim_store(self._drivers) as store:
                count, shops, events = await expire_leases(store, now=utcnow(), max_deliveries=self._max_deliveries)
            self._notifier.notify(shops)
            if events:
                self._notifier.outbox_written()
            total += count
            if count < EXPIRY_BATCH:
                break
        while True:
            async with claim_store(self._drivers) as store:
                count, shops = await wake_snoozed(store, now=utcnow(), hold_seconds=self._sticky_hold_seconds)
            self._notifier.notify(shops)
            total += count
            if count < EXPIRY_BATCH:
                return total

    async def purge_once(self) -> int:
        """Delete every idempotency key past its retention; returns how many."""
        total = 0
        while True:
            async with claim_store(self._drivers) as keys:
                count = await purge_idempotency_keys(keys, now=utcnow(), retention=self._key_retention)
            total += count
            if count < PURGE_BATCH:
                if total:
                    log.info("purged %d idempotency keys older than %s", total, self._key_retention)
                return total

    async def run(self) -> None:
        """The reaper's loop, run as a worker (app/workers.py): expiry every interval, the key purge less often."""
        next_purge = time.monotonic()
        while True:
            await attempt("lease expiry", self.run_once, log)
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._purge_interval
                await attempt("idempotency key purge", self.purge_once, log)
            await asyncio.sleep(self._interval)

