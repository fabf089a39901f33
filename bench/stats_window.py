"""Statistics over long windows with and without the daily rollup (issue 19), in one run.

One PostgreSQL database is filled directly with SQL (bench/scale.py's load through the service runs at about 150
messages a second here): a shop created through the service, then `--per-day` episode summaries a day for `--days`
days ending three days ago (queues, tiers, 20 agents, first replies 5-905 s, a tenth unanswered and auto-closed,
resolutions, buyers returning) and 1.5 buyer rounds per episode, loaded without the summaries' triggers. A copy of
it is made; the statistics worker rolls the copy's days (timed): all but the last two and today, which a window
reads from the summaries, as it would in service. Then the statistics of 7, 30 and 92 days ending now
are timed on both, alternating, through the service's own function (app/services/stats.py, no HTTP), and the two
answers compared: they must be equal.

    .venv/bin/python bench/stats_window.py [--per-day 800] [--days 100] [--rounds 5]

At 1,000,000 buyer messages (issue 19's size) a 92-day window holds about 75,000 episodes: the default gives 73,600.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from common import database, settle  # type: ignore[import-not-found]

from app.db.listen import asyncpg_dsn
from app.db.migrate import upgrade_async
from app.db.session import create_engine, create_sessionmaker
from app.main import create_app
from app.services import stats
from app.services.rollups import roll
from app.settings import Settings

ADMIN = {"Authorization": "Bearer adm_bench"}
SHOP = "bench-window"

EPISODES = """
INSERT INTO episode_facts (ticket_id, opened_at, shop_id, customer_id, queue, tier, due_in, first_response_at,
                           responder, answered_late, resolved_at, resolver, closer, ended)
SELECT 'bench-' || g, o, $1, floor(random() * $4 * 0.7)::bigint, q, t, 300.0,
       CASE WHEN a THEN o + fr * interval '1 second' END, CASE WHEN a THEN agent END, a AND fr > 300,
       o + (fr + res) * interval '1 second', CASE WHEN a THEN agent END,
       CASE WHEN a THEN 'agent:' || agent ELSE 'system' END, true
FROM (SELECT g, $2::timestamptz + g * $3 * interval '1 second' AS o,
             (array['presale', 'aftersale', 'complaints'])[1 + g % 3] AS q, 'P' || (1 + g % 4) AS t,
             random() < 0.9 AS a, round((5 + random() * 900)::numeric, 3)::float AS fr,
             round((60 + random() * 86400)::numeric, 3)::float AS res, 'agent-' || (g % 20) AS agent
      FROM generate_series(0, $4 - 1) g) x
"""
ROUNDS = """
INSERT INTO round_facts (ticket_id, shop_id, episode, started, reply_at, replier, cut)
SELECT f.ticket_id, f.shop_id, f.opened_at, f.opened_at + k * interval '600 seconds',
       CASE WHEN random() < 0.9 THEN f.opened_at + (k * 600 + random() * 1200) * interval '1 second' END,
       f.responder, 0
FROM episode_facts f, generate_series(0, 1) k WHERE f.shop_id = $1 AND (k = 0 OR f.opened_at::time < '12:00')
"""


async def fill(url: str, *, per_day: int, days: int, now: datetime) -> None:
    await upgrade_async(url)
    app = create_app(Settings(_env_file=None, database_url=url, admin_token="adm_bench"))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        answer = await client.post("/v1/shops", json={"id": SHOP, "name": "Bench"}, headers=ADMIN)
        assert answer.status_code == 201, answer.text
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        start = now - timedelta(days=days)
        async with connection.transaction():
            # Loaded as history: without the triggers (they would mark every old day stale).
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute("SELECT setseed(0.19)")
            await connection.execute(EPISODES, SHOP, start, 86400 / per_day, per_day * days)
            await connection.execute(ROUNDS, SHOP)
    finally:
        await connection.close()


async def copy(url: str, name: str) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    source = url.rsplit("/", 1)[1]
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    finally:
        await connection.close()
    return url.rsplit("/", 1)[0] + "/" + name


async def drop(url: str) -> None:
    base, name = url.rsplit("/", 1)
    connection = await asyncpg.connect(asyncpg_dsn(base + "/postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def run(url: str, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    await fill(url, per_day=args.per_day, days=args.days, now=now)
    await settle(url)
    rolled_url = await copy(url, url.rsplit("/", 1)[1] + "_rolled")
    try:
        engines = {"summaries": create_engine(url), "rollup": create_engine(rolled_url)}
        makers = {label: create_sessionmaker(engine) for label, engine in engines.items()}
        started = time.perf_counter()
        days = await roll(makers["rollup"], now=now, limit=10_000)
        print(f"rolled {days.get(SHOP, 0)} days in {time.perf_counter() - started:.1f} s", flush=True)
        await settle(rolled_url)
        print(f"{'window':10} {'episodes':>9} {'summaries only (ms)':>24} {'with rollup (ms)':>24} {'ratio':>6}"
              f" {'us/episode':>11}")
        for window in (7, 30, 92):
            since, until = now - timedelta(days=window), now
            async with makers["summaries"]() as session:
                episodes = await session.scalar(stats_sql_count(), {"shop": SHOP, "since": since, "until": until})
            times: dict[str, list[float]] = {"summaries": [], "rollup": []}
            answers = {}
            for r in range(args.rounds + 1):
                for label in (("summaries", "rollup") if r % 2 == 0 else ("rollup", "summaries")):
                    async with makers[label]() as session:
                        t0 = time.perf_counter()
                        answer = await stats.shop_stats(session, shop_id=SHOP, since=since, until=until, now=now)
                        elapsed = (time.perf_counter() - t0) * 1000
                    answers[label] = answer.model_dump()
                    if r:  # the first round warms the caches
                        times[label].append(elapsed)
            same = "same figures" if answers["summaries"] == answers["rollup"] else "FIGURES DIFFER"
            if os.environ.get("BENCH_DUMP"):
                import json
                open(f"/tmp/rollup/w{window}.json", "w").write(json.dumps(answers, default=str, indent=1))
            a, b = statistics.median(times["summaries"]), statistics.median(times["rollup"])
            print(f"{window:>3} days  {episodes:9d} {fmt(times['summaries']):>24} {fmt(times['rollup']):>24} "
                  f"{b / a:6.2f} {b * 1000 / max(episodes, 1):11.2f}  {same}", flush=True)
        for engine in engines.values():
            await engine.dispose()
    finally:
        if not args.keep:
            await drop(rolled_url)
    print("(median of the rounds, range in brackets; ratio: with rollup / summaries only; us/episode with the rollup)")


def stats_sql_count() -> object:
    from sqlalchemy import text
    return text("SELECT count(*) FROM episode_facts WHERE shop_id = :shop AND opened_at >= :since "
                "AND opened_at < :until")


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, default=800)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the rolled copy (the source is always dropped)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with database("postgres") as url:
        asyncio.run(run(url, args))
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
