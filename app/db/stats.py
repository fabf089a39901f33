"""Service-level statistics as SQL aggregates over episodes: from their summaries, or rebuilt from the event trail.

An episode is one `created` or `reopened` event; it runs until the ticket's next such event. A
ticket's events are written under its row lock, so their ids order them: everything between one
episode start and the next belongs to the first. (The `message_received` of a reopening message is
written just before `reopened`, so episode tiers come from the start and `reranked` events only.)

The statistics read episode_facts and round_facts (migration 0019), which triggers on ticket_events and messages
keep in the transaction of each write, by the same rules as the trail's reading here: a window reads its episodes
and their rounds, never the shop's whole trail or every message. The trail's reading stays, as what the summaries
must equal (tests/api/test_summaries.py) and what the migration fills them from.
"""

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    Row,
    String,
    and_,
    case,
    cast,
    extract,
    false,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import figures
from app.db.models import (Agent, EpisodeFact, Message, Queue, QueueCount, RoundFact, Shop, Ticket, TicketEvent,
                           queue_count_changes, stats_days, stats_stale_days)
from app.db.session import is_postgres
from app.domain import DEFAULT_TARGET_SECONDS, ROUND_CAP_SECONDS, SYSTEM_ACTOR, TIER_NAMES, EventKind, Status, target_seconds

E = TicketEvent.__table__
T = Ticket.__table__
QC = QueueCount.__table__
EF = EpisodeFact.__table__
RF = RoundFact.__table__
STATS_WORK_MEM = "64MB"
# Windows whose rolled days are kept aggregated, per process (`_rolled`): at 1 M messages a 92-day window's is about
# 16 MB, and the 24-hour, 7-, 30- and 92-day windows of a few shops' dashboards fit.
ROLLED_CACHE = 12

EPISODE_STARTS = (EventKind.CREATED, EventKind.REOPENED)
QUEUE_MOVES = (EventKind.CREATED, EventKind.REOPENED, EventKind.ROUTED, EventKind.TRANSFERRED)
PERCENTILES = {"p50": 0.5, "p90": 0.9}
MEASURES = ("first_response", "resolution")


def _seconds(postgres: bool, start: Any, end: Any) -> ColumnElement[Any]:
    """end - start in seconds, rounded to the millisecond (SQLite's date functions resolve no finer)."""
    if postgres:
        return cast(func.round(cast(extract("epoch", end - start), Numeric), 3), Float)
    return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)


def _target(queue: Any, tier: Any, *, shop_targets: Mapping[str, int],
            queue_targets: Mapping[str, Mapping[str, int] | None]) -> ColumnElement[Any]:
    """The first-response target of a (queue, tier) as a CASE over the shop's few configured values."""
    whens: list[tuple[Any, int]] = []
    for name, targets in sorted(queue_targets.items()):
        for tier_name in TIER_NAMES:
            if targets and tier_name in targets:
                whens.append((and_(queue == name, tier == tier_name), int(targets[tier_name])))
    for tier_name in TIER_NAMES:
        whens.append((tier == tier_name, target_seconds(shop_targets, tier_name)))
    return case(*whens, else_=DEFAULT_TARGET_SECONDS)


