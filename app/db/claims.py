"""The agent hot path on the bare driver: claim, the holder's writes with their events, threads, idempotency keys.

Every agent console runs claim -> reply -> resolve in a loop, so these run hundreds of times a second.
Through the async ORM each transaction costs some 300 µs of CPU more than the SQL (BENCHMARKS.md), and
each statement is a round trip. So on PostgreSQL each operation is one statement where it can be: a claim is
one call of `triage_claim()` (migrations 0004 and 0006: agent lock, capacity, SKIP LOCKED pick, event, one round
trip with fresh snapshots inside), and a holder's write changes the ticket and appends its event in one
statement with CTEs. SQLite has no round trips to save; there each operation is a short BEGIN IMMEDIATE
transaction. Column layouts follow app/db/models.py, as in app/db/ingest.py.
"""

import functools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from app.db.ingest import TICKET_COLUMNS, decoded_json, from_sqlite_ticket, json_text, sqlite_time
from app.db.session import DriverConnections
from app.domain import EventKind

Record = dict[str, Any]

_TICKET = ", ".join(TICKET_COLUMNS)
_TICKET_T = ", ".join(f"t.{c}" for c in TICKET_COLUMNS)
_TICKET_C = ", ".join(f"c.{c}" for c in TICKET_COLUMNS)
# Where a statement already read the ticket's thread (triage_thread(), migration 0004), the ticket carries it.
THREAD = "_thread"
_WITH_THREAD = {column: f", triage_thread({column}) AS thread" for column in ("id", "c.id", "t.id")}
# A message with the ticket's customer (the view shows the customer beside the thread).
_THREAD = ("m.id, m.ticket_id, m.direction, m.text, m.sent_at, m.received_at, m.order_id, m.agent_id, m.triage, "
           "c.external_id AS customer_external_id, c.platform AS customer_platform, c.nick AS customer_nick, "
           "c.vip_level AS customer_vip_level, c.contacts AS customer_contacts")
_THREAD_FROM = "messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id"
# The holder check makes "has an agent" the same as "assigned"; these reads name only the agent, the leading
# column of ix_tickets_held.
_HELD_COUNT = "SELECT count(*) FROM tickets WHERE assigned_agent_id = {agent}"
CLAIM_ORDER_SQL = "tier, priority DESC, opened_at, opened_seq"


class ClaimStore(Protocol):
    """The operations of the agent hot path; each is atomic on its own."""

    def transaction(self) -> Any: ...
    async def claim(self, *, agent_id: str, shop_id: str, now: datetime, lease_until: datetime,
                    event: dict[str, Any]) -> Record | None: ...
    async def agent_state(self, *, agent_id: str) -> Record | None: ...
    async def write_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any],
                         event: tuple[str, dict[str, Any]]) -> Record | None: ...
    async def reply(self, *, ticket_id: str, agent_id: str, now: datetime, lease_until: datetime,
                    text: str) -> tuple[Record, Record] | None: ...
    async def ticket(self, *, ticket_id: str) -> Record | None: ...
    async def agent_tickets(self, *, agent_id: str) -> list[Record]: ...
    async def served_queues(self, *, agent_id: str) -> list[str]: ...
    async def queue_exists(self, *, shop_id: str, name: str) -> bool: ...
    async def threads(self, ticket_ids: Sequence[str]) -> dict[str, list[Record]]: ...
    async def reserve_key(self, *, agent_id: str, key: str, request_hash: str, now: datetime) -> bool: ...
    async def key_record(self, *, agent_id: str, key: str) -> Record | None: ...
    async def store_answer(self, *, agent_id: str, key: str, status_code: int, response: dict[str, Any]) -> None: ...
    async def notify(self, channel: str, shop_ids: Sequence[str]) -> None: ...


def _thread_message(message: dict[str, Any]) -> Record:
    message["sent_at"] = datetime.fromisoformat(message["sent_at"])
    message["received_at"] = datetime.fromisoformat(message["received_at"])
    return message


