"""Several service processes (or apps with their own engines) on one database: no ticket claimed twice,
each lease expiry recorded once, and wake-ups cross processes."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.clock import utcnow
from app.db.listen import APPLICATION_NAME, asyncpg_dsn
from app.db.migrate import upgrade_async
from app.db.models import Ticket, TicketEvent
from app.db.claims import claim_store
from app.db.session import DriverConnections, create_engine, create_sessionmaker
from app.main import create_app
from app.services.queues import expire_leases
from tests.conftest import make_settings
from tests.support.queues import claim, eventually, new_agent, new_ticket
from tests.support.serving import ServiceProcess
from tests.support import ADMIN_TOKEN, BACKENDS, fresh_database
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# A waiting claim's own look at the queues comes this late, after the 20 s waits below: only a NOTIFY wakes them.
NOTIFY_ONLY_RECHECK = 30.0


@asynccontextmanager
async def running(application: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (engine, reaper, listener) and a client for it."""
    async with (application.router.lifespan_context(application),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://app") as http):
        yield http


@asynccontextmanager
async def serve(url: str, log_dir: Path, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """`triage serve` in its own process against `url` (with `env` added); a client for it once it is ready."""
    server = ServiceProcess(url, ADMIN_TOKEN, log_path=log_dir / f"service-{uuid.uuid4().hex[:6]}.log", extra_env=env)
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            yield http
    finally:
        server.stop()


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
            # Waiting claims look at the queues only every 30 s: a wake within seconds came by NOTIFY.
            quiet = {"TRIAGE_CLAIM_RECHECK_SECONDS": str(NOTIFY_ONLY_RECHECK)}
            one, two = await asyncio.gather(stack.enter_async_context(serve(url, tmp_path, **quiet)),
                                            stack.enter_async_context(serve(url, tmp_path, **quiet)))
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
                waiting = asyncio.create_task(claim(two, waiter, wait=20))
                await asyncio.sleep(0.3)
                ticket_id = await new_ticket(one, shop, "快递三天没动了")
                answer = await waiting
                assert answer.status_code == 200 and answer.json()["id"] == ticket_id


async def test_listener_reconnects_and_forwards_other_processes_work(database_url: str, client: httpx.AsyncClient,
                                                                     new_shop: Any) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite waiters rely on the periodic re-check")
    # A second app on the same database stands for another process: only LISTEN/NOTIFY links their notifiers.
    # Its waiting claims look at the queues only every 30 s: a wake within the wait came by NOTIFY.
    other: FastAPI = create_app(make_settings(database_url, claim_recheck_seconds=NOTIFY_ONLY_RECHECK))
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
            waiting = asyncio.create_task(claim(http, agent, wait=20))
            await asyncio.sleep(0.3)
            ticket_id = await new_ticket(client, shop, "我要退货")
            answer = await waiting
            assert answer.status_code == 200 and answer.json()["id"] == ticket_id


async def test_a_lost_wake_up_costs_at_most_the_recheck_period(database_url: str, client: httpx.AsyncClient,
                                                               new_shop: Any) -> None:
    # Nothing tells app A that app B stored a message: SQLite has no cross-process notify, and on PostgreSQL
    # A's listener is stopped. Only the waiter's periodic look at the database finds the ticket.
    a, b = create_app(make_settings(database_url)), create_app(make_settings(database_url))
    async with running(a) as http_a, running(b) as http_b:
        if a.state.listener is not None:
            await a.state.workers.stop("listen")
        shop = await new_shop()
        agent = await new_agent(client, ADMIN, shop["id"])
        waiting = asyncio.create_task(claim(http_a, agent, wait=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        ticket_id = await new_ticket(http_b, shop, "我要退货")
        answer = await waiting
        # Within the 10 s wait, so a periodic look found it (app/services/queues.py RECHECK_SECONDS; how late under load is no test).
        assert answer.status_code == 200 and answer.json()["id"] == ticket_id


async def test_agents_on_two_apps_claim_each_ticket_exactly_once(app: FastAPI, client: httpx.AsyncClient,
                                                                 database_url: str, new_shop: Any) -> None:
    # Two engines on one database (on SQLite, two connections to one file): their claims race for real.
    async with running(create_app(make_settings(database_url))) as other:
        shop = await new_shop()
        for batch in range(3):
            msgs = [message("请问这款还有货吗", conversation=f"c-{batch}-{i}", customer=f"b-{batch}-{i}")
                    for i in range(100)]
            assert (await post_signed(client, shop["id"], shop["webhook_secret"], msgs)).status_code == 202
        team = [(http, await new_agent(client, ADMIN, shop["id"], capacity=50)) for http in (client, other) * 4]

        async def work(http: httpx.AsyncClient, agent: dict[str, Any]) -> list[str]:
            taken = []
            while (answer := await claim(http, agent)).status_code == 200:
                taken.append(answer.json()["id"])
            # 204: nothing left; 409: this agent is full (8 x 50 places for 300 tickets, so others go on).
            assert answer.status_code in (204, 409), answer.text
            return taken

        results = await asyncio.gather(*(work(http, agent) for http, agent in team))
    every = [ticket_id for taken in results for ticket_id in taken]
    assert len(every) == 300 and len(set(every)) == 300
    assert any(results[0::2]) and any(results[1::2])  # both apps took part
    async with app.state.sessionmaker() as session:
        claims = await session.execute(select(TicketEvent.ticket_id, func.count()).where(
            TicketEvent.shop_id == shop["id"], TicketEvent.kind == "claimed").group_by(TicketEvent.ticket_id))
        assert sorted(count for _, count in claims) == [1] * 300


@pytest.mark.parametrize("backend", BACKENDS)
async def test_expiry_run_by_many_processes_at_once_counts_each_expiry_once(backend: str, tmp_path: Path) -> None:
    # A database of its own: the expiry runs at a time past every lease in it.
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        async with running(create_app(make_settings(url))) as http:
            shop = (await http.post("/v1/shops", json={"id": "expiry", "name": "Expiry"}, headers=ADMIN)).json()
            agent = await new_agent(http, ADMIN, shop["id"], capacity=50)
            msgs = [message("快递三天没动了", conversation=f"c-{i}", customer=f"b-{i}") for i in range(40)]
            assert (await post_signed(http, shop["id"], shop["webhook_secret"], msgs)).status_code == 202
            engines = [create_engine(url) for _ in range(6)]
            processes = [await DriverConnections.open(engine, url) for engine in engines]
            try:
                for expiry in (1, 2):
                    assert all([(await claim(http, agent)).status_code == 200 for _ in range(40)])
                    later = utcnow() + timedelta(hours=expiry)

                    async def reap(drivers: DriverConnections, later: datetime = later) -> int:
                        # Small batches, so the processes interleave over the same expired tickets.
                        done = 0
                        while True:
                            async with claim_store(drivers) as store:
                                count, _, _ = await expire_leases(store, now=later, max_deliveries=10, limit=5)
                            done += count
                            if count == 0:
                                return done

                    assert sum(await asyncio.gather(*(reap(d) for d in processes))) == 40
                    async with create_sessionmaker(engines[0])() as session:
                        tickets = (await session.execute(select(Ticket.status, Ticket.deliveries))).all()
                        expired = (await session.execute(
                            select(TicketEvent.ticket_id, TicketEvent.data).where(TicketEvent.kind == "lease_expired")
                            .order_by(TicketEvent.id))).all()
                    assert len(tickets) == 40 and set(tickets) == {("queued", expiry)}
                    numbered: dict[str, list[int]] = {}
                    for ticket_id, data in expired:
                        numbered.setdefault(ticket_id, []).append(data["deliveries"])
                    # One event per ticket per expiry, each counting one delivery.
                    assert len(numbered) == 40 and set(map(tuple, numbered.values())) == {tuple(range(1, expiry + 1))}
            finally:
                for drivers in processes:
                    await drivers.close()
                for engine in engines:
                    await engine.dispose()
