"""Webhook ingestion: triage, idempotent storage, ticket updates, with group commit.

Requests are queued to the writer tasks of the process. While a transaction runs, newly arriving
requests wait; a writer then takes all of them (up to a limit) into its next transaction, so
many requests share one commit. Each request is answered only after the transaction holding its
messages has committed, and a request that could not be stored gets an error, never a 202.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from app import metrics
from app.clock import utcnow
from app.db import ingest as ingest_sql
from app.db.deliveries import DeliveryStore, OutboxEvent, delivery_store_for
from app.db.driver import Driver, driver
from app.db.session import DriverConnections
from app.db.claims import reply_created
from app.domain import (AUTO_REPLY_MARK, DEFAULT_STICKY_HOLD_SECONDS, DeliveryEvent, EventKind, Status, TicketState,
                        rfc3339, tier_name)
from app.errors import Unavailable
from app.schemas.webhooks import IngestedMessage, WebhookMessage
from app.services.directory import ShopInfo
from app.services.notify import Notifier
from app.services.tickets import (InboundDecision, new_ticket, offer_first, receive, seller_opened, seller_reply,
                                  sticky_owner)
from app.triage import PriorityContext, Reading, Triage, classify, priority_for, read
from app.triage.events import classify_event, classify_media
from app.triage.hybrid import CONTEXT_MESSAGES

# A message this short that no rule understood may only make sense in its conversation.
FRAGMENT_CHARACTERS = 24

log = logging.getLogger("app.ingest")
NOTIFY_CHANNEL = "triage_work"
# A group's size limit. Below it with several writers: the rest of a cut group goes to a second writer, whose
# database work overlaps the first's; one writer alone takes more rather than leave a remainder waiting for two
# whole groups (docs/design.md, "Ingestion commits groups of requests").
MAX_GROUP_MESSAGES = 500
# The first writer takes whatever waits. The others start only on a backlog this large: they pay off when the
# database work of big groups can overlap, while small groups side by side only add round trips and latency.
PARALLEL_MESSAGES = 100


@dataclass(slots=True)
class IngestJob:
    shop: ShopInfo
    platform: str
    messages: Sequence[WebhookMessage]
    triages: list[Triage]
    # Conversations whose first message here is a fragment (`needs_context`): read again in the writer, with the
    # latest buyer texts of their open episode, from their texts' readings alone (by message index).
    fragments: Sequence[str] = ()
    readings: dict[int, Reading] = field(default_factory=dict)
    done: asyncio.Future[list[IngestedMessage]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(slots=True)
class _Entry:
    job: int
    index: int
    shop: ShopInfo
    platform: str
    message: WebhookMessage
    triage: Triage
    decision: InboundDecision | None = None
    context: PriorityContext = PriorityContext()  # set by priority_contexts; frozen, so one default is shared
    duplicate_of: "_Entry | None" = None

    key: ingest_sql.MessageKey = ("", "", "")
    conversation: ingest_sql.ConversationKey = ("", "", "")
    customer: ingest_sql.CustomerKey = ("", "", "")

    def __post_init__(self) -> None:
        self.key = (self.shop.id, self.platform, self.message.message_id)
        self.conversation = (self.shop.id, self.platform, self.message.conversation_id)
        self.customer = (self.shop.id, self.platform, self.message.customer.id)


def triage_messages(shop: ShopInfo, messages: Sequence[WebhookMessage],
                    readings: dict[int, Reading] | None = None) -> list[Triage]:
    """Classify outside the transaction; the priority is finished once the customer's history is known.

    Each message is read with the earlier buyer messages of its conversation in this request as context (a
    fragment's stored ones are added in the writer: `needs_context`, `read_fragments`). `readings` collects each
    text's reading alone by message index.
    """
    earlier: dict[str, list[str]] = {}
    triages = []
    for index, m in enumerate(messages):
        before = earlier.setdefault(m.conversation_id, [])
        triages.append(triage_one(m, shop, context=before[-CONTEXT_MESSAGES:], readings=readings, index=index))
        if m.text and m.sender == "buyer":
            before.append(m.text)
    return triages


def triage_one(message: WebhookMessage, shop: ShopInfo, *, context: Sequence[str],
               readings: dict[int, Reading] | None = None, index: int = 0) -> Triage:
    """A message's triage by what it carries (SPEC 9.2): a system event by the event (and its caption), a text or a
    caption by its words, bare media as what it is. A text's reading alone is kept in (or taken from) `readings`."""
    if message.sender == "seller":
        return classify_media("seller", ruleset=shop.ruleset)  # a placeholder the pipeline routes by; never stored
    if message.kind == "system" and message.event is not None:
        return classify_event(message.event, rating=message.rating, caption=message.text, ruleset=shop.ruleset,
                              context=context)
    if message.text:
        if readings is None:
            return classify(message.text, shop.ruleset, context=context)
        reading = readings.get(index)
        if reading is None:
            reading = readings[index] = read(message.text, shop.ruleset)
        return reading.triage(context=context)
    return classify_media(message.kind, ruleset=shop.ruleset)


def needs_context(messages: Sequence[WebhookMessage], triages: Sequence[Triage]) -> list[str]:
    """Conversations whose first message in this request is a fragment: short, and no rule fired on it
    ("订单只有一个"); the writer reads them again with their open episode's latest buyer texts (`read_fragments`). A
    message a rule understood, or a long one, carries its own meaning."""
    seen: set[str] = set()
    wanted = []
    for message, triage in zip(messages, triages):
        if message.conversation_id in seen:
            continue
        seen.add(message.conversation_id)
        if message.kind == "system" or not message.text or message.sender == "seller":
            continue  # an event or bare media carries its meaning without words
        if len(message.text) <= FRAGMENT_CHARACTERS and not any(
                not evidence.rule.startswith(("model.", "context.")) for hit in triage.intents for evidence in hit.evidence):
            wanted.append(message.conversation_id)
    return wanted


def read_fragments(jobs: Sequence[IngestJob], entries: Sequence["_Entry"], prepared: ingest_sql.Prepared) -> None:
    """The fragments of the group read again in their conversation: its open episode's latest buyer texts as
    prepare read them off the ticket, then those of the group's earlier requests. Within a request, each message of
    such a conversation is read after the ones before it, as `triage_messages` reads them."""
    if not any(job.fragments for job in jobs):
        return
    wanted = {(job.shop.id, job.platform, c) for job in jobs for c in job.fragments}
    earlier = {key: list(prepared.context(key)) for key in wanted}
    offset = 0  # `entries` holds one entry per message, request after request
    for job in jobs:
        shop_id, platform = job.shop.id, job.platform
        # Only the conversations with texts before this request are read again; the others' reading stands.
        before = {c: texts[-CONTEXT_MESSAGES:] for c in job.fragments if (texts := earlier[(shop_id, platform, c)])}
        for index, m in enumerate(job.messages):
            texts = earlier.get((shop_id, platform, m.conversation_id))
            if texts is None:
                continue
            context = before.get(m.conversation_id)
            if context is not None:
                entries[offset + index].triage = triage_one(m, job.shop, context=context[-CONTEXT_MESSAGES:],
                                                            readings=job.readings, index=index)
            if m.text and m.sender == "buyer":
                texts.append(m.text)
                if context is not None:
                    context.append(m.text)
        offset += len(job.messages)


def priority_contexts(entries: Sequence["_Entry"], prepared: ingest_sql.Prepared, *, now: datetime) -> None:
    """Each message's buyer standing as it arrives (README, "How a ticket is ranked"), in arrival order: the VIP level, the other
    conversations the buyer has opened (earlier ones of this group included), and how long the buyer has
    waited for an answer in this conversation's open episode."""
    opened: dict[ingest_sql.CustomerKey, int] = {}  # episodes each buyer opened in this group so far
    started: set[ingest_sql.ConversationKey] = set()
    for e in entries:
        waiting, uncounted = 0.0, 0
        if e.conversation in prepared.open_episodes:
            awaiting = prepared.open_episodes[e.conversation]
            waiting = max(0.0, (now - awaiting).total_seconds()) if awaiting is not None else 0.0
            uncounted = 0 if prepared.counted(e.conversation, e.customer) else 1
        elif e.conversation not in started:
            started.add(e.conversation)
            opened[e.customer] = opened.get(e.customer, 0) + 1
        # Every episode the buyer has opened, this conversation's current one included, less that one.
        episodes = prepared.customers[e.customer][1] + opened.get(e.customer, 0) + uncounted
        e.context = PriorityContext(vip_level=e.message.customer.vip_level, prior_contacts=max(0, episodes - 1),
                                    waiting_seconds=waiting)


def _context_view(context: PriorityContext) -> dict[str, Any]:
    return {"vip_level": context.vip_level, "prior_contacts": context.prior_contacts,
            "waiting_seconds": round(context.waiting_seconds, 3)}


def _entries(jobs: Sequence[IngestJob]) -> list[_Entry]:
    """One entry per message of the group, in arrival order; a message twice in flight names its first copy."""
    entries: list[_Entry] = []
    first_seen: dict[ingest_sql.MessageKey, _Entry] = {}
    for j, job in enumerate(jobs):
        for i, (message, triage) in enumerate(zip(job.messages, job.triages, strict=True)):
            entry = _Entry(j, i, job.shop, job.platform, message, triage)
            # The same message twice in flight: the later copy answers as a duplicate of the first.
            entry.duplicate_of = first_seen.get(entry.key)
            first_seen.setdefault(entry.key, entry)
            entries.append(entry)
    return entries


def _buyers_and_starters(fresh: Sequence[_Entry]) -> tuple[dict[ingest_sql.CustomerKey, dict[str, Any]],
                                                             dict[ingest_sql.ConversationKey, _Entry]]:
    """Each buyer's latest standing (sorted by key: one lock order for every group), and each conversation's
    first message."""
    customers: dict[ingest_sql.CustomerKey, dict[str, Any]] = {}
    starters: dict[ingest_sql.ConversationKey, _Entry] = {}
    for e in fresh:
        c = e.message.customer
        customers[e.customer] = {"shop_id": e.shop.id, "platform": e.platform, "external_id": c.id, "nick": c.nick,
                                 "vip_level": c.vip_level, "opened": 0}
        starters.setdefault(e.conversation, e)
    return dict(sorted(customers.items())), starters


def _decide(fresh: Sequence[_Entry], prepared: ingest_sql.Prepared, *, now: datetime) -> None:
    """Finish each message's priority with its buyer's standing, as the decision its ticket receives."""
    priority_contexts(fresh, prepared, now=now)
    for e in fresh:
        priority = priority_for(e.triage.primary, emotion=e.triage.emotion, urgent=e.triage.urgent,
                                context=e.context, ruleset=e.shop.ruleset)
        e.decision = InboundDecision(message_id=e.message.message_id, primary=e.triage.primary, tier=e.triage.tier,
                                     priority=priority, intents=tuple(h.intent for h in e.triage.intents),
                                     ruleset=e.triage.ruleset)


def _message_row(e: _Entry, ticket_id: str, now: datetime) -> dict[str, Any]:
    if e.message.sender == "seller":
        return {"ticket_id": ticket_id, "shop_id": e.shop.id, "platform": e.platform, "external_id": e.message.message_id,
                "direction": "outbound", "text": e.message.text or "", "sent_at": e.message.sent_at,
                "received_at": now, "order_id": e.message.order_id, "primary_intent": None, "tier": None,
                "priority": None, "triage": None, "kind": e.message.kind, "content": e.message.content()}
    priority = e.decision.priority if e.decision else 0
    return {
        "ticket_id": ticket_id, "shop_id": e.shop.id, "platform": e.platform, "external_id": e.message.message_id,
        "direction": "inbound", "text": e.message.text or "", "sent_at": e.message.sent_at, "received_at": now,
        "kind": e.message.kind, "content": e.message.content(),
        "order_id": e.message.order_id, "primary_intent": e.triage.primary, "tier": int(e.triage.tier[1]),
        "priority": priority,
        "triage": {**e.triage.to_dict(), "priority": e.decision.priority if e.decision else e.triage.priority,
                   "priority_context": _context_view(e.context)},
    }


@dataclass(slots=True)
class _Applied:
    """What receiving the group's stored messages did to their tickets."""

    tickets: dict[ingest_sql.ConversationKey, TicketState]
    provisional: dict[ingest_sql.ConversationKey, TicketState]
    # Each ticket's latest buyer texts of its open episode (tickets.context), as they are after the group.
    contexts: dict[str, list[str]]
    changed: dict[str, TicketState] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    woken: set[str] = field(default_factory=set)


async def _open_tickets(store: ingest_sql.IngestStore, fresh: Sequence[_Entry], prepared: ingest_sql.Prepared,
                        starters: dict[ingest_sql.ConversationKey, _Entry], stored_now: dict[ingest_sql.MessageKey, int], *,
                        now: datetime) -> _Applied:
    """The tickets that receive a message: existing ones locked and read, new ones made from their first message."""
    ticket_ids, created = prepared.tickets, prepared.created
    # Only the tickets that receive a message are locked and read (sorted, for one lock order).
    receiving = {ticket_ids[e.conversation] for e in fresh if e.key in stored_now} - created
    locked = await store.lock_tickets(sorted(receiving))
    tickets = {(r["shop_id"], r["platform"], r["conversation_id"]): TicketState.from_row(r) for r in locked}
    contexts = {r["id"]: r["context"] for r in locked}
    # A placeholder's state is made here, from its first message, and written by finish.
    provisional = {k: new_ticket(ticket_id=ticket_ids[k], shop=e.shop, platform=e.platform, conversation_id=k[2],
                                 customer_id=prepared.customers[e.customer][0], decision=e.decision, now=now)
                   for k, e in sorted(starters.items()) if ticket_ids[k] in created and e.decision is not None}
    for k, ticket in provisional.items():
        if starters[k].message.sender == "seller":
            seller_opened(ticket, now=now)
        contexts[ticket.id] = []
    tickets.update(provisional)
    return _Applied(tickets, provisional, contexts)


def _receive_all(applied: _Applied, fresh: Sequence[_Entry], stored_now: dict[ingest_sql.MessageKey, int],
                 customers: dict[ingest_sql.CustomerKey, dict[str, Any]], prepared: ingest_sql.Prepared, *,
                 now: datetime, hold_seconds: int) -> None:
    """Apply each stored message to its ticket, in arrival order, collecting the events and the shops to wake. An
    episode opened now is held for the buyer's last agent (sticky owner); a snoozed ticket woken now, for the agent
    that snoozed it."""
    for e in fresh:
        if e.key not in stored_now or e.decision is None:
            continue
        ticket = applied.tickets[e.conversation]
        if e.message.sender == "seller":
            for kind, data in seller_reply(ticket, message_id=e.message.message_id, sent_at=e.message.sent_at,
                                           now=now):
                applied.events.append({"ticket_id": ticket.id, "shop_id": ticket.shop_id, "at": now, "kind": kind,
                                       "actor": "webhook", "data": data})
            applied.changed[ticket.id] = ticket
            continue
        was_open = ticket.status != Status.RESOLVED and not (ticket.is_new and ticket.awaiting_since is None)
        was_snoozed = ticket.status == Status.PENDING
        # The message id orders tickets opened in this one commit (all at `now`) as their messages came.
        events = receive(ticket, e.decision, shop=e.shop, now=now, seq=stored_now[e.key])
        held = None
        if not was_open:
            applied.contexts[ticket.id] = []  # an episode's context starts with it
        if e.message.text:
            context = applied.contexts[ticket.id]
            context.append(e.message.text)
            del context[:-CONTEXT_MESSAGES]
        if not was_open:
            customers[e.customer]["opened"] += 1
            _, _, last_agent, last_reply_at = prepared.customers[e.customer]
            held = sticky_owner(ticket, last_agent=last_agent, last_reply_at=last_reply_at,
                                sticky_hours=e.shop.sticky_hours, now=now, seconds=hold_seconds)
        elif was_snoozed and ticket.held_for is not None and hold_seconds > 0:
            held = offer_first(ticket, agent_id=ticket.held_for, now=now, seconds=hold_seconds, reason="snooze")
        if held is not None:
            events.append(held)
        for kind, data in events:
            applied.events.append({"ticket_id": ticket.id, "shop_id": ticket.shop_id, "at": now, "kind": kind,
                                   "actor": "webhook", "data": data})
        applied.changed[ticket.id] = ticket
        if ticket.status == Status.QUEUED:
            applied.woken.add(ticket.shop_id)


def _answers(jobs: Sequence[IngestJob], entries: Sequence[_Entry], fresh: Sequence[_Entry],
             stored_now: dict[ingest_sql.MessageKey, int], tickets: dict[ingest_sql.ConversationKey, TicketState],
             previous: dict[ingest_sql.MessageKey, dict[str, Any]]) -> list[list[IngestedMessage]]:
    """Each request's answer per message: stored now, or a duplicate of what was stored before."""
    results: list[list[IngestedMessage | None]] = [[None] * len(job.messages) for job in jobs]
    answers: dict[ingest_sql.MessageKey, IngestedMessage] = {}
    for e in fresh:
        if e.key in stored_now and e.message.sender == "seller":
            answer = IngestedMessage(message_id=e.message.message_id, ticket_id=tickets[e.conversation].id,
                                     duplicate=False, sender="seller", primary=None, tier=None, priority=None,
                                     queue=None)
        elif e.key in stored_now and e.decision is not None:
            answer = IngestedMessage(message_id=e.message.message_id, ticket_id=tickets[e.conversation].id,
                                     duplicate=False, primary=e.decision.primary, tier=e.decision.tier,
                                     priority=e.decision.priority, queue=e.triage.queue)
        else:
            answer = _answered_before(e.message.message_id, previous[e.key])
        answers[e.key] = answer
        results[e.job][e.index] = answer
    for e in entries:
        if e.duplicate_of is not None:
            results[e.job][e.index] = answers[e.key].model_copy(update={"duplicate": True})
    return [[r for r in job_results if r is not None] for job_results in results]


def _answered_before(message_id: str, row: dict[str, Any]) -> IngestedMessage:
    """The answer of a message stored before (a seller's has no triage)."""
    if row["tier"] is None:
        return IngestedMessage(message_id=message_id, ticket_id=row["ticket_id"], duplicate=True, sender="seller",
                               primary=None, tier=None, priority=None, queue=None)
    return IngestedMessage(message_id=message_id, ticket_id=row["ticket_id"], duplicate=True,
                           primary=row["primary_intent"], tier=tier_name(row["tier"]), priority=row["priority"],
                           queue=row["queue"] or "")


async def _off_hours_replies(store: ingest_sql.IngestStore, applied: _Applied, shops: Mapping[str, ShopInfo], *,
                             now: datetime) -> list[tuple[TicketState, dict[str, Any]]]:
    """The shop's off-hours reply to each episode this group opened while its shop is closed, stored as outbound
    messages with an `auto_replied` event; an episode opens once, so it gets one. Whether a shop is open is its
    cached hours' answer (app/hours.py), no query."""
    opened = [event for event in applied.events if event["kind"] in (EventKind.CREATED, EventKind.REOPENED)]
    wanted = []
    for event in opened:
        shop = shops[event["shop_id"]]
        if shop.off_hours_reply and not shop.hours.is_open(now):
            wanted.append((applied.changed[event["ticket_id"]], shop))
    if not wanted:
        return []
    stored = await store.insert_auto_replies([
        {"ticket_id": ticket.id, "shop_id": ticket.shop_id, "platform": ticket.platform, "text": shop.off_hours_reply,
         "sent_at": now, "content": AUTO_REPLY_MARK} for ticket, shop in wanted])
    for (ticket, shop), message in zip(wanted, stored, strict=True):
        opens = shop.hours.next_opening(now)
        applied.events.append({"ticket_id": ticket.id, "shop_id": ticket.shop_id, "at": now,
                               "kind": EventKind.AUTO_REPLIED, "actor": "system",
                               "data": {"message_id": message["id"], **AUTO_REPLY_MARK,
                                        "opens_at": None if opens is None else rfc3339(opens)}})
    return [(ticket, message) for (ticket, _), message in zip(wanted, stored, strict=True)]


def tier_rises(applied: "_Applied") -> list[tuple[TicketState, dict[str, Any]]]:
    """The ticket.tier_raised events of a group (SPEC 9.1): each re-rank that raised a ticket's tier."""
    rises = []
    for event in applied.events:
        if event["kind"] != EventKind.RERANKED:
            continue
        data = event["data"]
        if data["to"]["tier"] >= data["from"]["tier"]:  # "P1" < "P2": a higher priority inside the same tier
            continue
        ticket = applied.changed[event["ticket_id"]]
        rises.append((ticket, {
            "shop_id": ticket.shop_id, "platform": ticket.platform, "conversation_id": ticket.conversation_id,
            "ticket_id": ticket.id, "from_tier": data["from"]["tier"], "to_tier": data["to"]["tier"],
            "priority": data["to"]["priority"], "primary": data["to"]["primary"], "queue": ticket.queue,
            "message_id": data["message_id"], "raised_at": event["at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")}))
    return rises


async def ingest_group(store: ingest_sql.IngestStore, jobs: Sequence[IngestJob], *, now: datetime,
                       outbox: DeliveryStore | None = None, hold_seconds: int = DEFAULT_STICKY_HOLD_SECONDS,
                       ) -> tuple[list[list[IngestedMessage]], set[str], int]:
    """Store the messages of several requests in one transaction; return each request's results, the woken shops
    and how many deliveries the group's ticket.tier_raised events made (written in the same transaction). A ticket
    held for an agent (sticky owner, a snooze's return) waits `hold_seconds` for it."""
    entries = _entries(jobs)
    fresh = [e for e in entries if e.duplicate_of is None]
    customers, starters = _buyers_and_starters(fresh)
    # A new conversation's ticket starts in its first message's queue.
    conversations = [(k, e.shop.route(e.triage.primary)) for k, e in sorted(starters.items())]
    prepared = await store.prepare(list(customers.values()), conversations, now=now,
                                   contexts=frozenset((job.shop.id, job.platform, c) for job in jobs for c in job.fragments))
    read_fragments(jobs, entries, prepared)
    _decide(fresh, prepared, now=now)
    stored_now = await store.insert_messages([_message_row(e, prepared.tickets[e.conversation], now) for e in fresh])
    applied = await _open_tickets(store, fresh, prepared, starters, stored_now, now=now)
    _receive_all(applied, fresh, stored_now, customers, prepared, now=now, hold_seconds=hold_seconds)
    auto_replies = await _off_hours_replies(store, applied, {e.shop.id: e.shop for e in fresh}, now=now)
    previous = await store.finish(
        # A provisional ticket that received nothing (its only message was a duplicate) is not kept.
        deleted=[t.id for t in applied.provisional.values() if t.id not in applied.changed],
        saved=[{**t.columns(), "context": applied.contexts[t.id]} for t in applied.changed.values()],
        events=applied.events,
        customers=list(customers.values()), channel=NOTIFY_CHANNEL, payloads=sorted(applied.woken),
        previous=[e.key for e in fresh if e.key not in stored_now], now=now)
    deliveries = 0
    if outbox is not None:
        # One reply per opened episode: no two of a ticket, as enqueue_all asks.
        deliveries = await outbox.enqueue_all(
            [OutboxEvent(ticket.shop_id, DeliveryEvent.TIER_RAISED, ticket.id, None, data)
             for ticket, data in tier_rises(applied)]
            + [OutboxEvent(ticket.shop_id, DeliveryEvent.REPLY_CREATED, ticket.id, message["id"],
                           {**reply_created(ticket, message), **AUTO_REPLY_MARK}) for ticket, message in auto_replies],
            now=now)
    return _answers(jobs, entries, fresh, stored_now, applied.tickets, previous), applied.woken, deliveries


class _Role(Enum):
    """What a write is: the first writer's (takes whatever waits), a helper's (only on a backlog), or one request
    retried alone after its group failed."""

    FIRST = "first"
    HELPER = "helper"
    RETRY = "retry"


class Ingestor:
    """The per-process writers: each transaction holds every request that waited for it.

    The writers are workers (app/workers.py): `writers()` names them for the process's Workers to run.
    """

    def __init__(self, drivers: DriverConnections, notifier: Notifier, *, writers: int = 1,
                 sticky_hold_seconds: int = DEFAULT_STICKY_HOLD_SECONDS) -> None:
        self._drivers = drivers
        self._sticky_hold_seconds = sticky_hold_seconds
        self._notifier = notifier
        self._writers = writers
        self._queue: asyncio.Queue[IngestJob] = asyncio.Queue()
        self._max_group = MAX_GROUP_MESSAGES if writers > 1 else 2 * MAX_GROUP_MESSAGES
        self._queued = 0  # messages in the queue
        self._backlog = asyncio.Event()  # set while at least PARALLEL_MESSAGES wait
        self._open = True
        # SQLite's one pooled connection is handed back after each group, for the other paths to use.
        self._hold = drivers.postgres

    def writers(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """The writer loops, by name. SQLite has one writer anyway; on PostgreSQL a few groups commit side by side."""
        return [(f"ingest-writer-{n}", functools.partial(self._run, _Role.FIRST if n == 0 else _Role.HELPER))
                for n in range(self._writers)]

    def close(self) -> None:
        """After the writers stopped: refuse new requests, and answer the ones still queued."""
        self._open = False
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.done.done():
                job.done.set_exception(Unavailable("the service is shutting down; retry"))

    async def submit(self, shop: ShopInfo, platform: str, messages: Sequence[WebhookMessage]) -> list[IngestedMessage]:
        """Store one request's messages; returns after they are committed."""
        readings: dict[int, Reading] = {}
        triages = triage_messages(shop, messages, readings=readings)
        # Only the learned model reads a fragment in its conversation: the rules alone have no use for the context.
        fragments = needs_context(messages, triages) if shop.ruleset.model is not None else ()
        if fragments:
            wanted = set(fragments)
            readings = {i: r for i, r in readings.items() if messages[i].conversation_id in wanted}
        job = IngestJob(shop, platform, messages, triages, fragments, readings if fragments else {})
        if not self._open:
            raise Unavailable("ingestion is not running")
        self._queue.put_nowait(job)
        self._queued += len(messages)
        if self._queued >= PARALLEL_MESSAGES:
            self._backlog.set()
        # shield: a client that disconnects does not cancel the write other requests share.
        return await asyncio.shield(job.done)

    async def _run(self, role: "_Role") -> None:
        while True:
            if role is _Role.FIRST:
                job = await self._queue.get()
            else:
                await self._backlog.wait()
                if self._queue.qsize() == 0:
                    self._backlog.clear()
                    continue
                job = self._queue.get_nowait()
            failed = await self._write(self._take(job), role=role)
            if len(failed) > 1:
                # One bad request must not sink the others: retry each alone.
                for job in failed:
                    self._fail(await self._write([job], role=_Role.RETRY))
            else:
                self._fail(failed)

    def _take(self, job: IngestJob) -> list[IngestJob]:
        group, size = [job], len(job.messages)
        while not self._queue.empty() and size < self._max_group:
            job = self._queue.get_nowait()
            group.append(job)
            size += len(job.messages)
        self._queued -= size
        if self._queued < PARALLEL_MESSAGES:
            self._backlog.clear()
        return group

    def _more(self, role: "_Role") -> bool:
        """Whether a writer that just committed takes the next group on the connection it holds."""
        if role is _Role.RETRY or not self._hold:
            return False
        return not self._queue.empty() if role is _Role.FIRST else self._queued >= PARALLEL_MESSAGES

    async def _write(self, group: list[IngestJob], *, role: "_Role") -> list[IngestJob]:
        """Commit `group` and answer its requests; then, while `_more`, the groups waiting behind it on the same
        connection (a checkout is not free). Returns the group that could not be stored."""
        try:
            async with driver(self._drivers) as db:
                while True:
                    results, woken, deliveries = await self._transaction(db, group)
                    for job, result in zip(group, results, strict=True):
                        metrics.messages_ingested(job.shop.id, result)  # counted once committed
                        if not job.done.done():
                            job.done.set_result(result)
                    self._notifier.notify(woken)
                    if deliveries:
                        self._notifier.outbox_written()
                    if not self._more(role):
                        return []
                    group = self._take(self._queue.get_nowait())
        except Exception:
            if len(group) == 1:
                log.exception("ingest transaction failed")
            return group
        except BaseException:
            self._fail(group)  # cancelled at shutdown: its requests are answered, not left waiting
            raise

    async def _transaction(self, db: Driver, group: list[IngestJob]) -> tuple[list[list[IngestedMessage]], set[str], int]:
        for attempt in range(3):
            try:
                async with ingest_sql.ingest_transaction(db) as store:
                    outcome = await ingest_group(store, group, now=utcnow(), outbox=delivery_store_for(db),
                                                 hold_seconds=self._sticky_hold_seconds)
                return outcome
            except Exception as exc:
                # Deadlocks, serialization failures and a conversation created by another transaction meanwhile
                # are worth another try; anything else is not.
                retry = isinstance(exc, ingest_sql.Raced) or getattr(exc, "sqlstate", None) in ("40P01", "40001")
                if attempt == 2 or not retry:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(group: list[IngestJob]) -> None:
        for job in group:
            if not job.done.done():
                job.done.set_exception(Unavailable("the messages could not be stored; retry"))