def reply_event(*, message_id: int, ticket: Record, now: datetime, lease_until: datetime) -> dict[str, Any]:
    """The data of a `replied` event: whether it stopped the first-response clock, and within the target."""
    first = ticket["first_response_at"] == now
    data: dict[str, Any] = {"message_id": message_id, "first_response": first,
                            "lease_expires_at": lease_until.isoformat()}
    if first and ticket["first_response_due_at"] is not None:
        data["within_target"] = now <= ticket["first_response_due_at"]
    return data


@functools.cache
def _held_write_sql(names: tuple[str, ...], thread: bool) -> str:
    # A lease that ran out is not a hold, even before the reaper has put the ticket back.
    assignments = ", ".join(f"{name} = ${i + 6}" for i, name in enumerate(names))
    return (f"WITH t AS (UPDATE tickets SET updated_at = $3, {assignments} WHERE id = $1 AND status = 'assigned' "
            f"AND assigned_agent_id = $2 AND lease_expires_at > $3 RETURNING {_TICKET}), "
            "e AS (INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) "
            "SELECT id, shop_id, $3, $4, 'agent:' || $2, $5::text::jsonb FROM t) "
            f"SELECT {_TICKET}{_WITH_THREAD['id'] if thread else ''} FROM t")


_CLAIM_SQL = {thread: f"SELECT {_TICKET_C}{_WITH_THREAD['c.id'] if thread else ''} "
                     "FROM triage_claim($1, $2, $3, $4, $5::text) c" for thread in (True, False)}


