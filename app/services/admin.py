"""Ops use cases: shops, webhook secrets, queues and agents."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any


from app.db.agents import AgentStore, SessionAgentStore
from app.db.errors import ConstraintViolation
from app.db.models import Agent, Queue, Shop, WebhookSecret, default_shifts
from app.db.session import DriverConnections, Session
from app.db.shops import SessionShopStore, ShopStore
from app import hours
from app.domain import (DEFAULT_AUTO_CLOSE_HOURS, DEFAULT_PRESENCE_TIMEOUT, DEFAULT_QUEUES, DEFAULT_SLA_TARGETS,
                        DEFAULT_STICKY_HOURS, Presence)
from app.errors import AgentNotFound, InvalidInput, QueueExists, QueueNotFound, ShopExists, ShopNotFound
from app.schemas.admin import AgentCreate, AgentUpdate, QueueCreate, QueueUpdate, ShopCreate, ShopUpdate
from app.security import hash_token, new_agent_token, new_webhook_secret
from app.services import directory
from app.services.directory import AgentCache, ShopDirectory
from app.services.notify import Notifier
from app.schemas.tickets import TicketList
from app.services.presence import presence_now
from app.services.queues import hand_back_all, held_tickets


def _presence(agent: Agent, *, now: datetime, timeout: int) -> str:
    """What the list shows: a deactivated agent is offline whatever it last set."""
    if not agent.active:
        return Presence.OFFLINE
    return presence_now(agent.presence, agent.seen_at, now=now, timeout=timeout)


@dataclass(frozen=True, slots=True)
class AgentView:
    agent: Agent
    queues: list[str]
    token: str | None = None
    presence: str = Presence.OFFLINE

    def as_dict(self) -> dict[str, Any]:
        a = self.agent
        data: dict[str, Any] = {"id": a.id, "shop_id": a.shop_id, "name": a.name, "queues": self.queues,
                                "level": a.level, "capacity": a.capacity, "active": a.active, "shifts": a.shifts,
                                "created_at": a.created_at, "presence": self.presence, "seen_at": a.seen_at}
        if self.token is not None:
            data["token"] = self.token
        return data


# A new shop's hours unless its request gives them (the columns' defaults, spelled out for the ORM object).
_HOURS_DEFAULTS: dict[str, Any] = {"timezone": hours.DEFAULT_TIMEZONE, "holidays": hours.CN, "closed_dates": [],
                                   "off_hours_reply": None}


def stores(session: Session) -> tuple[ShopStore, AgentStore]:
    """The shop and agent stores of one unit of work."""
    return SessionShopStore(session), SessionAgentStore(session)


def shop_view(shop: Shop) -> dict[str, Any]:
    """A shop as ops read it: its settings, and how far its holiday calendar's data goes."""
    calendar = hours.holiday_calendar(shop.holidays)
    return {"id": shop.id, "name": shop.name, "sla_targets": shop.sla_targets,
            "active_ruleset_version": shop.active_ruleset_version, "timezone": shop.timezone, "shifts": shop.shifts,
            "holidays": shop.holidays, "holiday_data_until": None if calendar is None else calendar.last,
            "closed_dates": shop.closed_dates, "off_hours_reply": shop.off_hours_reply,
            "auto_close_after_hours": shop.auto_close_after_hours, "sticky_hours": shop.sticky_hours,
            "created_at": shop.created_at}


async def require_shop(session: Session, shop_id: str) -> Shop:
    """The shop, or 404."""
    return await _require_shop(SessionShopStore(session), shop_id)


async def _require_shop(shops: ShopStore, shop_id: str) -> Shop:
    shop = await shops.get(shop_id)
    if shop is None:
        raise ShopNotFound(f"no shop with id '{shop_id}'")
    return shop


