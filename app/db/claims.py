"""The ticket store: claim, the holder's and ops' writes with their events, threads and trails, lease expiry and
hand-back, queue depths, idempotency keys.

Every agent console runs claim -> reply -> resolve in a loop, so these run hundreds of times a second, on the
bare driver (app/db/driver.py) rather than the ORM (docs/design.md, "The hot paths run on the bare driver").
SharedTicketStore writes each statement once, for both databases: on SQLite each write is one short BEGIN
IMMEDIATE transaction. PostgresTicketStore replaces the operations where PostgreSQL saves round trips: a
claim is one call of triage_claim() (migrations 0004, 0006, 0013 and 0021), a holder's write changes the ticket and
appends its event in one statement with CTEs and reads the thread in it. Wake-ups are the driver's NOTIFYs
(Driver.notify).
"""

import functools
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from app.db.deliveries import DELIVERY_CHANNEL, PENDING_DELIVERY, PG_HEAD, DeliveryStore, delivery_store_for
from app.db.driver import Driver, Record, decoded, driver, joined, json_text, placeholders
from app.db.session import DriverConnections, Session
from app.domain import (DELIVERY_EVENT_BITS, LAST_AGENT_SLACK_SECONDS, TICKET_FIELDS, DeliveryEvent, EventKind,
                        TicketState)

_TICKET = ", ".join(TICKET_FIELDS)
_TICKET_T = ", ".join(f"t.{c}" for c in TICKET_FIELDS)
_TICKET_C = ", ".join(f"c.{c}" for c in TICKET_FIELDS)
CLAIM_ORDER = ("tier", "priority DESC", "opened_at", "opened_seq")
CLAIM_ORDER_SQL = ", ".join(CLAIM_ORDER)
# Whether queued ticket t may go to agent $1 now: not held, its hold over ($3 is now), held for that agent, or held for
# one that is not at its console (online, seen after $5) serving the ticket's queue. triage_claim() (migration 0024)
# has the same test.
CLAIMABLE_SQL = ("(t.held_until IS NULL OR t.held_until <= $3 OR t.held_for = $1 OR NOT EXISTS ("
                 "SELECT 1 FROM agents o JOIN agent_queues oq ON oq.agent_id = o.id AND oq.queue = t.queue "
                 "WHERE o.id = t.held_for AND o.active AND o.presence = 'online' AND o.seen_at > $5))")


def claim_order(alias: str) -> str:
    """The claim order on the columns of the table named `alias`."""
    return ", ".join(f"{alias}.{column}" for column in CLAIM_ORDER)


# A message with the ticket's customer (the view shows the customer beside the thread).
_THREAD = ("m.id, m.ticket_id, m.direction, m.text, m.sent_at, m.received_at, m.order_id, m.agent_id, m.triage, "
           "m.delivery, m.kind, m.content, "
           "c.external_id AS customer_external_id, c.platform AS customer_platform, c.nick AS customer_nick, "
           "c.vip_level AS customer_vip_level, c.contacts AS customer_contacts")
_THREAD_FROM = "messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id"
# The holder check makes "has an agent" the same as "assigned"; these reads name only the agent, the leading
# column of ix_tickets_held.
_HELD_COUNT = "SELECT count(*) FROM tickets WHERE assigned_agent_id = $1"
_EVENT = "INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) VALUES ($1, $2, $3, $4, $5, $6)"
_MESSAGE = "id, ticket_id, direction, text, sent_at, received_at, order_id, agent_id, triage, delivery, kind, content"
# "Has a holder" (the same as assigned, by the holder rule) selects ix_tickets_held, whose entries carry the
# lease: expired ones are found in the index, without reading the table.
EXPIRING = ("SELECT id, shop_id, queue, assigned_agent_id, lease_expires_at, deliveries, escalated, platform, "
            "conversation_id, tier, priority, primary_intent FROM tickets "
            "WHERE assigned_agent_id IS NOT NULL AND status = 'assigned' AND lease_expires_at <= $1 "
            "ORDER BY lease_expires_at LIMIT $2")

# The first queued ticket of one queue ({shop}, q.queue) by the claim order that agent $1 may take (CLAIMABLE_SQL):
# one probe of ix_tickets_claim, passing over the tickets held for another agent at its console.
QUEUE_HEAD = ("SELECT t.id FROM tickets t WHERE t.shop_id = {shop} AND t.queue = q.queue AND t.status = 'queued' "
              f"AND {CLAIMABLE_SQL} ORDER BY {claim_order('t')} LIMIT 1")
# The agent's ($1) claim in shop $4 at $3 (agents seen after $5 online): the head of each queue it serves, the best of them by the claim order, if the
# agent is active and below its capacity; so many probes as queues served, whatever the other queues hold.
_CLAIM = ("UPDATE tickets SET status = 'assigned', assigned_agent_id = $1, lease_expires_at = $2, updated_at = $3 "
          "WHERE id = (SELECT p.id FROM agent_queues q JOIN tickets p ON p.id = "
          f"({QUEUE_HEAD.format(shop='$4')}) WHERE q.agent_id = $1 "
          f"AND ({_HELD_COUNT}) < (SELECT capacity FROM agents WHERE id = $1 AND active) "
          f"ORDER BY {claim_order('p')} LIMIT 1) AND status = 'queued' RETURNING {_TICKET}")

# The auto-close worker's pick, per queue and tier: an episode starts at or before its last message, so a silent
# ticket's episode began before the cut-off too, and the pick reads only the entries of ix_tickets_queued older
# than it.
QUIET = ("SELECT id, shop_id, queue, platform, conversation_id, tier, priority, primary_intent, opened_at, "
         "last_message_at FROM tickets WHERE shop_id = $1 AND queue = $2 AND tier = $5 AND status = 'queued' "
         "AND opened_at <= $3 AND last_message_at <= $3 ORDER BY opened_at LIMIT $4")

