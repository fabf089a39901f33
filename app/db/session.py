"""Engine and session factory, with the SQLite settings that make the embedded default durable."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import Row as SARow
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.db.faults import is_unavailable
from app.db.listen import asyncpg_dsn


# The types services and request dependencies name: a unit of work, and the factory that opens one.
Session = AsyncSession
SessionFactory = async_sessionmaker[AsyncSession]
Row = SARow


def is_postgres(session: AsyncSession) -> bool:
    """Whether the session's database is PostgreSQL (the drivers' own connections say it with Driver.postgres)."""
    return session.get_bind().dialect.name == "postgresql"


def is_sqlite_url(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


class _DropDebugRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _keep_values_out_of_logs() -> None:
    # hide_parameters covers errors and the INFO statement log, but at DEBUG SQLAlchemy logs result
    # rows and aiosqlite every call with its parameters: webhook secrets and buyer texts. A filter on
    # the logger holds whatever level logging is later configured with.
    for name in ("sqlalchemy.engine.Engine", "aiosqlite"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDebugRecords) for f in logger.filters):
            logger.addFilter(_DropDebugRecords())


# Settings of every PostgreSQL connection the service opens, whatever the server's defaults. No JIT: every statement
# here reads a few rows to a few thousand by index, and compiling one costs more than running it. Its estimates grow
# with the tables, so a server's default (JIT above a cost of 100,000) starts compiling at some size: at 1 M messages
# (bench/scale.py) the claim's generic plan crossed it and a claim took 27.5 ms instead of 2.4, 39 ms of it JIT.
SERVER_SETTINGS = {"jit": "off"}


def create_engine(url: str, *, pool_size: int | None = None, busy_timeout_ms: int = 10_000) -> AsyncEngine:
    """An async engine for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""
    _keep_values_out_of_logs()
    if is_sqlite_url(url):
        # One connection: SQLite has one writer, and a larger pool gave no more throughput (docs/design.md).
        engine = create_async_engine(url, pool_size=pool_size or 1, max_overflow=0, pool_timeout=60,
                                     hide_parameters=True)
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    # hide_parameters: database errors must not carry buyer texts into logs.
    kwargs: dict[str, Any] = {"pool_size": pool_size or 10, "max_overflow": 0, "pool_pre_ping": True,
                              "pool_timeout": 30, "hide_parameters": True,
                              "connect_args": {"server_settings": dict(SERVER_SETTINGS)}}
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "handle_error", _discard_broken_connections)
    return engine


def _discard_broken_connections(context: Any) -> None:
    # SQLAlchemy invalidates a connection on the errors its dialect knows as disconnects; a terminated backend
    # or a connection left mid-operation by a cancelled query is one too, and must not go back into the pool.
    if not context.is_disconnect and is_unavailable(context.original_exception):
        context.is_disconnect = True


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN IMMEDIATE below is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed message survives a power cut, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: concurrent writers queue on busy_timeout
        # instead of failing with "database is locked" when a read upgrades to a write.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def _rollback_if_open(connection: Any) -> None:
    # Instead of asyncpg's default reset (a round trip of UNLISTEN/RESET ALL/CLOSE ALL on every release): the
    # hot paths set nothing on their connections and close their transactions, so only an interrupted one
    # needs undoing.
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class DriverConnections:
    """Bare driver connections for the hot paths (ingestion, claims and the holder's writes).

    On PostgreSQL an asyncpg pool beside SQLAlchemy's: a checkout through SQLAlchemy with pre-ping cost a
    round trip and more CPU than the statement it served (docs/design.md). A server
    restart closes the pooled sockets, which asyncpg notices and replaces on the next acquire. On SQLite,
    the engine's one connection, so all writers still queue on one lock.
    """

    def __init__(self, engine: AsyncEngine, pool: Any = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._pool = pool
        # The latest messages a ticket's answer carries (TRIAGE_THREAD_PAGE); None: its whole thread.
        self.thread_page: int | None = None

    @classmethod
    async def open(cls, engine: AsyncEngine, url: str, *, size: int | None = None) -> "DriverConnections":
        if is_sqlite_url(url):
            return cls(engine)
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=0, max_size=size or 10,
                                         reset=_rollback_if_open, server_settings=dict(SERVER_SETTINGS))
        return cls(engine, pool)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """One driver connection (asyncpg or aiosqlite) for the block."""
        if self._pool is not None:
            async with self._pool.acquire() as connection:
                try:
                    yield connection
                except Exception as error:
                    # A broken connection goes back closed, so the pool opens a new one instead of handing it out.
                    if is_unavailable(error):
                        connection.terminate()
                    raise
            return
        async with self.engine.connect() as sa_connection:
            raw = await sa_connection.get_raw_connection()
            yield raw.driver_connection
