"""Statements of the agent work queues off the hot path: queue depths, lease expiry, idempotency key purge.

The hot path (claim and the holder's writes) is in app/db/claims.py, on the bare driver. These run once a
second or on an ops request, so they stay SQLAlchemy Core statements.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import AgentQueue, IdempotencyKey, Queue, Ticket, TicketEvent
from app.db.session import is_postgres
from app.domain import Status

T = Ticket.__table__
E = TicketEvent.__table__
AQ = AgentQueue.__table__
Q = Queue.__table__
K = IdempotencyKey.__table__


def _served(agent_id: Any) -> Any:
    return select(AQ.c.queue).where(AQ.c.agent_id == agent_id)


async def served_queues(session: AsyncSession, *, agent_id: str) -> list[str]:
    return list((await session.scalars(_served(agent_id).order_by(AQ.c.queue))).all())


async def queue_names(session: AsyncSession, *, shop_id: str) -> list[str]:
    return list((await session.scalars(select(Q.c.name).where(Q.c.shop_id == shop_id).order_by(Q.c.name))).all())


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(E.insert(), list(rows))


async def expiring(session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Row[Any]]:
    """Assigned tickets whose lease ran out, locked on PostgreSQL (rows another process is expiring are skipped)."""
    return (await session.execute(expiring_statement(now=now, limit=limit, postgres=is_postgres(session)))).all()


def expiring_statement(*, now: datetime, limit: int, postgres: bool) -> Any:
    stmt = (select(T.c.id, T.c.shop_id, T.c.queue, T.c.assigned_agent_id, T.c.lease_expires_at, T.c.deliveries,
                   T.c.escalated)
            # "Has a holder" (the same as assigned, by the holder rule) selects ix_tickets_held, whose entries
            # carry the lease: expired ones are found in the index, without reading the table.
            .where(T.c.assigned_agent_id.is_not(None), T.c.status == Status.ASSIGNED, T.c.lease_expires_at <= now)
            .order_by(T.c.lease_expires_at).limit(limit))
    return stmt.with_for_update(skip_locked=True) if postgres else stmt


async def shops_with_queue(session: AsyncSession, *, shop_ids: Iterable[str], name: str) -> set[str]:
    stmt = select(Q.c.shop_id).where(Q.c.shop_id.in_(sorted(set(shop_ids))), Q.c.name == name)
    return set((await session.scalars(stmt)).all())


async def requeue_expired(session: AsyncSession, rows: Sequence[dict[str, Any]], *, now: datetime) -> None:
    """Put expired tickets back in queue (executemany); each row names the lease it expires, so a renewed one is kept."""
    if not rows:
        return
    stmt = (update(T)
            .where(T.c.id == bindparam("b_id"), T.c.status == Status.ASSIGNED,
                   T.c.assigned_agent_id == bindparam("b_agent"), T.c.lease_expires_at == bindparam("b_lease"))
            .values(status=Status.QUEUED, assigned_agent_id=None, lease_expires_at=None, deliveries=bindparam("b_deliveries"),
                    queue=bindparam("b_queue"), escalated=bindparam("b_escalated"), updated_at=now))
    await session.execute(stmt, list(rows))


async def release_all_held(session: AsyncSession, *, agent_id: str, now: datetime) -> Sequence[Row[Any]]:
    """Hand every ticket the agent holds back to its queue, at its place (no delivery counted); the tickets."""
    stmt = (update(T).where(T.c.assigned_agent_id == agent_id, T.c.status == Status.ASSIGNED)
            .values(status=Status.QUEUED, assigned_agent_id=None, lease_expires_at=None, updated_at=now)
            .returning(T.c.id, T.c.shop_id, T.c.queue))
    return (await session.execute(stmt)).all()


async def queue_depths(session: AsyncSession, *, shop_id: str, queues: Sequence[str]) -> Sequence[Row[Any]]:
    """Queued tickets per queue and tier, with the oldest episode start of each."""
    stmt = (select(T.c.queue, T.c.tier, func.count().label("n"), func.min(T.c.opened_at).label("oldest"))
            .where(T.c.shop_id == shop_id, T.c.status == Status.QUEUED, T.c.queue.in_(list(queues)))
            .group_by(T.c.queue, T.c.tier))
    return (await session.execute(stmt)).all()


async def purge_idempotency_keys(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest keys taken before `before`; returns how many."""
    oldest = select(K.c.agent_id, K.c.key).where(K.c.created_at < before).order_by(K.c.created_at).limit(limit)
    if is_postgres(session):
        # Processes purging at once take different rows instead of waiting on (or deadlocking over) each other's.
        oldest = oldest.with_for_update(skip_locked=True)
    result = await session.execute(delete(K).where(tuple_(K.c.agent_id, K.c.key).in_(oldest)))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def notify_postgres(session: AsyncSession, *, channel: str, shop_ids: Iterable[str]) -> None:
    """On PostgreSQL, wake listeners in every process at commit; a no-op on SQLite."""
    if is_postgres(session):
        for shop_id in sorted(set(shop_ids)):
            await session.execute(select(func.pg_notify(channel, shop_id)))
