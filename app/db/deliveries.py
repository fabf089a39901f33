"""The delivery store: shops' delivery endpoints, the transactional outbox, deliveries and their attempts.

Same shape as the ticket store (app/db/claims.py): SharedDeliveryStore writes each statement once for both
databases; PostgresDeliveryStore replaces only what a PostgreSQL feature earns: the relay's pick takes rows
with FOR UPDATE SKIP LOCKED (SQLite's one write lock already serialises the pick), an event and its
deliveries are one statement, and a new event NOTIFYs the relays of every process.

A delivery is picked when it is pending, due, not held by a live relay, its endpoint enabled and not busy in
the picking process, and (reply.created) no earlier delivery of its conversation to that endpoint is still
pending: a conversation's replies go out in order, one at a time.
"""

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

from app.db.driver import Driver, Record, decoded, driver, json_text, placeholders
from app.db.session import DriverConnections
from app.domain import DELIVERY_EVENT_BITS, DeliveryEvent, DeliveryStatus

# The channel relays LISTEN on; the payload is empty (a relay looks at the table when woken).
DELIVERY_CHANNEL = "triage_delivery"
PENDING_DELIVERY = {"status": DeliveryStatus.PENDING.value, "attempts": 0}

ENDPOINT = ("id, shop_id, url, event_mask, description, secret, previous_secret, previous_valid_until, enabled, "
            "disabled_reason, created_at, updated_at")
_DELIVERY = ("d.id, d.event_id, d.endpoint_id, d.shop_id, d.message_id, d.status, d.attempts, d.next_attempt_at, "
             "d.last_status, d.last_error, d.started_at, d.created_at, d.delivered_at, o.type, o.ticket_id")
_SUBSCRIBED = "shop_id = $1 AND enabled AND (event_mask & $2) <> 0"
EVENT_INSERT = ("INSERT INTO outbox_events (shop_id, type, ticket_id, message_id, data, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id")
# One delivery per enabled endpoint subscribed to the event's type; reply.created is ordered by its ticket.
DELIVERIES_INSERT = (
    "INSERT INTO deliveries (event_id, endpoint_id, shop_id, message_id, order_key, status, attempts, "
    "next_attempt_at, started_at, created_at) "
    "SELECT o.id, e.id, e.shop_id, o.message_id, CASE WHEN o.type = 'reply.created' THEN o.ticket_id END, "
    "'pending', 0, o.created_at, o.created_at, o.created_at FROM outbox_events o "
    "JOIN delivery_endpoints e ON e.shop_id = o.shop_id AND e.enabled AND (e.event_mask & $2) <> 0 "
    "WHERE o.id = $1")
# What the relay may pick but for time, `{busy}` naming the endpoints the picking process has no room for.
_PICKABLE = (
    "d.status = 'pending' AND {busy} AND EXISTS (SELECT 1 FROM delivery_endpoints e WHERE e.id = d.endpoint_id AND e.enabled) "
    "AND (d.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id "
    "AND p.order_key = d.order_key AND p.status = 'pending' AND p.id < d.id))")
_DUE = "d.next_attempt_at <= $1 AND (d.locked_until IS NULL OR d.locked_until <= $1)"
_CLAIM = ("UPDATE deliveries SET locked_until = $2, locked_by = $3 WHERE id IN (SELECT d.id FROM deliveries d "
          f"WHERE {_DUE} AND {{pickable}} ORDER BY d.next_attempt_at, d.id LIMIT $5{{lock}}) RETURNING id")
_CLAIMED = ("SELECT d.id, d.endpoint_id, d.shop_id, d.attempts, d.started_at, d.message_id, o.id AS event_id, o.type, o.data, "
            "o.created_at, e.url, e.secret, e.previous_secret, e.previous_valid_until FROM deliveries d "
            "JOIN outbox_events o ON o.id = d.event_id JOIN delivery_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.id IN ({ids}) ORDER BY d.id")