async def create_shop(session: Session, *, data: ShopCreate, now: datetime) -> tuple[Shop, str]:
    """Create a shop with its default queues and first webhook secret; returns the secret once."""
    shops = SessionShopStore(session)
    if await shops.get(data.id) is not None:
        raise ShopExists(f"a shop with id '{data.id}' exists")
    targets = data.sla_targets.model_dump() if data.sla_targets else dict(DEFAULT_SLA_TARGETS)
    shop = Shop(id=data.id, name=data.name, sla_targets=targets, created_at=now,
                auto_close_after_hours=DEFAULT_AUTO_CLOSE_HOURS if data.auto_close_after_hours is None
                else data.auto_close_after_hours,
                sticky_hours=DEFAULT_STICKY_HOURS if data.sticky_hours is None else data.sticky_hours,
                **{**_HOURS_DEFAULTS, "shifts": default_shifts(), **data.hours_values()})
    secret = new_webhook_secret()
    try:
        await shops.add(shop, secret=WebhookSecret(shop_id=shop.id, secret=secret, created_at=now),
                        queues=[Queue(shop_id=shop.id, name=name, description=description, created_at=now)
                                for name, description in DEFAULT_QUEUES.items()])
        await shops.commit()
    except ConstraintViolation as exc:
        # Two creators raced past the existence check: the loser learns it here.
        await shops.rollback()
        raise ShopExists(f"a shop with id '{data.id}' exists") from exc
    return shop, secret


async def update_shop(session: Session, *, shop_id: str, data: ShopUpdate, directory: ShopDirectory) -> Shop:
    """Rename the shop, or change its targets, its hours or when its silent tickets close (this process reads the
    shop afresh at once, the others within their shop cache's TTL)."""
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    if data.name is not None:
        shop.name = data.name
    if data.sla_targets is not None:
        shop.sla_targets = data.sla_targets.model_dump()
    for name, value in data.hours_values().items():
        setattr(shop, name, value)
    if data.auto_close_after_hours is not None:
        shop.auto_close_after_hours = data.auto_close_after_hours
    if data.sticky_hours is not None:
        shop.sticky_hours = data.sticky_hours
    await shops.commit()
    directory.invalidate(shop_id)
    return shop


async def rotate_webhook_secret(session: Session, *, shop_id: str, now: datetime, overlap: timedelta,
                                directory: ShopDirectory) -> tuple[str, datetime]:
    """A new signing secret; the ones in use keep verifying until now + overlap (this process forgets them now if
    the overlap is 0, others within their shop cache's TTL)."""
    shops = SessionShopStore(session)
    await _require_shop(shops, shop_id)
    valid_until = now + overlap
    await shops.expire_current_secrets(shop_id=shop_id, at=valid_until)
    secret = new_webhook_secret()
    await shops.add_secret(WebhookSecret(shop_id=shop_id, secret=secret, created_at=now))
    await shops.commit()
    directory.invalidate(shop_id)
    return secret, valid_until


def effective_targets(shop: Shop, queue: Queue) -> dict[str, int]:
    return dict(queue.sla_targets or shop.sla_targets)


def queue_view(shop: Shop, queue: Queue) -> dict[str, Any]:
    return {"name": queue.name, "description": queue.description, "sla_targets": effective_targets(shop, queue),
            "sla_override": queue.sla_targets is not None, "created_at": queue.created_at}


async def list_queues(session: Session, *, shop_id: str) -> list[dict[str, Any]]:
    """The shop's queues with their effective targets."""
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    return [queue_view(shop, q) for q in await shops.queues(shop_id=shop_id)]


async def create_queue(session: Session, *, shop_id: str, data: QueueCreate, now: datetime) -> dict[str, Any]:
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    if await shops.queue(shop_id=shop_id, name=data.name) is not None:
        raise QueueExists(f"queue '{data.name}' exists in shop '{shop_id}'")
    queue = Queue(shop_id=shop_id, name=data.name, description=data.description,
                  sla_targets=data.sla_targets.model_dump() if data.sla_targets else None, created_at=now)
    await shops.add_queue(queue)
    try:
        await shops.commit()
    except ConstraintViolation as exc:
        await shops.rollback()
        raise QueueExists(f"queue '{data.name}' exists in shop '{shop_id}'") from exc
    return queue_view(shop, queue)


async def update_queue(session: Session, *, shop_id: str, name: str, data: QueueUpdate) -> dict[str, Any]:
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    queue = await shops.queue(shop_id=shop_id, name=name)
    if queue is None:
        raise QueueNotFound(f"no queue '{name}' in shop '{shop_id}'")
    if data.description is not None:
        queue.description = data.description
    if "sla_targets" in data.model_fields_set:
        queue.sla_targets = data.sla_targets.model_dump() if data.sla_targets else None
    await shops.commit()
    return queue_view(shop, queue)


