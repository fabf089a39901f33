"""Which errors mean "the database cannot be reached now" (retry later) rather than a bug in a request."""

import sqlite3
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc

from app.db.errors import StoreUnavailable

# SQLSTATE classes and codes of a server that is gone, refuses connections or runs out of them: connection
# exceptions (08), operator intervention (57: terminated backends, shutdown, starting up), insufficient
# resources (53), an unknown database (3D000), refused authorization (28).
_STATE_PREFIXES = ("08", "57", "53", "28")
_STATES = {"3D000"}
_NOT_ACCEPTING = "not currently accepting connections"  # 55000 of a database with ALLOW_CONNECTIONS false
# asyncpg's own errors about a connection that broke or was left mid-operation (by a cancelled query).
_BROKEN_CONNECTION = ("connection is closed", "connection was closed", "another operation", "cannot switch to state",
                      "pool is closed", "pool is closing", "cannot perform operation")
# SQLite: another process holds the lock longer than the busy timeout, or the file is out of reach.
_SQLITE_UNAVAILABLE = ("database is locked", "database is busy", "unable to open database", "disk i/o error",
                       "readonly database")

# Exception types whose handler decides, by is_unavailable, between 503 and a plain 500 (StoreUnavailable by
# the driver error it wraps: the store translates every driver error into it).
FAULT_TYPES: tuple[type[BaseException], ...] = (StoreUnavailable,
    sa_exc.DBAPIError, sa_exc.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError, sqlite3.Error, OSError)


def _fault(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.TimeoutError | OSError):  # pool checkout timed out; refused, reset, unreachable
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", "") or ""
        return state.startswith(_STATE_PREFIXES) or state in _STATES or _NOT_ACCEPTING in str(error)
    if isinstance(error, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return any(text in str(error) for text in _BROKEN_CONNECTION)
    if isinstance(error, sqlite3.OperationalError):
        return any(text in str(error).lower() for text in _SQLITE_UNAVAILABLE)
    return False


def is_unavailable(error: BaseException) -> bool:
    """True when `error`, or what it wraps, says the database is unreachable, overloaded or locked right now."""
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or len(seen) > 10:
            continue
        seen.add(id(current))
        if _fault(current):
            return True
        # SQLAlchemy keeps the driver's error as .orig; its asyncpg adapter chains asyncpg's as the cause.
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return False


def fault_kind(error: BaseException) -> str:
    """A short, stable name of the fault for logs: the innermost driver error's type."""
    current: BaseException = error
    for _ in range(10):
        inner = getattr(current, "orig", None) or current.__cause__
        if inner is None:
            break
        current = inner
    return type(current).__name__
