"""Suite-wide fixtures: one migrated database per backend per run, and the app over each."""

import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.db.migrate import upgrade_async
from app.db.session import create_engine
from app.main import create_app
from app.settings import Settings
from tests.support import ADMIN_TOKEN, BACKENDS, POSTGRES_URL, fresh_database


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TRIAGE_TEST_REQUIRE_POSTGRES") == "1" and not POSTGRES_URL:
        raise pytest.UsageError("TRIAGE_TEST_REQUIRE_POSTGRES=1 but TRIAGE_TEST_POSTGRES_URL is not set")


def pytest_report_header(config: pytest.Config) -> str:
    return f"PostgreSQL: {POSTGRES_URL or 'not configured (set TRIAGE_TEST_POSTGRES_URL)'}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    fuzz = sys.modules.get("tests.api.test_openapi_fuzz")
    if fuzz is not None and fuzz.requests_sent()[0]:
        sent, operations = fuzz.requests_sent()
        terminalreporter.write_line(f"schemathesis: {sent} requests over {operations} operations (per operation and "
                                    f"database: {fuzz.EXAMPLES_PER_OPERATION} generated, plus schema examples and "
                                    "boundary cases)")
    if not POSTGRES_URL:
        terminalreporter.write_line("PostgreSQL tests skipped: TRIAGE_TEST_POSTGRES_URL is not set", yellow=True)


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A fresh database of each backend for the whole run, migrated by Alembic.

    When the run is over, every event it wrote still names its ticket and every held ticket an agent:
    neither column has a foreign key (migration 0006), so the suite checks what the keys used to.
    """
    async with fresh_database(request.param, tmp_path_factory.mktemp("db")) as url:
        await upgrade_async(url)
        yield url
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                orphans = (await connection.execute(text(
                    "SELECT count(*) FROM ticket_events e WHERE NOT EXISTS "
                    "(SELECT 1 FROM tickets t WHERE t.id = e.ticket_id)"))).scalar_one()
                ghosts = (await connection.execute(text(
                    "SELECT count(*) FROM tickets t WHERE t.assigned_agent_id IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM agents a WHERE a.id = t.assigned_agent_id)"))).scalar_one()
        finally:
            await engine.dispose()
        assert (orphans, ghosts) == (0, 0), f"{orphans} events name no ticket; {ghosts} tickets held by no agent"


# Every app of the suite may deliver any test's events (they share the run's database): all get the policy the
# delivery tests count on. Loopback receivers are allowed; retries come fast; a hang is given up after 5 s.
DELIVERY_TEST_SETTINGS = {"delivery_allow_private": True, "delivery_backoff_seconds": 0.2,
                          "delivery_connect_timeout_seconds": 2.0, "delivery_timeout_seconds": 5.0}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    # /metrics gauges read afresh at each scrape, so a test sees the backlog it just made.
    return Settings(_env_file=None, database_url=database_url, admin_token=ADMIN_TOKEN,
                    **{"metrics_cache_seconds": 0, **DELIVERY_TEST_SETTINGS, **overrides})


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def quiet_workers(app: FastAPI) -> AsyncIterator[None]:
    """The app's own lease reaper, SLA watch and auto-close stopped for the test, restarted after: with a frozen clock
    moved hours ahead they would change its tickets between its reads; such a test runs them itself."""
    for name in ("lease-reaper", "sla-watch", "auto-close"):
        await app.state.workers.stop(name)
    yield
    app.state.workers.start()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# Open every minute of every day: a test about anything but service hours gets the same due times whatever the
# hour it runs at. The hours' own tests ask for the defaults (`always_open=False`) and freeze the clock.
ALWAYS_OPEN = {"shifts": [{"name": "all", "start": "00:00", "end": "24:00"}], "holidays": None}


@pytest.fixture
def new_shop(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Create a shop with a unique id (tests share one database per run) and return the answer. Its silent tickets
    stay open unless the test sets auto_close_after_hours: a test that moves the clock days ahead meets no closer."""

    async def create(*, always_open: bool = True, **fields: Any) -> dict[str, Any]:
        body = {"id": f"shop-{uuid.uuid4().hex[:10]}", "name": "Test shop", **(ALWAYS_OPEN if always_open else {}),
                "auto_close_after_hours": 0, **fields}
        response = await client.post("/v1/shops", json=body, headers=admin_headers)
        assert response.status_code == 201, response.text
        return response.json()

    return create
