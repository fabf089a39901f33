"""Agent presence (README, "Presence"): online, away or offline, as the agent sets it, a claim makes it, and silence
ends it."""

from datetime import datetime, timedelta

from app.db.agents import SessionAgentStore
from app.db.models import Agent
from app.db.session import Session
from app.domain import Presence, presence_at
from app.errors import Unauthorized
from app.schemas.tickets import AgentPresence, Colleague, ColleagueList
from app.services.notify import Notifier


def presence_now(stored: str, seen_at: datetime | None, *, now: datetime, timeout: int) -> str:
    """The presence an agent has now, from what is stored and the timeout of silence."""
    return presence_at(stored, seen_at, online_after=now - timedelta(seconds=timeout))


def presence_view(agent_id: str, stored: str, seen_at: datetime | None, *, now: datetime,
                  timeout: int) -> AgentPresence:
    presence = presence_now(stored, seen_at, now=now, timeout=timeout)
    return AgentPresence(agent_id=agent_id, presence=presence, set=stored, seen_at=seen_at,  # type: ignore[arg-type]
                         offline_at=None if presence == Presence.OFFLINE or seen_at is None
                         else seen_at + timedelta(seconds=timeout))


async def set_presence(session: Session, *, agent: Agent, status: str, now: datetime, timeout: int,
                       notifier: Notifier) -> AgentPresence:
    """The agent sets its own presence. Waiting claimers of its shop are woken: tickets held for an agent that went
    away or offline are anyone's now."""
    stored = await SessionAgentStore(session).set_presence(agent_id=agent.id, presence=status, now=now)
    if stored is None:
        raise Unauthorized("the agent is deactivated")
    if status != Presence.ONLINE:
        notifier.notify([agent.shop_id])
    return presence_view(agent.id, stored[0], stored[1], now=now, timeout=timeout)


async def read_presence(session: Session, *, agent: Agent, now: datetime, timeout: int) -> AgentPresence:
    """The agent's own presence now."""
    found = await SessionAgentStore(session).get(shop_id=agent.shop_id, agent_id=agent.id)
    stored = None if found is None or not found.active else (found.presence, found.seen_at)
    await session.rollback()  # ends the read (SQLite's one connection is free again)
    if stored is None:
        raise Unauthorized("the agent is deactivated")
    return presence_view(agent.id, stored[0], stored[1], now=now, timeout=timeout)


async def colleagues(session: Session, *, agent: Agent, now: datetime, timeout: int) -> ColleagueList:
    """The other active agents of the agent's shop, with their queues and presence now: whom it may hand a ticket to."""
    store = SessionAgentStore(session)
    others = [a for a in await store.get_all(shop_id=agent.shop_id) if a.active and a.id != agent.id]
    queues = await store.queues(agent_ids=[a.id for a in others])
    listed = ColleagueList(agents=[
        Colleague(id=a.id, name=a.name, queues=queues[a.id],
                  presence=presence_now(a.presence, a.seen_at, now=now, timeout=timeout))  # type: ignore[arg-type]
        for a in others])
    await session.rollback()  # ends the read (SQLite's one connection is free again); the rows expire with it
    return listed