def _trail_episodes(*, shop_id: str, since: datetime, until: datetime) -> Any:
    """One row per episode opened in [since, until), with the raw facts of its events, read from the trail."""
    # A later episode starts later, so filtering before the window function keeps every `next_id` right.
    starts = (select(E.c.id.label("start_id"), E.c.ticket_id, E.c.at.label("opened_at"),
                     func.lead(E.c.id).over(partition_by=E.c.ticket_id, order_by=E.c.id).label("next_id"))
              # The kinds as literals: on PostgreSQL ix_ticket_events_shop_kind holds only these (migration
              # 0006), and a planner can match an index's predicate to constants, not to parameters.
              .where(E.c.shop_id == shop_id, E.c.kind.in_([literal_column(f"'{kind}'") for kind in EPISODE_STARTS]),
                     E.c.at >= since)
              .subquery("starts"))
    ev = E.alias("ev")
    fr = E.alias("fr")

    def inside(events: Any) -> ColumnElement[bool]:
        return and_(events.c.ticket_id == starts.c.ticket_id, events.c.id >= starts.c.start_id,
                    or_(starts.c.next_id.is_(None), events.c.id < starts.c.next_id))

    current = starts.c.next_id.is_(None)
    tier_text = case((ev.c.kind == "reranked", ev.c.data[("to", "tier")].as_string()),
                     else_=ev.c.data["tier"].as_string())
    # "P1" < "P2" as text: the minimum is the most urgent tier the episode reached.
    tier = (select(func.min(tier_text)).where(inside(ev), ev.c.kind.in_([*EPISODE_STARTS, "reranked"]))
            .scalar_subquery())
    # Seconds from the start to the due time, counted in open hours when it was set (app/services/tickets.py);
    # the tightest one a raised tier gave. Episodes written before the trail kept it have none.
    due_in = (select(func.min(ev.c.data["due_in"].as_float()))
              .where(inside(ev), ev.c.kind.in_([*EPISODE_STARTS, "reranked"])).scalar_subquery())
    moved_to = case((ev.c.kind.in_(EPISODE_STARTS), ev.c.data["queue"].as_string()),
                    else_=ev.c.data["to"].as_string())
    last_queue = (select(moved_to).where(inside(ev), ev.c.kind.in_(QUEUE_MOVES))
                  .order_by(ev.c.id.desc()).limit(1).scalar_subquery())
    resolved_event = (select(ev.c.at).where(inside(ev), ev.c.kind == EventKind.RESOLVED)
                      .order_by(ev.c.id).limit(1).scalar_subquery())
    resolver = (select(ev.c.data["agent_id"].as_string()).where(inside(ev), ev.c.kind == EventKind.RESOLVED)
                .order_by(ev.c.id).limit(1).scalar_subquery())
    # Closed by the auto-close worker (app/services/autoclose.py): the buyer went silent, nobody resolved it.
    closer = (select(ev.c.actor).where(inside(ev), ev.c.kind == EventKind.RESOLVED)
              .order_by(ev.c.id).limit(1).scalar_subquery())
    return (select(
        starts.c.ticket_id, starts.c.opened_at, current.label("current"), T.c.customer_id,
        # The running episode's state is on the ticket row itself; finished ones only in the trail.
        case((current, T.c.queue), else_=last_queue).label("queue"),
        tier.label("tier"),
        due_in.label("due_in"),
        fr.c.at.label("first_response_at"),
        case((fr.c.actor.like("agent:%"), func.substr(fr.c.actor, 7)), else_=null()).label("responder"),
        case((fr.c.data["within_target"].as_boolean().is_(False), 1), else_=0).label("answered_late"),
        case((current, T.c.resolved_at), else_=resolved_event).label("resolved_at"),
        resolver.label("resolver"),
        closer.label("closer"),
        case((current, T.c.assigned_agent_id), else_=null()).label("holder"),
        case((current, T.c.first_response_due_at), else_=null()).label("due_at"))
        .select_from(starts.join(T, T.c.id == starts.c.ticket_id)
                     .outerjoin(fr, and_(inside(fr), fr.c.kind == "replied",
                                         fr.c.data["first_response"].as_boolean().is_(True))))
        .where(starts.c.opened_at < until)
        .subquery("episodes"))


def _facts(postgres: bool, episodes: Any, *, as_of: datetime, shop_targets: Mapping[str, int],
           queue_targets: Mapping[str, Mapping[str, int] | None], settling: bool = False) -> Any:
    """Per episode: its queue, tier, owning agent, and the measured values; with `settling`, also what the daily
    rollup needs to know whether they can still change without a write (app/db/rollups.py)."""
    ep = episodes.c
    first_response = _seconds(postgres, ep.opened_at, ep.first_response_at)
    resolution = _seconds(postgres, ep.opened_at, ep.resolved_at)
    auto_closed = and_(ep.resolved_at.is_not(None), ep.closer == SYSTEM_ACTOR)
    as_of_value = literal(as_of, type_=E.c.at.type)
    target = func.coalesce(ep.due_in, _target(ep.queue, ep.tier, shop_targets=shop_targets,
                                              queue_targets=queue_targets))
    unanswered_overdue = or_(
        # The running episode has its due time; a finished one its due time as the trail kept it (in open hours),
        # or, written before the trail kept it, the configured target.
        and_(ep.current, ep.due_at < as_of_value, or_(ep.resolved_at.is_(None), ep.due_at < ep.resolved_at)),
        and_(~ep.current, resolution > target, _seconds(postgres, ep.opened_at, as_of_value) > target))
    breached = case((ep.first_response_at.is_not(None), ep.answered_late), (unanswered_overdue, 1), else_=0)
    settle: list[Any] = []
    if settling:
        unanswered = ep.first_response_at.is_(None)
        settle = [
            # Running and open with nobody's answer: its breach waits for as_of, its agent is whoever holds it.
            case((and_(ep.current, ep.resolved_at.is_(None), or_(unanswered, ep.responder.is_(None))), 1),
                 # Finished unanswered, written before the trail kept due times: judged by the configured target.
                 (and_(~ep.current, unanswered, ep.due_in.is_(None), ep.resolved_at.is_not(None)), 1),
                 else_=0).label("unsettled"),
            # Seconds after the start from which the breach above no longer depends on as_of.
            case((and_(ep.current, unanswered, ep.due_at.is_not(None),
                       or_(ep.resolved_at.is_(None), ep.due_at < ep.resolved_at)),
                  _seconds(postgres, ep.opened_at, ep.due_at)),
                 (and_(~ep.current, unanswered, resolution > target), target),
                 else_=null()).label("settles")]
    return select(
        ep.ticket_id, ep.opened_at, ep.resolved_at, ep.customer_id, ep.queue, ep.tier,
        # Whoever answered first owns the episode; else whoever resolved it; else whoever holds it now.
        func.coalesce(ep.responder, ep.resolver, ep.holder).label("agent_id"),
        first_response.label("first_response"),
        case((ep.first_response_at.is_not(None), 1), else_=0).label("replied"),
        breached.label("breached"),
        # An auto-closed episode is no resolution: it is counted apart.
        case((auto_closed, null()), else_=resolution).label("resolution"),
        case((auto_closed, 1), else_=0).label("auto_closed"),
        *settle,
    # A CTE read by all four groupings is computed once (both databases materialise a CTE used twice).
    ).cte("facts")


