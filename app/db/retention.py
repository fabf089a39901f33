"""The retention store: months of messages and ticket events made ahead, and what is past retention removed.

PostgreSQL keeps messages and ticket_events in one partition per calendar month (UTC) of their time (migration
0017): a month is made ahead by creating its table and attaching it (which locks neither table against reads or
writes), and removed whole once it is past retention, its messages' idempotency keys first, by detaching it
CONCURRENTLY and dropping it. SQLite has no partitions: what is past retention is deleted in batches, each batch
its own short transaction. What the adapters share (the months each partitioned table has, and making the missing
ones) is written once in _Retention, where SQLite's empty set of partitioned tables gives no months and makes none;
how each database reads, makes and removes its months or rows is the adapters' own.
"""

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from app.db.driver import Driver, driver
from app.db.session import DriverConnections

# Partitioned table -> its partition key (migration 0017).
PARTITIONED = {"messages": "received_at", "ticket_events": "at"}
_PARTITION = re.compile(r"^(?P<table>messages|ticket_events)_y(?P<year>\d{4})m(?P<month>\d{2})$")
KEY_BATCH = 5000


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int

    @classmethod
    def of(cls, at: datetime) -> "Month":
        at = at.astimezone(UTC)
        return cls(at.year, at.month)

    def shifted(self, months: int) -> "Month":
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.shifted(1).start

    def partition(self, table: str) -> str:
        return f"{table}_y{self.year:04d}m{self.month:02d}"


@dataclass(frozen=True, slots=True)
class Removed:
    """What one step of expiry removed: whole partitions (PostgreSQL) or rows (SQLite), and idempotency keys."""

    partitions: tuple[str, ...] = ()
    messages: int = 0
    events: int = 0
    keys: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.partitions or self.messages or self.events or self.keys)


class RetentionStore(Protocol):
    """Months made ahead, and the oldest data past retention removed, one step at a time."""

    async def months(self) -> dict[str, list[Month]]:
        """The months each partitioned table has (none on SQLite)."""
        ...

    async def ensure_months(self, first: Month, last: Month) -> list[str]:
        """Make every month from `first` to `last` that is missing; the partitions made."""
        ...

    async def expire_step(self, *, before: datetime, limit: int) -> Removed:
        """Remove one step of what is older than `before`: a whole month ending by then, or a batch of rows."""
        ...


class _Retention:
    """The months written once: each partitioned table's months, and the missing ones made. A store names its
    partitioned tables; with none (SQLite), there are no months to read and none to make."""

    # Partitioned table -> its partition key.
    partitioned: Mapping[str, str] = {}
    # Makes a table's partition for a month and returns its name: defined by the store that names partitioned
    # tables, the only one ensure_months asks.
    _make: Callable[[str, Month], Awaitable[str]]

    def __init__(self, db: Driver) -> None:
        self.db = db

    async def months(self) -> dict[str, list[Month]]:
        return {table: sorted(months) for table, months in (await self._partitions())[0].items()}

    async def _partitions(self) -> tuple[dict[str, list[Month]], set[str]]:
        """Each partitioned table's months, and the partitions a concurrent detach left pending (a process stopped
        in it): none without partitioned tables."""
        return {}, set()

    async def ensure_months(self, first: Month, last: Month) -> list[str]:
        have = await self.months()
        made = []
        for table in self.partitioned:
            month = first
            while month <= last:
                if month not in have[table]:
                    made.append(await self._make(table, month))
                month = month.shifted(1)
        return made



