"""The agents aggregate: agents, their tokens and the queues they serve (its seam, AgentStore).

Off the hot path (ops requests, and a token lookup every few seconds per agent: app/services/directory.py
caches agents), so one SQLAlchemy adapter serves both databases. It works in the caller's unit of work (a
session): `commit()` ends it, and `tickets()` is the ticket store inside the same transaction.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import select, update

from app.db.claims import TicketStore, session_store
from app.db.errors import translated
from app.db.models import Agent, AgentQueue
from app.db.session import Session


class AgentStore(Protocol):
    """Everything that reads or writes agents and the queues they serve."""

    async def get(self, *, shop_id: str, agent_id: str) -> Agent | None: ...
    async def by_token_hash(self, token_hash: str) -> Agent | None: ...
    async def get_all(self, *, shop_id: str) -> Sequence[Agent]: ...
    async def add(self, agent: Agent, *, queues: Sequence[str]) -> None: ...
    async def set_queues(self, agent: Agent, *, queues: Sequence[str]) -> None: ...
    async def queues(self, *, agent_ids: Sequence[str]) -> dict[str, list[str]]: ...
    async def set_presence(self, *, agent_id: str, presence: str, now: datetime) -> tuple[str, datetime | None] | None: ...
    async def write(self) -> None: ...
    async def tickets(self) -> TicketStore: ...
    async def commit(self) -> None: ...


class SessionAgentStore:
    """The agent store on a SQLAlchemy session: the same statements on PostgreSQL and SQLite."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def get(self, *, shop_id: str, agent_id: str) -> Agent | None:
        """The shop's agent with this id."""
        agent = await self.session.get(Agent, agent_id)
        return agent if agent is not None and agent.shop_id == shop_id else None

    async def by_token_hash(self, token_hash: str) -> Agent | None:
        """The active agent with this token, detached; the read is ended, so on SQLite the one pooled connection
        is free for the work that follows."""
        agent = await self.session.scalar(select(Agent).where(Agent.token_hash == token_hash, Agent.active.is_(True)))
        if agent is not None:
            self.session.expunge(agent)
        await self.session.rollback()
        return agent

    async def get_all(self, *, shop_id: str) -> Sequence[Agent]:
        """The shop's agents, oldest first."""
        return (await self.session.scalars(select(Agent).where(Agent.shop_id == shop_id)
                                           .order_by(Agent.created_at, Agent.id))).all()

    async def add(self, agent: Agent, *, queues: Sequence[str]) -> None:
        """A new agent serving `queues`."""
        self.session.add(agent)
        await self.session.flush()
        await self.set_queues(agent, queues=queues)

    async def set_queues(self, agent: Agent, *, queues: Sequence[str]) -> None:
        """The agent serves exactly `queues` from now on."""
        await self.session.execute(AgentQueue.__table__.delete().where(AgentQueue.agent_id == agent.id))
        self.session.add_all(AgentQueue(agent_id=agent.id, queue=name, shop_id=agent.shop_id)
                             for name in dict.fromkeys(queues))

    async def queues(self, *, agent_ids: Sequence[str]) -> dict[str, list[str]]:
        """The queues each agent serves, by name."""
        rows = await self.session.execute(select(AgentQueue.agent_id, AgentQueue.queue)
                                          .where(AgentQueue.agent_id.in_(agent_ids)).order_by(AgentQueue.queue))
        result: dict[str, list[str]] = {agent_id: [] for agent_id in agent_ids}
        for agent_id, queue in rows:
            result[agent_id].append(queue)
        return result

    async def set_presence(self, *, agent_id: str, presence: str, now: datetime) -> tuple[str, datetime | None] | None:
        """The active agent's presence, set now, and committed; what is stored (presence, seen_at), or None when
        the agent is gone or deactivated."""
        async with translated():
            row = (await self.session.execute(
                update(Agent).where(Agent.id == agent_id, Agent.active.is_(True))
                .values(presence=presence, seen_at=now).returning(Agent.presence, Agent.seen_at))).first()
            await self.session.commit()
        return None if row is None else (row.presence, row.seen_at)

    async def write(self) -> None:
        """Write the changes made to agents so far, taking their rows' locks (on PostgreSQL) until commit."""
        await self.session.flush()

    async def tickets(self) -> TicketStore:
        """The ticket store in this unit of work: its writes commit with the agents'."""
        return await session_store(self.session)

    async def commit(self) -> None:
        async with translated():
            await self.session.commit()
