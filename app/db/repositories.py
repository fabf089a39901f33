"""Queries of the admin side: shops, secrets, queues, agents."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Agent, AgentQueue, Queue, Shop, WebhookSecret
from app.db.models import Ruleset as RulesetRow


async def get_shop(session: AsyncSession, shop_id: str) -> Shop | None:
    return await session.get(Shop, shop_id)


async def list_shops(session: AsyncSession) -> Sequence[Shop]:
    return (await session.scalars(select(Shop).order_by(Shop.id))).all()


async def count_shops(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Shop)) or 0)


async def valid_webhook_secrets(session: AsyncSession, *, shop_id: str, now: datetime) -> list[str]:
    """Secrets that verify at `now`: the current one and any still inside their overlap window."""
    stmt = (select(WebhookSecret.secret)
            .where(WebhookSecret.shop_id == shop_id,
                   or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now))
            .order_by(WebhookSecret.id.desc()))
    return list((await session.scalars(stmt)).all())


async def expire_current_secrets(session: AsyncSession, *, shop_id: str, at: datetime) -> None:
    """Give every open-ended secret of the shop an end; ones already ending keep their earlier end."""
    await session.execute(update(WebhookSecret)
                          .where(WebhookSecret.shop_id == shop_id, WebhookSecret.expires_at.is_(None))
                          .values(expires_at=at))


async def list_queues(session: AsyncSession, *, shop_id: str) -> Sequence[Queue]:
    return (await session.scalars(select(Queue).where(Queue.shop_id == shop_id).order_by(Queue.name))).all()


async def get_queue(session: AsyncSession, *, shop_id: str, name: str) -> Queue | None:
    return await session.get(Queue, (shop_id, name))


async def queue_names(session: AsyncSession, *, shop_id: str) -> set[str]:
    return set((await session.scalars(select(Queue.name).where(Queue.shop_id == shop_id))).all())


async def list_agents(session: AsyncSession, *, shop_id: str) -> Sequence[Agent]:
    return (await session.scalars(select(Agent).where(Agent.shop_id == shop_id).order_by(Agent.created_at, Agent.id))).all()


async def get_agent(session: AsyncSession, *, shop_id: str, agent_id: str) -> Agent | None:
    agent = await session.get(Agent, agent_id)
    return agent if agent is not None and agent.shop_id == shop_id else None


async def agent_by_token_hash(session: AsyncSession, token_hash: str) -> Agent | None:
    """The active agent with this token, detached; the read is ended, so on SQLite the one pooled connection is
    free for the work that follows."""
    agent = await session.scalar(select(Agent).where(Agent.token_hash == token_hash, Agent.active.is_(True)))
    if agent is not None:
        session.expunge(agent)
    await session.rollback()
    return agent


async def agent_queues(session: AsyncSession, *, agent_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = await session.execute(select(AgentQueue.agent_id, AgentQueue.queue)
                                 .where(AgentQueue.agent_id.in_(agent_ids)).order_by(AgentQueue.queue))
    result: dict[str, list[str]] = {agent_id: [] for agent_id in agent_ids}
    for agent_id, queue in rows:
        result[agent_id].append(queue)
    return result


async def set_agent_queues(session: AsyncSession, *, agent: Agent, queues: Sequence[str]) -> None:
    await session.execute(AgentQueue.__table__.delete().where(AgentQueue.agent_id == agent.id))
    session.add_all(AgentQueue(agent_id=agent.id, queue=name, shop_id=agent.shop_id) for name in dict.fromkeys(queues))


async def shop_secrets(session: AsyncSession, *, shop_id: str) -> list[tuple[str, datetime | None]]:
    rows = await session.execute(select(WebhookSecret.secret, WebhookSecret.expires_at)
                                 .where(WebhookSecret.shop_id == shop_id).order_by(WebhookSecret.id.desc()))
    return [(secret, expires) for secret, expires in rows]


async def get_ruleset(session: AsyncSession, *, shop_id: str, version: int) -> RulesetRow | None:
    return await session.scalar(select(RulesetRow).where(RulesetRow.shop_id == shop_id, RulesetRow.version == version))
