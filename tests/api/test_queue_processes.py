"""Several service processes on one PostgreSQL: no ticket claimed twice, and wake-ups cross processes."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.db.listen import APPLICATION_NAME, asyncpg_dsn
from app.db.migrate import upgrade_async
from app.main import create_app
from tests.conftest import make_settings
from tests.queues import claim, eventually, new_agent, new_ticket
from tests.support import ADMIN_TOKEN, fresh_database
from tests.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio
ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """`triage serve` in its own process against `url`; a client for it once it is ready."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env |= {"TRIAGE_DATABASE_URL": url, "TRIAGE_ADMIN_TOKEN": ADMIN_TOKEN, "TRIAGE_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                await asyncio.sleep(0.1)
            yield http
    finally:
        server.terminate()
        server.wait(timeout=30)


async def listeners(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                                             "AND datname = current_database()", APPLICATION_NAME))
    finally:
        await connection.close()


async def test_two_processes_never_double_claim_and_wake_each_other(tmp_path: Path) -> None:
    async with fresh_database("postgres", tmp_path) as url:
        await upgrade_async(url)
        async with AsyncExitStack() as stack:
            one, two = await asyncio.gather(stack.enter_async_context(serve(url)),
                                            stack.enter_async_context(serve(url)))
            response = await one.post("/v1/shops", json={"id": "twoproc", "name": "Two processes"}, headers=ADMIN)
            shop = response.json()
            team = [(http, await new_agent(one, ADMIN, shop["id"], capacity=50)) for http in (one, two) * 5]
            for n, http in enumerate((one, two)):
                texts = ["再不发货就给差评", "我要退货", "快递三天没动了", "请问这款还有货吗"]
                msgs = [message(texts[i % 4], conversation=f"c-{n}-{i}", customer=f"b-{n}-{i}") for i in range(100)]
                assert (await post_signed(http, shop["id"], shop["webhook_secret"], msgs)).status_code == 202

            async def work(http: httpx.AsyncClient, agent: dict[str, Any]) -> list[str]:
                taken = []
                while (answer := await claim(http, agent)).status_code == 200:
                    taken.append(answer.json()["id"])
                assert answer.status_code == 204, answer.text
                return taken

            every = [t for taken in await asyncio.gather(*(work(h, a) for h, a in team)) for t in taken]
            assert len(every) == 200 and len(set(every)) == 200

            # A claimer long-polling on process two is woken by a message ingested by process one.
            async def both_listening() -> bool:
                return await listeners(url) == 2

            await eventually(both_listening, timeout=10)
            waiter = await new_agent(one, ADMIN, shop["id"], capacity=50)
            for _ in range(3):
                waiting = asyncio.create_task(claim(two, waiter, wait=10))
                await asyncio.sleep(0.3)
                ticket_id = await new_ticket(one, shop, "快递三天没动了")
                stored = time.monotonic()  # the 202 comes after the commit that NOTIFYs
                answer = await waiting
                assert answer.status_code == 200 and answer.json()["id"] == ticket_id
                assert time.monotonic() - stored < 0.2


async def test_listener_reconnects_and_forwards_other_processes_work(database_url: str, client: httpx.AsyncClient,
                                                                     new_shop: Any) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite waiters rely on the periodic re-check")
    # A second app on the same database stands for another process: only LISTEN/NOTIFY links their notifiers.
    other: FastAPI = create_app(make_settings(database_url))
    async with other.router.lifespan_context(other):
        await asyncio.wait_for(other.state.listener.listening.wait(), timeout=10)
        admin = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 "
                                "AND datname = current_database()", APPLICATION_NAME)
        finally:
            await admin.close()
        async def reconnected() -> bool:
            return other.state.listener.connections >= 2 and other.state.listener.listening.is_set()

        await eventually(reconnected, timeout=10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://other") as http:
            shop = await new_shop()
            agent = await new_agent(client, ADMIN, shop["id"])
            waiting = asyncio.create_task(claim(http, agent, wait=10))
            await asyncio.sleep(0.3)
            ticket_id = await new_ticket(client, shop, "我要退货")
            stored = time.monotonic()
            answer = await waiting
            # The periodic re-check would have taken 0.7 s more: this wake came by NOTIFY.
            assert answer.status_code == 200 and answer.json()["id"] == ticket_id
            assert time.monotonic() - stored < 0.2
