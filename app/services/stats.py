"""Service-level statistics of a shop: the database aggregates, shaped for the API."""

import logging
from datetime import datetime, timedelta
from typing import Any


from app import metrics
from app.db import stats as stats_sql
from app.db.deliveries import delivery_store
from app.db.errors import StoreUnavailable, translated
from app.db.session import DriverConnections, Row, Session
from app.domain import DEFAULT_PRESENCE_TIMEOUT, TIER_NAMES, Presence, presence_at, target_seconds, tier_name
from app.errors import InvalidInput, ShopNotFound
from app.schemas.stats import (
    AgentStats,
    Backlog,
    Durations,
    OverallStats,
    QueueStats,
    RoundDurations,
    ShopStats,
    TierStats,
)

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=92)
log = logging.getLogger("app.stats")


def stats_range(*, since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The asked range, defaulting to the 24 hours before `until` (itself defaulting to now)."""
    until = until or now
    since = since or until - DEFAULT_RANGE
    if since >= until:
        raise InvalidInput("since must be before until", details=[
            {"field": "query.since", "reason": "must be before until", "type": "range"}])
    if until - since > MAX_RANGE:
        raise InvalidInput("the range may span at most 92 days", details=[
            {"field": "query.since", "reason": "the range may span at most 92 days", "type": "range"}])
    return since, until


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _levels(row: Row[Any] | None, rounds: Row[Any] | None) -> dict[str, Any]:
    empty = Durations(count=0, mean=None, p50=None, p90=None)
    round_response = RoundDurations(count=0, mean=None, p50=None, p90=None, unanswered=0) if rounds is None else \
        RoundDurations(count=rounds.rounds, mean=_round(rounds.round_response_mean),
                       p50=_round(rounds.round_response_p50), p90=_round(rounds.round_response_p90),
                       unanswered=int(rounds.unanswered or 0))
    if row is None:
        return {"conversations_received": 0, "replied": 0, "reply_rate": None, "first_response": empty,
                "sla_breaches": 0, "resolution": empty, "auto_closed": 0, "round_response": round_response,
                "buyers_received": 0, "buyers_replied": 0, "buyer_reply_rate": None}
    return {
        "conversations_received": row.received, "replied": int(row.replied or 0),
        "reply_rate": _rate(int(row.replied or 0), row.received),
        "first_response": Durations(count=row.answered, mean=_round(row.first_response_mean),
                                    p50=_round(row.first_response_p50), p90=_round(row.first_response_p90)),
        "sla_breaches": int(row.breached or 0),
        "resolution": Durations(count=row.resolved, mean=_round(row.resolution_mean),
                                p50=_round(row.resolution_p50), p90=_round(row.resolution_p90)),
        "auto_closed": int(row.auto_closed or 0),
        "round_response": round_response,
        "buyers_received": row.buyers, "buyers_replied": row.buyers_replied,
        "buyer_reply_rate": _rate(row.buyers_replied, row.buyers),
    }


def _wait(oldest: datetime | None, now: datetime) -> float | None:
    return None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3)


def _backlog(rows: list[Row[Any]], now: datetime) -> Backlog:
    depth = {tier: 0 for tier in TIER_NAMES}
    for row in rows:
        depth[tier_name(row.tier)] += row.depth
    oldest = min((row.oldest for row in rows), default=None)
    return Backlog(depth=depth, total=sum(depth.values()), oldest_wait_seconds=_wait(oldest, now))  # type: ignore[arg-type]


async def shop_stats(session: Session, *, shop_id: str, since: datetime, until: datetime,
                     now: datetime, presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT,
                     from_trail: bool = False) -> ShopStats:
    """Per shop, queue, tier and agent: the service levels of episodes opened in [since, until), and the backlog now;
    from the summaries, or `from_trail`, rebuilt from the event trail (what the summaries must equal)."""
    config = await stats_sql.shop_config(session, shop_id=shop_id)
    if config is None:
        await session.rollback()
        raise ShopNotFound(f"no shop with id '{shop_id}'")
    shop_targets, queue_targets, agents = config
    rows, round_rows = await stats_sql.service_levels(
        session, shop_id=shop_id, since=since, until=until, as_of=min(until, now), shop_targets=shop_targets,
        queue_targets=queue_targets, from_trail=from_trail)
    backlog = list(await stats_sql.backlog(session, shop_id=shop_id))
    holding = await stats_sql.holding(session, shop_id=shop_id)
    await session.rollback()

    levels = {(row.dimension, row.key): row for row in rows}
    rounds = {(row.dimension, row.key): row for row in round_rows}
    return ShopStats(
        shop_id=shop_id, since=since, until=until, generated_at=now,
        overall=OverallStats(**_levels(levels.get(("overall", "")), rounds.get(("overall", ""))),
                             backlog=_backlog(backlog, now)),
        queues=_queue_stats(levels, rounds, backlog, queue_targets, now),
        tiers=[_tier_stats(tier, levels, rounds, backlog, shop_targets, now) for tier in TIER_NAMES],
        agents=_agent_stats(levels, rounds, agents, holding, online_after=now - timedelta(seconds=presence_timeout)),
    )


Levels = dict[tuple[str, str], Row[Any]]


def _queue_stats(levels: Levels, rounds: Levels, backlog: list[Row[Any]], queue_targets: dict[str, Any],
                 now: datetime) -> list[QueueStats]:
    """Every queue of the shop, and any other that episodes or the backlog name."""
    names = sorted(set(queue_targets) | {key for dim, key in levels if dim == "queue"} | {row.queue for row in backlog})
    return [QueueStats(queue=name, **_levels(levels.get(("queue", name)), rounds.get(("queue", name))),
                       backlog=_backlog([r for r in backlog if r.queue == name], now))
            for name in names]


def _tier_stats(tier: str, levels: Levels, rounds: Levels, backlog: list[Row[Any]], shop_targets: dict[str, Any],
                now: datetime) -> TierStats:
    queued = [r for r in backlog if tier_name(r.tier) == tier]
    return TierStats(tier=tier, **_levels(levels.get(("tier", tier)), rounds.get(("tier", tier))),  # type: ignore[arg-type]
                     first_response_target_seconds=target_seconds(shop_targets, tier),
                     depth=sum(r.depth for r in queued),
                     oldest_wait_seconds=_wait(min((r.oldest for r in queued), default=None), now))


def _agent_stats(levels: Levels, rounds: Levels, agents: list[Row[Any]], holding: dict[str, int], *,
                 online_after: datetime) -> list[AgentStats]:
    """The shop's agents in their order, then any other agent that episodes, rounds or held tickets name."""
    names = {a.id: a.name for a in agents}
    presence = {a.id: presence_at(a.presence, a.seen_at, online_after=online_after) if a.active else Presence.OFFLINE
                for a in agents}
    agent_ids = [a.id for a in agents] + sorted({key for dim, key in (*levels, *rounds)
                                                 if dim == "agent" and key not in names}
                                                | {a for a in holding if a not in names})
    return [AgentStats(agent_id=agent_id, name=names.get(agent_id), holding=holding.get(agent_id, 0),
                       presence=presence.get(agent_id, Presence.OFFLINE),  # type: ignore[arg-type]
                       **_levels(levels.get(("agent", agent_id)), rounds.get(("agent", agent_id))))
            for agent_id in agent_ids]


async def backlog_gauges(session: Session, *, now: datetime) -> list[Any]:
    """The backlog gauge families, read from the database now (one aggregate statement)."""
    async with translated():
        rows = await stats_sql.backlog_everywhere(session)
        await session.rollback()
    return metrics.backlog_families(rows, now=now)


async def metrics_exposition(sessionmaker: Any, *, drivers: DriverConnections, now: datetime,
                             presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT) -> tuple[bytes, bool]:
    """The Prometheus text: process metrics, and the backlog, presence and delivery gauges read from the database
    now; and whether the database answered."""
    try:
        async with sessionmaker() as session:
            families = await backlog_gauges(session, now=now)
            async with translated():
                counts = await stats_sql.presence_counts(session, online_after=now - timedelta(seconds=presence_timeout))
                await session.rollback()
            families.append(metrics.presence_family(counts))
        async with translated(), delivery_store(drivers) as store:
            families.append(metrics.oldest_pending_family(await store.oldest_pending(), now=now))
        metrics.GAUGE_REFRESHES.inc()
    except StoreUnavailable as exc:
        # A scrape still reports the process's own metrics while the database is away.
        log.warning("backlog gauges unavailable (%s: %s)", type(exc).__name__, exc)
        return metrics.exposition([]), False
    return metrics.exposition(families), True
