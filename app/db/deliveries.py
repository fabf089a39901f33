"""The delivery store: shops' delivery endpoints, the transactional outbox, deliveries and their attempts.

Same shape as the ticket store (app/db/claims.py): SharedDeliveryStore writes each statement once for both
databases; PostgresDeliveryStore replaces only what a PostgreSQL feature earns: the relay's pick walks the
endpoints with pending heads and takes each one's due ones with FOR UPDATE SKIP LOCKED (SQLite's one write lock
already serialises the pick), an event and its deliveries are one statement, a batch of attempts is recorded with
arrays. Wake-ups (NOTIFY) and the conversations' locks (advisory) are the driver's (Driver.notify, Driver.lock_keys).

A conversation's reply.created deliveries to an endpoint form a line: only its head (`head`, migration 0014) may
be picked, and the next one becomes the head when the head is delivered or failed, so its replies go out in
order, one at a time. Events without an order are always heads. Whoever writes a delivery of a line, records its
head's end or resends it first takes the conversation's lock (`_lock_orders`; SQLite: the write lock), then reads
with a fresh snapshot: so no line is left without a head, nor given two. A delivery is picked when it is a pending
head, due, not held by a live relay, its endpoint enabled and with room in the picking process.
"""

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from app.db.driver import Driver, Record, decoded, driver, json_text, placeholders
from app.db.session import DriverConnections
from app.domain import DELIVERY_EVENT_BITS, DeliveryEvent, DeliveryStatus

# The channel relays LISTEN on; the payload is empty (a relay looks at the table when woken).
DELIVERY_CHANNEL = "triage_delivery"
# The namespace of the conversations' locks (Driver.lock_keys) that whoever writes a line's head takes first.
_ORDER_LOCKS = "triage_delivery_order"
PENDING_DELIVERY = {"status": DeliveryStatus.PENDING.value, "attempts": 0}

ENDPOINT = ("id, shop_id, url, event_mask, description, secret, previous_secret, previous_valid_until, enabled, "
            "disabled_reason, created_at, updated_at")
_DELIVERY = ("d.id, d.event_id, d.endpoint_id, d.shop_id, d.message_id, d.status, d.attempts, d.next_attempt_at, "
             "d.last_status, d.last_error, d.started_at, d.created_at, d.delivered_at, o.type, o.ticket_id")
_SUBSCRIBED = "shop_id = $1 AND enabled AND (event_mask & $2) <> 0"
EVENT_INSERT = ("INSERT INTO outbox_events (shop_id, type, ticket_id, message_id, data, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id")
# One delivery per enabled endpoint subscribed to the event's type; reply.created is ordered by its ticket, and
# `{head}` says whether it is the head of its line (SQLite: the write lock is held, a plain read will do).
DELIVERIES_INSERT = (
    "INSERT INTO deliveries (event_id, endpoint_id, shop_id, message_id, order_key, status, head, attempts, "
    "next_attempt_at, started_at, created_at) "
    "SELECT o.id, e.id, e.shop_id, o.message_id, CASE WHEN o.type = 'reply.created' THEN o.ticket_id END, "
    "'pending', {head}, 0, o.created_at, o.created_at, o.created_at FROM outbox_events o "
    "JOIN delivery_endpoints e ON e.shop_id = o.shop_id AND e.enabled AND (e.event_mask & $2) <> 0 "
    "WHERE o.id = $1")
_SQLITE_HEAD = ("(o.type <> 'reply.created' OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.endpoint_id = e.id "
                "AND p.order_key = o.ticket_id AND p.status = 'pending'))")
# Pending heads of enabled endpoints; `{busy}` names the endpoints the picking process has no room for.
_READY = ("d.status = 'pending' AND d.head AND {busy} "
          "AND EXISTS (SELECT 1 FROM delivery_endpoints e WHERE e.id = d.endpoint_id AND e.enabled)")
