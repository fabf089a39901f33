"""The shops aggregate: shops, their webhook secrets, queues and rulesets (its seam, ShopStore).

Off the hot path (ops requests, and a reload per shop every few seconds: app/services/directory.py caches
shops), so one SQLAlchemy adapter serves both databases. It works in the caller's unit of work (a session):
`commit()` ends it, `rollback()` ends a read early (SQLite's one connection is then free).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, or_, select, update

from app.db.errors import translated
from app.db.models import Message, Queue, Shop, WebhookSecret
from app.db.models import Ruleset as RulesetRow
from app.db.session import Session


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    name: str
    created_at: datetime
    activated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReplayRow:
    id: int
    external_id: str | None
    ticket_id: str
    received_at: datetime
    text: str


class ShopStore(Protocol):
    """Everything that reads or writes shops, their secrets, queues and stored rulesets."""

    async def get(self, shop_id: str, *, lock: bool = False) -> Shop | None: ...
    async def get_all(self) -> Sequence[Shop]: ...
    async def count(self) -> int: ...
    async def add(self, shop: Shop, *, queues: Sequence[Queue], secret: WebhookSecret) -> None: ...
    async def valid_secrets(self, *, shop_id: str, now: datetime) -> list[str]: ...
    async def secrets(self, *, shop_id: str) -> list[tuple[str, datetime | None]]: ...
    async def expire_current_secrets(self, *, shop_id: str, at: datetime) -> None: ...
    async def add_secret(self, secret: WebhookSecret) -> None: ...
    async def queues(self, *, shop_id: str) -> Sequence[Queue]: ...
    async def queue(self, *, shop_id: str, name: str) -> Queue | None: ...
    async def queue_names(self, *, shop_id: str) -> set[str]: ...
    async def add_queue(self, queue: Queue) -> None: ...
    async def ruleset(self, *, shop_id: str, version: int) -> RulesetRow | None: ...
    async def next_version(self, *, shop_id: str) -> int: ...
    async def add_version(self, *, shop_id: str, version: int, name: str, body: dict[str, Any],
                          now: datetime) -> RulesetRow: ...
    async def mark_activated(self, *, shop_id: str, version: int, now: datetime) -> None: ...
    async def set_active_version(self, *, shop_id: str, version: int | None) -> None: ...
    async def versions(self, *, shop_id: str) -> list[VersionRow]: ...
    async def version_exists(self, *, shop_id: str, version: int) -> bool: ...
    async def recent_inbound(self, *, shop_id: str, limit: int) -> Sequence[ReplayRow]: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...


class SessionShopStore:
    """The shop store on a SQLAlchemy session: the same statements on PostgreSQL and SQLite."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def get(self, shop_id: str, *, lock: bool = False) -> Shop | None:
        """The shop; with `lock`, its row locked until the transaction ends on PostgreSQL, so that activations
        of one shop's rules queue up."""
        if lock:
            return await self.session.scalar(select(Shop).where(Shop.id == shop_id).with_for_update())
        return await self.session.get(Shop, shop_id)

    async def get_all(self) -> Sequence[Shop]:
        """Every shop, by id."""
        return (await self.session.scalars(select(Shop).order_by(Shop.id))).all()

    async def count(self) -> int:
        """How many shops there are."""
        return int(await self.session.scalar(select(func.count()).select_from(Shop)) or 0)

    async def add(self, shop: Shop, *, queues: Sequence[Queue], secret: WebhookSecret) -> None:
        """A new shop with its queues and first secret; a taken id fails here or at commit (ConstraintViolation)."""
        self.session.add(shop)
        async with translated():
            await self.session.flush()
        self.session.add_all(queues)
        self.session.add(secret)

    async def valid_secrets(self, *, shop_id: str, now: datetime) -> list[str]:
        """Secrets that verify at `now`: the current one and any still inside their overlap window."""
        stmt = (select(WebhookSecret.secret)
                .where(WebhookSecret.shop_id == shop_id,
                       or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now))
                .order_by(WebhookSecret.id.desc()))
        return list((await self.session.scalars(stmt)).all())

    async def secrets(self, *, shop_id: str) -> list[tuple[str, datetime | None]]:
        """Every secret of the shop with its end, newest first."""
        rows = await self.session.execute(select(WebhookSecret.secret, WebhookSecret.expires_at)
                                          .where(WebhookSecret.shop_id == shop_id).order_by(WebhookSecret.id.desc()))
        return [(secret, expires) for secret, expires in rows]

    async def expire_current_secrets(self, *, shop_id: str, at: datetime) -> None:
        """Give every open-ended secret of the shop an end; ones already ending keep their earlier end."""
        await self.session.execute(update(WebhookSecret)
                                   .where(WebhookSecret.shop_id == shop_id, WebhookSecret.expires_at.is_(None))
                                   .values(expires_at=at))

    async def add_secret(self, secret: WebhookSecret) -> None:
        """A new signing secret."""
        self.session.add(secret)

    async def queues(self, *, shop_id: str) -> Sequence[Queue]:
        """The shop's queues, by name."""
        return (await self.session.scalars(select(Queue).where(Queue.shop_id == shop_id).order_by(Queue.name))).all()

    async def queue(self, *, shop_id: str, name: str) -> Queue | None:
        """The shop's queue of that name."""
        return await self.session.get(Queue, (shop_id, name))

    async def queue_names(self, *, shop_id: str) -> set[str]:
        """The names of the shop's queues."""
        return set((await self.session.scalars(select(Queue.name).where(Queue.shop_id == shop_id))).all())

    async def add_queue(self, queue: Queue) -> None:
        """A new queue."""
        self.session.add(queue)

    async def ruleset(self, *, shop_id: str, version: int) -> RulesetRow | None:
        """A stored version of the shop's rules."""
        return await self.session.scalar(select(RulesetRow).where(RulesetRow.shop_id == shop_id,
                                                                  RulesetRow.version == version))

    async def next_version(self, *, shop_id: str) -> int:
        """One more than the highest stored version of the shop (1 for the first)."""
        highest = await self.session.scalar(select(func.max(RulesetRow.version)).where(RulesetRow.shop_id == shop_id))
        return int(highest or 0) + 1

    async def add_version(self, *, shop_id: str, version: int, name: str, body: dict[str, Any],
                          now: datetime) -> RulesetRow:
        """Add a stored version; a taken version number fails here (ConstraintViolation)."""
        row = RulesetRow(shop_id=shop_id, version=version, name=name, body=body, created_at=now, activated_at=now)
        self.session.add(row)
        async with translated():
            await self.session.flush()
        return row

    async def mark_activated(self, *, shop_id: str, version: int, now: datetime) -> None:
        """Record when an already stored version was activated again."""
        await self.session.execute(update(RulesetRow)
                                   .where(RulesetRow.shop_id == shop_id, RulesetRow.version == version)
                                   .values(activated_at=now))

    async def set_active_version(self, *, shop_id: str, version: int | None) -> None:
        """Point the shop at a stored version, or at the shipped default with None."""
        await self.session.execute(update(Shop).where(Shop.id == shop_id).values(active_ruleset_version=version))

    async def versions(self, *, shop_id: str) -> list[VersionRow]:
        """The shop's stored versions, newest first, without their bodies."""
        rows = await self.session.execute(
            select(RulesetRow.version, RulesetRow.name, RulesetRow.created_at, RulesetRow.activated_at)
            .where(RulesetRow.shop_id == shop_id).order_by(RulesetRow.version.desc()))
        return [VersionRow(*row) for row in rows]

    async def version_exists(self, *, shop_id: str, version: int) -> bool:
        """Whether the shop stored that version."""
        found = await self.session.scalar(select(RulesetRow.id).where(RulesetRow.shop_id == shop_id,
                                                                      RulesetRow.version == version))
        return found is not None

    async def recent_inbound(self, *, shop_id: str, limit: int) -> Sequence[ReplayRow]:
        """The shop's last `limit` inbound messages by received time, newest first."""
        rows = await self.session.execute(
            select(Message.id, Message.external_id, Message.ticket_id, Message.received_at, Message.text)
            .where(Message.shop_id == shop_id, Message.direction == "inbound")
            .order_by(Message.received_at.desc(), Message.id.desc())
            .limit(limit))
        return [ReplayRow(*row) for row in rows]

    async def commit(self) -> None:
        """End the unit of work, keeping its writes (a constraint broken at commit: ConstraintViolation)."""
        async with translated():
            await self.session.commit()

    async def rollback(self) -> None:
        """End the unit of work, dropping its writes."""
        await self.session.rollback()
