"""A database that goes away, breaks connections or stays locked: 503 with Retry-After, never 500, and recovery.

Real servers on databases of their own: the PostgreSQL test terminates the backends of its own database (never
the server's others) and then refuses new connections to it; the SQLite test has another process hold the write
lock. /readyz answers within 2 s throughout.
"""

import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade_async
from tests.support import ADMIN_TOKEN, POSTGRES_URL, _plain_dsn, fresh_database
from tests.support.queues import bearer, eventually
from tests.support.serving import ServiceProcess
from tests.support.webhooks import message, post_signed

ADMIN = bearer(ADMIN_TOKEN)
FAULT_LINE = "database unavailable: answering 503"


async def _seed(http: httpx.AsyncClient, tickets: int) -> dict[str, Any]:
    shop = (await http.post("/v1/shops", json={"id": f"f-{uuid.uuid4().hex[:8]}", "name": "Faults"},
                            headers=ADMIN)).json()
    agent = (await http.post(f"/v1/shops/{shop['id']}/agents", headers=ADMIN,
                             json={"name": "A", "queues": ["presale", "aftersale", "complaints"], "capacity": 50})).json()
    for _ in range(tickets):
        response = await post_signed(http, shop["id"], shop["webhook_secret"],
                                     [message("快递到哪了", conversation=f"c-{uuid.uuid4().hex[:8]}")])
        assert response.status_code == 202, response.text
    return {"shop": shop, "agent": bearer(agent["token"])}


def _operations(http: httpx.AsyncClient, seeded: dict[str, Any]) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
    """Claim, resolve and list shops; resolve acts on the ticket the last successful claim took (or claims one)."""
    held: list[str] = []

    async def claim() -> httpx.Response:
        response = await http.post("/v1/agents/me/claim", headers=seeded["agent"])
        if response.status_code == 200:
            held.append(response.json()["id"])
        return response

    async def resolve() -> httpx.Response:
        if not held:  # the claim before failed (a 503): take one now, or answer as that claim did
            claimed = await claim()
            if claimed.status_code != 200:
                return claimed
        ticket = held[-1]
        response = await http.post(f"/v1/tickets/{ticket}/resolve", headers=seeded["agent"])
        if response.status_code == 200:
            held.remove(ticket)
        return response

    async def shops() -> httpx.Response:
        return await http.get("/v1/shops", headers=ADMIN)

    return {"claim": claim, "resolve": resolve, "shops": shops}


def _assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text[:300])
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response.headers["retry-after"]) >= 1


async def _readyz_within_2s(http: httpx.AsyncClient) -> int:
    started = time.monotonic()
    response = await http.get("/readyz")
    assert time.monotonic() - started < 2.0, "readyz took longer than 2 s"
    return response.status_code


async def _admin_sql(statement: str) -> None:
    connection = await asyncpg.connect(_plain_dsn(POSTGRES_URL))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _terminate_backends(database: str) -> None:
    """End every connection to our own test database (only it), as a crash or failover would."""
    await _admin_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' "
                     "AND pid <> pg_backend_pid()")


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL tests skipped: TRIAGE_TEST_POSTGRES_URL is not set")
async def test_postgres_going_away_is_503_with_retry_after_and_recovers(tmp_path: Path) -> None:
    async with fresh_database("postgres", tmp_path) as url:
        await upgrade_async(url)
        database = make_url(url).database
        assert database and database.startswith("triage_test_")
        log = tmp_path / "service.log"
        server = ServiceProcess(url, ADMIN_TOKEN, log_path=log, extra_env={"TRIAGE_LEASE_SECONDS": "600"})
        try:
            await server.ready()
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                seeded = await _seed(http, tickets=40)
                operations = _operations(http, seeded)
                for name, call in operations.items():
                    assert (await call()).status_code == 200, name

                # Connections killed under use, five times: each answer is a success or a 503, never a 500.
                for _ in range(5):
                    await _terminate_backends(database)
                    for name, call in operations.items():
                        response = await call()
                        if response.status_code != 200:
                            _assert_unavailable(response, name)

                # The database refuses connections: every operation is a 503, readiness too, quickly.
                await _admin_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                await _terminate_backends(database)
                for _ in range(3):
                    for name, call in operations.items():
                        _assert_unavailable(await call(), name)
                    assert await _readyz_within_2s(http) == 503

                # It comes back: everything works again without a restart.
                await _admin_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

                async def recovered() -> bool:
                    return all([(await call()).status_code == 200 for call in operations.values()])
                await eventually(recovered, timeout=15, every=0.2)
                assert await _readyz_within_2s(http) == 200
        finally:
            await _admin_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            server.stop()
    lines = log.read_text(errors="replace").splitlines()
    fault_lines = [line for line in lines if FAULT_LINE in line]
    assert 1 <= len(fault_lines) <= 8, fault_lines  # rate-limited: a line per kind of fault per 10 s
    assert not [line for line in lines if "unhandled error" in line or "Exception in ASGI application" in line]


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
"""


async def test_sqlite_locked_by_another_process_is_503_and_readyz_answers_quickly(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url:
        await upgrade_async(url)
        server = ServiceProcess(url, ADMIN_TOKEN, log_path=tmp_path / "service.log",
                                extra_env={"TRIAGE_SQLITE_BUSY_TIMEOUT_MS": "5000"})
        try:
            await server.ready()
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                seeded = await _seed(http, tickets=5)
                operations = _operations(http, seeded)
                locker = subprocess.Popen([sys.executable, "-c", LOCKER, make_url(url).database or ""],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                try:
                    assert locker.stdout is not None and locker.stdout.readline().strip() == b"locked"
                    assert await _readyz_within_2s(http) in (200, 503)
                    _assert_unavailable(await operations["claim"](), "claim")
                    assert await _readyz_within_2s(http) in (200, 503)
                finally:
                    assert locker.stdin is not None
                    locker.stdin.close()
                    locker.wait(timeout=30)

                async def recovered() -> bool:
                    return (await operations["shops"]()).status_code == 200
                await eventually(recovered, timeout=15, every=0.2)
        finally:
            server.stop()