_DUE = "d.next_attempt_at <= $1 AND (d.locked_until IS NULL OR d.locked_until <= $1)"
_CLAIM = ("UPDATE deliveries SET locked_until = $2, locked_by = $3 WHERE id IN (SELECT d.id FROM deliveries d "
          f"WHERE {_DUE} AND {{ready}} ORDER BY d.next_attempt_at, d.id LIMIT $5) RETURNING id")
_CLAIMED_COLUMNS = ("d.id, d.endpoint_id, d.shop_id, d.attempts, d.started_at, d.message_id, d.order_key, "
                    "o.id AS event_id, o.type, o.data, o.created_at, e.url, e.secret, e.previous_secret, "
                    "e.previous_valid_until")
_CLAIMED = (f"SELECT {_CLAIMED_COLUMNS} FROM deliveries d "
            "JOIN outbox_events o ON o.id = d.event_id JOIN delivery_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.id IN ({ids}) ORDER BY d.id")
# When the relay should look next: the earliest due time among heads it could pick but for the time.
_NEXT_DUE = ("SELECT min(CASE WHEN d.locked_until IS NOT NULL AND d.locked_until > d.next_attempt_at "
             "THEN d.locked_until ELSE d.next_attempt_at END) AS due FROM deliveries d WHERE {ready}")
# An attempt's outcome, written only while this relay holds the delivery.
_RECORD = ("UPDATE deliveries SET status = $3, attempts = attempts + 1, next_attempt_at = $4, last_status = $5, "
           "last_error = $6, delivered_at = $7, locked_until = NULL, locked_by = NULL "
           "WHERE id = $1 AND locked_by = $2 RETURNING id, endpoint_id, order_key, message_id, status")
# The attempt happened even when another relay took the delivery over meanwhile; not when the delivery was deleted.
_ATTEMPT = ("INSERT INTO delivery_attempts (delivery_id, at, status_code, error, duration_ms) "
            "SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = $1)")
# Each done line's (endpoint, conversation) earliest pending delivery becomes its head (ix_deliveries_order finds it).
_PROMOTE = ("UPDATE deliveries SET head = true FROM {lines} WHERE deliveries.id = (SELECT min(p.id) FROM deliveries p "
            "WHERE p.endpoint_id = l.endpoint_id AND p.order_key = l.order_key AND p.status = 'pending')")
_SUMMARY_ROWS = ("SELECT message_id, status, attempts, last_error FROM deliveries WHERE message_id IN ({ids}) "
                 "ORDER BY message_id, id")


def _endpoint(row: Record | None) -> Record | None:
    return None if row is None else decoded(row)


def message_delivery(rows: Sequence[Record]) -> dict[str, Any] | None:
    """A message's delivery over its endpoints: pending while any is, failed if any failed, else delivered."""
    if not rows:
        return None
    statuses = {r["status"] for r in rows}
    status = next(s for s in (DeliveryStatus.PENDING, DeliveryStatus.FAILED, DeliveryStatus.DELIVERED)
                  if s in statuses)
    summary: dict[str, Any] = {"status": status.value, "attempts": sum(r["attempts"] for r in rows)}
    errors = [r["last_error"] for r in rows if r["last_error"] and r["status"] != DeliveryStatus.DELIVERED]
    if errors:
        summary["last_error"] = errors[-1]
    return summary


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt of a delivery and the delivery's state after it."""

    delivery_id: int
    order_key: str | None
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    status: str  # DeliveryStatus
    next_attempt_at: datetime