# When the relay should look next: the earliest due time among deliveries it could pick but for the time.
_NEXT_DUE = ("SELECT min(CASE WHEN d.locked_until IS NOT NULL AND d.locked_until > d.next_attempt_at "
             "THEN d.locked_until ELSE d.next_attempt_at END) AS due FROM deliveries d WHERE {pickable}")


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
    async def claim(self, *, now: datetime, lock_until: datetime, token: str, busy: Sequence[str],
                    limit: int) -> list[Record]: ...
    async def unlock(self, *, ids: Sequence[int], token: str) -> None: ...
    async def record(self, *, delivery_id: int, token: str, at: datetime, outcome: dict[str, Any]) -> Record | None: ...
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
        bit = DELIVERY_EVENT_BITS[event]
        async with self.transaction():
            if await self.db.row(f"SELECT 1 AS found FROM delivery_endpoints WHERE {_SUBSCRIBED} LIMIT 1",
                                 shop_id, bit) is None:
                return 0
            row = await self.db.row(EVENT_INSERT, shop_id, event, ticket_id, message_id, json_text(data), now)
            assert row is not None
            created = await self.db.rows(DELIVERIES_INSERT + " RETURNING id", row["id"], bit)
            if message_id is not None and event == DeliveryEvent.REPLY_CREATED:
                await self.db.execute("UPDATE messages SET delivery = $2 WHERE id = $1", message_id,
                                      json_text(PENDING_DELIVERY))
        return len(created)

    def _busy(self, busy: Sequence[str], n: int) -> tuple[str, Any]:
        # SQLite has no arrays: the busy endpoints travel as one JSON text.
        return f"d.endpoint_id NOT IN (SELECT value FROM json_each(${n}))", json_text(list(busy))

    def _lock(self) -> str:
        return ""  # SQLite: the pick and the update are one statement under the one write lock

    async def claim(self, *, now: datetime, lock_until: datetime, token: str, busy: Sequence[str],
                    limit: int) -> list[Record]:
        """Hold up to `limit` pickable deliveries for this relay until `lock_until`; each with its event and its
        endpoint's url and secrets."""
        condition, busy_param = self._busy(busy, 4)
        sql = _CLAIM.format(pickable=_PICKABLE.format(busy=condition), lock=self._lock())
        ids = [r["id"] for r in await self.db.rows(sql, now, lock_until, token, busy_param, limit)]
        if not ids:
            return []
        rows = await self.db.rows(_CLAIMED.format(ids=placeholders(1, len(ids))), *ids)
        return [decoded(r) for r in rows]

    async def unlock(self, *, ids: Sequence[int], token: str) -> None:
        """Give back deliveries this relay held but will not send now."""
        if ids:
            await self.db.execute(f"UPDATE deliveries SET locked_until = NULL, locked_by = NULL "
                                  f"WHERE locked_by = $1 AND id IN ({placeholders(2, len(ids))})", token, *ids)

    async def record(self, *, delivery_id: int, token: str, at: datetime, outcome: dict[str, Any]) -> Record | None:
        """The attempt, and the delivery's new state if this relay still held it (None otherwise). `outcome`:
        status_code, error, duration_ms, status, next_attempt_at."""
        async with self.transaction():
            await self.db.execute("INSERT INTO delivery_attempts (delivery_id, at, status_code, error, duration_ms) "
                                  "VALUES ($1, $2, $3, $4, $5)", delivery_id, at, outcome["status_code"],
                                  outcome["error"], outcome["duration_ms"])
            delivered = at if outcome["status"] == DeliveryStatus.DELIVERED else None
            row = await self.db.row(
                "UPDATE deliveries SET status = $3, attempts = attempts + 1, next_attempt_at = $4, last_status = $5, "
                "last_error = $6, delivered_at = $7, locked_until = NULL, locked_by = NULL "
                "WHERE id = $1 AND locked_by = $2 RETURNING id, message_id, attempts, status",
                delivery_id, token, outcome["status"], outcome["next_attempt_at"], outcome["status_code"],
                outcome["error"], delivered)
            if row is not None and row["message_id"] is not None:
                await self._sum_up_message(row["message_id"])
        return row

    async def _sum_up_message(self, message_id: int) -> None:
        rows = await self.db.rows("SELECT status, attempts, last_error FROM deliveries WHERE message_id = $1 "
                                  "ORDER BY id", message_id)
        summary = message_delivery(rows)
        await self.db.execute("UPDATE messages SET delivery = $2 WHERE id = $1", message_id,
                              None if summary is None else json_text(summary))

    async def disable_endpoint(self, *, endpoint_id: str, reason: str, now: datetime) -> None:
        """Stop delivering to the endpoint (its receiver answered 410 Gone); PATCH enabled=true resumes."""
        await self.db.execute("UPDATE delivery_endpoints SET enabled = $2, disabled_reason = $3, updated_at = $4 "
                              "WHERE id = $1", endpoint_id, False, reason, now)

    async def next_due(self, *, busy: Sequence[str]) -> datetime | None:
        """When the earliest delivery this relay could pick becomes due (or its holder's lock runs out)."""
        condition, busy_param = self._busy(busy, 1)
        row = await self.db.row(_NEXT_DUE.format(pickable=_PICKABLE.format(busy=condition)), busy_param)
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
            row = await self.db.row(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $3, started_at = $3, locked_until = NULL, "
                "locked_by = NULL WHERE id = $1 AND shop_id = $2 AND status = 'failed' RETURNING id, message_id",
                delivery_id, shop_id, now)
            if row is not None and row["message_id"] is not None:
                await self._sum_up_message(row["message_id"])
        return row

    async def oldest_pending(self) -> list[Record]:
        """Per endpoint, when its oldest pending delivery was created."""
        rows = await self.db.rows("SELECT d.endpoint_id, e.shop_id, min(d.created_at) AS created_at FROM deliveries d "
                                  "JOIN delivery_endpoints e ON e.id = d.endpoint_id WHERE d.status = 'pending' "
                                  "GROUP BY d.endpoint_id, e.shop_id")
        return [decoded(r) for r in rows]

    async def notify(self) -> None:
        """Wake the relays of other processes at commit; SQLite has no NOTIFY (they look at their next due time)."""
        return None