def _keyed(facts: Any, columns: Sequence[str], *, agent: Any = None) -> Any:
    """Each row of `facts` once per dimension it counts in: overall, its queue, its tier, its agent (if any)."""
    agent = facts.c.agent_id if agent is None else agent

    def keyed(dimension: str, key: Any, *where: Any) -> Any:
        return select(literal(dimension, String).label("dimension"), cast(key, String).label("key"),
                      *(facts.c[c] for c in columns)).where(*where)

    return union_all(
        keyed("overall", literal("", String)),
        keyed("queue", facts.c.queue),
        keyed("tier", facts.c.tier),
        keyed("agent", agent, agent.is_not(None)),
    ).subquery("keyed")


def _sqlite_percentile(value: Any, rank: Any, count: Any, fraction: float) -> ColumnElement[Any]:
    """percentile_cont over ranked rows: interpolate between the two values around (n - 1) * fraction."""
    position = (count - 1) * fraction
    lower = cast(position, Integer)
    weight = position - lower
    return func.sum(case(
        (and_(value.is_not(None), rank - 1 == lower), value * (1 - weight)),
        (and_(value.is_not(None), rank - 1 == lower + 1), value * weight),
        else_=null()))


def _mean(value: Any) -> ColumnElement[Any]:
    """The mean of millisecond-rounded seconds from their exact sum in milliseconds: a float average depends on the
    order it adds in, and the rollup's order is not the summaries' (a mean on a half millisecond could round apart)."""
    total = func.sum(cast(func.round(value * 1000.0), BigInteger))
    return cast(total, Float) / func.nullif(func.count(value), 0) / 1000.0


def _aggregates(source: Any) -> list[Any]:
    # A buyer is a customer; one with several episodes counts once, as replied if any of them was.
    return [func.count().label("received"),
            func.sum(source.c.replied).label("replied"), func.sum(source.c.breached).label("breached"),
            func.count(source.c.first_response).label("answered"),
            _mean(source.c.first_response).label("first_response_mean"),
            func.count(source.c.resolution).label("resolved"),
            _mean(source.c.resolution).label("resolution_mean"),
            func.sum(source.c.auto_closed).label("auto_closed"),
            func.count(func.distinct(source.c.customer_id)).label("buyers"),
            func.count(func.distinct(case((source.c.replied == 1, source.c.customer_id)))).label("buyers_replied")]


def _round_aggregates(source: Any) -> list[Any]:
    return [func.count(source.c.round_response).label("rounds"),
            _mean(source.c.round_response).label("round_response_mean"),
            func.sum(source.c.unanswered).label("unanswered")]


def _grouped(postgres: bool, keyed: Any, measures: Sequence[str], aggregates: Any) -> Any:
    """One row per (dimension, key): `aggregates` of its rows, and p50 and p90 of each measure."""
    if postgres:
        percentiles = [func.percentile_cont(fraction).within_group(keyed.c[m]).label(f"{m}_{name}")
                       for m in measures for name, fraction in PERCENTILES.items()]
        return (select(keyed.c.dimension, keyed.c.key, *aggregates(keyed), *percentiles)
                .group_by(keyed.c.dimension, keyed.c.key))
    # SQLite has no ordered-set aggregates: rank each measure within its group, then interpolate.
    group = [keyed.c.dimension, keyed.c.key]
    ranked = select(
        keyed,
        *[func.row_number().over(partition_by=[*group, keyed.c[m].is_(None)], order_by=keyed.c[m]).label(f"{m}_rank")
          for m in measures],
        *[func.count(keyed.c[m]).over(partition_by=group).label(f"{m}_n") for m in measures],
    ).subquery("ranked")
    percentiles = [_sqlite_percentile(ranked.c[m], ranked.c[f"{m}_rank"], ranked.c[f"{m}_n"], fraction)
                   .label(f"{m}_{name}") for m in measures for name, fraction in PERCENTILES.items()]
    return (select(ranked.c.dimension, ranked.c.key, *aggregates(ranked), *percentiles)
            .group_by(ranked.c.dimension, ranked.c.key))