class PostgresClaimStore:
    """One statement per operation; a multi-statement transaction only when the caller asks (idempotency keys)."""

    def __init__(self, connection: Any) -> None:
        self.db = connection

    def transaction(self) -> Any:
        return self.db.transaction()

    @staticmethod
    def _ticket(record: Any) -> Record:
        ticket = dict(record)
        ticket["intents"] = decoded_json(ticket["intents"])
        if "thread" in ticket:
            ticket[THREAD] = [_thread_message(m) for m in decoded_json(ticket.pop("thread"))]
        return ticket

    async def claim(self, *, agent_id: str, shop_id: str, now: datetime, lease_until: datetime,
                    event: dict[str, Any], thread: bool = True) -> Record | None:
        # thread=False: the claim alone, as bench/queues.py compares it with another queue's dequeue.
        record = await self.db.fetchrow(_CLAIM_SQL[thread], agent_id, shop_id, now, lease_until, json_text(event))
        return None if record is None else self._ticket(record)

    async def agent_state(self, *, agent_id: str) -> Record | None:
        record = await self.db.fetchrow(
            f"SELECT active, capacity, ({_HELD_COUNT.format(agent='$1')}) AS held FROM agents WHERE id = $1", agent_id)
        return None if record is None else dict(record)

    async def write_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any],
                         event: tuple[str, dict[str, Any]], thread: bool = True) -> Record | None:
        names = tuple(values)
        record = await self.db.fetchrow(_held_write_sql(names, thread), ticket_id, agent_id, now, event[0],
                                        json_text(event[1]), *(values[n] for n in names))
        return None if record is None else self._ticket(record)

    async def reply(self, *, ticket_id: str, agent_id: str, now: datetime, lease_until: datetime,
                    text: str) -> tuple[Record, Record] | None:
        # Ticket, outbound message and `replied` event in one statement; the event's data is reply_event's,
        # computed from the updated row (first_response_at equals now exactly when this reply stopped the clock).
        sql = (f"WITH t AS (UPDATE tickets SET updated_at = $3, lease_expires_at = $4, "
               "first_response_at = coalesce(first_response_at, $3), awaiting_since = NULL, unread = 0 "
               "WHERE id = $1 AND status = 'assigned' AND assigned_agent_id = $2 AND lease_expires_at > $3 "
               f"RETURNING {_TICKET}), "
               "m AS (INSERT INTO messages (ticket_id, shop_id, platform, direction, text, sent_at, received_at, agent_id) "
               "SELECT id, shop_id, platform, 'outbound', $5, $3, $3, $2 FROM t "
               "RETURNING id, ticket_id, direction, text, sent_at, received_at, order_id, agent_id, triage), "
               "e AS (INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) "
               "SELECT t.id, t.shop_id, $3, 'replied', 'agent:' || $2, jsonb_build_object("
               "'message_id', m.id, 'first_response', t.first_response_at = $3, 'lease_expires_at', $6::text) "
               "|| CASE WHEN t.first_response_at = $3 AND t.first_response_due_at IS NOT NULL "
               "THEN jsonb_build_object('within_target', $3 <= t.first_response_due_at) ELSE '{}'::jsonb END "
               "FROM t, m) "
               f"SELECT {_TICKET_T}, m.id AS m_id, m.direction AS m_direction, m.text AS m_text, "
               "m.sent_at AS m_sent_at, m.received_at AS m_received_at, m.order_id AS m_order_id, "
               f"m.agent_id AS m_agent_id{_WITH_THREAD['t.id']} FROM t, m")
        record = await self.db.fetchrow(sql, ticket_id, agent_id, now, lease_until, text, lease_until.isoformat())
        if record is None:
            return None
        row = self._ticket(record)
        message = {k[2:]: row.pop(k) for k in list(row) if k.startswith("m_")}
        message["triage"] = None
        return row, message

    async def ticket(self, *, ticket_id: str) -> Record | None:
        record = await self.db.fetchrow(f"SELECT {_TICKET} FROM tickets WHERE id = $1", ticket_id)
        return None if record is None else self._ticket(record)

    async def agent_tickets(self, *, agent_id: str) -> list[Record]:
        records = await self.db.fetch(f"SELECT {_TICKET} FROM tickets WHERE assigned_agent_id = $1 "
                                      f"ORDER BY {CLAIM_ORDER_SQL}", agent_id)
        return [self._ticket(r) for r in records]

    async def served_queues(self, *, agent_id: str) -> list[str]:
        records = await self.db.fetch("SELECT queue FROM agent_queues WHERE agent_id = $1 ORDER BY queue", agent_id)
        return [r["queue"] for r in records]

    async def queue_exists(self, *, shop_id: str, name: str) -> bool:
        return await self.db.fetchval("SELECT 1 FROM queues WHERE shop_id = $1 AND name = $2", shop_id, name) is not None

    async def threads(self, ticket_ids: Sequence[str]) -> dict[str, list[Record]]:
        result: dict[str, list[Record]] = {ticket_id: [] for ticket_id in ticket_ids}
        if ticket_ids:
            records = await self.db.fetch(f"SELECT {_THREAD} FROM {_THREAD_FROM} WHERE m.ticket_id = ANY($1::text[]) "
                                          "ORDER BY m.ticket_id, m.id", list(ticket_ids))
            for record in records:
                message = dict(record)
                message["triage"] = decoded_json(message["triage"])
                result[message["ticket_id"]].append(message)
        return result

    async def reserve_key(self, *, agent_id: str, key: str, request_hash: str, now: datetime) -> bool:
        # A concurrent taker of the same key holds its row: we wait for its commit, then find the key taken.
        taken = await self.db.fetchval(
            "INSERT INTO idempotency_keys (agent_id, key, request_hash, status_code, response, created_at) "
            "VALUES ($1, $2, $3, 0, '{}'::jsonb, $4) ON CONFLICT (agent_id, key) DO NOTHING RETURNING 1",
            agent_id, key, request_hash, now)
        return taken is not None

    async def key_record(self, *, agent_id: str, key: str) -> Record | None:
        record = await self.db.fetchrow("SELECT request_hash, status_code, response FROM idempotency_keys "
                                        "WHERE agent_id = $1 AND key = $2", agent_id, key)
        return None if record is None else {**dict(record), "response": decoded_json(record["response"])}

    async def store_answer(self, *, agent_id: str, key: str, status_code: int, response: dict[str, Any]) -> None:
        await self.db.execute("UPDATE idempotency_keys SET status_code = $3, response = $4::text::jsonb "
                              "WHERE agent_id = $1 AND key = $2", agent_id, key, status_code, json_text(response))

    async def notify(self, channel: str, shop_ids: Sequence[str]) -> None:
        # Delivered at commit (or at once outside a transaction), to listeners in every process.
        for shop_id in sorted(set(shop_ids)):
            await self.db.execute("SELECT pg_notify($1, $2)", channel, shop_id)


