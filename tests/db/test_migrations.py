"""Alembic is the only way the schema is made: up, down and up again on both databases."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Index, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.clock import utcnow
from app.db.base import Base
from app.db.migrate import downgrade, head_revision, revision_of, upgrade, upgrade_async
from app.db.models import Message, Queue, Shop, Ticket, WebhookSecret
from app.db.session import create_engine
from tests.support import BACKENDS, fresh_database

pytestmark = pytest.mark.asyncio

TABLES = {"shops", "webhook_secrets", "queues", "agents", "agent_queues", "customers", "tickets", "messages",
          "ticket_events", "idempotency_keys", "rulesets", "reply_templates", "delivery_endpoints", "outbox_events",
          "deliveries", "delivery_attempts", "sla_breaches"}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgrade_downgrade_upgrade(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        await asyncio.to_thread(upgrade, url)
        assert await revision_of(url) == head_revision()
        assert await _tables(url) == TABLES
        await asyncio.to_thread(downgrade, url, "base")
        assert await _tables(url) == set()
        assert await revision_of(url) is None
        await asyncio.to_thread(upgrade, url)
        assert await _tables(url) == TABLES


@asynccontextmanager
async def migrated(backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A fresh database at head, through the service's own engine (SQLite with its pragmas)."""
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        engine = create_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()


def _index_keys(index: Index) -> list[tuple[str, bool]]:
    # Model side: columns, or text such as "priority DESC"; as (column, descending).
    keys = []
    for expression in index.expressions:
        name = getattr(expression, "name", None) or str(expression)
        keys.append((name.removesuffix(" DESC"), name.endswith(" DESC")))
    return keys


def _stored_keys(sync: Connection, name: str) -> list[tuple[str, bool]]:
    # PRAGMA index_xinfo rows: seqno, cid, name, desc, coll, key (1 for the indexed columns).
    return [(row[2], bool(row[3])) for row in sync.exec_driver_sql(f"PRAGMA index_xinfo('{name}')") if row[5]]


def _sqlite_differences(sync: Connection, differences: list[Any]) -> list[Any]:
    """SQLite reflection loses DESC: check every index's columns and order in the file, then drop the
    remove/add pairs that differ only by it."""
    indexes = {index.name: index for table in Base.metadata.tables.values() for index in table.indexes}
    wrong = [("index_columns_differ", name) for name, index in indexes.items()
             if _stored_keys(sync, str(name)) != _index_keys(index)]
    removed = {d[1].name: d[1] for d in differences if isinstance(d, tuple) and d[0] == "remove_index"}
    added = {d[1].name: d[1] for d in differences if isinstance(d, tuple) and d[0] == "add_index"}
    only_order = {name for name in removed.keys() & added.keys()
                  if str(removed[name].dialect_options["sqlite"]["where"])
                  == str(added[name].dialect_options["sqlite"]["where"])
                  and [key for key, _ in _index_keys(removed[name])] == [key for key, _ in _index_keys(added[name])]}
    return wrong + [d for d in differences if not (isinstance(d, tuple) and d[0] in ("remove_index", "add_index")
                                                   and d[1].name in only_order)]


def _declared_on(backend: str) -> Callable[..., bool]:
    """Alembic's comparison ignores ddl_if(), which the models use for what only one database has (an index
    SQLite keeps beside its rowid key; PostgreSQL has the table key instead): such items of the other
    database are left out of the comparison. SQLAlchemy keeps the condition in `_ddl_if`."""
    dialect = "postgresql" if backend == "postgres" else backend

    def include(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        condition = getattr(item, "_ddl_if", None)
        return reflected or condition is None or condition.dialect in (None, dialect)
    return include


@pytest.mark.parametrize("backend", BACKENDS)
# SQLAlchemy's own reflection builds the DOMAIN types of migration 0006 without an operator class.
@pytest.mark.filterwarnings("ignore:Type object .*DOMAIN.* does not refer to an OperatorClass")
async def test_head_matches_the_models(backend: str, tmp_path: Path) -> None:
    def compare(sync: Connection) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True, "include_object": _declared_on(backend)})
        differences = compare_metadata(context, Base.metadata)
        # SQLAlchemy does not reflect an index column's sort order on SQLite, so a "priority DESC"
        # index always looks changed there; the order is read from the file itself instead.
        return _sqlite_differences(sync, differences) if backend == "sqlite" else differences

    async with migrated(backend, tmp_path) as engine, engine.connect() as connection:
        differences = await connection.run_sync(compare)
    assert differences == []


