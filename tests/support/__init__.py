"""Test support. Here: fresh databases, a temporary SQLite file or a new database on the PostgreSQL server; in
submodules: signed webhooks (webhooks), agents and tickets made through the API (queues), a real server process
(serving)."""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("TRIAGE_TEST_POSTGRES_URL", "").strip()
BACKENDS = ("sqlite", "postgres")
ADMIN_TOKEN = "adm_test-admin-token-for-the-suite"


def _plain_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_database(backend: str, tmp_dir: Path) -> AsyncIterator[str]:
    """Yield the URL of a new, empty database; drop it afterwards."""
    if backend == "sqlite":
        path = tmp_dir / f"triage-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests skipped: TRIAGE_TEST_POSTGRES_URL is not set")
    name = f"triage_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_plain_dsn(POSTGRES_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False)
    finally:
        admin = await asyncpg.connect(_plain_dsn(POSTGRES_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
