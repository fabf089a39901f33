"""How a statement runs on each database's bare driver: the only code the hot-path stores write per database.

The stores (app/db/claims.py, app/db/ingest.py) write each statement once, with PostgreSQL's numbered
placeholders ($1, $2); SQLite reads the same text with its own (?1, ?2). A store passes JSON already encoded
(json_text) and gets rows as dicts whose values `decoded` turns into Python's: both drivers then give the
same dict.
"""

import functools
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

from app.db.session import DriverConnections

Record = dict[str, Any]

# Columns whose values come back from SQLite as text (times, JSON) or 0/1 (booleans).
_TIME_COLUMNS = frozenset({"seen_at", "lease_expires_at", "created_at", "updated_at", "opened_at", "awaiting_since",
                           "first_response_due_at", "first_response_at", "last_message_at", "resolved_at",
                           "sent_at", "received_at", "at", "previous_valid_until", "next_attempt_at",
                           "started_at", "delivered_at", "snoozed_until", "held_until", "last_agent_reply_at"})
_JSON_COLUMNS = frozenset({"intents", "triage", "response", "data", "delivery", "content", "context"})
_BOOL_COLUMNS = frozenset({"escalated", "active", "enabled", "head"})


def json_text(value: Any) -> str:
    """A JSON value as text. orjson: a message's triage with its evidence, the bulk of each stored row, encodes
    several times faster than the standard encoder (docs/design.md)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def sqlite_time(value: datetime | None) -> str | None:
    return None if value is None else _utc_text(value)


@functools.lru_cache(maxsize=256)
def _utc_text(value: datetime) -> str:
    # The same text SQLAlchemy's SQLite DATETIME writes, so both paths sort and parse alike. Not strftime: its %Y
    # does not pad years before 1000, which SQLAlchemy then cannot read back. Cached: an ingest group writes its
    # one `now` into a dozen columns of each message, and isoformat() was 5 % of the worker's CPU on SQLite
    # (py-spy, bench/ingest.py at batch 20). Equal instants are equal keys whatever their zone, and give one text.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _time(value: str) -> datetime:
    # SQLite's text is naive UTC; JSON built by PostgreSQL (triage_thread) carries its offset.
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


_DECODERS: dict[str, Callable[[Any], Any]] = {**dict.fromkeys(_TIME_COLUMNS, _time),
                                              **dict.fromkeys(_JSON_COLUMNS, orjson.loads),
                                              **dict.fromkeys(_BOOL_COLUMNS, bool)}


def decoded(row: Record) -> Record:
    """The row with times, JSON and booleans as Python values, whichever driver read it (in place)."""
    # Only text is decoded, and only 0/1 made booleans: asyncpg gives times and booleans as Python's already.
    for column, decode in _DECODERS.items():
        value = row.get(column)
        if value.__class__ is str or (value.__class__ is int and decode is bool):
            row[column] = decode(value)
    return row


def json_decoded(row: Record) -> Record:
    """A PostgreSQL row with its JSON as Python values (in place): asyncpg gives times and booleans as Python's, so
    of `decoded`'s columns only the JSON ones can need it; the hot path reads a ticket row per message."""
    for column in _JSON_COLUMNS:
        value = row.get(column)
        if value.__class__ is str:
            row[column] = orjson.loads(value)
    return row


