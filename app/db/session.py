"""Engine and session factory, with the SQLite settings that make the embedded default durable."""

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


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


def create_engine(url: str, *, pool_size: int | None = None, busy_timeout_ms: int = 10_000) -> AsyncEngine:
    """An async engine for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""
    _keep_values_out_of_logs()
    if is_sqlite_url(url):
        # One connection: SQLite has one writer; measured, a larger pool gave no more throughput
        # and twice the p99.
        engine = create_async_engine(url, pool_size=pool_size or 1, max_overflow=0, pool_timeout=60,
                                     hide_parameters=True)
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    # hide_parameters: database errors must not carry buyer texts into logs.
    kwargs: dict[str, Any] = {"pool_size": pool_size or 10, "max_overflow": 0, "pool_pre_ping": True,
                              "pool_timeout": 30, "hide_parameters": True}
    return create_async_engine(url, **kwargs)


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
