"""The set-based statements of webhook ingestion, on the bare driver of each database.

Ingestion is the hot path: a group of requests can carry hundreds of messages, and SQLAlchemy's
per-row parameter processing cost more than the database work (see bench/ingest.py). So these
statements run on the driver connection inside a transaction this module opens: PostgreSQL takes
whole columns as arrays through unnest(), SQLite takes multi-row VALUES. Column layouts follow
app/db/models.py; the statements are the only SQL here that bypasses the ORM.
"""

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

ConversationKey = tuple[str, str, str]  # shop, platform, conversation id
MessageKey = tuple[str, str, str]  # shop, platform, message id
CustomerKey = tuple[str, str, str]  # shop, platform, customer id

# Ticket columns with their PostgreSQL types, in TicketState order.
TICKET_COLUMNS: dict[str, str] = {
    "id": "text", "shop_id": "text", "platform": "text", "conversation_id": "text", "customer_id": "bigint",
    "queue": "text", "status": "text", "tier": "smallint", "priority": "int", "primary_intent": "text",
    "intents": "jsonb", "escalated": "boolean", "assigned_agent_id": "text", "lease_expires_at": "timestamptz",
    "deliveries": "int", "unread": "int", "ruleset": "text", "created_at": "timestamptz",
    "updated_at": "timestamptz", "opened_at": "timestamptz", "opened_seq": "bigint", "awaiting_since": "timestamptz",
    "first_response_due_at": "timestamptz", "first_response_at": "timestamptz", "last_message_at": "timestamptz",
    "resolved_at": "timestamptz", "episodes": "int",
}
UPDATABLE = ("queue", "status", "tier", "priority", "primary_intent", "intents", "escalated", "deliveries", "unread",
             "ruleset", "updated_at", "opened_at", "opened_seq", "awaiting_since", "first_response_due_at",
             "first_response_at", "last_message_at", "resolved_at", "episodes")
MESSAGE_COLUMNS: dict[str, str] = {
    "ticket_id": "text", "shop_id": "text", "platform": "text", "external_id": "text", "direction": "text",
    "text": "text", "sent_at": "timestamptz", "received_at": "timestamptz", "order_id": "text",
    "primary_intent": "text", "tier": "smallint", "priority": "int", "triage": "jsonb",
}
EVENT_COLUMNS: dict[str, str] = {"ticket_id": "text", "shop_id": "text", "at": "timestamptz", "kind": "text",
                                 "actor": "text", "data": "jsonb"}
CUSTOMER_COLUMNS: dict[str, str] = {"shop_id": "text", "platform": "text", "external_id": "text", "nick": "text",
                                    "vip_level": "smallint"}
_JSON = ("intents", "triage", "data")