class DeliveryStore(Protocol):
    """The seam of the delivery aggregate: endpoints, outbox events and their deliveries with attempts.

    Each operation is atomic on its own; `transaction()` joins several (nested in an open one)."""

    def transaction(self) -> AbstractAsyncContextManager[None]: ...
    async def create_endpoint(self, values: dict[str, Any]) -> Record: ...
    async def endpoints(self, *, shop_id: str) -> list[Record]: ...
    async def endpoint(self, *, shop_id: str, endpoint_id: str) -> Record | None: ...
    async def update_endpoint(self, *, shop_id: str, endpoint_id: str, values: dict[str, Any]) -> Record | None: ...
    async def delete_endpoint(self, *, shop_id: str, endpoint_id: str) -> bool: ...
    async def enqueue(self, *, shop_id: str, event: str, ticket_id: str | None, message_id: int | None,
                      data: dict[str, Any], now: datetime) -> int: ...
    async def enqueue_all(self, events: Sequence["OutboxEvent"], *, now: datetime) -> int: ...
    async def claim(self, *, now: datetime, lock_until: datetime, token: str, rooms: Mapping[str, int], room: int,
                    limit: int) -> list[Record]: ...
    async def record(self, *, token: str, outcomes: Sequence[Outcome], disable: Sequence[tuple[str, str]],
                     now: datetime) -> list[Record]: ...
    async def disable_endpoint(self, *, endpoint_id: str, reason: str, now: datetime) -> None: ...
    async def next_due(self, *, busy: Sequence[str]) -> datetime | None: ...
    async def deliveries(self, *, shop_id: str, status: str | None, endpoint_id: str | None, before: int | None,
                         limit: int) -> list[Record]: ...
    async def delivery(self, *, shop_id: str, delivery_id: int) -> Record | None: ...
    async def attempts(self, *, delivery_id: int) -> list[Record]: ...
    async def retry(self, *, shop_id: str, delivery_id: int, now: datetime) -> Record | None: ...
    async def oldest_pending(self) -> list[Record]: ...
    async def notify(self) -> None: ...


