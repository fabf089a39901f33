"""Short-lived, per-process caches: what the webhook path needs to know about a shop, and agents by token."""

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any


from app.db.agents import SessionAgentStore
from app.db.models import Agent
from app.db.session import SessionFactory
from app.db.shops import SessionShopStore, ShopStore
from app.domain import first_response_target, route
from app.hours import Shift, ShopHours, holiday_calendar, zone
from app.triage import Ruleset, default_ruleset

log = logging.getLogger("app.directory")


@dataclass(frozen=True, slots=True)
class ShopInfo:
    id: str
    sla_targets: dict[str, int]
    queue_targets: dict[str, dict[str, int] | None]
    secrets: tuple[tuple[str, datetime | None], ...]
    ruleset: Ruleset
    name: str = ""
    hours: ShopHours = field(default_factory=ShopHours.always_open)
    off_hours_reply: str | None = None
    sticky_hours: int = 0
    loaded_at: float = field(default_factory=time.monotonic)

    def valid_secrets(self, now: datetime) -> list[str]:
        return [secret for secret, expires in self.secrets if expires is None or expires > now]

    def route(self, intent: str) -> str:
        """The queue an intent goes to; a route naming a queue the shop lacks falls back to presale."""
        return route(self.ruleset.routes, intent, queues=self.queue_targets)

    def first_response_target(self, *, queue: str, tier: str) -> int:
        return first_response_target(shop_targets=self.sla_targets, queue_targets=self.queue_targets.get(queue),
                                     tier=tier)

    def first_response_due(self, start: datetime, *, queue: str, tier: str) -> datetime:
        """When a first response is due for an episode that started at `start`: the target counted in open seconds
        (a start outside hours counts from the next opening)."""
        seconds = self.first_response_target(queue=queue, tier=tier)
        due = self.hours.add_open_seconds(start, seconds)
        # None when the shop's hours do not add up to the target within the search horizon (a minute a week, say):
        # the wall clock decides then.
        return start + timedelta(seconds=seconds) if due is None else due


HoursKey = tuple[str, str, str | None, str]


def hours_key(shop: Any) -> HoursKey:
    """What a shop's hours depend on, as one hashable value."""
    return (shop.timezone, json.dumps(shop.shifts, sort_keys=True), shop.holidays, json.dumps(shop.closed_dates))


def shop_hours(key: HoursKey) -> ShopHours:
    """A shop's hours from its stored settings (`hours_key`)."""
    timezone, shifts, holidays, closed = key
    return ShopHours(tz=zone(timezone), shifts=[Shift.from_dict(s) for s in json.loads(shifts)],
                     holidays=holiday_calendar(holidays), closed=[date.fromisoformat(d) for d in json.loads(closed)])


