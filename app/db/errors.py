"""The database layer's own errors: what a service may catch without knowing SQLAlchemy or a driver."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError


class StoreError(Exception):
    """A database operation failed."""


class ConstraintViolation(StoreError):
    """A write broke a constraint: most often a row with the same unique key exists (another writer raced past an
    existence check)."""


class StoreUnavailable(StoreError):
    """The database could not be reached, or the connection failed under the statement."""


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Raise the errors of the block as this module's: constraint violations as ConstraintViolation, a database
    that is away or failing (connection, timeout, driver error) as StoreUnavailable."""
    try:
        yield
    except IntegrityError as exc:
        raise ConstraintViolation(str(exc.orig)) from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise ConstraintViolation(str(exc)) from exc
    except (OSError, TimeoutError, DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