@functools.cache
def _pg_enqueue_sql() -> str:
    # The event only when an endpoint takes it, its deliveries, the message's state and the wake-up: one statement.
    return ("WITH o AS (INSERT INTO outbox_events (shop_id, type, ticket_id, message_id, data, created_at) "
            "SELECT $1::text, $3::text, $4::text, $5::bigint, $6::jsonb, $7::timestamptz WHERE EXISTS "
            f"(SELECT 1 FROM delivery_endpoints WHERE {_SUBSCRIBED}) RETURNING *), "
            "d AS (INSERT INTO deliveries (event_id, endpoint_id, shop_id, message_id, order_key, status, attempts, "
            "next_attempt_at, started_at, created_at) SELECT o.id, e.id, e.shop_id, o.message_id, "
            "CASE WHEN o.type = 'reply.created' THEN o.ticket_id END, 'pending', 0, o.created_at, o.created_at, "
            "o.created_at FROM o JOIN delivery_endpoints e ON e.shop_id = o.shop_id AND e.enabled "
            "AND (e.event_mask & $2) <> 0 RETURNING id) "
            f"SELECT (SELECT count(*) FROM d) AS created, (SELECT count(pg_notify('{DELIVERY_CHANNEL}', '')) FROM o) "
            "AS notified")


class PostgresDeliveryStore(SharedDeliveryStore):
    """SKIP LOCKED picks, one-statement events and NOTIFY wake-ups."""

    def _busy(self, busy: Sequence[str], n: int) -> tuple[str, Any]:
        return f"d.endpoint_id <> ALL(${n}::text[])", list(busy)

    def _lock(self) -> str:
        # Relays of other processes skip what this one is picking instead of waiting for it.
        return " FOR UPDATE OF d SKIP LOCKED"

    async def enqueue(self, *, shop_id: str, event: str, ticket_id: str | None, message_id: int | None,
                      data: dict[str, Any], now: datetime) -> int:
        row = await self.db.row(_pg_enqueue_sql(), shop_id, DELIVERY_EVENT_BITS[event], event, ticket_id, message_id,
                                json_text(data), now)
        created = int(row["created"]) if row is not None else 0
        if created and message_id is not None and event == DeliveryEvent.REPLY_CREATED:
            await self.db.execute("UPDATE messages SET delivery = $2::jsonb WHERE id = $1", message_id,
                                  json_text(PENDING_DELIVERY))
        return created

    async def notify(self) -> None:
        await self.db.execute(f"SELECT pg_notify('{DELIVERY_CHANNEL}', '')")


def delivery_store_for(db: Driver) -> DeliveryStore:
    """The delivery store for a driver: PostgreSQL's own, or the shared one."""
    return PostgresDeliveryStore(db) if db.postgres else SharedDeliveryStore(db)


@asynccontextmanager
async def delivery_store(drivers: DriverConnections) -> AsyncIterator[DeliveryStore]:
    """A delivery store on one pooled driver connection."""
    async with driver(drivers) as db:
        yield delivery_store_for(db)