class SharedDeliveryStore:
    """The delivery store written once: every statement runs on both databases."""

    def __init__(self, db: Driver) -> None:
        self.db = db

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self.db.transaction()

    async def create_endpoint(self, values: dict[str, Any]) -> Record:
        """Store a new endpoint (`values` has every column)."""
        names = ENDPOINT.split(", ")
        row = await self.db.row(f"INSERT INTO delivery_endpoints ({ENDPOINT}) VALUES ({placeholders(1, len(names))}) "
                                f"RETURNING {ENDPOINT}", *(values[n] for n in names))
        return decoded(row or {})

    async def endpoints(self, *, shop_id: str) -> list[Record]:
        """The shop's endpoints, oldest first."""
        rows = await self.db.rows(f"SELECT {ENDPOINT} FROM delivery_endpoints WHERE shop_id = $1 "
                                  "ORDER BY created_at, id", shop_id)
        return [decoded(r) for r in rows]

    async def endpoint(self, *, shop_id: str, endpoint_id: str) -> Record | None:
        """One endpoint of the shop."""
        return _endpoint(await self.db.row(f"SELECT {ENDPOINT} FROM delivery_endpoints WHERE id = $1 AND shop_id = $2",
                                           endpoint_id, shop_id))

    async def update_endpoint(self, *, shop_id: str, endpoint_id: str, values: dict[str, Any]) -> Record | None:
        """Set `values` on the shop's endpoint; None when it has none of that id."""
        assignments = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(values))
        return _endpoint(await self.db.row(
            f"UPDATE delivery_endpoints SET {assignments} WHERE id = $1 AND shop_id = $2 RETURNING {ENDPOINT}",
            endpoint_id, shop_id, *values.values()))

    async def delete_endpoint(self, *, shop_id: str, endpoint_id: str) -> bool:
        """Remove the endpoint with its deliveries; False when the shop has none of that id."""
        row = await self.db.row("DELETE FROM delivery_endpoints WHERE id = $1 AND shop_id = $2 RETURNING id",
                                endpoint_id, shop_id)
        return row is not None

    async def enqueue(self, *, shop_id: str, event: str, ticket_id: str | None, message_id: int | None,
                      data: dict[str, Any], now: datetime) -> int:
        """In the caller's transaction: the event and a delivery per subscribed endpoint; how many deliveries
        (0, and no event row, when no endpoint takes it)."""
        return await self.enqueue_all([OutboxEvent(shop_id, event, ticket_id, message_id, data)], now=now)

    async def enqueue_all(self, events: Sequence["OutboxEvent"], *, now: datetime) -> int:
        """`enqueue` for each event, in order, in the caller's transaction; how many deliveries in all."""
        _distinct_lines(events)
        created = 0
        subscribed: dict[tuple[str, int], bool] = {}  # asked once per shop and event type: a group has a few
        async with self.transaction():
            for e in events:
                bit = DELIVERY_EVENT_BITS[e.event]
                if (e.shop_id, bit) not in subscribed:
                    found = await self.db.row(f"SELECT 1 AS found FROM delivery_endpoints WHERE {_SUBSCRIBED} LIMIT 1",
                                              e.shop_id, bit)
                    subscribed[e.shop_id, bit] = found is not None
                if not subscribed[e.shop_id, bit]:
                    continue
                row = await self.db.row(EVENT_INSERT, e.shop_id, e.event, e.ticket_id, e.message_id,
                                        json_text(e.data), now)
                assert row is not None
                made = await self.db.rows(DELIVERIES_INSERT.format(head=_SQLITE_HEAD) + " RETURNING id", row["id"],
                                          bit)
                if e.message_id is not None and e.event == DeliveryEvent.REPLY_CREATED:
                    await self.db.execute("UPDATE messages SET delivery = $2 WHERE id = $1", e.message_id,
                                          json_text(PENDING_DELIVERY))
                created += len(made)
        return created

    def _busy(self, busy: Sequence[str], n: int) -> tuple[str, Any]:
        """Leaves out the `busy` endpoints, passed as parameter ${n} (an array on PostgreSQL, JSON text on SQLite)."""
        return f"d.endpoint_id {self.db.not_in_texts.format(n=n)}", list(busy)

    async def claim(self, *, now: datetime, lock_until: datetime, token: str, rooms: Mapping[str, int], room: int,
                    limit: int) -> list[Record]:
        """Hold up to `limit` due heads for this relay until `lock_until`, up to `room` of each endpoint but those
        `rooms` names (with their room in this process); each with its event and its endpoint's url and secrets."""
        # SQLite: one pick in due order over every endpoint with any room; the relay keeps what exceeds an
        # endpoint's room until it has room (the pick is one statement under the write lock).
        condition, busy_param = self._busy([e for e, n in rooms.items() if n <= 0], 4)
        ids = [r["id"] for r in await self.db.rows(_CLAIM.format(ready=_READY.format(busy=condition)), now,
                                                    lock_until, token, busy_param, limit)]
        if not ids:
            return []
        rows = await self.db.rows(_CLAIMED.format(ids=placeholders(1, len(ids))), *ids)
        return [decoded(r) for r in rows]

    async def record(self, *, token: str, outcomes: Sequence[Outcome], disable: Sequence[tuple[str, str]],
                     now: datetime) -> list[Record]:
        """In one transaction: every attempt, the new state of each delivery this relay still held (those are
        returned), the next delivery of each line whose head is done made its head, the messages' delivery
        summaries, and the endpoints in `disable` (id, reason) disabled."""
        async with self.transaction():
            await self._lock_orders(sorted({o.order_key for o in outcomes if o.order_key is not None}))
            recorded = await self._record(token, outcomes)
            done = sorted({(r["endpoint_id"], r["order_key"]) for r in recorded
                           if r["order_key"] is not None and r["status"] != DeliveryStatus.PENDING})
            if done:
                await self._promote(done)
            messages = sorted({r["message_id"] for r in recorded if r["message_id"] is not None})
            if messages:
                await self._sum_up_messages(messages)
            for endpoint_id, reason in disable:
                await self.disable_endpoint(endpoint_id=endpoint_id, reason=reason, now=now)
        return recorded

    async def _lock_orders(self, keys: Sequence[str]) -> None:
        """Hold the conversations' locks to the end of the transaction (Driver.lock_keys: advisory locks on
        PostgreSQL, where without them the race in tests/db/test_delivery_store.py fails; SQLite's write lock
        already serialises the writers of a line)."""
        await self.db.lock_keys(_ORDER_LOCKS, keys)

    async def _record(self, token: str, outcomes: Sequence[Outcome]) -> list[Record]:
        recorded = []
        for o in outcomes:
            await self.db.execute(_ATTEMPT, o.delivery_id, o.at, o.status_code, o.error, o.duration_ms)
            row = await self.db.row(_RECORD, o.delivery_id, token, o.status, o.next_attempt_at, o.status_code, o.error,
                                    o.at if o.status == DeliveryStatus.DELIVERED else None)
            if row is not None:
                recorded.append(row)
        return recorded

    async def _promote(self, lines: Sequence[tuple[str, str]]) -> None:
        """One statement for the batch's lines, on either database (`Driver.listed`)."""
        await self.db.execute(_PROMOTE.format(lines=self.db.listed("l", [("endpoint_id", 1, "text"),
                                                                         ("order_key", 2, "text")])),
                              [e for e, _ in lines], [k for _, k in lines])

    async def _sum_up_messages(self, message_ids: Sequence[int]) -> None:
        rows = await self.db.rows(_SUMMARY_ROWS.format(ids=placeholders(1, len(message_ids))), *message_ids)
        by_message: dict[int, list[Record]] = {}
        for row in rows:
            by_message.setdefault(row["message_id"], []).append(row)
        await self._write_summaries([(m, message_delivery(by_message.get(m, []))) for m in message_ids])

    async def _write_summaries(self, summaries: Sequence[tuple[int, dict[str, Any] | None]]) -> None:
        """One statement for the batch's messages, on either database (`Driver.listed`)."""
        summed = self.db.listed("s", [("id", 1, "bigint"), ("delivery", 2, "jsonb")])
        await self.db.execute(f"UPDATE messages SET delivery = s.delivery FROM {summed} WHERE messages.id = s.id",
                              [m for m, _ in summaries], [None if s is None else json_text(s) for _, s in summaries])

    async def disable_endpoint(self, *, endpoint_id: str, reason: str, now: datetime) -> None:
        """Stop delivering to the endpoint (its receiver answered 410 Gone); PATCH enabled=true resumes."""
        await self.db.execute("UPDATE delivery_endpoints SET enabled = $2, disabled_reason = $3, updated_at = $4 "
                              "WHERE id = $1", endpoint_id, False, reason, now)

    async def next_due(self, *, busy: Sequence[str]) -> datetime | None:
        """When the earliest head this relay could pick becomes due (or its holder's lock runs out)."""
        condition, busy_param = self._busy(busy, 1)
        row = await self.db.row(_NEXT_DUE.format(ready=_READY.format(busy=condition)), busy_param)
        due = None if row is None else row["due"]
        if isinstance(due, str):  # SQLite's text
            return decoded({"at": due})["at"]  # type: ignore[no-any-return]
        return due  # type: ignore[no-any-return]

    async def deliveries(self, *, shop_id: str, status: str | None, endpoint_id: str | None, before: int | None,
                         limit: int) -> list[Record]:
        """A page of the shop's deliveries, newest first, by status and endpoint when given."""
        conditions, params = ["d.shop_id = $1"], [shop_id]
        for column, value in (("d.status", status), ("d.endpoint_id", endpoint_id)):
            if value is not None:
                params.append(value)
                conditions.append(f"{column} = ${len(params)}")
        if before is not None:
            params.append(before)
            conditions.append(f"d.id < ${len(params)}")
        params.append(limit)
        rows = await self.db.rows(f"SELECT {_DELIVERY} FROM deliveries d JOIN outbox_events o ON o.id = d.event_id "
                                  f"WHERE {' AND '.join(conditions)} ORDER BY d.id DESC LIMIT ${len(params)}", *params)
        return [decoded(r) for r in rows]

    async def delivery(self, *, shop_id: str, delivery_id: int) -> Record | None:
        """One delivery of the shop, with its event's data."""
        row = await self.db.row(f"SELECT {_DELIVERY}, o.data FROM deliveries d JOIN outbox_events o "
                                "ON o.id = d.event_id WHERE d.id = $1 AND d.shop_id = $2", delivery_id, shop_id)
        return None if row is None else decoded(row)

    async def attempts(self, *, delivery_id: int) -> list[Record]:
        """Every attempt of the delivery, oldest first."""
        rows = await self.db.rows("SELECT at, status_code, error, duration_ms FROM delivery_attempts "
                                  "WHERE delivery_id = $1 ORDER BY id", delivery_id)
        return [decoded(r) for r in rows]

    async def retry(self, *, shop_id: str, delivery_id: int, now: datetime) -> Record | None:
        """A failed delivery pending again, due now, with a new round of TRIAGE_DELIVERY_MAX_HOURS; None when the
        shop has no failed delivery of that id."""
        async with self.transaction():
            found = await self.db.row("SELECT order_key FROM deliveries WHERE id = $1 AND shop_id = $2 "
                                      "AND status = 'failed'", delivery_id, shop_id)
            if found is None:
                return None
            if found["order_key"] is not None:
                await self._lock_orders([found["order_key"]])
            # The head of its line again unless a delivery of its conversation is pending; then it goes next.
            row = await self.db.row(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $3, started_at = $3, locked_until = NULL, "
                "locked_by = NULL, head = (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p "
                "WHERE p.endpoint_id = deliveries.endpoint_id AND p.order_key = deliveries.order_key "
                "AND p.status = 'pending')) WHERE id = $1 AND shop_id = $2 AND status = 'failed' "
                "RETURNING id, message_id", delivery_id, shop_id, now)
            if row is not None and row["message_id"] is not None:
                await self._sum_up_messages([row["message_id"]])
        return row

    async def oldest_pending(self) -> list[Record]:
        """Per endpoint, when its oldest pending delivery was created."""
        rows = await self.db.rows("SELECT d.endpoint_id, e.shop_id, min(d.created_at) AS created_at FROM deliveries d "
                                  "JOIN delivery_endpoints e ON e.id = d.endpoint_id WHERE d.status = 'pending' "
                                  "GROUP BY d.endpoint_id, e.shop_id")
        return [decoded(r) for r in rows]

    async def notify(self) -> None:
        """Wake the relays of other processes at commit (Driver.notify: SQLite's look at their next due time)."""
        await self.db.notify(DELIVERY_CHANNEL, [""])


