"""The readiness probe's look at the database: on a connection of its own, bounded in time.

Not through the pools: a pool exhausted by slow requests, or SQLite's one connection waiting on another
process's write lock (every pooled SQLite transaction begins IMMEDIATE), would hold the probe as long.
"""

import asyncio
import os
import sqlite3

import asyncpg
from sqlalchemy.engine import make_url

from app.db.listen import asyncpg_dsn

_REVISION = "SELECT version_num FROM alembic_version"


def _sqlite_revision(path: str, timeout: float) -> str | None:
    # A plain read: in WAL mode it does not wait for writers; otherwise it waits `timeout` at most.
    if not os.path.exists(path):
        return None  # the service creates the file on its first connection; nothing is migrated in it yet
    connection = sqlite3.connect(path, timeout=timeout)
    try:
        if connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                              ).fetchone() is None:
            return None
        row = connection.execute(_REVISION).fetchone()
        return None if row is None else str(row[0])
    finally:
        connection.close()


async def _postgres_revision(url: str, timeout: float) -> str | None:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=timeout)
    try:
        if await connection.fetchval("SELECT to_regclass('alembic_version')") is None:
            return None
        value = await connection.fetchval(_REVISION)
        return None if value is None else str(value)
    finally:
        connection.terminate()


async def database_revision(url: str, *, timeout: float) -> str | None:
    """The migration revision the database is at (None when unmigrated); raises when it does not answer in time."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:"):
            raise ConnectionError("an in-memory SQLite database has no revision outside its own connection")
        return await asyncio.wait_for(asyncio.to_thread(_sqlite_revision, path, timeout), timeout + 0.25)
    return await asyncio.wait_for(_postgres_revision(url, timeout), timeout)


async def autovacuum_off(url: str, *, timeout: float) -> bool:
    """Whether a PostgreSQL server runs without autovacuum (False for SQLite, or when it does not answer in time).

    Without it nothing analyses the tables as they grow, so the plans each pooled connection cached while they were
    small stay for the connection's life, and queue_count_changes, emptied every second, grows by its dead rows:
    bench/scale.py measured a claim at 64 ms instead of 1.3 ms at 85k messages on such a server.
    """
    if make_url(url).get_backend_name() != "postgresql":
        return False

    async def ask() -> bool:
        connection = await asyncpg.connect(asyncpg_dsn(url), timeout=timeout)
        try:
            return await connection.fetchval("SELECT current_setting('autovacuum') = 'off'") is True
        finally:
            connection.terminate()

    try:
        return await asyncio.wait_for(ask(), timeout)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return False  # the readiness probe reports a database that does not answer
