"""The few set-based statements ingestion runs per group of webhook requests."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Customer, Message, Ticket, TicketEvent

ConversationKey = tuple[str, str, str]  # shop, platform, conversation id
MessageKey = tuple[str, str, str]  # shop, platform, message id
CustomerKey = tuple[str, str, str]  # shop, platform, customer id


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def upsert_customers(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> dict[CustomerKey, tuple[int, int]]:
    """Insert or refresh customers; returns (id, contacts so far) per key. Rows must have distinct keys."""
    stmt = _insert(session, Customer.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["shop_id", "platform", "external_id"],
        set_={"nick": stmt.excluded.nick, "vip_level": stmt.excluded.vip_level,
              "last_seen_at": stmt.excluded.last_seen_at},
    ).returning(Customer.id, Customer.shop_id, Customer.platform, Customer.external_id, Customer.contacts)
    # executemany with RETURNING: one cached statement, sent as multi-row VALUES by the driver layer.
    result = await session.execute(stmt, list(rows))
    return {(r.shop_id, r.platform, r.external_id): (r.id, r.contacts) for r in result}


async def lock_tickets(session: AsyncSession, keys: Sequence[ConversationKey]) -> list[Any]:
    """The tickets of these conversations, row-locked in key order so that concurrent groups never deadlock."""
    stmt = (select(Ticket.__table__)
            .where(tuple_(Ticket.shop_id, Ticket.platform, Ticket.conversation_id).in_(list(keys)))
            .order_by(Ticket.shop_id, Ticket.platform, Ticket.conversation_id)
            .with_for_update())
    return list((await session.execute(stmt)).all())


async def insert_tickets(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert provisional tickets; returns the ids actually inserted (a concurrent creator may have won)."""
    stmt = (_insert(session, Ticket.__table__)
            .on_conflict_do_nothing(index_elements=["shop_id", "platform", "conversation_id"])
            .returning(Ticket.id))
    return set((await session.execute(stmt, list(rows))).scalars().all())


async def insert_messages(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[MessageKey]:
    """Insert inbound messages once: returns the keys stored now; the others were stored before."""
    stmt = (_insert(session, Message.__table__)
            .on_conflict_do_nothing(index_elements=["shop_id", "platform", "external_id"])
            .returning(Message.shop_id, Message.platform, Message.external_id))
    return {(r.shop_id, r.platform, r.external_id) for r in await session.execute(stmt, list(rows))}


async def stored_messages(session: AsyncSession, keys: Sequence[MessageKey]) -> dict[MessageKey, Any]:
    stmt = (select(Message.shop_id, Message.platform, Message.external_id, Message.ticket_id,
                   Message.primary_intent, Message.tier, Message.priority, Message.triage)
            .where(tuple_(Message.shop_id, Message.platform, Message.external_id).in_(list(keys))))
    return {(r.shop_id, r.platform, r.external_id): r for r in await session.execute(stmt)}


_TICKET_UPDATABLE = ("queue", "status", "tier", "priority", "primary_intent", "intents", "escalated",
                     "deliveries", "unread", "ruleset", "updated_at", "opened_at", "awaiting_since",
                     "first_response_due_at", "first_response_at", "last_message_at", "resolved_at", "episodes")


async def save_tickets(session: AsyncSession, tickets: Sequence[dict[str, Any]]) -> None:
    """Write the changed columns of each ticket (one executemany)."""
    if not tickets:
        return
    stmt = (update(Ticket.__table__)
            .where(Ticket.__table__.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in _TICKET_UPDATABLE}))
    params = [{"b_id": t["id"], **{f"b_{name}": t[name] for name in _TICKET_UPDATABLE}} for t in tickets]
    await session.execute(stmt, params)


async def delete_tickets(session: AsyncSession, ticket_ids: Sequence[str]) -> None:
    if ticket_ids:
        await session.execute(delete(Ticket).where(Ticket.id.in_(list(ticket_ids))))


async def count_contacts(session: AsyncSession, customer_ids: Sequence[int]) -> None:
    """One more contact (a new or reopened conversation) for each id; an id may repeat."""
    if customer_ids:
        stmt = (update(Customer.__table__).where(Customer.__table__.c.id == bindparam("b_id"))
                .values(contacts=Customer.__table__.c.contacts + 1))
        await session.execute(stmt, [{"b_id": customer_id} for customer_id in customer_ids])


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(TicketEvent.__table__.insert(), list(rows))


async def notify_postgres(session: AsyncSession, channel: str, payloads: Sequence[str]) -> None:
    """Queue NOTIFYs that PostgreSQL delivers at commit, to listeners in every process."""
    for payload in payloads:
        await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})
