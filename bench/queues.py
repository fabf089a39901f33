"""Benchmark of the agent work queues, against pgqueuer on the same PostgreSQL.

Over real HTTP (one uvicorn worker, uvloop + httptools) on PostgreSQL and on SQLite:
  - full claim -> reply -> resolve cycles by 20 concurrent agents: cycles/s, claim latency p50/p99;
  - long-poll wake latency: 20 agents wait on an empty queue; one message at a time is posted;
    latency = claim answer received - webhook 202 received (the 202 follows the commit).
At the database level on the same PostgreSQL, no HTTP:
  - our claim + resolve (the service functions the endpoints call) by 20 consumers, one ticket at a time;
  - pgqueuer's dequeue + ack by 20 consumers, one job per dequeue (batch_size=1); and the ratio.

Every database is created for the run and dropped afterwards.
Run: .venv/bin/python bench/queues.py [--tickets 3000] [--db-tickets 10000] [--jobs 10000] [--wake-samples 200]
Needs the `bench` extra (pgqueuer): .venv/bin/pip install -e '.[bench]'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.clock import utcnow  # noqa: E402
from app.db.listen import asyncpg_dsn  # noqa: E402
from app.db.migrate import upgrade_async  # noqa: E402
from app.db.models import Agent  # noqa: E402
from app.db.session import create_engine, create_sessionmaker  # noqa: E402
from app.services import queues  # noqa: E402
from tests.webhooks import message, post_signed  # noqa: E402

ADMIN_TOKEN = "adm_bench-" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TEXTS = ["再不发货就给差评", "我要退货", "快递三天没动了", "请问这款还有货吗", "东西收到了但是坏了", "什么时候发货"]
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@asynccontextmanager
async def postgres_database(server_url: str) -> AsyncIterator[str]:
    name = f"triage_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    from sqlalchemy.engine import make_url
    try:
        yield make_url(server_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False)
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def sqlite_database() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite+aiosqlite:///{tmp}/bench.db"


@asynccontextmanager
async def uvicorn(url: str) -> AsyncIterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env |= {"TRIAGE_DATABASE_URL": url, "TRIAGE_ADMIN_TOKEN": ADMIN_TOKEN, "TRIAGE_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--loop", "uvloop",
                                "--http", "httptools", "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the service did not start")
                await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


async def new_shop(http: httpx.AsyncClient, agents: int, *, capacity: int = 5) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    shop = (await http.post("/v1/shops", json={"id": f"bench-{uuid.uuid4().hex[:8]}", "name": "Bench"},
                            headers=ADMIN)).json()
    team = []
    for _ in range(agents):
        agent = (await http.post(f"/v1/shops/{shop['id']}/agents", headers=ADMIN, json={
            "name": "agent", "queues": ["presale", "aftersale", "complaints"], "capacity": capacity})).json()
        team.append({**agent, "headers": {"Authorization": f"Bearer {agent['token']}"}})
    return shop, team


async def preload(http: httpx.AsyncClient, shop: dict[str, Any], count: int) -> None:
    for start in range(0, count, 100):
        batch = [message(TEXTS[i % len(TEXTS)], conversation=f"c-{i}", customer=f"b-{i}")
                 for i in range(start, min(count, start + 100))]
        response = await post_signed(http, shop["id"], shop["webhook_secret"], batch)
        assert response.status_code == 202, response.text


@dataclass
class CycleResult:
    cycles: int
    seconds: float
    claim_ms: list[float]

    def line(self, label: str) -> str:
        return (f"{label:<34} {self.cycles / self.seconds:>8.0f} cycles/s   claim p50 "
                f"{percentile(self.claim_ms, 0.5):6.1f} ms  p99 {percentile(self.claim_ms, 0.99):6.1f} ms"
                f"   ({self.cycles} cycles in {self.seconds:.1f} s)")


async def http_cycles(base: str, tickets: int, agents: int) -> CycleResult:
    """20 agents claim -> reply -> resolve over HTTP until the queues are empty."""
    limits = httpx.Limits(max_connections=agents, max_keepalive_connections=agents)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        shop, team = await new_shop(http, agents)
        await preload(http, shop, tickets)
        claim_ms: list[float] = []

        async def work(agent: dict[str, Any]) -> int:
            done = 0
            while True:
                started = time.perf_counter()
                claimed = await http.post("/v1/agents/me/claim", headers=agent["headers"])
                claim_ms.append((time.perf_counter() - started) * 1000)
                if claimed.status_code == 204:
                    return done
                assert claimed.status_code == 200, claimed.text
                ticket_id = claimed.json()["id"]
                replied = await http.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "亲，马上为您处理"},
                                          headers={**agent["headers"], "Idempotency-Key": uuid.uuid4().hex})
                assert replied.status_code == 201, replied.text
                resolved = await http.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])
                assert resolved.status_code == 200, resolved.text
                done += 1

        started = time.perf_counter()
        done = sum(await asyncio.gather(*(work(a) for a in team)))
        seconds = time.perf_counter() - started
    assert done == tickets, (done, tickets)
    return CycleResult(done, seconds, claim_ms)


async def wake_latency(base: str, agents: int, samples: int) -> list[float]:
    """Agents long-poll an empty queue; one message at a time is posted; ms from its 202 to the claim answer."""
    limits = httpx.Limits(max_connections=agents + 2, max_keepalive_connections=agents + 2)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        shop, team = await new_shop(http, agents)
        claimed_at: dict[str, float] = {}
        stop = asyncio.Event()
        arrived = asyncio.Event()

        async def wait_for_work(agent: dict[str, Any]) -> None:
            while not stop.is_set():
                answer = await http.post("/v1/agents/me/claim?wait=30", headers=agent["headers"])
                if answer.status_code != 200:
                    continue
                ticket_id = answer.json()["id"]
                claimed_at[ticket_id] = time.perf_counter()
                arrived.set()
                await http.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])

        waiters = [asyncio.create_task(wait_for_work(a)) for a in team]
        await asyncio.sleep(1.0)  # every agent is waiting
        latencies: list[float] = []
        for i in range(samples):
            arrived.clear()
            response = await post_signed(http, shop["id"], shop["webhook_secret"],
                                         [message(TEXTS[i % len(TEXTS)], conversation=f"w-{i}", customer=f"w-{i}")])
            stored = time.perf_counter()
            ticket_id = response.json()["results"][0]["ticket_id"]
            while ticket_id not in claimed_at:
                await asyncio.wait_for(arrived.wait(), timeout=5)
                arrived.clear()
            latencies.append(max(0.0, claimed_at[ticket_id] - stored) * 1000)
            await asyncio.sleep(0.02)  # let the agent resolve and wait again
        stop.set()
        # Wake every waiter so it sees `stop`: one message per agent.
        await post_signed(http, shop["id"], shop["webhook_secret"],
                          [message("请问这款还有货吗", conversation=f"end-{i}", customer=f"end-{i}") for i in range(agents)])
        await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), timeout=40)
    return latencies


async def db_claim_resolve(url: str, tickets: int, consumers: int) -> float:
    """Our claim + resolve, called as the endpoints call them, by `consumers` agents one ticket at a time."""
    async with uvicorn(url) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            shop, team = await new_shop(http, consumers, capacity=1)
            await preload(http, shop, tickets)
    engine = create_engine(url, pool_size=consumers)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as session:
            agents = [await session.get(Agent, a["id"]) for a in team]
            for agent in agents:
                session.expunge(agent)

        async def consume(agent: Agent) -> int:
            done = 0
            async with sessionmaker() as session:
                while True:
                    ticket = await queues.claim_once(session, agent=agent, now=utcnow(), lease_seconds=120)
                    if ticket is None:
                        return done
                    await queues.resolve(session, agent=agent, ticket_id=ticket.id, now=utcnow(), idempotency_key=None)
                    done += 1

        started = time.perf_counter()
        done = sum(await asyncio.gather(*(consume(a) for a in agents if a is not None)))
        seconds = time.perf_counter() - started
    finally:
        await engine.dispose()
    assert done == tickets, (done, tickets)
    return done / seconds


class Compiled:
    """One of our Core statements compiled once for asyncpg, run with fresh values by bind name."""

    def __init__(self, stmt: Any) -> None:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        compiled = stmt.compile(dialect=dialect())
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or [])
        self.fixed = {k: v for k, v in compiled.params.items() if k not in BIND_NAMES}

    def args(self, **values: Any) -> list[Any]:
        merged = {**self.fixed, **values}
        return [merged[name] for name in self.names]


BIND_NAMES = {"agent_id", "shop_id", "capacity", "now", "lease_until", "ticket_id", "event_ticket", "event_shop",
              "event_at", "event_kind", "event_actor", "event_data"}


async def db_statements_rate(url: str, tickets: int, consumers: int) -> float:
    """Our claim and resolve statements (app/db/queues.py, compiled once) run by asyncpg: the database-level cost.

    Per ticket, as the service does it: a claim transaction (lock the agent, claim, insert the event) and a
    resolve transaction (holder-conditional update, insert the event); without loading the thread for the answer.
    """
    from sqlalchemy import bindparam

    from app.db import queues as sql

    b = bindparam
    lock = Compiled(sql.lock_agent_statement(agent_id=b("agent_id"), postgres=True))
    claim = Compiled(sql.claim_statement(agent_id=b("agent_id"), shop_id=b("shop_id"), capacity=b("capacity"),
                                         now=b("now"), lease_until=b("lease_until"), postgres=True))
    resolve = Compiled(sql.update_held_statement(ticket_id=b("ticket_id"), agent_id=b("agent_id"), now=b("now"),
                                                 values=queues.resolution(b("now"))))
    event = Compiled(sql.E.insert().values(ticket_id=b("event_ticket"), shop_id=b("event_shop"), at=b("event_at"),
                                           kind=b("event_kind"), actor=b("event_actor"), data=b("event_data")))
    async with uvicorn(url) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            shop, team = await new_shop(http, consumers, capacity=1)
            await preload(http, shop, tickets)

    async def consume(agent: dict[str, Any]) -> int:
        connection = await asyncpg.connect(asyncpg_dsn(url))
        actor = f"agent:{agent['id']}"
        done = 0
        try:
            while True:
                now = utcnow()
                async with connection.transaction():
                    capacity = await connection.fetchval(lock.sql, *lock.args(agent_id=agent["id"]))
                    row = await connection.fetchrow(claim.sql, *claim.args(
                        agent_id=agent["id"], shop_id=shop["id"], capacity=capacity, now=now,
                        lease_until=now + timedelta(seconds=120)))
                    if row is None:
                        return done
                    await connection.execute(event.sql, *event.args(
                        event_ticket=row["id"], event_shop=shop["id"], event_at=now, event_kind="claimed",
                        event_actor=actor, event_data='{"deliveries": 0}'))
                now = utcnow()
                async with connection.transaction():
                    resolved = await connection.fetchrow(resolve.sql, *resolve.args(
                        ticket_id=row["id"], agent_id=agent["id"], now=now))
                    assert resolved is not None
                    await connection.execute(event.sql, *event.args(
                        event_ticket=row["id"], event_shop=shop["id"], event_at=now, event_kind="resolved",
                        event_actor=actor, event_data="{}"))
                done += 1
        finally:
            await connection.close()

    started = time.perf_counter()
    done = sum(await asyncio.gather(*(consume(a) for a in team)))
    seconds = time.perf_counter() - started
    assert done == tickets, (done, tickets)
    return done / seconds


async def pgqueuer_rate(url: str, jobs: int, consumers: int) -> float:
    """pgqueuer 1.6: `consumers` queue managers, one job per dequeue, a no-op job acked on completion."""
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    dsn = asyncpg_dsn(url)
    setup = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        for start in range(0, jobs, 1000):
            n = min(1000, jobs - start)
            await queries.enqueue(["bench"] * n, [None] * n, [0] * n)
    finally:
        await setup.close()

    connections = [await asyncpg.connect(dsn) for _ in range(consumers)]
    managers = [QueueManager(Queries(AsyncpgDriver(c))) for c in connections]
    done = 0
    finished = asyncio.Event()

    for manager in managers:
        @manager.entrypoint("bench")
        async def job(_job: Any) -> None:
            nonlocal done
            done += 1
            if done >= jobs:
                finished.set()

    started = time.perf_counter()
    runners = [asyncio.create_task(m.run(dequeue_timeout=timedelta(seconds=1), batch_size=1)) for m in managers]
    await asyncio.wait_for(finished.wait(), timeout=600)
    seconds = time.perf_counter() - started
    for manager in managers:
        manager.shutdown.set()
    await asyncio.gather(*runners, return_exceptions=True)
    for connection in connections:
        await connection.close()
    return done / seconds


async def http_run(label: str, url: str, args: argparse.Namespace) -> tuple[CycleResult, list[float]]:
    await upgrade_async(url)
    async with uvicorn(url) as base:
        cycles = await http_cycles(base, args.tickets, args.agents)
        print(cycles.line(f"{label}: claim-reply-resolve over HTTP"), flush=True)
        wake = await wake_latency(base, args.agents, args.wake_samples)
        print(f"{label + ': long-poll wake':<34} p50 {percentile(wake, 0.5):6.1f} ms  p99 {percentile(wake, 0.99):6.1f} ms"
              f"  max {max(wake):6.1f} ms   ({len(wake)} messages, {args.agents} agents waiting)", flush=True)
    return cycles, wake


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=3000, help="tickets per HTTP cycle run")
    parser.add_argument("--db-tickets", type=int, default=10000, help="tickets for the database-level run")
    parser.add_argument("--jobs", type=int, default=10000, help="pgqueuer jobs")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--wake-samples", type=int, default=200)
    parser.add_argument("--postgres", default=os.environ.get("TRIAGE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES)
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    print(f"agents: {args.agents}; one uvicorn worker; {os.cpu_count()} CPUs", flush=True)
    async with postgres_database(args.postgres) as url:
        pg_cycles, pg_wake = await http_run("PostgreSQL", url, args)
        service = await db_claim_resolve(url, args.db_tickets, args.agents)
        print(f"{'claim+resolve, service functions':<34} {service:>8.0f} tickets/s  ({args.db_tickets} tickets, "
              f"{args.agents} consumers, one at a time, SQLAlchemy, no HTTP)", flush=True)
        ours = await db_statements_rate(url, args.db_tickets, args.agents)
        print(f"{'claim+resolve, our SQL on asyncpg':<34} {ours:>8.0f} tickets/s  ({args.db_tickets} tickets, "
              f"{args.agents} consumers, one at a time)", flush=True)
        theirs = await pgqueuer_rate(url, args.jobs, args.agents)
        print(f"{'pgqueuer: dequeue+ack, batch 1':<34} {theirs:>8.0f} jobs/s     ({args.jobs} jobs, "
              f"{args.agents} consumers)", flush=True)
        print(f"{'ratio our SQL / pgqueuer':<34} {ours / theirs:>8.2f}x   (target >= 3)", flush=True)
        print(f"{'ratio service functions / pgqueuer':<34} {service / theirs:>8.2f}x", flush=True)
    if not args.skip_sqlite:
        async with sqlite_database() as url:
            await http_run("SQLite", url, args)
    print(f"targets: >= 300 cycles/s over HTTP on PostgreSQL (got {pg_cycles.cycles / pg_cycles.seconds:.0f}); "
          f"wake p99 < 100 ms (got {percentile(pg_wake, 0.99):.1f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
