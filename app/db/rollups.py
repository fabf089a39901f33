"""The daily rollup of the statistics (migration 0027): per shop and UTC day whose figures are settled, one stats_days
row with each episode's measures and each round's, packed (app/db/figures.py), so a long window reads a row per day
and its percentiles and distinct buyers stay exact.

A day is rolled seven hours after its end (ROLL_AFTER), by the same reading of episode_facts and round_facts as the
statistics themselves (`_summary_episodes`, `_facts`, `_rounds`), once nothing of it can change without a write to
them:
- its open episodes (running, unresolved, no agent's answer: the breach waits for as_of, the agent is whoever holds
  the ticket, which changes without a summary write) stay out of its row and are read from the summaries, through
  ix_episode_facts_open; an episode stops being open only by a write to its summary, which marks the day stale;
- no finished unanswered episode predates the trail's due times (judged by the shop's configured target, which ops
  may change);
- the figures still waiting on as_of (an unanswered episode's due time or target, an open round's cap) are all past:
  stats_days.settled_at says from when they hold, and a window judged earlier reads the day's summaries.
A later write to a rolled day's summaries appends the day to stats_stale_days (the migration's triggers); the
statistics read a stale day from the summaries, and the next pass rolls it again.

On PostgreSQL a day is rolled in one REPEATABLE READ transaction: the figures and the stale marks it deletes are of one
snapshot, so a write committed after it keeps its mark. Workers of several processes take a per-shop advisory lock
and skip a shop another holds; one that lost a race by a hair (the other committed between its snapshot and its lock)
fails on the day's key and leaves the day as the other rolled it.
"""

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, literal, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import EpisodeFact, TicketEvent, stats_days, stats_stale_days
from app.db.session import is_postgres
from app.db.stats import (
    _facts,
    _rounds,
    _seconds,
    _summary_episodes,
    _summary_round_rows,
    day_start,
    facts_of,
    shop_config,
)

EF = EpisodeFact.__table__
SD = stats_days
STALE = stats_stale_days
# Seven hours after its end: the triggers mark writes to episodes opened more than six hours before (migration 0030),
# and the hour between is longer than any transaction of the service, so a write the roll's snapshot misses is marked.
ROLL_AFTER = timedelta(hours=7)
# Past the last threshold: the statistics round seconds to the millisecond before comparing them.
SETTLE_MARGIN = timedelta(seconds=1)


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock (the triggers mark by it)."""
    if is_postgres(session):
        return await session.scalar(select(func.now()))  # type: ignore[return-value]
    value = await session.scalar(text("SELECT datetime('now')"))
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


async def shops(session: AsyncSession) -> list[str]:
    return list(await session.scalars(text("SELECT id FROM shops ORDER BY id")))


async def pending_days(session: AsyncSession, *, shop_id: str, before: date) -> list[date]:
    """The shop's days before `before` to roll, oldest first: those with episodes not rolled yet, or stale."""
    stale = set(await session.scalars(select(STALE.c.day).where(STALE.c.shop_id == shop_id, STALE.c.day < before)
                                      .distinct()))
    done = set(await session.scalars(select(SD.c.day).where(SD.c.shop_id == shop_id, SD.c.day < before)))
    days, after = [], None
    while True:
        # The next day with an episode: one probe of ix_episode_facts_shop per such day, none for empty days.
        first = await session.scalar(select(func.min(EF.c.opened_at)).where(
            EF.c.shop_id == shop_id, *([EF.c.opened_at >= after] if after is not None else [])))
        if first is None or (day := first.astimezone(UTC).date()) >= before:
            return days
        if day not in done or day in stale:
            days.append(day)
        after = day_start(day) + timedelta(days=1)


async def lock_shop(session: AsyncSession, shop_id: str) -> bool:
    """Whether this transaction may roll the shop (PostgreSQL: no other worker holds it; SQLite has one writer)."""
    if not is_postgres(session):
        return True
    return bool(await session.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext('triage_stats_days'), "
                                          "hashtext(:shop))"), {"shop": shop_id}))


