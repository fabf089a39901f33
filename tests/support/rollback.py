"""Per-test rollback (STYLE.md): a test of a store runs inside one transaction that is rolled back at its end, so
it leaves nothing behind for the tests after it. The store's own transactions nest in it (savepoints).

Only for tests that talk to the store alone: on SQLite the open transaction holds the database's one write lock
(and the app's one pooled connection), so a request to the app during the test would wait for it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.driver import Driver, driver, joined


@asynccontextmanager
async def rolled_back_driver(app: FastAPI) -> AsyncIterator[Driver]:
    """A driver on one of the app's connections, inside a transaction rolled back when the block ends."""
    async with driver(app.state.drivers) as db:
        if db.postgres:
            outer = db.connection.transaction()
            await outer.start()
            try:
                yield joined(db.connection, postgres=True)
            finally:
                await outer.rollback()
        else:
            await db.connection.execute("BEGIN IMMEDIATE")
            try:
                yield joined(db.connection, postgres=False)
            finally:
                await db.connection.execute("ROLLBACK")


@asynccontextmanager
async def rolled_back_sessions(app: FastAPI) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on one of the app's connections, inside a transaction rolled back when the block ends: a
    session's commit only releases its savepoint."""
    async with app.state.engine.connect() as connection:
        outer = await connection.begin()
        try:
            yield async_sessionmaker(bind=connection, expire_on_commit=False, autoflush=False,
                                     join_transaction_mode="create_savepoint")
        finally:
            await outer.rollback()