async def _check_queues(shops: ShopStore, *, shop_id: str, queues: Sequence[str]) -> None:
    known = await shops.queue_names(shop_id=shop_id)
    # Errors name the field path only: a submitted value never comes back in an answer or a log line.
    details = [{"field": f"body.queues[{i}]", "reason": "no such queue in this shop", "type": "unknown_queue"}
               for i, name in enumerate(queues) if name not in known]
    if details:
        raise InvalidInput(f"invalid fields: {', '.join(d['field'] for d in details)}", details=details)


def _check_shifts(shop: Shop, shifts: Sequence[str] | None) -> list[str] | None:
    """The agent's shifts as stored (sorted, once each); each must be one of the shop's."""
    if shifts is None:
        return None
    known = {shift["name"] for shift in shop.shifts}
    details = [{"field": f"body.shifts[{i}]", "reason": "no such shift in this shop", "type": "unknown_shift"}
               for i, name in enumerate(shifts) if name not in known]
    if details:
        raise InvalidInput(f"invalid fields: {', '.join(d['field'] for d in details)}", details=details)
    return sorted(set(shifts))


async def create_agent(session: Session, *, shop_id: str, data: AgentCreate, now: datetime,
                       default_capacity: int) -> AgentView:
    """Create an agent; the token is returned this once and stored only as a hash."""
    shops, agents = stores(session)
    shop = await _require_shop(shops, shop_id)
    await _check_queues(shops, shop_id=shop_id, queues=data.queues)
    shifts = _check_shifts(shop, data.shifts)
    token = new_agent_token()
    agent = Agent(id=str(uuid.uuid4()), shop_id=shop_id, name=data.name, level=data.level,
                  capacity=data.capacity or default_capacity, token_hash=hash_token(token), active=True,
                  created_at=now, presence=Presence.OFFLINE, seen_at=None, shifts=shifts)
    await agents.add(agent, queues=data.queues)
    await agents.commit()
    return AgentView(agent, sorted(set(data.queues)), token)


async def update_agent(session: Session, *, shop_id: str, agent_id: str, data: AgentUpdate, now: datetime,
                       notifier: Notifier, agents: AgentCache,
                       presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT) -> AgentView:
    """Change the agent; deactivating it hands the tickets it holds back to their queues at once, waking waiting
    claimers, and drops it from this process's agent cache."""
    shops, store = stores(session)
    shop = await _require_shop(shops, shop_id)
    agent = await store.get(shop_id=shop_id, agent_id=agent_id)
    if agent is None:
        raise AgentNotFound(f"no agent '{agent_id}' in shop '{shop_id}'")
    if "shifts" in data.model_fields_set:
        agent.shifts = _check_shifts(shop, data.shifts)
    deactivating = data.active is False and agent.active
    for field in ("name", "level", "capacity", "active"):
        value = getattr(data, field)
        if value is not None:
            setattr(agent, field, value)
    if data.queues is not None:
        await _check_queues(shops, shop_id=shop_id, queues=data.queues)
        await store.set_queues(agent, queues=data.queues)
    released = 0
    if deactivating:
        # The agent's row is written (and, on PostgreSQL, locked) first: a claim of this agent in flight waits
        # for it and then finds the agent inactive, so nothing is claimed after the tickets are handed back.
        await store.write()
        released = await hand_back_all(await store.tickets(), agent_id=agent.id, now=now)
    await store.commit()
    if released:
        notifier.notify([shop_id])
    if data.active is False:
        agents.forget(agent_id)
    queues = (await store.queues(agent_ids=[agent.id]))[agent.id]
    return AgentView(agent, queues, presence=_presence(agent, now=now, timeout=presence_timeout))