def _least(postgres: bool, a: Any, b: Any) -> ColumnElement[Any]:
    return func.least(a, b) if postgres else func.min(a, b)


def _trail_round_rows(postgres: bool, *, shop_id: str, since: datetime) -> Any:
    """Per buyer round since `since`, read from the messages and the trail: its ticket, start, episode, reply time,
    replier, and whether a new episode cut it (`cut`).

    A round is the buyer messages after a reply (or the episode's start) up to the next agent or seller reply. The
    shop's messages and episode starts since `since` are read as one stream per ticket, in the order they happened
    (a start before the message that opened it); a running count of replies and starts numbers the rounds, and a
    running latest start says whose episode each message is. The off-hours reply is left out: it answers nobody.
    """
    M = Message.__table__
    order_key = literal_column
    messages = select(
        M.c.ticket_id, M.c.received_at.label("at"), order_key("1").label("rank"), M.c.id.label("seq"),
        case((M.c.direction == "inbound", order_key("'buyer'")), else_=order_key("'reply'")).label("item"),
        M.c.agent_id,
        # A seller's message is answered when the platform says it was sent (never after it arrived here).
        _least(postgres, M.c.sent_at, M.c.received_at).label("reply_at"),
    ).where(M.c.shop_id == shop_id, M.c.received_at >= since,
            or_(M.c.direction == "inbound", M.c.content["auto_reply"].as_string().is_(None)))
    starts = select(
        E.c.ticket_id, E.c.at, order_key("0"), E.c.id, order_key("'start'"), null(), null(),
    ).where(E.c.shop_id == shop_id, E.c.kind.in_([literal_column(f"'{kind}'") for kind in EPISODE_STARTS]),
            E.c.at >= since)
    stream = union_all(messages, starts).subquery("stream")
    s = stream.c
    order = [s.at, s.rank, s.seq]
    ranked = select(
        s.ticket_id, s.at, s.item, s.agent_id, s.reply_at,
        func.coalesce(func.sum(case((s.item == "buyer", 0), else_=1))
                      .over(partition_by=s.ticket_id, order_by=order, rows=(None, -1)), 0).label("round_no"),
        func.max(case((s.item == "start", s.at))).over(partition_by=s.ticket_id, order_by=order, rows=(None, 0))
        .label("episode"),
    ).subquery("numbered")
    r = ranked.c
    # Every row of a round shares its number; so does the reply or start that ends it (counted after it).
    return (select(
        r.ticket_id,
        func.min(case((r.item == "buyer", r.at))).label("started"),
        func.max(case((r.item == "buyer", r.episode))).label("episode"),
        func.min(case((r.item == "reply", r.reply_at))).label("reply_at"),
        func.max(case((r.item == "reply", r.agent_id))).label("replier"),
        func.max(case((r.item == "start", 1), else_=0)).label("cut"),
    ).group_by(r.ticket_id, r.round_no).having(func.count(case((r.item == "buyer", 1))) > 0).subquery("rounds"))


def _within(column: Any, ranges: Sequence[tuple[datetime, datetime]]) -> ColumnElement[bool]:
    """`column` in any of the [start, end) ranges."""
    return or_(false(), *(and_(column >= start, column < end) for start, end in ranges))


def _summary_round_rows(*, shop_id: str, ranges: Sequence[tuple[datetime, datetime]]) -> Any:
    """The same rows, as round_facts keeps them (migration 0019), of the episodes opened in `ranges`: no message is
    read."""
    return (select(RF.c.ticket_id, RF.c.started, RF.c.episode, RF.c.reply_at, RF.c.replier, RF.c.cut)
            .where(RF.c.shop_id == shop_id, _within(RF.c.episode, ranges)).subquery("rounds"))


