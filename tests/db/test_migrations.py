"""Alembic is the only way the schema is made: up, down and up again on both databases."""

from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import downgrade, head_revision, revision_of, upgrade
from tests.support import BACKENDS, fresh_database

pytestmark = pytest.mark.asyncio

TABLES = {"shops", "webhook_secrets", "queues", "agents", "agent_queues", "customers", "tickets", "messages",
          "ticket_events", "idempotency_keys", "rulesets"}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgrade_downgrade_upgrade(backend: str, tmp_path: Path) -> None:
    import asyncio

    async with fresh_database(backend, tmp_path) as url:
        await asyncio.to_thread(upgrade, url)
        assert await revision_of(url) == head_revision()
        assert await _tables(url) == TABLES
        await asyncio.to_thread(downgrade, url, "base")
        assert await _tables(url) == set()
        assert await revision_of(url) is None
        await asyncio.to_thread(upgrade, url)
        assert await _tables(url) == TABLES