def message_row(ticket_id: str, external_id: str) -> dict[str, Any]:
    now = utcnow()
    return {"ticket_id": ticket_id, "shop_id": "s", "platform": "taobao", "external_id": external_id,
            "direction": "inbound", "text": "在吗", "sent_at": now, "received_at": now}


def ticket_row(ticket_id: str, conversation_id: str, **values: Any) -> dict[str, Any]:
    now = utcnow()
    return {"id": ticket_id, "shop_id": "s", "platform": "taobao", "conversation_id": conversation_id,
            "queue": "presale", "status": "queued", "tier": 4, "priority": 100, "primary_intent": "other",
            "intents": [], "ruleset": "default", "created_at": now, "updated_at": now, "opened_at": now,
            "last_message_at": now, **values}


async def shop_with_ticket(engine: AsyncEngine) -> None:
    now = utcnow()
    async with engine.begin() as connection:
        await connection.execute(insert(Shop).values(id="s", name="S", sla_targets={}, created_at=now))
        await connection.execute(insert(Queue).values(shop_id="s", name="presale", created_at=now))
        await connection.execute(insert(Ticket).values(ticket_row("t", "c")))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_database_refuses_duplicates_and_dangling_references(backend: str, tmp_path: Path) -> None:
    now = utcnow()
    async with migrated(backend, tmp_path) as engine:
        await shop_with_ticket(engine)
        async with engine.begin() as connection:
            await connection.execute(insert(Message).values(message_row("t", "m-1")))
        refused = [
            insert(Message).values(message_row("t", "m-1")),                 # same shop, platform, message id
            insert(Message).values(message_row("no-such-ticket", "m-2")),     # a message of no ticket
            insert(WebhookSecret).values(shop_id="no-such-shop", secret="whsec_x", created_at=now),
        ]
        for statement in refused:
            with pytest.raises(IntegrityError):
                async with engine.begin() as connection:
                    await connection.execute(statement)
        async with engine.connect() as connection:
            assert len((await connection.execute(Message.__table__.select())).all()) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_database_refuses_a_ticket_that_breaks_the_holder_rule(backend: str, tmp_path: Path) -> None:
    # The one rule that spans columns (PostgreSQL checks the one-column rules as domains, migration 0006).
    lease = utcnow()
    ticket = Ticket.__table__
    async with migrated(backend, tmp_path) as engine:
        await shop_with_ticket(engine)
        refused = [
            update(ticket).values(status="assigned"),                                    # assigned, no holder
            update(ticket).values(status="assigned", assigned_agent_id="a"),             # held without a lease
            update(ticket).values(assigned_agent_id="a", lease_expires_at=lease),        # held while queued
            update(ticket).values(status="resolved", assigned_agent_id="a", lease_expires_at=lease),
            insert(ticket).values(ticket_row("t2", "c2", status="assigned")),            # a new ticket, too
        ]
        for statement in refused:
            with pytest.raises(IntegrityError) as refusal:
                async with engine.begin() as connection:
                    await connection.execute(statement)
            if backend == "postgres":
                assert refusal.value.orig.sqlstate == "23514"  # type: ignore[union-attr]
        held = {"status": "assigned", "assigned_agent_id": "a", "lease_expires_at": lease}
        async with engine.begin() as connection:
            await connection.execute(update(ticket).values(held))
            await connection.execute(insert(ticket).values(ticket_row("t3", "c3", **held)))
            await connection.execute(update(ticket).where(ticket.c.id == "t").values(
                status="queued", assigned_agent_id=None, lease_expires_at=None))
        async with engine.connect() as connection:
            rows = (await connection.execute(select(ticket.c.id, ticket.c.status, ticket.c.assigned_agent_id)
                                             .order_by(ticket.c.id))).all()
        assert [tuple(r) for r in rows] == [("t", "queued", None), ("t3", "assigned", "a")]