async def roll_day(session: AsyncSession, *, shop_id: str, day: date, now: datetime,
                   shop_targets: Mapping[str, int], queue_targets: Mapping[str, Mapping[str, int] | None]) -> bool:
    """Roll one day in the session's transaction (not committed): its row replaced, its stale marks seen deleted;
    or, if its figures are not settled by `now`, its row removed. Whether it was rolled."""
    postgres = is_postgres(session)
    start = day_start(day)
    ranges = [(start, start + timedelta(days=1))]
    # The open episodes stay out of the row: a window reads them from the summaries (ix_episode_facts_open).
    facts = _facts(postgres, _summary_episodes(shop_id=shop_id, ranges=ranges, open=False), as_of=now,
                   shop_targets=shop_targets, queue_targets=queue_targets, settling=True)
    rounds = _rounds(postgres, facts, _summary_round_rows(shop_id=shop_id, ranges=ranges), as_of=now, settling=True)
    at = literal(start, type_=TicketEvent.__table__.c.at.type)
    settle = (await session.execute(select(
        select(func.max(facts.c.unsettled)).scalar_subquery().label("unsettled"),
        select(func.max(_seconds(postgres, at, facts.c.opened_at) + facts.c.settles)).scalar_subquery()
        .label("episodes"),
        select(func.max(_seconds(postgres, at, rounds.c.opened_at) + rounds.c.settles)).scalar_subquery()
        .label("rounds")))).one()
    offsets = [float(v) for v in (settle.episodes, settle.rounds) if v is not None]
    settled_at = start + timedelta(seconds=max(offsets, default=0.0)) + SETTLE_MARGIN
    await session.execute(delete(SD).where(SD.c.shop_id == shop_id, SD.c.day == day))
    # The marks this snapshot sees; one a later commit made stays, and the day is read from the summaries till then.
    await session.execute(delete(STALE).where(STALE.c.shop_id == shop_id, STALE.c.day == day))
    if settle.unsettled or settled_at >= now:
        return False
    episodes, round_rows = await facts_of(session, shop_id=shop_id, ranges=ranges, as_of=now,
                                          shop_targets=shop_targets, queue_targets=queue_targets, open=False)
    await session.execute(insert(SD).values(
        shop_id=shop_id, day=day, settled_at=settled_at, rolled_at=now,
        names=json.dumps({"episodes": episodes.names, "rounds": round_rows.names}, ensure_ascii=False),
        episodes=episodes.rows.tobytes(), rounds=round_rows.rows.tobytes()))
    return True


def _lost_race(error: DBAPIError) -> bool:
    """Another worker rolled the day between this one's snapshot and its lock (PostgreSQL)."""
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return isinstance(error, IntegrityError) or state == "40001"


async def roll_alone(sessionmaker: async_sessionmaker[AsyncSession], *, shop_id: str, day: date,
                     now: datetime) -> bool | None:
    """Roll one day in its own transaction (REPEATABLE READ on PostgreSQL) and commit; whether it was rolled, or None
    when another worker has the shop."""
    async with sessionmaker() as session:
        if is_postgres(session):
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if not await lock_shop(session, shop_id):
            await session.rollback()
            return None
        config = await shop_config(session, shop_id=shop_id)
        if config is None:
            await session.rollback()
            return False
        try:
            done = await roll_day(session, shop_id=shop_id, day=day, now=now, shop_targets=config[0],
                                  queue_targets=config[1])
            await session.commit()
        except DBAPIError as error:
            if not _lost_race(error):
                raise
            await session.rollback()
            return None
    return done


async def due(sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime) -> dict[str, list[date]]:
    """Per shop, the days to roll by `now` (and by the database's clock, which the triggers mark by)."""
    async with sessionmaker() as session:
        horizon = (min(now, await database_now(session)) - ROLL_AFTER).date()
        found = {shop_id: await pending_days(session, shop_id=shop_id, before=horizon)
                 for shop_id in await shops(session)}
        await session.rollback()
    return {shop_id: days for shop_id, days in found.items() if days}