class PostgresRetentionStore(_Retention):
    """Partitions (migration 0017): the months are read from the catalog, made by ATTACH and removed whole by
    DETACH ... CONCURRENTLY, which neither locks the table against reads and writes nor deletes row by row."""

    partitioned = PARTITIONED

    async def _partitions(self) -> tuple[dict[str, list[Month]], set[str]]:
        # The partitions are in PostgreSQL's catalog (pg_inherits), with a detach left pending.
        rows = await self.db.rows(
            "SELECT c.relname AS name, i.inhdetachpending AS pending FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = ANY($1::text[])", list(self.partitioned))
        found: dict[str, list[Month]] = {table: [] for table in self.partitioned}
        pending = set()
        for row in rows:
            match = _PARTITION.match(row["name"])
            if match:
                found[match["table"]].append(Month(int(match["year"]), int(match["month"])))
                if row["pending"]:
                    pending.add(row["name"])
        return found, pending

    async def _make(self, table: str, month: Month) -> str:
        # Created alone, then attached: attaching takes a lock that lets reads and writes of the table go on (a
        # CREATE ... PARTITION OF would block them); the empty table's check is instant. IF NOT EXISTS and the
        # attach in one transaction: two processes making the same month, one waits and then finds it made.
        name = month.partition(table)
        async with self.db.transaction():
            await self.db.execute("SELECT pg_advisory_xact_lock(hashtext('triage_partitions'))")
            attached = await self.db.row("SELECT 1 AS found FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         "WHERE c.relname = $1", name)
            if attached is None:
                await self.db.execute(f"CREATE TABLE IF NOT EXISTS {name} "
                                      f"(LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                await self.db.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM "
                                      f"('{month.start.isoformat()}') TO ('{month.end.isoformat()}')")
        return name

    async def expire_step(self, *, before: datetime, limit: int) -> Removed:
        months, pending = await self._partitions()
        for table in ("messages", "ticket_events"):
            old = sorted(m for m in months[table] if m.end <= before)
            if not old:
                continue
            name = old[0].partition(table)
            keys = await self._forget_keys(name) if table == "messages" else 0
            # CONCURRENTLY: reads and writes of the table go on; it waits for transactions that may still read
            # the partition. It cannot run in a transaction block: the driver's statements outside one commit
            # alone. A detach a stopped process left pending is finished instead.
            mode = "FINALIZE" if name in pending else "CONCURRENTLY"
            await self.db.execute(f"ALTER TABLE {table} DETACH PARTITION {name} {mode}")
            await self.db.execute(f"DROP TABLE {name}")
            return Removed(partitions=(name,), keys=keys)
        return Removed()

    async def _forget_keys(self, partition: str) -> int:
        """Delete the idempotency keys of the partition's messages, a batch per transaction (by id, on its key)."""
        forgotten, after = 0, 0
        while True:
            async with self.db.transaction():
                row = await self.db.row(
                    f"WITH batch AS (SELECT id, shop_id, platform, external_id FROM {partition} WHERE id > $1 "
                    "ORDER BY id LIMIT $2), gone AS (DELETE FROM message_keys k USING batch b WHERE "
                    "k.shop_id = b.shop_id AND k.platform = b.platform AND k.external_id = b.external_id RETURNING 1) "
                    "SELECT (SELECT max(id) FROM batch) AS last, (SELECT count(*) FROM gone) AS n", after, KEY_BATCH)
            if row is None or row["last"] is None:
                return forgotten
            forgotten += row["n"]
            after = row["last"]


class SqliteRetentionStore(_Retention):
    """No partitions (SQLite has none): what is past retention is deleted row by row, in batches."""

    async def expire_step(self, *, before: datetime, limit: int) -> Removed:
        # Messages shop by shop on ix_messages_shop_received, events on ix_ticket_events_at (SQLite's own, migration
        # 0017); a batch at most of each, in one transaction with the messages' keys.
        async with self.db.transaction():
            messages = []
            for shop in await self.db.rows("SELECT id FROM shops ORDER BY id"):
                messages += await self.db.rows("SELECT id, platform, external_id, shop_id FROM messages "
                                               "WHERE shop_id = $1 AND received_at < $2 LIMIT $3",
                                               shop["id"], before, limit - len(messages))
                if len(messages) >= limit:
                    break
            keys = [[m["shop_id"], m["platform"], m["external_id"]] for m in messages if m["external_id"] is not None]
            await self.db.execute_many("DELETE FROM message_keys WHERE shop_id = $1 AND platform = $2 "
                                       "AND external_id = $3", keys)
            await self.db.execute_many("DELETE FROM messages WHERE id = $1", [[m["id"]] for m in messages])
            events = await self.db.rows("DELETE FROM ticket_events WHERE id IN (SELECT id FROM ticket_events "
                                        "WHERE at < $1 LIMIT $2) RETURNING id", before, limit)
        return Removed(messages=len(messages), events=len(events), keys=len(keys))


def retention_store_for(db: Driver) -> RetentionStore:
    return PostgresRetentionStore(db) if db.postgres else SqliteRetentionStore(db)


@asynccontextmanager
async def retention_store(drivers: DriverConnections) -> AsyncIterator[RetentionStore]:
    """A retention store on one pooled driver connection."""
    async with driver(drivers) as db:
        yield retention_store_for(db)