class ShopDirectory:
    """Shops by id, re-read after `ttl` seconds, or at once when a secret does not verify."""

    def __init__(self, sessionmaker: SessionFactory, *, ttl: float = 2.0) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._cache: dict[str, ShopInfo] = {}
        self._rulesets: dict[tuple[str, int], Ruleset] = {}
        self._loading: dict[str, asyncio.Future[ShopInfo | None]] = {}
        self._refreshing: dict[str, asyncio.Task[ShopInfo | None]] = {}
        self._generations: dict[str, int] = {}
        # Kept across reloads while the settings hold, so each day's open spans are worked out once.
        self._hours: dict[str, tuple[HoursKey, ShopHours]] = {}

    def invalidate(self, shop_id: str) -> None:
        """Forget the shop now; a reload already running may have read the old state, so it refills nothing."""
        self._cache.pop(shop_id, None)
        self._loading.pop(shop_id, None)
        self._generations[shop_id] = self._generations.get(shop_id, 0) + 1

    async def get(self, shop_id: str, *, max_age: float | None = None) -> ShopInfo | None:
        """The shop's info; a stale entry is served while one background reload refreshes it."""
        cached = self._cache.get(shop_id)
        if cached is not None and max_age is None:
            if time.monotonic() - cached.loaded_at >= self._ttl and shop_id not in self._refreshing:
                self._refreshing[shop_id] = asyncio.create_task(self._refresh_quietly(shop_id))
            return cached
        if cached is not None and max_age is not None and time.monotonic() - cached.loaded_at < max_age:
            return cached
        return await self._refresh(shop_id)

    async def _refresh_quietly(self, shop_id: str) -> ShopInfo | None:
        try:
            return await self._refresh(shop_id)
        except Exception:  # the stale entry keeps serving; the next request tries again
            log.warning("reloading shop %s failed", shop_id, exc_info=True)
            self._refreshing.pop(shop_id, None)
            return None

    async def _refresh(self, shop_id: str) -> ShopInfo | None:
        # Single flight: concurrent callers share one reload instead of each taking a connection.
        generation = self._generations.get(shop_id, 0)
        running = self._loading.get(shop_id)
        if running is None:
            running = asyncio.ensure_future(self._load(shop_id))
            self._loading[shop_id] = running
        try:
            info = await asyncio.shield(running)
        finally:
            if self._loading.get(shop_id) is running:
                self._loading.pop(shop_id, None)
            self._refreshing.pop(shop_id, None)
        if self._generations.get(shop_id, 0) != generation:
            return info
        if info is None:
            self._cache.pop(shop_id, None)
        else:
            self._cache[shop_id] = info
        return info

    async def ruleset(self, shops: ShopStore, shop_id: str, version: int | None) -> Ruleset:
        if version is None:
            return default_ruleset()
        key = (shop_id, version)
        if key not in self._rulesets:
            row = await shops.ruleset(shop_id=shop_id, version=version)
            body: dict[str, Any] = row.body if row is not None else default_ruleset().to_mapping()
            self._rulesets[key] = Ruleset.from_mapping(body, name=row.name if row else None, version=version)
        return self._rulesets[key]

    async def _load(self, shop_id: str) -> ShopInfo | None:
        async with self._sessionmaker() as session:
            shops = SessionShopStore(session)
            shop = await shops.get(shop_id)
            if shop is None:
                return None
            secrets = await shops.secrets(shop_id=shop_id)
            queues = await shops.queues(shop_id=shop_id)
            ruleset = await self.ruleset(shops, shop_id, shop.active_ruleset_version)
            return ShopInfo(id=shop.id, sla_targets=dict(shop.sla_targets),
                            queue_targets={q.name: q.sla_targets for q in queues},
                            secrets=tuple(secrets), ruleset=ruleset, name=shop.name, hours=self._shop_hours(shop),
                            off_hours_reply=shop.off_hours_reply, sticky_hours=shop.sticky_hours)

    def _shop_hours(self, shop: Any) -> ShopHours:
        key = hours_key(shop)
        cached = self._hours.get(shop.id)
        if cached is None or cached[0] != key:
            cached = self._hours[shop.id] = (key, shop_hours(key))
        return cached[1]


AGENT_CACHE_SECONDS = 5.0


class AgentCache:
    """Agents by token hash for a few seconds: the agent hot path (claim, reply, resolve) skips one transaction.

    A deactivated agent keeps reading and writing its held tickets for at most AGENT_CACHE_SECONDS in other
    processes (this one forgets it at once); claims re-check `active` in the database, so it gets no new work.
    """

    def __init__(self, sessionmaker: SessionFactory, *, ttl: float = AGENT_CACHE_SECONDS) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._agents: dict[str, tuple[Agent, float]] = {}

    async def get(self, token_hash: str) -> Agent | None:
        """The active agent with this token hash; None when there is none."""
        cached = self._agents.get(token_hash)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._sessionmaker() as session:
            agent = await SessionAgentStore(session).by_token_hash(token_hash)
        if agent is None:
            return None
        if len(self._agents) > 10_000:
            self._agents = {k: v for k, v in self._agents.items() if v[1] > now}
        self._agents[token_hash] = (agent, now + self._ttl)
        return agent

    def forget(self, agent_id: str) -> None:
        """Drop the agent now (deactivated, or its token replaced); other processes drop it within the TTL."""
        self._agents = {k: v for k, v in self._agents.items() if v[0].id != agent_id}