# Snoozed tickets due back, first due first, from ix_tickets_snoozed (migration 0021).
SNOOZED_DUE = ("SELECT id, shop_id, queue, snoozed_until, held_for FROM tickets WHERE status = 'pending' "
               "AND snoozed_until <= $1 ORDER BY snoozed_until LIMIT $2")
# A shop's snoozed tickets whose conversation has been silent since before the cut-off, from ix_tickets_pending.
QUIET_PENDING = ("SELECT id, shop_id, queue, status, last_message_at FROM tickets WHERE shop_id = $1 "
                 "AND status = 'pending' AND last_message_at <= $2 ORDER BY last_message_at LIMIT $3")

# A shop's counters (migration 0018): queue_counts plus the changes not folded into it yet.
COUNTED = ("SELECT queue, tier, queued, overdue FROM queue_counts WHERE shop_id = $1 UNION ALL "
           "SELECT queue, tier, queued, overdue FROM queue_count_changes WHERE shop_id = $1")
# The oldest queued episode of a shop's queue and tier (c.queue, c.tier): the first entry of ix_tickets_queued.
OLDEST = ("SELECT t.opened_at FROM tickets t WHERE t.shop_id = {shop} AND t.queue = c.queue AND t.tier = c.tier "
          "AND t.status = 'queued' ORDER BY t.opened_at LIMIT 1")
_ADD_COUNTS = ("ON CONFLICT (shop_id, queue, tier) DO UPDATE SET queued = queue_counts.queued + excluded.queued, "
               "overdue = queue_counts.overdue + excluded.overdue")

_PG_FOLD = ("WITH gone AS (DELETE FROM queue_count_changes RETURNING shop_id, queue, tier, queued, overdue), "
            "added AS (INSERT INTO queue_counts (shop_id, queue, tier, queued, overdue) SELECT shop_id, queue, tier, "
            f"sum(queued), sum(overdue) FROM gone GROUP BY shop_id, queue, tier {_ADD_COUNTS}) "
            "SELECT count(*) AS n FROM gone")


@dataclass(slots=True)
class StoredTicket:
    """A ticket as a statement left it, with its thread when that statement read it too (PostgreSQL)."""

    state: TicketState
    thread: list[Record] | None = None


def _stored(row: Record | None) -> StoredTicket | None:
    if row is None:
        return None
    thread = row.pop("thread", None)
    if isinstance(thread, str):
        thread = json.loads(thread)
    return StoredTicket(TicketState.from_row(decoded(row)), None if thread is None else [decoded(m) for m in thread])


def reply_event(*, message_id: int, ticket: TicketState, now: datetime, lease_until: datetime) -> dict[str, Any]:
    """The data of a `replied` event: whether it stopped the first-response clock, and within the target."""
    first = ticket.first_response_at == now
    data: dict[str, Any] = {"message_id": message_id, "first_response": first,
                            "lease_expires_at": lease_until.isoformat()}
    if first and ticket.first_response_due_at is not None:
        data["within_target"] = now <= ticket.first_response_due_at
    return data


