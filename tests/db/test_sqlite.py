"""The SQLite engine settings that make the embedded default durable and safe with several writers."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db.session import create_engine

pytestmark = pytest.mark.asyncio


async def test_connections_are_wal_full_sync_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/pragmas.db")
    try:
        async with engine.connect() as connection:
            pragmas = {name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                       for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    finally:
        await engine.dispose()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] >= 5000


async def test_two_engines_writing_at_once_never_see_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/writers.db"
    engines = [create_engine(url), create_engine(url)]  # as two processes would hold them
    try:
        async with engines[0].begin() as connection:
            await connection.execute(text("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
            await connection.execute(text("INSERT INTO counters (id, n) VALUES (1, 0)"))

        async def bump(engine_index: int) -> None:
            for _ in range(10):
                async with engines[engine_index].begin() as connection:
                    # Read, hold the transaction open, then write: with a deferred BEGIN the read lock's
                    # upgrade fails at once with "database is locked" instead of waiting its turn.
                    n = (await connection.execute(text("SELECT n FROM counters WHERE id = 1"))).scalar_one()
                    await asyncio.sleep(0.002)
                    await connection.execute(text("UPDATE counters SET n = :n WHERE id = 1"), {"n": n + 1})

        await asyncio.gather(*(bump(i % 2) for i in range(8)))
        async with engines[1].connect() as connection:
            total = (await connection.execute(text("SELECT n FROM counters WHERE id = 1"))).scalar_one()
    finally:
        for engine in engines:
            await engine.dispose()
    assert total == 80  # every committed increment kept: no lost update, no error