def _rounds(postgres: bool, facts: Any, rounds: Any, *, as_of: datetime, settling: bool = False) -> Any:
    """Per buyer round of the episodes in `facts`: its response time, capped, and whether it went unanswered; with
    `settling`, its episode's start and the seconds after that from which it no longer depends on as_of."""
    cap = literal(float(ROUND_CAP_SECONDS))
    answered = _seconds(postgres, rounds.c.started, rounds.c.reply_at)
    waited = _seconds(postgres, rounds.c.started, literal(as_of, type_=E.c.at.type))
    f = facts.c
    # Unanswered: the episode ended (a new one started, or it was resolved) with no reply, or the cap has passed
    # with none; a round still waiting under the cap is not counted yet.
    response = case(
        (rounds.c.reply_at.is_not(None), case((answered > cap, cap), (answered < 0, 0.0), else_=answered)),
        (or_(rounds.c.cut == 1, f.resolved_at.is_not(None), waited >= cap), cap),
        else_=null())
    return select(
        f.queue, f.tier, func.coalesce(rounds.c.replier, f.agent_id).label("agent_id"),
        cast(response, Float).label("round_response"),
        case((and_(rounds.c.reply_at.is_(None), response.is_not(None)), 1), else_=0).label("unanswered"),
        *([f.opened_at,
           case((and_(rounds.c.reply_at.is_(None), rounds.c.cut != 1, f.resolved_at.is_(None)),
                 _seconds(postgres, f.opened_at, rounds.c.started) + cap), else_=null()).label("settles")]
          if settling else []),
    ).select_from(rounds.join(facts, and_(f.ticket_id == rounds.c.ticket_id, f.opened_at == rounds.c.episode))
                  ).cte("round_measures")


# OPEN_EPISODE (app/db/models.py) over episode_facts by name, as ix_episode_facts_open's predicate, so the planner
# proves the index usable (the query also reads tickets, which have columns of the same names).
OPEN = literal_column("(" + " AND ".join([
    "NOT episode_facts.ended", "episode_facts.resolved_at IS NULL",
    "(episode_facts.first_response_at IS NULL OR episode_facts.responder IS NULL)"]) + ")", Boolean)


def _summary_episodes(*, shop_id: str, ranges: Sequence[tuple[datetime, datetime]], open: bool | None = None) -> Any:
    """One row per episode opened in `ranges` (with `open`, only the open ones, or only the others), as
    episode_facts keeps it (migrations 0019, 0020). A running episode's holder and due time are on its ticket row
    only, as in the trail's reading: the ticket is read for a running episode that no agent answered or resolved
    yet; every other episode's figures are in its summary (its queue and resolution follow the same events as its
    ticket's)."""
    F = EF
    window: tuple[Any, ...] = (F.c.shop_id == shop_id, _within(F.c.opened_at, ranges))
    if open is not None:
        window += (OPEN if open else not_(OPEN),)
    needs_ticket = and_(F.c.ended.is_(False),
                        or_(F.c.first_response_at.is_(None), and_(F.c.responder.is_(None), F.c.resolver.is_(None))))

    def episodes(*extra: Any, ticket: bool) -> Any:
        current = T.c.opened_at == F.c.opened_at if ticket else F.c.ended.is_(False)
        return select(
            F.c.ticket_id, F.c.opened_at, current.label("current"), F.c.customer_id,
            (case((current, T.c.queue), else_=F.c.queue) if ticket else F.c.queue).label("queue"),
            F.c.tier, F.c.due_in, F.c.first_response_at, F.c.responder,
            case((F.c.answered_late.is_(True), 1), else_=0).label("answered_late"),
            (case((current, T.c.resolved_at), else_=F.c.resolved_at) if ticket else F.c.resolved_at)
            .label("resolved_at"),
            F.c.resolver, F.c.closer,
            (case((current, T.c.assigned_agent_id), else_=null()) if ticket else null()).label("holder"),
            (case((current, T.c.first_response_due_at), else_=null()) if ticket else null()).label("due_at"),
        ).where(*window, *extra)

    return union_all(
        episodes(~needs_ticket, ticket=False),
        episodes(needs_ticket, ticket=True).join_from(F, T, T.c.id == F.c.ticket_id),
    ).subquery("episodes")


_INDEX_ONLY = ("enable_seqscan = off", "enable_hashjoin = off", "enable_mergejoin = off",
               "max_parallel_workers_per_gather = 0", "plan_cache_mode = force_custom_plan")