class Driver(ABC):
    """Runs statements on one connection. Subclasses say how; the helpers below are shared."""

    postgres = False
    connection: Any  # the driver's own connection, for the statements that use its API directly (app/db/ingest.py)
    # Appended to a read that must hold its rows until the transaction ends; SQLite's BEGIN IMMEDIATE already
    # holds the one write lock.
    for_update = ""
    # Appended to a read whose rows must not change (nor their holders be deactivated) until the transaction ends.
    for_share = ""
    # Appended to a read whose rows one process at a time should take (SQLite has one writer anyway).
    skip_locked = ""
    # "Not among the texts of list parameter ${n}" (with .format(n=...)): SQLite has no arrays, so SqliteDriver
    # sends a list as JSON text, and json_each reads it.
    not_in_texts = "NOT IN (SELECT value FROM json_each(${n}))"
    # "Among the texts of list parameter ${n}", the same way.
    in_texts = "IN (SELECT value FROM json_each(${n}))"
    # Sends (channel, payload) to the other processes' listeners at commit. SQLite has no NOTIFY: its processes find
    # the work at their periodic re-checks.
    notify_statement: str | None = None
    # Takes (namespace, keys): one lock per key, held to the end of the transaction, in one order whatever the keys'
    # (no deadlock between two takers of several). SQLite's BEGIN IMMEDIATE already holds its one write lock.
    lock_keys_statement: str | None = None

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """The block runs in one transaction on this connection."""

    @abstractmethod
    async def rows(self, sql: str, *params: Any) -> list[Record]:
        """The statement's rows, decoded (see `decoded`)."""

    async def execute(self, sql: str, *params: Any) -> None:
        await self.rows(sql, *params)

    async def row(self, sql: str, *params: Any) -> Record | None:
        found = await self.rows(sql, *params)
        return found[0] if found else None

    async def execute_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        """The statement once per parameter row, in order."""
        for row in params:
            await self.execute(sql, *row)

    async def notify(self, channel: str, payloads: Iterable[str]) -> None:
        """Wake the listeners of `channel` in other processes at commit (or at once outside a transaction), once per
        distinct payload; a database without NOTIFY sends nothing."""
        if self.notify_statement is not None:
            for payload in sorted(set(payloads)):
                await self.execute(self.notify_statement, channel, payload)

    def listed(self, alias: str, columns: Sequence[tuple[str, int, str]]) -> str:
        """A FROM item `alias` whose rows hold list parameters side by side, one column each, given as (column name,
        parameter number, PostgreSQL element type): PostgreSQL unnests the arrays; SQLite, which has no arrays, reads
        the JSON text its driver sends a list as (json_each), the lists joined on their positions. One statement
        then writes a batch on either database, where a statement per row would cost a round trip each."""
        names = [name for name, _, _ in columns]
        if self.postgres:
            arrays = ", ".join(f"${number}::{kind}[]" for _, number, kind in columns)
            return f"unnest({arrays}) AS {alias} ({', '.join(names)})"
        values = ", ".join(f"l{i}.value AS {name}" for i, name in enumerate(names))
        lists = " JOIN ".join(f"json_each(${number}) AS l{i}" + (f" ON l{i}.key = l0.key" if i else "")
                              for i, (_, number, _) in enumerate(columns))
        return f"(SELECT {values} FROM {lists}) AS {alias}"

    async def lock_keys(self, namespace: str, keys: Sequence[str]) -> None:
        """Hold `keys` of `namespace` locked until the transaction ends (see `lock_keys_statement`)."""
        if self.lock_keys_statement is not None and keys:
            await self.execute(self.lock_keys_statement, namespace, list(keys))


class PostgresDriver(Driver):
    """asyncpg: the text as written; times and JSON text travel as they are."""

    postgres = True
    for_update = " FOR UPDATE"
    for_share = " FOR SHARE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    not_in_texts = "<> ALL(${n}::text[])"
    in_texts = "= ANY(${n}::text[])"
    notify_statement = "SELECT pg_notify($1, $2)"
    lock_keys_statement = ("SELECT count(pg_advisory_xact_lock(hashtext($1), h)) AS locked FROM "
                           "(SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY 1) s")

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def transaction(self) -> AbstractAsyncContextManager[None]:
        return self.connection.transaction()  # type: ignore[no-any-return]

    async def rows(self, sql: str, *params: Any) -> list[Record]:
        return [dict(record) for record in await self.connection.fetch(sql, *params)]


_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.cache
def _sqlite_text(sql: str) -> str:
    """The statement with SQLite's numbered placeholders."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def sqlite_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return sqlite_time(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):  # SQLite has no arrays: a list is JSON text of its items as SQLite stores them
        return json_text([sqlite_param(v) for v in value])
    return value


class SqliteDriver(Driver):
    """aiosqlite: $n becomes ?n, times become SQLAlchemy's text; a write transaction takes the lock at BEGIN."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._in_transaction = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._in_transaction:  # nested: part of the caller's
            yield
            return
        await self.connection.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            await self.connection.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        await self.connection.execute("COMMIT")

    async def rows(self, sql: str, *params: Any) -> list[Record]:
        async with self.connection.execute(_sqlite_text(sql), [sqlite_param(p) for p in params]) as cursor:
            names = [d[0] for d in cursor.description] if cursor.description else []
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def execute_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        # One call into the driver's thread for all rows: ingestion writes a group's tickets and events so.
        if params:
            await self.connection.executemany(_sqlite_text(sql), [[sqlite_param(p) for p in row] for row in params])


@asynccontextmanager
async def driver(drivers: DriverConnections) -> AsyncIterator[Driver]:
    """A driver on one pooled connection, for one request."""
    async with drivers.connection() as connection:
        yield PostgresDriver(connection) if drivers.postgres else SqliteDriver(connection)


def joined(connection: Any, *, postgres: bool) -> Driver:
    """A driver on a connection whose transaction its owner opened and will end: the driver's transactions
    nest in it (a savepoint on PostgreSQL, part of it on SQLite)."""
    if postgres:
        return PostgresDriver(connection)
    db = SqliteDriver(connection)
    db._in_transaction = True
    return db


def placeholders(first: int, count: int) -> str:
    """"$3, $4, $5" for first=3, count=3."""
    return ", ".join(f"${n}" for n in range(first, first + count))

