"""The daily rollup (migration 0027, app/db/rollups.py): statistics over windows that span rolled days, stale days and
partial edge days equal the figures rebuilt from the event trail, on both databases. The history runs over three days
a week ago: replies early and late, a seller's reply, a transfer, a snooze, an auto-close, an unanswered round, a
reopening and an open conversation nobody answered (left out of its day's row, read from the summaries); the rollup
is made, made stale by later writes (a reopening, a
late reply), made again, by two workers at once, and by one racing a write."""

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.clock import utcnow
from app.db.models import stats_days, stats_stale_days
from app.db.rollups import due, lock_shop, roll_day
from app.db.session import is_postgres
from app.db.stats import rolled_days, shop_config
from app.services.autoclose import close_quiet
from app.services.rollups import roll
from tests.api.test_summaries import Script, both
from tests.support.clock import freeze
from tests.support.queues import new_agent

pytestmark = pytest.mark.asyncio


def start_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def used(app: FastAPI, shop_id: str, since: datetime, until: datetime, as_of: datetime) -> list[date]:
    """The days a window reads from the rollup."""
    async with app.state.sessionmaker() as session:
        return await rolled_days(session, shop_id=shop_id, since=since, until=until, as_of=as_of)


async def stale(app: FastAPI, shop_id: str) -> set[date]:
    async with app.state.sessionmaker() as session:
        return set(await session.scalars(select(stats_stale_days.c.day).where(stats_stale_days.c.shop_id == shop_id)))


async def rolled(app: FastAPI, shop_id: str) -> dict[date, int]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(select(stats_days.c.day, func.count())
                                     .where(stats_days.c.shop_id == shop_id).group_by(stats_days.c.day))
        return {row[0]: row[1] for row in rows}


async def same(app: FastAPI, shop_id: str, windows: list[tuple[datetime, datetime]], now: datetime) -> None:
    for since, until in windows:
        summarised, rebuilt = await both(app, shop_id, since, until, now)
        assert summarised == rebuilt, (since, until)


@pytest.fixture
async def no_rollup_worker(app: FastAPI) -> Any:
    """The app's own statistics worker stopped: the test rolls when it means to."""
    await app.state.workers.stop("stats-rollup")
    yield
    app.state.workers.start()


