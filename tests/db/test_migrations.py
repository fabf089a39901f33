"""Alembic is the only way the schema is made: up, down and up again on both databases."""

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
import httpx
from sqlalchemy import Connection, Index, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.clock import utcnow
from app.db.base import Base
from app.db.migrate import downgrade, head_revision, revision_of, upgrade, upgrade_async
from app.db.models import Message, MessageIdempotencyKey, Queue, Shop, Ticket, WebhookSecret
from app.db.session import create_engine
from app.main import create_app
from app.services import stats
from tests.conftest import make_settings
from tests.support import ADMIN_TOKEN, BACKENDS, fresh_database
from tests.support.clock import freeze
from tests.support.queues import claim, new_agent
from tests.support.webhooks import message, post_signed

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = pytest.mark.asyncio

TABLES = {"shops", "webhook_secrets", "queues", "agents", "agent_queues", "customers", "tickets", "messages",
          "ticket_events", "idempotency_keys", "rulesets", "reply_templates", "delivery_endpoints", "outbox_events",
          "deliveries", "delivery_attempts", "sla_breaches", "message_keys", "queue_counts",
          "queue_count_changes", "episode_facts", "round_facts", "stats_days", "stats_stale_days"}
# PostgreSQL's monthly partitions of messages and ticket_events (migration 0017) are tables of their own.
PARTITION = re.compile(r"^(messages|ticket_events)_y\d{4}m\d{2}$")


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    return {name for name in names if not PARTITION.match(name)} - {"alembic_version"}


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
        if kind == "table" and name is not None and PARTITION.match(name):
            return False  # a month of a partitioned table: the table itself is compared
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
        key = {"shop_id": "s", "platform": "taobao", "external_id": "m-1", "received_at": now, "ticket_id": "t"}
        async with engine.begin() as connection:
            await connection.execute(insert(Message).values(message_row("t", "m-1")))
            await connection.execute(insert(MessageIdempotencyKey).values(key))
        refused = [
            insert(MessageIdempotencyKey).values(key),                       # same shop, platform, message id
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


async def _contents(url: str) -> dict[str, Any]:
    """What a populated database holds, as every revision since 0016 can read it."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            async def rows(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in (await connection.execute(text(sql))).all()]
            return {
                "messages": await rows("SELECT id, ticket_id, external_id, direction, text, received_at FROM messages "
                                       "ORDER BY id"),
                "events": await rows("SELECT id, ticket_id, kind, actor, at FROM ticket_events ORDER BY id"),
                "tickets": await rows("SELECT id, status, episodes FROM tickets ORDER BY id"),
            }
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_partitions_migration_moves_a_populated_database_down_and_up(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages and events of two months, written by the service, survive 0017 down and up again whole; the keys
    are rebuilt from the messages, so resends are still answered as duplicates."""
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        app = create_app(make_settings(url))
        clock = freeze(monkeypatch, utcnow() - timedelta(days=40))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            shop = (await client.post("/v1/shops", json={"id": "moved", "name": "Moved"}, headers=ADMIN)).json()
            agent = await new_agent(client, ADMIN, "moved")
            for n in range(6):
                answer = await post_signed(client, "moved", shop["webhook_secret"], [
                    message("我要退货" if n % 2 else "快递三天没动了", conversation=f"c{n % 3}", message_id=f"m{n}")])
                assert answer.status_code == 202, answer.text
                if n == 2:
                    ticket = (await claim(client, agent)).json()
                    await client.post(f"/v1/tickets/{ticket['id']}/replies", headers=agent["headers"],
                                      json={"text": "好的"})
                    await client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=agent["headers"])
                    clock.advance(35 * 86_400)  # the rest a month later
        populated = await _contents(url)
        assert len(populated["messages"]) == 7 and len({str(r[5])[:7] for r in populated["messages"]}) == 2

        await asyncio.to_thread(downgrade, url, "0016")
        assert await _contents(url) == populated
        await asyncio.to_thread(upgrade, url)
        assert await _contents(url) == populated
        if backend == "postgres":
            engine = create_async_engine(url)
            async with engine.connect() as connection:
                homes = (await connection.execute(text(
                    "SELECT tableoid::regclass::text, to_char(min(received_at) AT TIME ZONE 'UTC', 'YYYY-MM') "
                    "FROM messages GROUP BY 1 ORDER BY 1"))).all()
            await engine.dispose()
            # Each month's messages in that month's partition.
            assert [(home, f"messages_y{month[:4]}m{month[5:]}") for home, month in homes] == [
                (home, home) for home, _ in homes] and len(homes) == 2

        # A longer retention than the first service's, so that this one's start drops no month its clock left
        # behind: a month's DROP waits for the tables its foreign keys reference, and a statistics read below that
        # waited for the month in turn was a deadlock PostgreSQL broke by aborting the read (docs/design.md, "A
        # month's drop against a reader").
        app = create_app(make_settings(url, retention_days=500))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            again = await post_signed(client, "moved", shop["webhook_secret"], [
                message("我要退货", conversation="c0", message_id="m0"), message("还在吗", conversation="c9")])
            assert [r["duplicate"] for r in again.json()["results"]] == [True, False]
            assert again.json()["results"][0]["queue"] == "aftersale"
            # The summaries made from the moved trail (migration 0019) say what the trail says.
            now = utcnow()
            figures = []
            for from_trail in (False, True):
                async with app.state.sessionmaker() as session:
                    figures.append((await stats.shop_stats(session, shop_id="moved", since=now - timedelta(days=60),
                                                           until=now, now=now, from_trail=from_trail)).model_dump())
            assert figures[0] == figures[1] and figures[0]["overall"]["conversations_received"] == 5


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_snooze_migration_goes_down_and_up_on_a_populated_database(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 0022 down puts snoozed tickets back in their queue (the status they may have there), and up again
    the service snoozes and wakes as before; nothing else of the tickets changes either way."""
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        app = create_app(make_settings(url))
        clock = freeze(monkeypatch, utcnow())
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            shop = (await client.post("/v1/shops", json={"id": "snoozy", "name": "Snoozy"}, headers=ADMIN)).json()
            agent = await new_agent(client, ADMIN, "snoozy")
            for n in range(3):
                await post_signed(client, "snoozy", shop["webhook_secret"], [
                    message("我要退货", conversation=f"c{n}", message_id=f"m{n}")])
            ticket = (await claim(client, agent)).json()
            until = (clock.now + timedelta(hours=1)).isoformat()
            answer = await client.post(f"/v1/tickets/{ticket['id']}/snooze", headers=agent["headers"],
                                       json={"until": until})
            assert answer.status_code == 200, answer.text

        async def statuses() -> dict[str, str]:
            engine = create_async_engine(url)
            async with engine.connect() as connection:
                rows = (await connection.execute(text("SELECT id, status FROM tickets"))).all()
            await engine.dispose()
            return {row[0]: row[1] for row in rows}

        before = await statuses()
        assert sorted(before.values()) == ["pending", "queued", "queued"]
        await asyncio.to_thread(downgrade, url, "0021")
        assert await statuses() == {**before, ticket["id"]: "queued"}
        await asyncio.to_thread(upgrade, url)
        app = create_app(make_settings(url))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            again = (await claim(client, agent)).json()
            answer = await client.post(f"/v1/tickets/{again['id']}/snooze", headers=agent["headers"],
                                       json={"until": until})
            assert answer.json()["status"] == "pending"
            clock.advance(3600)
            await app.state.reaper.run_once()
            read = await client.get(f"/v1/tickets/{again['id']}", headers=ADMIN)
            assert read.json()["status"] == "queued"


NOW_FIGURES = {"backlog", "holding", "presence", "depth", "oldest_wait_seconds"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_rollup_migration_goes_down_and_up_on_a_populated_database(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 0027 down drops the daily rollup and its triggers, leaving the trail's figures as they were; up again,
    the worker rolls the days again and the statistics equal those before and the trail's."""
    from app.services.rollups import roll

    real_now = utcnow()
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        app = create_app(make_settings(url))
        clock = freeze(monkeypatch, real_now - timedelta(days=5))
        since, until = clock.now - timedelta(days=2), clock.now + timedelta(days=2)

        async def figures(**trail: bool) -> Any:
            async with app.state.sessionmaker() as session:
                found = (await stats.shop_stats(session, shop_id="rolly", since=since, until=until, now=clock.now,
                                                **trail)).model_dump()
            # The service levels only: the backlog and who holds what now move with the lease reaper.
            return {part: [{k: v for k, v in row.items() if k not in NOW_FIGURES} for row in found[part]]
                    for part in ("queues", "tiers", "agents")} | {
                "overall": {k: v for k, v in found["overall"].items() if k not in NOW_FIGURES}}

        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            await app.state.workers.stop("stats-rollup")  # the test rolls when it means to
            shop = (await client.post("/v1/shops", json={"id": "rolly", "name": "Rolly"}, headers=ADMIN)).json()
            agent = await new_agent(client, ADMIN, "rolly")
            for n in range(3):
                await post_signed(client, "rolly", shop["webhook_secret"], [
                    message("我要退货", conversation=f"c{n}", message_id=f"m{n}")])
            for _ in range(3):  # every one answered, so the day settles
                clock.advance(30)
                ticket = (await claim(client, agent)).json()
                answer = await client.post(f"/v1/tickets/{ticket['id']}/replies", headers=agent["headers"],
                                           json={"text": "好的"})
                assert answer.status_code == 201, answer.text
            await client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=agent["headers"], json={})
            clock.advance(86400)
            for n in range(3, 5):  # the day after: answered by nobody
                await post_signed(client, "rolly", shop["webhook_secret"], [
                    message("在吗", conversation=f"c{n}", message_id=f"m{n}")])
            await roll(app.state.sessionmaker, now=real_now)
            rolled = await figures()
        assert rolled["overall"]["conversations_received"] == 5

        await asyncio.to_thread(downgrade, url, "0026")
        assert not {"stats_days", "stats_stale_days"} & await _tables(url)
        app = create_app(make_settings(url))
        async with app.router.lifespan_context(app):
            await app.state.workers.stop("stats-rollup")  # its tables are gone
            plain = await figures(from_trail=True)
        await asyncio.to_thread(upgrade, url)
        app = create_app(make_settings(url))
        async with app.router.lifespan_context(app):
            await app.state.workers.stop("stats-rollup")
            await roll(app.state.sessionmaker, now=real_now)
            async with app.state.sessionmaker() as session:
                days = await session.scalar(text("SELECT count(*) FROM stats_days"))
            again = await figures()
        assert days and again == rolled == plain


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_ticket_context_migration_fills_open_episodes_from_their_messages(backend: str, tmp_path: Path) -> None:
    """Migration 0033 up keeps on each open ticket its episode's latest buyer texts, read from the messages (a
    resolved ticket's episode has none); 0034 down and up again leave them as they are."""
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        app = create_app(make_settings(url))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            shop = (await client.post("/v1/shops", json={"id": "chatty", "name": "Chatty"}, headers=ADMIN)).json()
            agent = await new_agent(client, ADMIN, "chatty")
            await post_signed(client, "chatty", shop["webhook_secret"], [message("我要退货", conversation="closed")])
            closed = (await claim(client, agent)).json()
            assert (await client.post(f"/v1/tickets/{closed['id']}/resolve", headers=agent["headers"])).status_code == 200
            texts = ["付款扣了两次钱", "怎么回事", "", "能退一笔吗", "在吗"]
            for n, words in enumerate(texts):
                sent = message(words, conversation="open", message_id=f"o{n}")
                if not words:  # a picture: no words to lend a fragment
                    del sent["text"]
                    sent.update(kind="image", attachments=[{"url": "https://img.example.com/a.jpg",
                                                            "mime": "image/jpeg", "name": "a.jpg"}])
                answer = await post_signed(client, "chatty", shop["webhook_secret"], [sent])
                assert answer.status_code == 202, answer.text

        async def contexts() -> dict[str, list[str]]:
            engine = create_async_engine(url)
            async with engine.connect() as connection:
                rows = (await connection.execute(select(Ticket.conversation_id, Ticket.context))).all()
            await engine.dispose()
            return {row[0]: row[1] for row in rows}

        written = {"open": ["怎么回事", "能退一笔吗", "在吗"], "closed": ["我要退货"]}
        assert await contexts() == written  # as ingestion keeps them
        await asyncio.to_thread(downgrade, url, "0032")
        await asyncio.to_thread(upgrade, url)
        assert await contexts() == {**written, "closed": []}  # the migration reads open episodes only