async def service_levels(session: AsyncSession, *, shop_id: str, since: datetime, until: datetime,
                         as_of: datetime, shop_targets: Mapping[str, int],
                         queue_targets: Mapping[str, Mapping[str, int] | None], from_trail: bool = False) -> tuple[
        Sequence[Any], Sequence[Any]]:
    """Aggregates per (dimension, key) of the episodes opened in [since, until), and of their buyer rounds: from
    the summaries and the daily rollup of the window's settled days, or `from_trail`, rebuilt from the event trail
    and the messages (what the summaries must equal)."""
    postgres = is_postgres(session)
    if postgres:
        # The percentiles' sorts fit in memory. Set for this transaction only, whatever the server's defaults
        # (the connection itself runs without JIT: app/db/session.py's SERVER_SETTINGS).
        await session.execute(text(f"SET LOCAL work_mem = '{STATS_WORK_MEM}'"))
        if not from_trail:
            # The summaries' statements read a few thousand rows by index, and look each open episode's ticket up
            # by its key. The planner's estimates of a shop's recent days are the table's, every shop's: at 1 M
            # messages (bench/scale.py), a shop with a tenth of the estimate got a hash join over a parallel scan
            # of every ticket, 90 + 92 ms of a statistics call instead of 58 + 35. Planned for their own values each
            # time: after five runs a generic plan sent 30- and 92-day calls from 120-150 ms to 200-370.
            for setting in _INDEX_ONLY:
                await session.execute(text(f"SET LOCAL {setting}"))
    if from_trail:
        episodes = _trail_episodes(shop_id=shop_id, since=since, until=until)
        round_rows = _trail_round_rows(postgres, shop_id=shop_id, since=since)
    else:
        days = (await session.execute(select(SD.c.day, SD.c.names, SD.c.episodes, SD.c.rounds)
                                      .where(*_usable(shop_id, since, until, as_of)).order_by(SD.c.day))).all()
        if days:
            return await _with_rollup(session, days, shop_id=shop_id, since=since, until=until, as_of=as_of,
                                      shop_targets=shop_targets, queue_targets=queue_targets)
        episodes = _summary_episodes(shop_id=shop_id, ranges=[(since, until)])
        round_rows = _summary_round_rows(shop_id=shop_id, ranges=[(since, until)])
    facts = _facts(postgres, episodes, as_of=as_of, shop_targets=shop_targets, queue_targets=queue_targets)
    keyed = _keyed(facts, ("first_response", "replied", "breached", "resolution", "auto_closed", "customer_id"))
    levels = _grouped(postgres, keyed, MEASURES, _aggregates).subquery("levels")
    round_keyed = _keyed(_rounds(postgres, facts, round_rows, as_of=as_of), ("round_response", "unanswered"))
    rounds = _grouped(postgres, round_keyed, ("round_response",), _round_aggregates).subquery("round_levels")
    # One statement, so the episodes are read once for both: a row per (dimension, key) of either.
    rows = (await session.execute(select(
        func.coalesce(levels.c.dimension, rounds.c.dimension).label("dimension"),
        func.coalesce(levels.c.key, rounds.c.key).label("key"),
        *(c for c in levels.c if c.name not in ("dimension", "key")),
        *(c for c in rounds.c if c.name not in ("dimension", "key")),
    ).select_from(levels.join(rounds, and_(levels.c.dimension == rounds.c.dimension, levels.c.key == rounds.c.key),
                              full=True)))).all()
    return [r for r in rows if r.received is not None], [r for r in rows if r.rounds is not None]


SD = stats_days
STALE = stats_stale_days


async def _with_rollup(session: AsyncSession, days: Sequence[Row[Any]], *, shop_id: str, since: datetime,
                       until: datetime, as_of: datetime, shop_targets: Mapping[str, int],
                       queue_targets: Mapping[str, Mapping[str, int] | None]) -> tuple[Sequence[Any], Sequence[Any]]:
    """The same aggregates from the rolled `days` and the summaries of the rest of the window, computed in memory
    (app/db/figures.py): the database reads a row per rolled day and the few thousand episodes around them."""
    postgres = is_postgres(session)
    rolled = [d.day for d in days]
    config = {"as_of": as_of, "shop_targets": shop_targets, "queue_targets": queue_targets}
    episodes, rounds = await facts_of(session, shop_id=shop_id, ranges=outside(rolled, since=since, until=until),
                                      **config)
    # The rolled days' open episodes are not in their rows (app/db/rollups.py): read from the summaries.
    open_episodes, open_rounds = await facts_of(session, shop_id=shop_id, ranges=inside(rolled), open=True, **config)
    rolled_episodes, rolled_rounds = _rolled(tuple((d.day, d.names, d.episodes, d.rounds) for d in days))
    live_episodes = figures.aggregate([episodes, open_episodes])
    live_rounds = figures.aggregate([rounds, open_rounds], rounds=True)
    return (figures.levels(figures.merge(rolled_episodes, live_episodes), postgres=postgres),
            figures.levels(figures.merge(rolled_rounds, live_rounds), postgres=postgres))


@functools.lru_cache(maxsize=ROLLED_CACHE)
def _rolled(days: tuple[tuple[date, str, bytes, bytes], ...]) -> tuple[figures.Aggregate, figures.Aggregate]:
    """The rolled days' episodes and rounds aggregated, kept for the windows that read the same days again: keyed by
    the rows' content, so a day rolled again is a new key. At 1 M messages (bench/scale.py) aggregating 58 rolled
    days cost about 60 ms of a 92-day call; merging the few thousand other episodes into it, about 5."""
    names = [json.loads(day[1]) for day in days]
    return (figures.aggregate([figures.unpack(day[2], n["episodes"], figures.EPISODE) for day, n in zip(days, names)]),
            figures.aggregate([figures.unpack(day[3], n["rounds"], figures.ROUND) for day, n in zip(days, names)],
                              rounds=True))