def reply_created(ticket: TicketState, message: Record) -> dict[str, Any]:
    """The data of a reply.created event (SPEC 9.1): what the platform needs to pass the reply to the buyer."""
    return {"shop_id": ticket.shop_id, "platform": ticket.platform, "conversation_id": ticket.conversation_id,
            "ticket_id": ticket.id, "message_id": message["id"], "text": message["text"],
            "agent_id": message["agent_id"], "created_at": message["sent_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


@functools.cache
def _held_update_sql(names: tuple[str, ...]) -> str:
    # A lease that ran out is not a hold, even before the reaper has put the ticket back.
    assignments = "".join(f", {name} = ${i + 4}" for i, name in enumerate(names))
    return (f"UPDATE tickets SET updated_at = $3{assignments} WHERE id = $1 AND status = 'assigned' "
            f"AND assigned_agent_id = $2 AND lease_expires_at > $3 RETURNING {_TICKET}")


# The buyer's last agent, written by an agent's reply ($2 the agent, $3 now) only when another agent replied last or
# its own last reply was before {stale} (LAST_AGENT_SLACK_SECONDS ago): sticky owner reads it (migration 0024).
_LAST_AGENT = ("UPDATE customers SET last_agent_id = $2, last_agent_reply_at = $3 WHERE (last_agent_id IS DISTINCT "
               "FROM $2 OR last_agent_reply_at IS NULL OR last_agent_reply_at < {stale})")

# The first reply of an episode stops the first-response clock: first_response_at then equals now.
_REPLY_UPDATE = _held_update_sql(("lease_expires_at",)).replace(
    "updated_at = $3", "updated_at = $3, first_response_at = coalesce(first_response_at, $3), "
    "awaiting_since = NULL, unread = 0", 1)


class KeyStore(Protocol):
    """The seam of the agents' Idempotency-Keys: taken once, with the answer given under them, purged when old."""

    async def reserve_key(self, *, agent_id: str, key: str, request_hash: str, now: datetime) -> bool: ...
    async def key_record(self, *, agent_id: str, key: str) -> Record | None: ...
    async def store_answer(self, *, agent_id: str, key: str, status_code: int, response: dict[str, Any]) -> None: ...
    async def purge_keys(self, *, before: datetime, limit: int) -> int: ...


class TicketStore(KeyStore, Protocol):
    """The seam of the ticket aggregate: tickets with their messages and events. Each operation is atomic on its
    own; `transaction()` joins several (nested in an open one). The same object is the KeyStore of its
    connection, so an agent's write and its key commit together."""

    thread_page: int | None  # messages a ticket's answer carries, the latest; None: the whole thread

    def transaction(self) -> AbstractAsyncContextManager[None]: ...
    def outbox(self) -> DeliveryStore: ...
    async def claim(self, *, agent_id: str, shop_id: str, now: datetime, lease_until: datetime,
                    event: dict[str, Any], touch_before: datetime, online_after: datetime,
                    thread: bool = True) -> StoredTicket | None: ...
    async def agent_state(self, *, agent_id: str) -> Record | None: ...
    async def touch_agent(self, *, agent_id: str, now: datetime, touch_before: datetime,
                          online: bool = False) -> None: ...
    async def agent_card(self, *, agent_id: str) -> Record | None: ...
    async def write_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any],
                         event: tuple[str, dict[str, Any]], thread: bool = True) -> StoredTicket | None: ...
    async def reply(self, *, ticket_id: str, agent_id: str, now: datetime, lease_until: datetime,
                    text: str, outbox: bool = True) -> tuple[StoredTicket, Record] | None: ...
    async def ticket(self, *, ticket_id: str) -> StoredTicket | None: ...
    async def agent_tickets(self, *, agent_id: str) -> list[StoredTicket]: ...
    async def served_queues(self, *, agent_id: str) -> list[str]: ...
    async def queue_exists(self, *, shop_id: str, name: str) -> bool: ...
    async def threads(self, ticket_ids: Sequence[str]) -> dict[str, list[Record]]: ...
    async def shop_exists(self, *, shop_id: str) -> bool: ...
    async def shop_ticket(self, *, shop_id: str, ticket_id: str) -> TicketState | None: ...
    async def write_as_read(self, *, ticket: TicketState, values: dict[str, Any], now: datetime,
                            event: tuple[str, str, dict[str, Any]]) -> bool: ...
    async def conversation_ticket(self, *, shop_id: str, platform: str, conversation_id: str) -> str | None: ...
    async def events(self, *, ticket_id: str, after: int, limit: int) -> list[Record]: ...
    async def messages(self, *, ticket_id: str, before: int | None, limit: int) -> list[Record]: ...
    async def queue_names(self, *, shop_id: str) -> list[str]: ...
    async def queue_depths(self, *, shop_id: str, queues: Sequence[str]) -> list[Record]: ...
    async def fold_queue_counts(self) -> int: ...
    async def expiring(self, *, now: datetime, limit: int) -> list[Record]: ...
    async def shops_with_queue(self, *, shop_ids: Iterable[str], name: str) -> set[str]: ...
    async def requeue_expired(self, expiries: Sequence[Record], *, now: datetime) -> None: ...
    async def add_events(self, events: Sequence[Record]) -> None: ...
    async def release_all(self, *, agent_id: str, now: datetime) -> list[Record]: ...
    async def notify(self, channel: str, shop_ids: Iterable[str]) -> None: ...
    async def auto_close_queues(self) -> list[Record]: ...
    async def quiet_tickets(self, *, shop_id: str, queue: str, tier: int, before: datetime, limit: int,
                            lock: bool = True) -> list[Record]: ...
    async def close_quiet(self, tickets: Sequence[Record], *, now: datetime) -> None: ...
    async def auto_close_shops(self) -> list[Record]: ...
    async def quiet_pending(self, *, shop_id: str, before: datetime, limit: int, lock: bool = True) -> list[Record]: ...
    async def snoozed_due(self, *, now: datetime, limit: int) -> list[Record]: ...
    async def wake(self, tickets: Sequence[Record], *, now: datetime, held_until: datetime | None) -> None: ...