async def reissue_agent_token(session: Session, *, shop_id: str, agent_id: str, agents: AgentCache, now: datetime,
                              presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT) -> AgentView:
    """A new bearer token for the agent (shown this once); the old one stops verifying (in this process at once)."""
    shops, store = stores(session)
    await _require_shop(shops, shop_id)
    agent = await store.get(shop_id=shop_id, agent_id=agent_id)
    if agent is None:
        raise AgentNotFound(f"no agent '{agent_id}' in shop '{shop_id}'")
    token = new_agent_token()
    agent.token_hash = hash_token(token)
    await store.commit()
    agents.forget(agent_id)
    queues = (await store.queues(agent_ids=[agent.id]))[agent.id]
    return AgentView(agent, queues, token, presence=_presence(agent, now=now, timeout=presence_timeout))


async def agent_tickets(session: Session, drivers: DriverConnections, *, shop_id: str, agent_id: str) -> TicketList:
    """The tickets an agent of the shop holds now, most urgent first (ops)."""
    shops, store = stores(session)
    await _require_shop(shops, shop_id)
    if await store.get(shop_id=shop_id, agent_id=agent_id) is None:
        raise AgentNotFound(f"no agent '{agent_id}' in shop '{shop_id}'")
    # Ends the read and hands its connection back: on SQLite the driver reads on the same one connection.
    await shops.rollback()
    return await held_tickets(drivers, agent_id=agent_id)


async def list_agents(session: Session, *, shop_id: str, now: datetime,
                      presence_timeout: int = DEFAULT_PRESENCE_TIMEOUT) -> list[AgentView]:
    """The shop's agents with their queues and presence now."""
    shops, store = stores(session)
    await _require_shop(shops, shop_id)
    agents = await store.get_all(shop_id=shop_id)
    queues = await store.queues(agent_ids=[a.id for a in agents])
    return [AgentView(a, queues[a.id], presence=_presence(a, now=now, timeout=presence_timeout)) for a in agents]


# Dates coverage answers for: wide, and clear of the ends of the calendar where a time zone's offset overflows.
COVERAGE_DATES = (date(2000, 1, 1), date(2100, 12, 31))


def _shift_coverage(shop_hours: Any, shift: Any, day: date, *, runs: bool, queues: list[str], agents: list[Any],
                    served: dict[str, Any]) -> dict[str, Any]:
    """One shift on `day`: its hours if it runs, and per queue the active agents working it (or a gap)."""
    opens, closes = shop_hours.shift_span(shift, day) if runs else (None, None)
    working = [a for a in agents if a.shifts is None or shift.name in a.shifts]
    covered = [{"queue": q, "agents": [{"id": a.id, "name": a.name} for a in working if q in served[a.id]]}
               for q in queues] if runs else []
    return {**shift.as_dict(), "runs": runs, "opens_at": opens, "closes_at": closes,
            "covered": [c for c in covered if c["agents"]], "gaps": [c["queue"] for c in covered if not c["agents"]]}


async def coverage(session: Session, *, shop_id: str, day: date) -> dict[str, Any]:
    """Per shift of the shop on `day` (a local date): whether it runs, and which queues have an active agent working
    it, and which have none."""
    if not COVERAGE_DATES[0] <= day <= COVERAGE_DATES[1]:
        raise InvalidInput("date must be between 2000-01-01 and 2100-12-31", details=[
            {"field": "query.date", "reason": "must be between 2000-01-01 and 2100-12-31", "type": "range"}])
    shops, store = stores(session)
    shop = await _require_shop(shops, shop_id)
    queues = [q.name for q in await shops.queues(shop_id=shop_id)]
    agents = [a for a in await store.get_all(shop_id=shop_id) if a.active]
    served = await store.queues(agent_ids=[a.id for a in agents])
    shop_hours = directory.shop_hours(directory.hours_key(shop))
    running = {shift.name for shift in shop_hours.shifts_on(day)}
    calendar = shop_hours.holidays
    shifts = [_shift_coverage(shop_hours, shift, day, runs=shift.name in running, queues=queues, agents=agents,
                              served=served) for shift in shop_hours.shifts]
    return {"shop_id": shop_id, "date": day, "timezone": shop.timezone, "day": shop_hours.day_kind(day).value,
            "holiday_data": None if calendar is None else calendar.first <= day <= calendar.last, "shifts": shifts}


async def list_shops(session: Session) -> Sequence[Shop]:
    """Every shop."""
    return await SessionShopStore(session).get_all()


async def count_shops(session: Session) -> int:
    """How many shops there are."""
    return await SessionShopStore(session).count()