async def facts_of(session: AsyncSession, *, shop_id: str, ranges: Sequence[tuple[datetime, datetime]],
                   as_of: datetime, shop_targets: Mapping[str, int],
                   queue_targets: Mapping[str, Mapping[str, int] | None],
                   open: bool | None = None) -> tuple[figures.Packed, figures.Packed]:
    """Each episode opened in `ranges` (`open`: as `_summary_episodes`) and each of its rounds, with the measures the
    statistics aggregate, packed (app/db/figures.py)."""
    postgres = is_postgres(session)
    facts = _facts(postgres, _summary_episodes(shop_id=shop_id, ranges=ranges, open=open), as_of=as_of,
                   shop_targets=shop_targets, queue_targets=queue_targets)
    rounds = _rounds(postgres, facts, _summary_round_rows(shop_id=shop_id, ranges=ranges), as_of=as_of)
    # One statement for both, so the facts (with each open episode's ticket) are computed once: the episodes' columns,
    # then the rounds', each row with the other kind's left empty.
    episode_nulls = [cast(null(), _FACT_TYPES[c]) for c in figures.EPISODE_COLUMNS]
    round_nulls = [cast(null(), _FACT_TYPES[c]) for c in figures.ROUND_COLUMNS]
    both = union_all(
        select(literal(True).label("episode"), facts.c.queue, facts.c.tier, facts.c.agent_id,
               *(cast(facts.c[c], _FACT_TYPES[c]) for c in figures.EPISODE_COLUMNS), *round_nulls),
        select(literal(False), rounds.c.queue, rounds.c.tier, rounds.c.agent_id, *episode_nulls,
               *(cast(rounds.c[c], _FACT_TYPES[c]) for c in figures.ROUND_COLUMNS)))
    episode_rows, round_rows = [], []
    split = 4 + len(figures.EPISODE_COLUMNS)
    for row in (await session.execute(both)).all():
        if row[0]:
            episode_rows.append(row[1:split])
        else:
            round_rows.append((*row[1:4], *row[split:]))
    return (figures.packed(episode_rows, figures.EPISODE, figures.EPISODE_COLUMNS),
            figures.packed(round_rows, figures.ROUND, figures.ROUND_COLUMNS))


# The types of the measures facts_of reads, for the one statement that reads episodes and rounds together.
_FACT_TYPES: dict[str, Any] = {"first_response": Float(), "resolution": Float(), "customer_id": BigInteger(),
                               "replied": Integer(), "breached": Integer(), "auto_closed": Integer(),
                               "round_response": Float(), "unanswered": Integer()}


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _whole_days(since: datetime, until: datetime) -> tuple[date, date]:
    """The first day wholly inside [since, until), and the first day after that is not."""
    first = since.astimezone(UTC).date()
    if day_start(first) < since:
        first += timedelta(days=1)
    return first, until.astimezone(UTC).date()


def _usable(shop_id: str, since: datetime, until: datetime, as_of: datetime) -> Any:
    """The rolled days wholly inside [since, until), not stale since, and settled by `as_of`."""
    first, last = _whole_days(since, until)
    stale = select(STALE.c.id).where(STALE.c.shop_id == SD.c.shop_id, STALE.c.day == SD.c.day).exists()
    return (SD.c.shop_id == shop_id, SD.c.day >= first, SD.c.day < last, SD.c.settled_at < as_of, ~stale)


async def rolled_days(session: AsyncSession, *, shop_id: str, since: datetime, until: datetime,
                      as_of: datetime) -> list[date]:
    """The days a window reads from the rollup."""
    return list(await session.scalars(select(SD.c.day).where(*_usable(shop_id, since, until, as_of))
                                      .order_by(SD.c.day)))


def inside(days: Sequence[date]) -> list[tuple[datetime, datetime]]:
    """The given days (ascending) as ranges, consecutive days as one."""
    ranges: list[tuple[datetime, datetime]] = []
    for day in days:
        if ranges and ranges[-1][1] == day_start(day):
            ranges[-1] = (ranges[-1][0], day_start(day) + timedelta(days=1))
        else:
            ranges.append((day_start(day), day_start(day) + timedelta(days=1)))
    return ranges