async def test_windows_over_rolled_stale_and_edge_days_equal_the_trails(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None, no_rollup_worker: None) -> None:
    day_a = (utcnow() - timedelta(days=7)).date()
    day_b, day_c = day_a + timedelta(days=1), day_a + timedelta(days=2)
    clock = freeze(monkeypatch, start_of(day_a) + timedelta(hours=9))
    shop = await new_shop(auto_close_after_hours=24)
    s = Script(client, clock, shop)
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    wu = await new_agent(client, admin_headers, shop["id"], queues=("aftersale",))

    # Day A.
    c1 = await s.buyer("a1", "请问这款有M码吗？")
    c2 = await s.buyer("a2", "快递三天没动了")
    c3 = await s.buyer("a3", "你们客服态度太差了，我要投诉")
    await s.buyer("a4", "这个有现货吗")                                # left to auto-close, unanswered
    clock.advance(30)
    assert await s.claim(lin) == c3
    await s.act(lin, c3, "replies", text="非常抱歉")                  # late for P1
    await s.act(lin, c3, "resolve")
    assert await s.claim(lin) == c2
    await s.act(lin, c2, "replies", text="马上查")
    await s.act(lin, c2, "transfer", queue="aftersale", reason="物流")
    assert await s.claim(wu) == c2
    await s.act(wu, c2, "snooze", until=(clock.now + timedelta(hours=1)).isoformat(), reason="等快递")
    clock.advance(40)
    await s.seller("a1", sent_ago=5)                                 # the seller answers a1 on the platform
    await s.buyer("a1", "好的")                                       # a round nobody answers
    clock.advance(3 * 3600)
    await s.buyer("a2", "到哪了")                                      # wakes the snooze
    assert await s.claim(wu) == c2
    await s.act(wu, c2, "replies", text="明天到")
    await s.act(wu, c2, "resolve")
    # Day B: a4 is closed for silence, a3 reopens, new conversations.
    clock.set(start_of(day_b) + timedelta(hours=10))
    await close_quiet(app.state.drivers, now=clock.now)              # a1 (answered by the seller) and a4
    b1 = await s.buyer("b1", "能便宜点吗")
    await s.buyer("a3", "还是没有解决")                                 # reopened: a3's day-A episode ends
    assert await s.claim(lin) == c3
    await s.act(lin, c3, "replies", text="马上处理")
    assert await s.claim(lin) == b1
    clock.advance(20)
    await s.act(lin, b1, "replies", text="可以")
    clock.advance(60)
    await s.buyer("b1", "那包邮吗")                                    # an open round of an answered episode
    # Day C: nobody answers c1.
    clock.set(start_of(day_c) + timedelta(hours=8))
    await s.buyer("c1", "在吗")
    now = clock.now + timedelta(hours=2)
    clock.set(now)

    assert await roll(app.state.sessionmaker, now=utcnow()) is not None
    days = await rolled(app, shop["id"])
    assert {day_a, day_b, day_c} <= set(days)  # c1, open and unanswered, is left out of C's row
    windows = [(start_of(day_a) - timedelta(hours=1), now),                        # A and B whole, C partial
               (start_of(day_a) + timedelta(hours=9, seconds=10), now),            # A partial, B whole
               (start_of(day_a), start_of(day_c)),                                 # exactly A and B
               (start_of(day_a), start_of(day_b)),                                 # A, judged at its end
               (start_of(day_b), start_of(day_b) + timedelta(hours=12)),           # part of B only
               (start_of(day_a), start_of(day_c) + timedelta(days=1))]             # A, B and C whole
    await same(app, shop["id"], windows, now)
    assert await used(app, shop["id"], *windows[5], now) == [day_a, day_b, day_c]
    assert await used(app, shop["id"], *windows[0], now) == [day_a, day_b]
    assert await used(app, shop["id"], *windows[1], now) == [day_b]
    assert await used(app, shop["id"], *windows[4], now) == []

    # Later writes to rolled days: a1's closed day-A episode reopens; the seller answers b1's open round late.
    clock.advance(600)
    await s.buyer("a1", "怎么关了")
    assert await s.claim(lin) == c1
    await s.seller("b1")
    now = clock.now
    assert {day_a, day_b} <= await stale(app, shop["id"])
    assert await used(app, shop["id"], *windows[0], now) == []
    await same(app, shop["id"], windows, now)

    # Two workers at once roll each day once; the statistics still equal the trail's.
    await asyncio.gather(roll(app.state.sessionmaker, now=utcnow()), roll(app.state.sessionmaker, now=utcnow()))
    assert (await rolled(app, shop["id"]))[day_a] == 1
    assert await used(app, shop["id"], *windows[0], now) == [day_a, day_b]
    assert not {day_a, day_b} & await stale(app, shop["id"])
    await same(app, shop["id"], windows, now)

    # A write that commits while a worker rolls its day keeps its mark: the day is read from the summaries.
    async with app.state.sessionmaker() as session:
        if is_postgres(session):
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        assert await lock_shop(session, shop["id"])
        targets, queue_targets, _ = await shop_config(session, shop_id=shop["id"])  # type: ignore[misc]
        if is_postgres(session):
            # After the worker's snapshot, before it reads the day (SQLite has one writer: the write would wait).
            await s.buyer("b1", "还有别的颜色吗")                       # a new round of b1's day-B episode
            await roll_day(session, shop_id=shop["id"], day=day_b, now=utcnow(), shop_targets=targets,
                           queue_targets=queue_targets)
            await session.commit()
    if not app.state.drivers.postgres:
        await s.buyer("b1", "还有别的颜色吗")
    assert day_b in await stale(app, shop["id"])
    assert day_b not in await used(app, shop["id"], *windows[0], clock.now)
    await same(app, shop["id"], windows, clock.now)
    await roll(app.state.sessionmaker, now=utcnow())
    # Rolled again; b1's new round waits for its reply or its cap, so a window judged before that reads B's
    # summaries, and one judged after reads the rollup.
    assert await used(app, shop["id"], *windows[0], clock.now) == [day_a]
    await same(app, shop["id"], windows, clock.now)
    clock.advance(86400)
    windows.append((start_of(day_a) - timedelta(hours=1), clock.now))
    assert await used(app, shop["id"], *windows[-1], clock.now) == [day_a, day_b, day_c]
    await same(app, shop["id"], windows, clock.now)



async def test_a_write_six_hours_after_an_episode_opened_marks_its_day_and_a_day_rolls_seven_hours_after_its_end(
        app: FastAPI, client: httpx.AsyncClient, new_shop: Any, monkeypatch: pytest.MonkeyPatch,
        quiet_workers: None, no_rollup_worker: None) -> None:
    real = utcnow()
    clock = freeze(monkeypatch, real - timedelta(hours=6, minutes=30))
    older = Script(client, clock, await new_shop())
    await older.buyer("o1", "请问这款有M码吗？")
    clock.set(real - timedelta(hours=5, minutes=30))
    younger = Script(client, clock, await new_shop())
    await younger.buyer("y1", "请问这款有M码吗？")
    clock.set(real)
    # A new round of each episode (migration 0030: the triggers mark by the database's clock).
    await older.buyer("o1", "在吗")
    await younger.buyer("y1", "在吗")
    assert await stale(app, older.shop["id"]) == {(real - timedelta(hours=6, minutes=30)).date()}
    assert await stale(app, younger.shop["id"]) == set()

    day = (real - timedelta(days=3)).date()
    clock.set(start_of(day) + timedelta(hours=12))
    shop = Script(client, clock, await new_shop())
    await shop.buyer("d1", "这个有现货吗")
    end = start_of(day) + timedelta(days=1)
    assert day not in (await due(app.state.sessionmaker, now=end + timedelta(hours=6, minutes=59))).get(
        shop.shop["id"], [])
    assert day in (await due(app.state.sessionmaker, now=end + timedelta(hours=7)))[shop.shop["id"]]