def _from_sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return sqlite_time(value)
    if isinstance(value, bool):
        return int(value)
    return value


class SqliteClaimStore:
    """Each write is one BEGIN IMMEDIATE transaction (or part of the caller's); reads need none."""

    def __init__(self, connection: Any) -> None:
        self.db = connection
        self._in_transaction = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._in_transaction:
            yield
            return
        await self.db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        await self.db.execute("COMMIT")

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Record]:
        async with self.db.execute(sql, [_sqlite_param(p) for p in params]) as cursor:
            names = [d[0] for d in cursor.description] if cursor.description else []
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def _row(self, sql: str, params: Sequence[Any]) -> Record | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    @staticmethod
    def _ticket(row: Record | None) -> Record | None:
        # Every ticket statement here selects the columns in TICKET_COLUMNS order.
        return None if row is None else from_sqlite_ticket(tuple(row.values()))

    @staticmethod
    def _message(row: Record) -> Record:
        row["sent_at"] = _from_sqlite_time(row["sent_at"])
        row["received_at"] = _from_sqlite_time(row["received_at"])
        row["triage"] = None if row["triage"] is None else json.loads(row["triage"])
        return row

    async def _event(self, ticket: Record, now: datetime, kind: str, actor: str, data: dict[str, Any]) -> None:
        await self.db.execute("INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) "
                              "VALUES (?, ?, ?, ?, ?, ?)",
                              [ticket["id"], ticket["shop_id"], sqlite_time(now), kind, actor, json_text(data)])

    async def claim(self, *, agent_id: str, shop_id: str, now: datetime, lease_until: datetime,
                    event: dict[str, Any]) -> Record | None:
        # One atomic statement under the write lock: pick, capacity test and assignment together.
        sql = (f"UPDATE tickets SET status = 'assigned', assigned_agent_id = ?1, lease_expires_at = ?2, updated_at = ?3 "
               f"WHERE id = (SELECT id FROM tickets WHERE shop_id = ?4 AND status = 'queued' "
               f"AND queue IN (SELECT queue FROM agent_queues WHERE agent_id = ?1) "
               f"AND ({_HELD_COUNT.format(agent='?1')}) < "
               f"(SELECT capacity FROM agents WHERE id = ?1 AND active) "
               f"ORDER BY {CLAIM_ORDER_SQL} LIMIT 1) AND status = 'queued' RETURNING {_TICKET}")
        async with self.transaction():
            ticket = self._ticket(await self._row(sql, [agent_id, lease_until, now, shop_id]))
            if ticket is not None:
                await self._event(ticket, now, EventKind.CLAIMED, f"agent:{agent_id}",
                                  {**event, "deliveries": ticket["deliveries"]})
        return ticket

    async def agent_state(self, *, agent_id: str) -> Record | None:
        row = await self._row(f"SELECT active, capacity, ({_HELD_COUNT.format(agent='?1')}) AS held "
                              "FROM agents WHERE id = ?1", [agent_id])
        return None if row is None else {**row, "active": bool(row["active"])}

    async def _update_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any]) -> Record | None:
        assignments = "".join(f", {name} = ?" for name in values)
        sql = (f"UPDATE tickets SET updated_at = ?{assignments} WHERE id = ? AND status = 'assigned' "
               f"AND assigned_agent_id = ? AND lease_expires_at > ? RETURNING {_TICKET}")
        return self._ticket(await self._row(sql, [now, *values.values(), ticket_id, agent_id, now]))

    async def write_held(self, *, ticket_id: str, agent_id: str, now: datetime, values: dict[str, Any],
                         event: tuple[str, dict[str, Any]]) -> Record | None:
        async with self.transaction():
            ticket = await self._update_held(ticket_id=ticket_id, agent_id=agent_id, now=now, values=values)
            if ticket is not None:
                await self._event(ticket, now, event[0], f"agent:{agent_id}", event[1])
        return ticket

    async def reply(self, *, ticket_id: str, agent_id: str, now: datetime, lease_until: datetime,
                    text: str) -> tuple[Record, Record] | None:
        async with self.transaction():
            stamp = sqlite_time(now)
            ticket = await self._update_held(ticket_id=ticket_id, agent_id=agent_id, now=now, values={
                "lease_expires_at": lease_until, "unread": 0, "awaiting_since": None})
            if ticket is None:
                return None
            if ticket["first_response_at"] is None:
                await self.db.execute("UPDATE tickets SET first_response_at = ? WHERE id = ?", [stamp, ticket_id])
                ticket["first_response_at"] = now
            message = self._message(await self._row(
                "INSERT INTO messages (ticket_id, shop_id, platform, direction, text, sent_at, received_at, agent_id) "
                "VALUES (?, ?, ?, 'outbound', ?, ?, ?, ?) "
                "RETURNING id, ticket_id, direction, text, sent_at, received_at, order_id, agent_id, triage",
                [ticket_id, ticket["shop_id"], ticket["platform"], text, stamp, stamp, agent_id]) or {})
            await self._event(ticket, now, EventKind.REPLIED, f"agent:{agent_id}",
                              reply_event(message_id=message["id"], ticket=ticket, now=now, lease_until=lease_until))
        return ticket, message

    async def ticket(self, *, ticket_id: str) -> Record | None:
        return self._ticket(await self._row(f"SELECT {_TICKET} FROM tickets WHERE id = ?", [ticket_id]))

    async def agent_tickets(self, *, agent_id: str) -> list[Record]:
        rows = await self._rows(f"SELECT {_TICKET} FROM tickets WHERE assigned_agent_id = ? ORDER BY {CLAIM_ORDER_SQL}",
                                [agent_id])
        return [t for t in map(self._ticket, rows) if t is not None]

    async def served_queues(self, *, agent_id: str) -> list[str]:
        rows = await self._rows("SELECT queue FROM agent_queues WHERE agent_id = ? ORDER BY queue", [agent_id])
        return [r["queue"] for r in rows]

    async def queue_exists(self, *, shop_id: str, name: str) -> bool:
        return await self._row("SELECT 1 AS found FROM queues WHERE shop_id = ? AND name = ?", [shop_id, name]) is not None

    async def threads(self, ticket_ids: Sequence[str]) -> dict[str, list[Record]]:
        result: dict[str, list[Record]] = {ticket_id: [] for ticket_id in ticket_ids}
        # Chunked well under SQLite's parameter limit.
        for start in range(0, len(ticket_ids), 400):
            chunk = list(ticket_ids[start:start + 400])
            rows = await self._rows(f"SELECT {_THREAD} FROM {_THREAD_FROM} WHERE m.ticket_id IN "
                                    f"({', '.join('?' * len(chunk))}) ORDER BY m.ticket_id, m.id", chunk)
            for row in rows:
                result[row["ticket_id"]].append(self._message(row))
        return result

    async def reserve_key(self, *, agent_id: str, key: str, request_hash: str, now: datetime) -> bool:
        row = await self._row("INSERT INTO idempotency_keys (agent_id, key, request_hash, status_code, response, "
                              "created_at) VALUES (?, ?, ?, 0, '{}', ?) ON CONFLICT (agent_id, key) DO NOTHING "
                              "RETURNING 1 AS taken", [agent_id, key, request_hash, now])
        return row is not None

    async def key_record(self, *, agent_id: str, key: str) -> Record | None:
        row = await self._row("SELECT request_hash, status_code, response FROM idempotency_keys "
                              "WHERE agent_id = ? AND key = ?", [agent_id, key])
        return None if row is None else {**row, "response": json.loads(row["response"])}

    async def store_answer(self, *, agent_id: str, key: str, status_code: int, response: dict[str, Any]) -> None:
        await self.db.execute("UPDATE idempotency_keys SET status_code = ?, response = ? WHERE agent_id = ? AND key = ?",
                              [status_code, json_text(response), agent_id, key])

    async def notify(self, channel: str, shop_ids: Sequence[str]) -> None:
        return None  # SQLite has no NOTIFY: other processes find the work at their periodic re-check


@asynccontextmanager
async def claim_store(drivers: DriverConnections) -> AsyncIterator[ClaimStore]:
    """A store on one pooled driver connection, for one request."""
    async with drivers.connection() as connection:
        yield PostgresClaimStore(connection) if drivers.postgres else SqliteClaimStore(connection)