def outside(days: Sequence[date], *, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """[since, until) less the given whole days (ascending), as ranges."""
    ranges, start = [], since
    for day in days:
        if day_start(day) > start:
            ranges.append((start, day_start(day)))
        start = day_start(day) + timedelta(days=1)
    if start < until:
        ranges.append((start, until))
    return ranges


def _counted(shop_id: str | None = None) -> Any:
    """The queue counters (migration 0018) per shop, queue and tier: queue_counts plus the changes not folded yet."""
    parts = [select(table.c.shop_id, table.c.queue, table.c.tier, table.c.queued, table.c.overdue)
             .where(*([table.c.shop_id == shop_id] if shop_id is not None else []))
             for table in (QC, queue_count_changes)]
    both = union_all(*parts).subquery("counted")
    return (select(both.c.shop_id, both.c.queue, both.c.tier, func.sum(both.c.queued).label("depth"),
                   func.sum(both.c.overdue).label("overdue"))
            .group_by(both.c.shop_id, both.c.queue, both.c.tier).subquery("counts"))


def _oldest(counts: Any) -> Any:
    """The oldest queued episode of a counted (shop, queue, tier): the first entry of ix_tickets_queued."""
    return (select(T.c.opened_at).where(T.c.shop_id == counts.c.shop_id, T.c.queue == counts.c.queue,
                                        T.c.tier == counts.c.tier, T.c.status == Status.QUEUED)
            .order_by(T.c.opened_at).limit(1).scalar_subquery())


async def backlog(session: AsyncSession, *, shop_id: str) -> Sequence[Row[Any]]:
    """Queued tickets now per queue and tier, with the oldest episode start of each: counters and index probes."""
    counts = _counted(shop_id)
    stmt = (select(counts.c.queue, counts.c.tier, counts.c.depth, _oldest(counts).label("oldest"))
            .where(counts.c.depth > 0))
    return (await session.execute(stmt)).all()


async def holding(session: AsyncSession, *, shop_id: str) -> dict[str, int]:
    """Tickets each agent of the shop holds now."""
    stmt = (select(T.c.assigned_agent_id, func.count())
            .where(T.c.shop_id == shop_id, T.c.assigned_agent_id.is_not(None)).group_by(T.c.assigned_agent_id))
    return {agent_id: n for agent_id, n in await session.execute(stmt)}


async def shop_config(session: AsyncSession, *, shop_id: str) -> tuple[
        dict[str, int], dict[str, dict[str, int] | None], list[Row[Any]]] | None:
    """The shop's targets, its queues' targets and its agents (id, name, active, presence, seen_at); None for an
    unknown shop."""
    targets = await session.scalar(select(Shop.sla_targets).where(Shop.id == shop_id))
    if targets is None:
        return None
    queues = (await session.execute(select(Queue.name, Queue.sla_targets).where(Queue.shop_id == shop_id)
                                    .order_by(Queue.name))).all()
    agents = (await session.execute(select(Agent.id, Agent.name, Agent.active, Agent.presence, Agent.seen_at)
                                    .where(Agent.shop_id == shop_id).order_by(Agent.created_at, Agent.id))).all()
    return dict(targets), {q.name: q.sla_targets for q in queues}, list(agents)


async def presence_counts(session: AsyncSession, *, online_after: datetime) -> Sequence[Row[Any]]:
    """Active agents per shop and presence now (app.domain.presence_at, in SQL): silent since `online_after` is
    offline."""
    presence = case((or_(Agent.presence == "offline", Agent.seen_at.is_(None), Agent.seen_at <= online_after),
                     literal("offline", String)), else_=Agent.presence)
    return (await session.execute(select(Agent.shop_id, presence.label("presence"), func.count().label("agents"))
                                  .where(Agent.active.is_(True)).group_by(Agent.shop_id, presence))).all()


async def backlog_everywhere(session: AsyncSession) -> Sequence[Row[Any]]:
    """Per shop, queue and tier, in one statement: queued tickets, the oldest queued episode, open ones overdue."""
    return (await session.execute(backlog_everywhere_statement())).all()


def backlog_everywhere_statement() -> Any:
    """The counters of every shop's queues (overdue: the breaches the SLA watch recorded, still unanswered), the
    oldest queued episode of each non-empty one read from ix_tickets_queued: a few rows per queue, whatever the
    backlog."""
    Q = Queue.__table__
    counts = _counted()
    oldest = case((counts.c.depth > 0, _oldest(counts)), else_=null())
    # Every queue appears, with a NULL tier when nothing is counted, so emptied queues read 0, not stale.
    return (select(Q.c.shop_id, Q.c.name.label("queue"), counts.c.tier,
                   func.coalesce(counts.c.depth, 0).label("depth"), oldest.label("oldest"),
                   func.coalesce(counts.c.overdue, 0).label("overdue"))
            .select_from(Q.outerjoin(counts, and_(counts.c.shop_id == Q.c.shop_id, counts.c.queue == Q.c.name,
                                                  or_(counts.c.depth != 0, counts.c.overdue != 0)))))