# Whether a new delivery to endpoint `e` is the head of its line, on PostgreSQL: triage_delivery_head() takes the
# conversation's lock and reads with a fresh snapshot (migration 0014).
PG_HEAD = "triage_delivery_head(e.id, {key})"
_ORDER_KEY = "CASE WHEN o.type = 'reply.created' THEN o.ticket_id END"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event to enqueue: its shop, type (a DeliveryEvent), ticket, message (reply.created) and payload."""

    shop_id: str
    event: str
    ticket_id: str | None
    message_id: int | None
    data: dict[str, Any]


def _distinct_lines(events: Sequence[OutboxEvent]) -> None:
    """One call enqueues at most one reply.created of a conversation: a statement does not see its own deliveries,
    so a second one of the same line would be made a head beside the first."""
    lines = [e.ticket_id for e in events if e.event == DeliveryEvent.REPLY_CREATED]
    if len(lines) != len(set(lines)):
        raise ValueError("one enqueue_all takes at most one reply.created event per ticket")


def _bit_of(column: str) -> str:
    """The subscription bit of the event type in `column` (DELIVERY_EVENT_BITS), as SQL."""
    cases = " ".join(f"WHEN '{event}' THEN {bit}" for event, bit in DELIVERY_EVENT_BITS.items())
    return f"(CASE {column} {cases} END)"


@functools.cache
def _pg_enqueue_sql() -> str:
    # Each event only when an endpoint takes it (ids in the order given), its deliveries, the replies' state and the
    # wake-up: one statement.
    return ("WITH x AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) "
            "WITH ORDINALITY AS x(shop_id, type, ticket_id, message_id, data, n)), "
            "o AS (INSERT INTO outbox_events (shop_id, type, ticket_id, message_id, data, created_at) "
            "SELECT x.shop_id, x.type, x.ticket_id, x.message_id, x.data::jsonb, $6::timestamptz FROM x WHERE EXISTS "
            "(SELECT 1 FROM delivery_endpoints p WHERE p.shop_id = x.shop_id AND p.enabled "
            f"AND (p.event_mask & {_bit_of('x.type')}) <> 0) ORDER BY x.n RETURNING *), "
            "d AS (INSERT INTO deliveries (event_id, endpoint_id, shop_id, message_id, order_key, status, head, "
            "attempts, next_attempt_at, started_at, created_at) SELECT o.id, e.id, e.shop_id, o.message_id, "
            f"{_ORDER_KEY}, 'pending', {PG_HEAD.format(key=_ORDER_KEY)}, 0, o.created_at, "
            "o.created_at, o.created_at FROM o JOIN delivery_endpoints e ON e.shop_id = o.shop_id AND e.enabled "
            f"AND (e.event_mask & {_bit_of('o.type')}) <> 0 RETURNING id), "
            "m AS (UPDATE messages SET delivery = $7::jsonb WHERE id IN (SELECT o.message_id FROM o "
            "WHERE o.type = 'reply.created' AND o.message_id IS NOT NULL)) "
            f"SELECT (SELECT count(*) FROM d) AS created, (SELECT count(pg_notify('{DELIVERY_CHANNEL}', '')) FROM o) "
            "AS notified")


# The pick: the endpoints with pending heads, one after another along ix_deliveries_ready (a skip scan: one index
# probe per endpoint, however many deliveries each has waiting), then each enabled one's due heads in due order,
# as many as its room ($5, or its own in $4/$6), skipping those another relay is taking. $7 caps the whole pick.
_PG_CLAIM = (
    "WITH RECURSIVE lines (endpoint_id) AS ("
    "(SELECT d.endpoint_id FROM deliveries d WHERE d.status = 'pending' AND d.head ORDER BY d.endpoint_id LIMIT 1) "
    "UNION ALL SELECT (SELECT d.endpoint_id FROM deliveries d WHERE d.status = 'pending' AND d.head "
    "AND d.endpoint_id > l.endpoint_id ORDER BY d.endpoint_id LIMIT 1) FROM lines l WHERE l.endpoint_id IS NOT NULL), "
    "rooms AS (SELECT l.endpoint_id, coalesce(r.room, $5) AS room FROM lines l "
    "JOIN delivery_endpoints e ON e.id = l.endpoint_id AND e.enabled "
    "LEFT JOIN unnest($4::text[], $6::int[]) AS r (endpoint_id, room) ON r.endpoint_id = l.endpoint_id), "
    "picked AS (SELECT p.id FROM rooms r CROSS JOIN LATERAL (SELECT d.id FROM deliveries d "
    f"WHERE d.endpoint_id = r.endpoint_id AND d.status = 'pending' AND d.head AND {_DUE} "
    "ORDER BY d.next_attempt_at LIMIT r.room FOR UPDATE OF d SKIP LOCKED) p WHERE r.room > 0 LIMIT $7), "
    "held AS (UPDATE deliveries d SET locked_until = $2, locked_by = $3 FROM picked WHERE d.id = picked.id "
    "RETURNING d.*) "
    f"SELECT {_CLAIMED_COLUMNS} FROM held d JOIN outbox_events o ON o.id = d.event_id "
    "JOIN delivery_endpoints e ON e.id = d.endpoint_id ORDER BY d.id")
# A batch of attempts: the attempt rows, and the state of the deliveries this relay still holds.
_PG_RECORD = (
    "WITH r AS (SELECT * FROM unnest($2::bigint[], $3::timestamptz[], $4::int[], $5::text[], $6::int[], $7::text[], "
    "$8::timestamptz[]) AS r (id, at, code, error, duration_ms, status, next_at)), "
    "a AS (INSERT INTO delivery_attempts (delivery_id, at, status_code, error, duration_ms) "
    "SELECT r.id, r.at, r.code, r.error, r.duration_ms FROM r WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = r.id)) "
    "UPDATE deliveries d SET status = r.status, attempts = d.attempts + 1, next_attempt_at = r.next_at, "
    "last_status = r.code, last_error = r.error, delivered_at = CASE WHEN r.status = 'delivered' THEN r.at END, "
    "locked_until = NULL, locked_by = NULL FROM r WHERE d.id = r.id AND d.locked_by = $1 "
    "RETURNING d.id, d.endpoint_id, d.order_key, d.message_id, d.status")


class PostgresDeliveryStore(SharedDeliveryStore):
    """The skip-scan pick with SKIP LOCKED, attempts recorded as arrays, one-statement events (their NOTIFY in it).

    Each method here is one a PostgreSQL feature or bench/delivery.py earns (docs/design.md, "Methods written once
    per database"); the rest is SharedDeliveryStore's."""

    async def enqueue_all(self, events: Sequence["OutboxEvent"], *, now: datetime) -> int:
        """Writable CTEs over unnest() arrays (SQLite has neither): the subscription tests, the events, their
        deliveries with triage_delivery_head() (migration 0014), the replies' delivery state and the NOTIFY are one
        statement, so no endpoint change falls between a test and its insert, and the events of an ingestion group
        (a tier rise on a tenth of bench/ingest.py's messages) are one round trip, not one each."""
        if not events:
            return 0
        _distinct_lines(events)
        columns = list(zip(*((e.shop_id, e.event, e.ticket_id, e.message_id, json_text(e.data)) for e in events),
                           strict=True))
        row = await self.db.row(_pg_enqueue_sql(), *map(list, columns), now, json_text(PENDING_DELIVERY))
        return int(row["created"]) if row is not None else 0

    async def claim(self, *, now: datetime, lock_until: datetime, token: str, rooms: Mapping[str, int], room: int,
                    limit: int) -> list[Record]:
        """FOR UPDATE SKIP LOCKED, so relays of several processes never take one delivery, and the skip scan of
        _PG_CLAIM: 0.3-0.4 ms for a pick where a scan of a 16,000-delivery backlog took 37-40 ms (docs/design.md)."""
        rows = await self.db.rows(_PG_CLAIM, now, lock_until, token, list(rooms), room, list(rooms.values()), limit)
        return [decoded(r) for r in rows]

    async def _record(self, token: str, outcomes: Sequence[Outcome]) -> list[Record]:
        """A writable CTE over unnest() arrays (SQLite has neither): the batch's attempts and states in one statement,
        where the shared one is two statements per attempt. bench/delivery.py measured the shared one on PostgreSQL
        (docs/design.md, "Methods written once per database")."""
        columns = list(zip(*((o.delivery_id, o.at, o.status_code, o.error, o.duration_ms, o.status, o.next_attempt_at)
                             for o in outcomes), strict=True))
        return await self.db.rows(_PG_RECORD, token, *map(list, columns)) if outcomes else []


def delivery_store_for(db: Driver) -> DeliveryStore:
    """The delivery store for a driver: PostgreSQL's own, or the shared one."""
    return PostgresDeliveryStore(db) if db.postgres else SharedDeliveryStore(db)


@asynccontextmanager
async def delivery_store(drivers: DriverConnections) -> AsyncIterator[DeliveryStore]:
    """A delivery store on one pooled driver connection."""
    async with driver(drivers) as db:
        yield delivery_store_for(db)