class SharedTicketStore:
    """The ticket store written once: its statements run on both databases; a multi-statement operation is one
    transaction (nested in the caller's when it has one open)."""

    def __init__(self, db: Driver, *, thread_page: int | None = None) -> None:
        self.db = db
        # Messages a ticket's answer carries, the latest; None: the whole thread. Threads are read one message
        # further, so the caller knows whether older ones exist.
        self.thread_page = thread_page
        self._thread_limit = None if thread_page is None else thread_page + 1

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self.db.transaction()

    def outbox(self) -> DeliveryStore:
        """The delivery store on this store's connection: events written in its transactions commit with them."""
        return delivery_store_for(self.db)

    async def _event(self, ticket: TicketState, now: datetime, kind: str, actor: str, data: dict[str, Any]) -> None:
        await self.db.execute(_EVENT, ticket.id, ticket.shop_id, now, kind, actor, json_text(data))

    async def claim(self, *, agent_id: str, shop_id: str, now: datetime, lease_until: datetime,
                    event: dict[str, Any], touch_before: datetime, online_after: datetime,
                    thread: bool = True) -> StoredTicket | None:
        """Assign the agent the most urgent queued ticket of its queues that is not held for another agent at its
        console (seen after `online_after`), within its capacity, with the event; the agent is online and seen now
        (its row written only when it was not, or not since `touch_before`)."""
        # One statement: pick, capacity test and assignment together, under SQLite's one write lock.
        async with self.transaction():
            await self.touch_agent(agent_id=agent_id, now=now, touch_before=touch_before, online=True)
            claimed = _stored(await self.db.row(_CLAIM, agent_id, lease_until, now, shop_id, online_after))
            if claimed is not None:
                await self._event(claimed.state, now, EventKind.CLAIMED, f"agent:{agent_id}",
                                  {**event, "deliveries": claimed.state.deliveries})
        return claimed

    async def agent_state(self, *, agent_id: str) -> Record | None:
        """Whether the agent is active, its capacity, and how many tickets it holds."""
        row = await self.db.row(f"SELECT active, capacity, ({_HELD_COUNT}) AS held FROM agents WHERE id = $1", agent_id)
        return None if row is None else decoded(row)

    async def touch_agent(self, *, agent_id: str, now: datetime, touch_before: datetime,
                          online: bool = False) -> None:
        """The active agent is seen now, and with `online` (a claim) online; its row is written only when that
        changes its presence or it was last seen before `touch_before` (claims and heartbeats come many times a
        minute)."""
        if online:
            await self.db.execute("UPDATE agents SET presence = 'online', seen_at = $2 WHERE id = $1 AND active "
                                  "AND (presence <> 'online' OR seen_at IS NULL OR seen_at < $3)",
                                  agent_id, now, touch_before)
        else:
            await self.db.execute("UPDATE agents SET seen_at = $2 WHERE id = $1 AND active "
                                  "AND (seen_at IS NULL OR seen_at < $3)", agent_id, now, touch_before)

    async def agent_card(self, *, agent_id: str) -> Record | None:
        """What a hand-over to the agent needs: its shop, whether it is active, capacity, tickets held, presence
        and last sighting, and the queues it serves (`queues`, a list). In a transaction, the agent's claims and
        other hand-overs to it wait until this one ends (PostgreSQL: the claim's advisory lock; SQLite: the
        write lock), and so does its deactivation (the row is read FOR SHARE)."""
        if self.db.postgres:
            await self.db.execute("SELECT pg_advisory_xact_lock(hashtext('triage_claim'), hashtext($1))", agent_id)
        row = await self.db.row(f"SELECT shop_id, active, capacity, ({_HELD_COUNT}) AS held, presence, seen_at "
                                f"FROM agents WHERE id = $1{self.db.for_share}", agent_id)
        if row is None:
            return None
        row = decoded(row)
        row["queues"] = await self.served_queues(agent_id=agent_id)
        return row

    async def write_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any],
                         event: tuple[str, dict[str, Any]], thread: bool = True) -> StoredTicket | None:
        """Set `values` on the ticket if the agent holds it under a running lease, with the event; None if not."""
        async with self.transaction():
            held = _stored(await self.db.row(_held_update_sql(tuple(values)), ticket_id, agent_id, now,
                                             *values.values()))
            if held is not None:
                await self._event(held.state, now, event[0], f"agent:{agent_id}", event[1])
        return held

    async def reply(self, *, ticket_id: str, agent_id: str, now: datetime, lease_until: datetime,
                    text: str, outbox: bool = True) -> tuple[StoredTicket, Record] | None:
        """The holder's reply: the outbound message, the lease renewed, the first one stopping the clock; with
        `outbox`, its reply.created event for the shop's endpoints in the same transaction."""
        async with self.transaction():
            held = _stored(await self.db.row(_REPLY_UPDATE, ticket_id, agent_id, now, lease_until))
            if held is None:
                return None
            ticket = held.state
            if ticket.customer_id is not None:
                await self.db.execute(_LAST_AGENT.format(stale="$4") + " AND id = $1", ticket.customer_id, agent_id,
                                      now, now - timedelta(seconds=LAST_AGENT_SLACK_SECONDS))
            message = decoded(await self.db.row(
                "INSERT INTO messages (ticket_id, shop_id, platform, direction, text, sent_at, received_at, agent_id) "
                f"VALUES ($1, $2, $3, 'outbound', $4, $5, $5, $6) RETURNING {_MESSAGE}",
                ticket.id, ticket.shop_id, ticket.platform, text, now, agent_id) or {})
            await self._event(ticket, now, EventKind.REPLIED, f"agent:{agent_id}",
                              reply_event(message_id=message["id"], ticket=ticket, now=now, lease_until=lease_until))
            if outbox and await delivery_store_for(self.db).enqueue(
                    shop_id=ticket.shop_id, event=DeliveryEvent.REPLY_CREATED, ticket_id=ticket.id,
                    message_id=message["id"], data=reply_created(ticket, message), now=now):
                message["delivery"] = dict(PENDING_DELIVERY)
        return held, message

    async def ticket(self, *, ticket_id: str) -> StoredTicket | None:
        """The ticket as it stands, without its thread."""
        return _stored(await self.db.row(f"SELECT {_TICKET} FROM tickets WHERE id = $1", ticket_id))

    async def agent_tickets(self, *, agent_id: str) -> list[StoredTicket]:
        """The tickets the agent holds, in claim order."""
        rows = await self.db.rows(f"SELECT {_TICKET} FROM tickets WHERE assigned_agent_id = $1 "
                                  f"ORDER BY {CLAIM_ORDER_SQL}", agent_id)
        return [t for t in map(_stored, rows) if t is not None]

    async def served_queues(self, *, agent_id: str) -> list[str]:
        """The queues the agent serves, by name."""
        rows = await self.db.rows("SELECT queue FROM agent_queues WHERE agent_id = $1 ORDER BY queue", agent_id)
        return [r["queue"] for r in rows]

    async def queue_exists(self, *, shop_id: str, name: str) -> bool:
        """Whether the shop has a queue of that name."""
        return await self.db.row("SELECT 1 AS found FROM queues WHERE shop_id = $1 AND name = $2",
                                 shop_id, name) is not None

    async def threads(self, ticket_ids: Sequence[str]) -> dict[str, list[Record]]:
        """Each ticket's messages (the latest thread_page + 1), oldest first, each with the ticket's customer."""
        # One statement for any number of tickets: the ids travel as one list (Driver.in_texts).
        result: dict[str, list[Record]] = {ticket_id: [] for ticket_id in ticket_ids}
        if ticket_ids:
            rows = await self.db.rows(_threads_sql(self.db.in_texts.format(n=1), self._thread_limit),
                                      list(ticket_ids))
            for row in rows:
                result[row["ticket_id"]].append(decoded(row))
        return result

    async def shop_exists(self, *, shop_id: str) -> bool:
        """Whether there is a shop with this id."""
        return await self.db.row("SELECT 1 AS found FROM shops WHERE id = $1", shop_id) is not None

    async def shop_ticket(self, *, shop_id: str, ticket_id: str) -> TicketState | None:
        """The shop's ticket as it stands, held until the transaction ends (the row lock on PostgreSQL, the
        write lock on SQLite)."""
        stored = _stored(await self.db.row(f"SELECT {_TICKET} FROM tickets WHERE id = $1 AND shop_id = $2"
                                           f"{self.db.for_update}", ticket_id, shop_id))
        return None if stored is None else stored.state

    async def write_as_read(self, *, ticket: TicketState, values: dict[str, Any], now: datetime,
                            event: tuple[str, str, dict[str, Any]]) -> bool:
        """Set `values` and append the event (kind, actor, data) if the ticket's status and holder are still as
        `ticket` has them; False if they changed."""
        assignments = "".join(f", {name} = ${i + 5}" for i, name in enumerate(values))
        changed = await self.db.row(
            f"UPDATE tickets SET updated_at = $2{assignments} WHERE id = $1 AND status = $3 "
            "AND assigned_agent_id IS NOT DISTINCT FROM $4 RETURNING id", ticket.id, now, ticket.status,
            ticket.assigned_agent_id, *values.values())
        if changed is None:
            return False
        await self._event(ticket, now, event[0], event[1], event[2])
        return True

    async def conversation_ticket(self, *, shop_id: str, platform: str, conversation_id: str) -> str | None:
        """The id of the conversation's ticket, by its unique key; None when the shop never heard of it."""
        row = await self.db.row("SELECT id FROM tickets WHERE shop_id = $1 AND platform = $2 AND conversation_id = $3",
                                shop_id, platform, conversation_id)
        return None if row is None else str(row["id"])

    async def events(self, *, ticket_id: str, after: int, limit: int) -> list[Record]:
        """A page of the ticket's trail, oldest first, from its key (PostgreSQL) or index (SQLite) on (ticket, id)."""
        rows = await self.db.rows("SELECT id, at, kind, actor, data FROM ticket_events WHERE ticket_id = $1 "
                                  "AND id > $2 ORDER BY id LIMIT $3", ticket_id, after, limit)
        return [decoded(r) for r in rows]

    async def messages(self, *, ticket_id: str, before: int | None, limit: int) -> list[Record]:
        """Up to `limit` messages of the ticket older than message `before` (or the latest), oldest first."""
        older, params = ("", ()) if before is None else ("AND m.id < $3 ", (before,))
        rows = await self.db.rows(f"SELECT {_THREAD} FROM {_THREAD_FROM} WHERE m.ticket_id = $1 {older}"
                                  "ORDER BY m.id DESC LIMIT $2", ticket_id, limit, *params)
        return [decoded(row) for row in reversed(rows)]

    async def reserve_key(self, *, agent_id: str, key: str, request_hash: str, now: datetime) -> bool:
        """Take the agent's Idempotency-Key for this request; False when it was taken before."""
        # A concurrent taker of the same key holds its row: we wait for its commit, then find the key taken.
        row = await self.db.row(
            "INSERT INTO idempotency_keys (agent_id, key, request_hash, status_code, response, created_at) "
            "VALUES ($1, $2, $3, 0, '{}', $4) ON CONFLICT (agent_id, key) DO NOTHING RETURNING 1 AS taken",
            agent_id, key, request_hash, now)
        return row is not None

    async def key_record(self, *, agent_id: str, key: str) -> Record | None:
        """The request hash and stored answer of a key taken before."""
        row = await self.db.row("SELECT request_hash, status_code, response FROM idempotency_keys "
                                "WHERE agent_id = $1 AND key = $2", agent_id, key)
        return None if row is None else decoded(row)

    async def store_answer(self, *, agent_id: str, key: str, status_code: int, response: dict[str, Any]) -> None:
        """Remember the answer given under the key, for replays."""
        await self.db.execute("UPDATE idempotency_keys SET status_code = $3, response = $4 "
                              "WHERE agent_id = $1 AND key = $2", agent_id, key, status_code, json_text(response))

    async def purge_keys(self, *, before: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest keys taken before `before`; how many."""
        # SKIP LOCKED on PostgreSQL: processes purging at once take different rows instead of waiting on (or
        # deadlocking over) each other's.
        rows = await self.db.rows(
            "DELETE FROM idempotency_keys WHERE (agent_id, key) IN (SELECT agent_id, key FROM idempotency_keys "
            f"WHERE created_at < $1 ORDER BY created_at LIMIT $2{self.db.skip_locked}) RETURNING 1 AS purged",
            before, limit)
        return len(rows)

    async def queue_names(self, *, shop_id: str) -> list[str]:
        """The shop's queues, by name."""
        rows = await self.db.rows("SELECT name FROM queues WHERE shop_id = $1 ORDER BY name", shop_id)
        return [r["name"] for r in rows]

    async def queue_depths(self, *, shop_id: str, queues: Sequence[str]) -> list[Record]:
        """Queued tickets per queue and tier (`n`), with the oldest episode start of each (`opened_at`): the
        counters (migration 0018) and one probe of ix_tickets_queued per queue and tier, whatever the backlog."""
        if not queues:
            return []
        rows = await self.db.rows(
            f"WITH c AS (SELECT queue, tier, sum(queued) AS n FROM ({COUNTED}) x "
            f"WHERE queue IN ({placeholders(2, len(queues))}) GROUP BY queue, tier) "
            f"SELECT c.queue, c.tier, c.n, ({OLDEST.format(shop='$1')}) AS opened_at FROM c WHERE c.n > 0",
            shop_id, *queues)
        return [decoded(r) for r in rows]

    async def fold_queue_counts(self) -> int:
        """Move the counters' changes into queue_counts; how many changes."""
        if self.db.postgres:
            # One statement: the changes it deletes are the ones it adds, whatever other writers append meanwhile.
            row = await self.db.row(_PG_FOLD)
            return int(row["n"]) if row else 0
        # SQLite has one writer: two statements in its transaction see the same rows.
        async with self.transaction():
            row = await self.db.row("SELECT count(*) AS n FROM queue_count_changes")
            if not row or not row["n"]:
                return 0
            await self.db.execute(
                "INSERT INTO queue_counts (shop_id, queue, tier, queued, overdue) SELECT shop_id, queue, tier, "
                "sum(queued), sum(overdue) FROM queue_count_changes WHERE true GROUP BY shop_id, queue, tier "
                f"{_ADD_COUNTS}")
            await self.db.execute("DELETE FROM queue_count_changes")
        return int(row["n"])

    async def expiring(self, *, now: datetime, limit: int) -> list[Record]:
        """Held tickets whose lease ran out, oldest lease first; locked on PostgreSQL, skipping rows another
        process is expiring."""
        return [decoded(r) for r in await self.db.rows(EXPIRING + self.db.skip_locked, now, limit)]

    async def shops_with_queue(self, *, shop_ids: Iterable[str], name: str) -> set[str]:
        """Those of the shops that have a queue of that name."""
        ids = sorted(set(shop_ids))
        if not ids:
            return set()
        rows = await self.db.rows(f"SELECT shop_id FROM queues WHERE name = $1 AND shop_id IN "
                                  f"({placeholders(2, len(ids))})", name, *ids)
        return {r["shop_id"] for r in rows}

    async def requeue_expired(self, expiries: Sequence[Record], *, now: datetime) -> None:
        """Put expired tickets back in a queue; each names the lease it expires (`agent_id`, `lease_expires_at`),
        so a lease renewed meanwhile is kept, and the ticket's `deliveries`, `queue` and `escalated` after."""
        await self.db.execute_many(
            "UPDATE tickets SET status = 'queued', assigned_agent_id = NULL, lease_expires_at = NULL, "
            "deliveries = $4, queue = $5, escalated = $6, updated_at = $7 WHERE id = $1 AND status = 'assigned' "
            "AND assigned_agent_id = $2 AND lease_expires_at = $3",
            [[e["id"], e["agent_id"], e["lease_expires_at"], e["deliveries"], e["queue"], e["escalated"], now]
             for e in expiries])

    async def add_events(self, events: Sequence[Record]) -> None:
        """Append events (ticket_id, shop_id, at, kind, actor, data) to their tickets' trails."""
        await self.db.execute_many(_EVENT, [[e["ticket_id"], e["shop_id"], e["at"], e["kind"], e["actor"],
                                             json_text(e["data"])] for e in events])

    async def release_all(self, *, agent_id: str, now: datetime) -> list[Record]:
        """Hand every ticket the agent holds back to its queue, at its place (no delivery counted); their id,
        shop_id and queue."""
        return await self.db.rows(
            "UPDATE tickets SET status = 'queued', assigned_agent_id = NULL, lease_expires_at = NULL, "
            "updated_at = $2 WHERE assigned_agent_id = $1 AND status = 'assigned' RETURNING id, shop_id, queue",
            agent_id, now)

    async def notify(self, channel: str, shop_ids: Iterable[str]) -> None:
        """Wake other processes' waiting claimers at commit (Driver.notify: SQLite's find the work at their periodic
        re-check)."""
        await self.db.notify(channel, shop_ids)

    async def auto_close_queues(self) -> list[Record]:
        """Every queue of the shops that close silent tickets, with the shop's `hours`."""
        return await self.db.rows(
            "SELECT q.shop_id, q.name AS queue, s.auto_close_after_hours AS hours FROM queues q "
            "JOIN shops s ON s.id = q.shop_id WHERE s.auto_close_after_hours > 0 ORDER BY q.shop_id, q.name")

    async def quiet_tickets(self, *, shop_id: str, queue: str, tier: int, before: datetime, limit: int,
                            lock: bool = True) -> list[Record]:
        """The queue's queued tickets of the tier whose conversation has been silent since before `before`, oldest
        episode first; with `lock`, locked on PostgreSQL, skipping rows a claim, an ingestion or another closer
        holds."""
        rows = await self.db.rows(QUIET + (self.db.skip_locked if lock else ""), shop_id, queue, before, limit, tier)
        return [decoded(r) for r in rows]

    async def close_quiet(self, tickets: Sequence[Record], *, now: datetime) -> None:
        """Resolve tickets quiet_tickets or quiet_pending picked (and locked) in this transaction, each if still in
        the status it was picked in (`status`, queued when not given)."""
        await self.db.execute_many(
            "UPDATE tickets SET status = 'resolved', resolved_at = $2, updated_at = $2, snoozed_until = NULL "
            "WHERE id = $1 AND status = $3", [[t["id"], now, t.get("status", "queued")] for t in tickets])

    async def auto_close_shops(self) -> list[Record]:
        """The shops that close silent tickets, with their `hours`."""
        return await self.db.rows("SELECT id AS shop_id, auto_close_after_hours AS hours FROM shops "
                                  "WHERE auto_close_after_hours > 0 ORDER BY id")

    async def quiet_pending(self, *, shop_id: str, before: datetime, limit: int, lock: bool = True) -> list[Record]:
        """The shop's snoozed tickets whose conversation has been silent since before `before`; with `lock`, locked
        on PostgreSQL, skipping rows another process holds."""
        rows = await self.db.rows(QUIET_PENDING + (self.db.skip_locked if lock else ""), shop_id, before, limit)
        return [decoded(r) for r in rows]

    async def snoozed_due(self, *, now: datetime, limit: int) -> list[Record]:
        """Snoozed tickets whose time has come, first due first; locked on PostgreSQL, skipping rows another process
        is waking (or an ingestion is writing)."""
        return [decoded(r) for r in await self.db.rows(SNOOZED_DUE + self.db.skip_locked, now, limit)]

    async def wake(self, tickets: Sequence[Record], *, now: datetime, held_until: datetime | None) -> None:
        """Put snoozed tickets back in their queue at their place, held until `held_until` for the agent each is
        held for (if any); each only if still snoozed until the time it was picked with (`snoozed_until`), so a
        ticket woken or re-snoozed meanwhile is left alone."""
        await self.db.execute_many(
            "UPDATE tickets SET status = 'queued', snoozed_until = NULL, updated_at = $3, "
            "held_until = CASE WHEN held_for IS NULL THEN held_until ELSE $4 END WHERE id = $1 "
            "AND status = 'pending' AND snoozed_until = $2",
            [[t["id"], t["snoozed_until"], now, held_until] for t in tickets])


@functools.cache
def _threads_sql(tickets: str, limit: int | None) -> str:
    """The messages of the tickets `m.ticket_id {tickets}` names; with a limit, each one's latest that many."""
    if limit is None:
        return f"SELECT {_THREAD} FROM {_THREAD_FROM} WHERE m.ticket_id {tickets} ORDER BY m.ticket_id, m.id"
    # Numbered from the newest per ticket, on ix_messages_ticket (ticket_id, id) read backwards.
    return (f"SELECT * FROM (SELECT {_THREAD}, row_number() OVER (PARTITION BY m.ticket_id ORDER BY m.id DESC) "
            f"AS newest FROM {_THREAD_FROM} WHERE m.ticket_id {tickets}) page WHERE newest <= {int(limit)} "
            "ORDER BY ticket_id, id")


def _with_thread(alias: str, limit: int | None) -> str:
    # Where a statement reads the ticket's thread (triage_thread(), migrations 0004 and 0008), the ticket carries
    # it: the latest `limit` messages, or all of them. limit 0: no thread.
    if limit == 0:
        return ""
    if limit is None:
        return f", triage_thread({alias}) AS thread"
    return f", triage_thread({alias}, {int(limit)}) AS thread"


@functools.cache
def _pg_claim_sql(limit: int | None) -> str:
    return f"SELECT {_TICKET_C}{_with_thread('c.id', limit)} FROM triage_claim($1, $2, $3, $4, $5::text, $6, $7) c"


@functools.cache
def _pg_held_write_sql(names: tuple[str, ...], limit: int | None) -> str:
    assignments = "".join(f", {name} = ${i + 6}" for i, name in enumerate(names))
    return (f"WITH t AS (UPDATE tickets SET updated_at = $3{assignments} WHERE id = $1 AND status = 'assigned' "
            f"AND assigned_agent_id = $2 AND lease_expires_at > $3 RETURNING {_TICKET}), "
            "e AS (INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) "
            "SELECT id, shop_id, $3, $4, 'agent:' || $2, $5::text::jsonb FROM t) "
            f"SELECT {_TICKET}{_with_thread('id', limit)} FROM t")


# Ticket, outbound message and `replied` event in one statement; the event's data is reply_event's, computed
# from the updated row (first_response_at equals now exactly when this reply stopped the clock). With the outbox,
# the reply.created event and its deliveries too (when an endpoint of the shop takes it), and the relays' NOTIFY.
@functools.cache
def _pg_reply_sql(limit: int | None, outbox: bool) -> str:
    if not outbox:
        return _PG_REPLY.format(delivery="NULL::jsonb", outbox="") + _with_thread("t.id", limit) + " FROM t, m"
    return (_PG_REPLY.format(delivery=_PG_REPLY_DELIVERY, outbox=_PG_REPLY_OUTBOX) + _with_thread("t.id", limit)
            + f", (SELECT count(pg_notify('{DELIVERY_CHANNEL}', '')) FROM o) AS m_notified FROM t, m")


_REPLY_BIT = DELIVERY_EVENT_BITS[DeliveryEvent.REPLY_CREATED]
_PG_SUBSCRIBED = f"SELECT 1 FROM delivery_endpoints e WHERE e.shop_id = {{shop}} AND e.enabled AND (e.event_mask & {_REPLY_BIT}) <> 0"
_PG_REPLY_DELIVERY = (f"CASE WHEN EXISTS ({_PG_SUBSCRIBED.format(shop='t.shop_id')}) "
                      f"THEN '{json_text(PENDING_DELIVERY)}'::jsonb END")
_PG_REPLY_OUTBOX = (
    ", o AS (INSERT INTO outbox_events (shop_id, type, ticket_id, message_id, data, created_at) "
    "SELECT t.shop_id, 'reply.created', t.id, m.id, jsonb_build_object('shop_id', t.shop_id, 'platform', t.platform, "
    "'conversation_id', t.conversation_id, 'ticket_id', t.id, 'message_id', m.id, 'text', m.text, 'agent_id', "
    "m.agent_id, 'created_at', to_char(m.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), $3 "
    "FROM t, m WHERE m.delivery IS NOT NULL RETURNING id, shop_id), "
    "d AS (INSERT INTO deliveries (event_id, endpoint_id, shop_id, message_id, order_key, status, head, attempts, "
    "next_attempt_at, started_at, created_at) SELECT o.id, e.id, e.shop_id, m.id, t.id, 'pending', "
    f"{PG_HEAD.format(key='t.id')}, 0, $3, $3, $3 "
    f"FROM o, t, m, delivery_endpoints e WHERE e.shop_id = o.shop_id AND e.enabled AND (e.event_mask & {_REPLY_BIT}) <> 0)")

_PG_REPLY = (
    "WITH t AS (UPDATE tickets SET updated_at = $3, lease_expires_at = $4, "
    "first_response_at = coalesce(first_response_at, $3), awaiting_since = NULL, unread = 0 "
    "WHERE id = $1 AND status = 'assigned' AND assigned_agent_id = $2 AND lease_expires_at > $3 "
    f"RETURNING {_TICKET}), "
    f"c AS ({_LAST_AGENT.format(stale='$7')} AND customers.id = (SELECT customer_id FROM t)), "
    "m AS (INSERT INTO messages (ticket_id, shop_id, platform, direction, text, sent_at, received_at, agent_id, "
    "delivery) "
    f"SELECT id, shop_id, platform, 'outbound', $5, $3, $3, $2, {{delivery}} FROM t RETURNING {_MESSAGE}), "
    "e AS (INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) "
    "SELECT t.id, t.shop_id, $3, 'replied', 'agent:' || $2, jsonb_build_object("
    "'message_id', m.id, 'first_response', t.first_response_at = $3, 'lease_expires_at', $6::text) "
    "|| CASE WHEN t.first_response_at = $3 AND t.first_response_due_at IS NOT NULL "
    "THEN jsonb_build_object('within_target', $3 <= t.first_response_due_at) ELSE '{{}}'::jsonb END "
    "FROM t, m){outbox} "
    f"SELECT {_TICKET_T}, m.id AS m_id, m.direction AS m_direction, m.text AS m_text, "
    "m.sent_at AS m_sent_at, m.received_at AS m_received_at, m.order_id AS m_order_id, "
    "m.agent_id AS m_agent_id, m.delivery AS m_delivery, m.kind AS m_kind, m.content AS m_content")


class PostgresTicketStore(SharedTicketStore):
    """One statement, one round trip, per operation where PostgreSQL allows it (docs/design.md measures them)."""

    async def claim(self, *, agent_id: str, shop_id: str, now: datetime, lease_until: datetime,
                    event: dict[str, Any], touch_before: datetime, online_after: datetime,
                    thread: bool = True) -> StoredTicket | None:
        # triage_claim(): agent lock, presence, capacity, SKIP LOCKED pick (holds for others skipped), event, with
        # fresh snapshots inside. thread=False: the claim alone, as bench/queues.py compares it with another
        # queue's dequeue.
        return _stored(await self.db.row(_pg_claim_sql(self._thread_limit if thread else 0), agent_id, shop_id, now,
                                         lease_until, json_text(event), touch_before, online_after))

    async def write_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any],
                         event: tuple[str, dict[str, Any]], thread: bool = True) -> StoredTicket | None:
        return _stored(await self.db.row(_pg_held_write_sql(tuple(values), self._thread_limit if thread else 0),
                                         ticket_id, agent_id, now,
                                         event[0], json_text(event[1]), *values.values()))

    async def reply(self, *, ticket_id: str, agent_id: str, now: datetime, lease_until: datetime,
                    text: str, outbox: bool = True) -> tuple[StoredTicket, Record] | None:
        row = await self.db.row(_pg_reply_sql(self._thread_limit, outbox), ticket_id, agent_id, now, lease_until, text,
                                lease_until.isoformat(), now - timedelta(seconds=LAST_AGENT_SLACK_SECONDS))
        if row is None:
            return None
        message = {k[2:]: row.pop(k) for k in list(row) if k.startswith("m_")}
        message.pop("notified", None)
        message["triage"] = None
        for name in ("delivery", "content"):
            if isinstance(message[name], str):
                message[name] = json.loads(message[name])
        held = _stored(row)
        assert held is not None
        return held, message


def store_for(db: Driver, *, thread_page: int | None = None) -> TicketStore:
    """The ticket store for a driver: PostgreSQL's own, or the shared one."""
    return PostgresTicketStore(db, thread_page=thread_page) if db.postgres \
        else SharedTicketStore(db, thread_page=thread_page)


async def session_store(session: Session) -> TicketStore:
    """The ticket store on a session's connection, inside the session's transaction: its writes commit or roll
    back with the session's (an agent deactivated and the tickets it held handed back, together)."""
    connection = await session.connection()
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        # SQLAlchemy's asyncpg adapter opens the transaction at its first statement: open it before ours.
        await connection.exec_driver_sql("SELECT 1")
    raw = await connection.get_raw_connection()
    return store_for(joined(raw.driver_connection, postgres=postgres))


@asynccontextmanager
async def claim_store(drivers: DriverConnections) -> AsyncIterator[TicketStore]:
    """A ticket store on one pooled driver connection, for one request."""
    async with driver(drivers) as db:
        yield store_for(db, thread_page=drivers.thread_page)
