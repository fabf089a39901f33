"""Queries of the rules admin: stored ruleset versions, the shop's active one, and messages to replay."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Message, Shop
from app.db.models import Ruleset as RulesetRow


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


async def lock_shop(session: AsyncSession, shop_id: str) -> Shop | None:
    """The shop row, locked until the transaction ends on PostgreSQL, so activations of one shop queue up."""
    return await session.scalar(select(Shop).where(Shop.id == shop_id).with_for_update())


async def next_version(session: AsyncSession, *, shop_id: str) -> int:
    """One more than the highest stored version of the shop (1 for the first)."""
    highest = await session.scalar(select(func.max(RulesetRow.version)).where(RulesetRow.shop_id == shop_id))
    return int(highest or 0) + 1


async def insert_version(session: AsyncSession, *, shop_id: str, version: int, name: str, body: dict[str, Any],
                         now: datetime) -> RulesetRow:
    """Add a stored version; flushing makes a taken version number fail here with an IntegrityError."""
    row = RulesetRow(shop_id=shop_id, version=version, name=name, body=body, created_at=now, activated_at=now)
    session.add(row)
    await session.flush()
    return row


async def mark_activated(session: AsyncSession, *, shop_id: str, version: int, now: datetime) -> None:
    """Record when an already stored version was activated again."""
    await session.execute(update(RulesetRow)
                          .where(RulesetRow.shop_id == shop_id, RulesetRow.version == version)
                          .values(activated_at=now))


async def set_active_version(session: AsyncSession, *, shop_id: str, version: int | None) -> None:
    """Point the shop at a stored version, or at the shipped default with None."""
    await session.execute(update(Shop).where(Shop.id == shop_id).values(active_ruleset_version=version))


async def list_versions(session: AsyncSession, *, shop_id: str) -> list[VersionRow]:
    """The shop's stored versions, newest first, without their bodies."""
    rows = await session.execute(
        select(RulesetRow.version, RulesetRow.name, RulesetRow.created_at, RulesetRow.activated_at)
        .where(RulesetRow.shop_id == shop_id).order_by(RulesetRow.version.desc()))
    return [VersionRow(*row) for row in rows]


async def version_exists(session: AsyncSession, *, shop_id: str, version: int) -> bool:
    found = await session.scalar(select(RulesetRow.id).where(RulesetRow.shop_id == shop_id,
                                                             RulesetRow.version == version))
    return found is not None


async def recent_inbound(session: AsyncSession, *, shop_id: str, limit: int) -> Sequence[ReplayRow]:
    """The shop's last `limit` inbound messages by received time, newest first."""
    rows = await session.execute(
        select(Message.id, Message.external_id, Message.ticket_id, Message.received_at, Message.text)
        .where(Message.shop_id == shop_id, Message.direction == "inbound")
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(limit))
    return [ReplayRow(*row) for row in rows]