class IngestStore(Protocol):
    async def upsert_customers(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> dict[CustomerKey, tuple[int, int]]: ...
    async def lock_tickets(self, keys: Sequence[ConversationKey]) -> list[dict[str, Any]]: ...
    async def insert_tickets(self, rows: Sequence[dict[str, Any]]) -> set[str]: ...
    async def insert_messages(self, rows: Sequence[dict[str, Any]]) -> dict[MessageKey, int]: ...
    async def stored_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, dict[str, Any]]: ...
    async def save_tickets(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def delete_tickets(self, ids: Sequence[str]) -> None: ...
    async def count_contacts(self, customer_ids: Sequence[int]) -> None: ...
    async def insert_events(self, rows: Sequence[dict[str, Any]]) -> None: ...
    async def notify(self, channel: str, payloads: Sequence[str]) -> None: ...


def _json(value: Any) -> Any:
    # SQLAlchemy registers a JSON codec on its asyncpg connections; a bare connection returns text.
    return json.loads(value) if isinstance(value, str) else value


def _columns(spec: dict[str, str]) -> str:
    return ", ".join(spec)


class PostgresIngestStore:
    """Whole columns as arrays: one round trip per statement whatever the number of rows."""

    def __init__(self, connection: Any) -> None:
        self.db = connection

    @staticmethod
    def _arrays(spec: dict[str, str], rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
        return [[json.dumps(r[c], ensure_ascii=False) if c in _JSON else r[c] for r in rows] for c in spec]

    @staticmethod
    def _unnest(spec: dict[str, str], first: int = 1) -> str:
        # jsonb travels as text[] and is cast per element.
        args = ", ".join(f"${first + i}::{'text' if t == 'jsonb' else t}[]" for i, t in enumerate(spec.values()))
        return f"unnest({args}) AS u({_columns(spec)})"

    @staticmethod
    def _select(spec: dict[str, str]) -> str:
        return ", ".join(f"u.{c}::jsonb" if t == "jsonb" else f"u.{c}" for c, t in spec.items())

    async def upsert_customers(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> dict[CustomerKey, tuple[int, int]]:
        sql = (f"INSERT INTO customers ({_columns(CUSTOMER_COLUMNS)}, contacts, first_seen_at, last_seen_at) "
               f"SELECT {self._select(CUSTOMER_COLUMNS)}, 0, $6, $6 FROM {self._unnest(CUSTOMER_COLUMNS)} "
               "ON CONFLICT (shop_id, platform, external_id) DO UPDATE SET nick = excluded.nick, "
               "vip_level = excluded.vip_level, last_seen_at = excluded.last_seen_at "
               "RETURNING id, shop_id, platform, external_id, contacts")
        records = await self.db.fetch(sql, *self._arrays(CUSTOMER_COLUMNS, rows), now)
        return {(r["shop_id"], r["platform"], r["external_id"]): (r["id"], r["contacts"]) for r in records}

    async def lock_tickets(self, keys: Sequence[ConversationKey]) -> list[dict[str, Any]]:
        # Locked in key order, so that concurrent groups queue behind each other instead of deadlocking.
        sql = (f"SELECT {_columns(TICKET_COLUMNS)} FROM tickets WHERE (shop_id, platform, conversation_id) IN "
               "(SELECT * FROM unnest($1::text[], $2::text[], $3::text[])) "
               "ORDER BY shop_id, platform, conversation_id FOR UPDATE")
        records = await self.db.fetch(sql, *[list(column) for column in zip(*keys, strict=True)])
        return [{**dict(r), "intents": _json(r["intents"])} for r in records]

    async def insert_tickets(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        sql = (f"INSERT INTO tickets ({_columns(TICKET_COLUMNS)}) SELECT {self._select(TICKET_COLUMNS)} "
               f"FROM {self._unnest(TICKET_COLUMNS)} "
               "ON CONFLICT (shop_id, platform, conversation_id) DO NOTHING RETURNING id")
        return {r["id"] for r in await self.db.fetch(sql, *self._arrays(TICKET_COLUMNS, rows))}

    async def insert_messages(self, rows: Sequence[dict[str, Any]]) -> dict[MessageKey, int]:
        # Ids are drawn row by row as unnest yields them, so they follow the order of `rows`.
        sql = (f"INSERT INTO messages ({_columns(MESSAGE_COLUMNS)}) SELECT {self._select(MESSAGE_COLUMNS)} "
               f"FROM {self._unnest(MESSAGE_COLUMNS)} "
               "ON CONFLICT (shop_id, platform, external_id) DO NOTHING RETURNING id, shop_id, platform, external_id")
        records = await self.db.fetch(sql, *self._arrays(MESSAGE_COLUMNS, rows))
        return {(r["shop_id"], r["platform"], r["external_id"]): r["id"] for r in records}

    async def stored_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, dict[str, Any]]:
        if not keys:
            return {}
        sql = ("SELECT shop_id, platform, external_id, ticket_id, primary_intent, tier, priority, triage "
               "FROM messages WHERE (shop_id, platform, external_id) IN "
               "(SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))")
        records = await self.db.fetch(sql, *[list(column) for column in zip(*keys, strict=True)])
        return {(r["shop_id"], r["platform"], r["external_id"]): {**dict(r), "triage": _json(r["triage"])}
                for r in records}

    async def save_tickets(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        spec = {"id": "text", **{c: TICKET_COLUMNS[c] for c in UPDATABLE}}
        assignments = ", ".join(f"{c} = u.{c}::jsonb" if spec[c] == "jsonb" else f"{c} = u.{c}" for c in UPDATABLE)
        sql = f"UPDATE tickets SET {assignments} FROM {self._unnest(spec)} WHERE tickets.id = u.id"
        await self.db.execute(sql, *self._arrays(spec, rows))

    async def delete_tickets(self, ids: Sequence[str]) -> None:
        if ids:
            await self.db.execute("DELETE FROM tickets WHERE id = ANY($1::text[])", list(ids))

    async def count_contacts(self, customer_ids: Sequence[int]) -> None:
        if customer_ids:
            # An id may appear twice (two new conversations of one buyer): count with GROUP BY, not IN.
            await self.db.execute(
                "UPDATE customers SET contacts = contacts + c.n FROM "
                "(SELECT id, count(*) AS n FROM unnest($1::bigint[]) AS id GROUP BY id) AS c WHERE customers.id = c.id",
                list(customer_ids))

    async def insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.db.execute(f"INSERT INTO ticket_events ({_columns(EVENT_COLUMNS)}) "
                                  f"SELECT {self._select(EVENT_COLUMNS)} FROM {self._unnest(EVENT_COLUMNS)}",
                                  *self._arrays(EVENT_COLUMNS, rows))

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        # Delivered at commit, to listeners in every process.
        for payload in payloads:
            await self.db.execute("SELECT pg_notify($1, $2)", channel, payload)


def _sqlite_time(value: datetime | None) -> str | None:
    # The same text SQLAlchemy's SQLite DATETIME writes, so both paths sort and parse alike. Not strftime: its %Y
    # does not pad years before 1000, which SQLAlchemy then cannot read back.
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_value(column: str, kind: str, value: Any) -> Any:
    if kind == "timestamptz":
        return _sqlite_time(value)
    if kind == "jsonb":
        return json.dumps(value, ensure_ascii=False)
    if kind == "boolean":
        return int(value)
    return value


def _from_sqlite_ticket(row: Sequence[Any]) -> dict[str, Any]:
    ticket: dict[str, Any] = {}
    for (column, kind), value in zip(TICKET_COLUMNS.items(), row, strict=True):
        if kind == "timestamptz":
            value = None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)
        elif kind == "jsonb":
            value = json.loads(value)
        elif kind == "boolean":
            value = bool(value)
        ticket[column] = value
    return ticket


class SqliteIngestStore:
    """Multi-row VALUES with RETURNING; the transaction holds SQLite's one write lock throughout."""

    CHUNK = 400  # rows per statement, well under SQLite's 32,766 parameters

    def __init__(self, connection: Any) -> None:
        self.db = connection

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _insert_returning(self, table: str, spec: dict[str, str], rows: Sequence[dict[str, Any]], tail: str,
                                extra: Sequence[tuple[str, Any]] = ()) -> list[Any]:
        names = [*spec, *(name for name, _ in extra)]
        row_sql = "(" + ", ".join("?" * len(names)) + ")"
        found: list[Any] = []
        for start in range(0, len(rows), self.CHUNK):
            chunk = rows[start:start + self.CHUNK]
            params = [p for r in chunk for p in [*(_sqlite_value(c, t, r[c]) for c, t in spec.items()),
                                                  *(v for _, v in extra)]]
            sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([row_sql] * len(chunk))} {tail}"
            found.extend(await self._fetch(sql, params))
        return found

    async def upsert_customers(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> dict[CustomerKey, tuple[int, int]]:
        stamp = _sqlite_time(now)
        found = await self._insert_returning(
            "customers", CUSTOMER_COLUMNS, rows,
            "ON CONFLICT (shop_id, platform, external_id) DO UPDATE SET nick = excluded.nick, "
            "vip_level = excluded.vip_level, last_seen_at = excluded.last_seen_at "
            "RETURNING id, shop_id, platform, external_id, contacts",
            extra=(("contacts", 0), ("first_seen_at", stamp), ("last_seen_at", stamp)))
        return {(shop, platform, external): (cid, contacts) for cid, shop, platform, external, contacts in found}

    async def lock_tickets(self, keys: Sequence[ConversationKey]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), self.CHUNK):
            chunk = keys[start:start + self.CHUNK]
            sql = (f"SELECT {_columns(TICKET_COLUMNS)} FROM tickets WHERE (shop_id, platform, conversation_id) IN "
                   f"(VALUES {', '.join(['(?, ?, ?)'] * len(chunk))})")
            found.extend(_from_sqlite_ticket(r) for r in await self._fetch(sql, [p for k in chunk for p in k]))
        return found

    async def insert_tickets(self, rows: Sequence[dict[str, Any]]) -> set[str]:
        found = await self._insert_returning("tickets", TICKET_COLUMNS, rows,
                                             "ON CONFLICT (shop_id, platform, conversation_id) DO NOTHING RETURNING id")
        return {r[0] for r in found}

    async def insert_messages(self, rows: Sequence[dict[str, Any]]) -> dict[MessageKey, int]:
        found = await self._insert_returning(
            "messages", MESSAGE_COLUMNS, rows,
            "ON CONFLICT (shop_id, platform, external_id) DO NOTHING RETURNING id, shop_id, platform, external_id")
        return {(r[1], r[2], r[3]): r[0] for r in found}

    async def stored_messages(self, keys: Sequence[MessageKey]) -> dict[MessageKey, dict[str, Any]]:
        result: dict[MessageKey, dict[str, Any]] = {}
        for start in range(0, len(keys), self.CHUNK):
            chunk = keys[start:start + self.CHUNK]
            sql = ("SELECT shop_id, platform, external_id, ticket_id, primary_intent, tier, priority, triage "
                   "FROM messages WHERE (shop_id, platform, external_id) IN "
                   f"(VALUES {', '.join(['(?, ?, ?)'] * len(chunk))})")
            for r in await self._fetch(sql, [p for k in chunk for p in k]):
                result[(r[0], r[1], r[2])] = {"ticket_id": r[3], "primary_intent": r[4], "tier": r[5],
                                              "priority": r[6], "triage": json.loads(r[7])}
        return result

    async def save_tickets(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            sql = f"UPDATE tickets SET {', '.join(f'{c} = ?' for c in UPDATABLE)} WHERE id = ?"
            await self.db.executemany(sql, [[*(_sqlite_value(c, TICKET_COLUMNS[c], r[c]) for c in UPDATABLE), r["id"]]
                                            for r in rows])

    async def delete_tickets(self, ids: Sequence[str]) -> None:
        if ids:
            await self.db.executemany("DELETE FROM tickets WHERE id = ?", [[i] for i in ids])

    async def count_contacts(self, customer_ids: Sequence[int]) -> None:
        if customer_ids:
            await self.db.executemany("UPDATE customers SET contacts = contacts + 1 WHERE id = ?",
                                      [[i] for i in customer_ids])

    async def insert_events(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            sql = f"INSERT INTO ticket_events ({_columns(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
            await self.db.executemany(sql, [[_sqlite_value(c, t, r[c]) for c, t in EVENT_COLUMNS.items()]
                                            for r in rows])

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        return None  # SQLite has no NOTIFY: other processes find the work at their periodic re-check


@asynccontextmanager
async def ingest_transaction(engine: AsyncEngine) -> AsyncIterator[IngestStore]:
    """A store bound to one pooled connection, inside a transaction committed when the block ends."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if engine.dialect.name == "postgresql":
            async with driver.transaction():
                yield PostgresIngestStore(driver)
            return
        await driver.execute("BEGIN IMMEDIATE")
        try:
            yield SqliteIngestStore(driver)
        except BaseException:
            await driver.execute("ROLLBACK")
            raise
        await driver.execute("COMMIT")
