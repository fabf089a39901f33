"""Contract of the ingestion store (app/db/ingest.py): one table of cases, run against every adapter.

The shared store (SharedIngestStore) runs on SQLite, as the service runs it, and on PostgreSQL too (its
statements are written once for both); PostgresIngestStore, with its unnest() steps, on PostgreSQL. Each case
runs the steps of one group's transaction as the service does (prepare, insert_messages, lock_tickets, finish).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.driver import Driver, decoded, driver
from app.db.ingest import IngestStore, PostgresIngestStore, Prepared, SharedIngestStore
from app.domain import EventKind, Status, TicketState
from tests.support.rollback import rolled_back_driver


@dataclass
class World:
    db: Driver  # inside the test's transaction, rolled back at its end (tests/support/rollback.py)
    adapter: type[SharedIngestStore]
    shop: str

    @asynccontextmanager
    async def group(self) -> AsyncIterator[IngestStore]:
        """One group's transaction (nested in the test's), committed when the block ends."""
        async with self.db.transaction():
            yield self.adapter(self.db)

    async def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [decoded(r) for r in await self.db.rows(sql, *params)]

    def customer(self, external_id: str, *, nick: str = "buyer", vip: int = 0) -> dict[str, Any]:
        return {"shop_id": self.shop, "platform": "taobao", "external_id": external_id, "nick": nick,
                "vip_level": vip}

    def conversation(self, name: str) -> tuple[tuple[str, str, str], str]:
        return (self.shop, "taobao", name), "aftersale"

    def message(self, ticket_id: str, external_id: str, now: datetime, *, text: str = "我要退货") -> dict[str, Any]:
        return {"ticket_id": ticket_id, "shop_id": self.shop, "platform": "taobao", "external_id": external_id,
                "direction": "inbound", "text": text, "sent_at": now, "received_at": now, "order_id": None,
                "primary_intent": "return_refund", "tier": 2, "priority": 500,
                "triage": {"primary": "return_refund", "queue": "aftersale", "中文": True}, "kind": "text",
                "content": None}


def _saved(state: dict[str, Any], customer_id: int, now: datetime, **changes: Any) -> dict[str, Any]:
    ticket = TicketState.from_row(state)
    return {**ticket.columns(), "context": [], "customer_id": customer_id, "updated_at": now, **changes}


async def a_new_conversation_gets_a_placeholder_ticket_and_its_buyer_a_row(w: World) -> None:
    now = utcnow()
    async with w.group() as store:
        prepared = await store.prepare([w.customer("b1", vip=3)], [w.conversation("c1")], now=now)
    key = (w.shop, "taobao", "c1")
    assert prepared.created == {prepared.tickets[key]} and not prepared.open_episodes
    [(customer_id, contacts, _, _)] = prepared.customers.values()
    assert contacts == 0
    [ticket] = await w.rows("SELECT status, tier, queue, intents, escalated, episodes, created_at FROM tickets "
                            "WHERE id = $1", prepared.tickets[key])
    assert ticket == {"status": Status.QUEUED, "tier": 4, "queue": "aftersale", "intents": [], "escalated": False,
                      "episodes": 1, "created_at": now}
    [customer] = await w.rows("SELECT id, nick, vip_level FROM customers WHERE shop_id = $1", w.shop)
    assert customer == {"id": customer_id, "nick": "buyer", "vip_level": 3}


async def _open_episode(w: World, first: datetime, **changes: Any) -> tuple[Prepared, str, int]:
    """Conversation c1 of buyer b1, its ticket saved with an episode open since `first` (and `changes`): what prepare
    found, the ticket's id and the buyer's."""
    async with w.group() as store:
        prepared = await store.prepare([w.customer("b1")], [w.conversation("c1")], now=first)
        ticket_id = prepared.tickets[(w.shop, "taobao", "c1")]
    [placeholder] = await w.rows("SELECT * FROM tickets WHERE id = $1", ticket_id)
    async with w.group() as store:
        customer_id = prepared.customers[(w.shop, "taobao", "b1")][0]
        await store.finish(deleted=[], saved=[_saved(placeholder, customer_id, first, awaiting_since=first, **changes)],
                           events=[], customers=[], channel="triage_test", payloads=[], previous=[], now=first)
    return prepared, ticket_id, customer_id


async def a_known_conversation_is_found_with_its_open_episode(w: World) -> None:
    first = utcnow()
    prepared, ticket_id, customer_id = await _open_episode(w, first)
    later = first + timedelta(seconds=30)
    async with w.group() as store:
        again = await store.prepare([w.customer("b1", nick="renamed")], [w.conversation("c1")], now=later)
        [locked] = await store.lock_tickets([ticket_id])
    assert again.tickets == prepared.tickets and not again.created
    assert again.customers == prepared.customers
    assert again.open_episodes == {(w.shop, "taobao", "c1"): first}
    assert locked["id"] == ticket_id and locked["customer_id"] == customer_id and locked["awaiting_since"] == first


async def an_open_episodes_latest_buyer_texts_are_read_where_asked(w: World) -> None:
    first = utcnow()
    _, ticket_id, customer_id = await _open_episode(w, first, context=["付款扣了两次钱", "怎么回事"])
    later = first + timedelta(seconds=30)
    c1, c2 = (w.shop, "taobao", "c1"), (w.shop, "taobao", "c2")
    async with w.group() as store:
        asked = await store.prepare([w.customer("b1")], [w.conversation("c1"), w.conversation("c2")], now=later,
                                    contexts=frozenset({c1, c2}))
        unasked = await store.prepare([w.customer("b1")], [w.conversation("c1")], now=later)
        [locked] = await store.lock_tickets([ticket_id])
    assert asked.context(c1) == ["付款扣了两次钱", "怎么回事"]
    assert asked.context(c2) == []  # a new conversation has no episode yet
    assert unasked.context(c1) == []
    assert locked["context"] == ["付款扣了两次钱", "怎么回事"]
    [resolved] = await w.rows("SELECT * FROM tickets WHERE id = $1", ticket_id)
    async with w.group() as store:
        await store.finish(deleted=[], saved=[_saved(resolved, customer_id, later, status=Status.RESOLVED,
                                                     context=["付款扣了两次钱", "怎么回事"])],
                           events=[], customers=[], channel="triage_test", payloads=[], previous=[], now=later)
        closed = await store.prepare([w.customer("b1")], [w.conversation("c1")], now=later, contexts=frozenset({c1}))
    assert closed.context(c1) == []  # a resolved episode lends its words to no fragment


async def a_message_is_stored_once_and_its_duplicate_read_back(w: World) -> None:
    now = utcnow()
    async with w.group() as store:
        prepared = await store.prepare([w.customer("b1")], [w.conversation("c1")], now=now)
        ticket_id = prepared.tickets[(w.shop, "taobao", "c1")]
        stored = await store.insert_messages([w.message(ticket_id, "m1", now), w.message(ticket_id, "m2", now)])
    assert list(stored) == [(w.shop, "taobao", "m1"), (w.shop, "taobao", "m2")]  # ids in the rows' order
    assert stored[(w.shop, "taobao", "m1")] < stored[(w.shop, "taobao", "m2")]
    async with w.group() as store:
        again = await store.insert_messages([w.message(ticket_id, "m1", now), w.message(ticket_id, "m3", now)])
        previous = await store.finish(deleted=[], saved=[], events=[], customers=[], channel="triage_test",
                                      payloads=[], previous=[(w.shop, "taobao", "m1")], now=now)
    assert list(again) == [(w.shop, "taobao", "m3")]
    assert {k: (v["ticket_id"], v["primary_intent"], v["tier"], v["priority"], v["queue"])
            for k, v in previous.items()} == {(w.shop, "taobao", "m1"): (ticket_id, "return_refund", 2, 500, "aftersale")}
    # The key of each message stored, with the answer it got, and none for the one skipped.
    keys = await w.rows("SELECT external_id, ticket_id, queue FROM message_keys WHERE shop_id = $1 "
                        "ORDER BY external_id", w.shop)
    assert [(k["external_id"], k["ticket_id"], k["queue"]) for k in keys] == [
        ("m1", ticket_id, "aftersale"), ("m2", ticket_id, "aftersale"), ("m3", ticket_id, "aftersale")]
    assert len(await w.rows("SELECT id FROM messages WHERE shop_id = $1", w.shop)) == 3


async def finish_writes_tickets_events_and_contacts_and_drops_unused_placeholders(w: World) -> None:
    now = utcnow()
    async with w.group() as store:
        prepared = await store.prepare([w.customer("b1"), w.customer("b2")],
                                       [w.conversation("kept"), w.conversation("dropped")], now=now)
        kept, dropped = (prepared.tickets[(w.shop, "taobao", name)] for name in ("kept", "dropped"))
    [placeholder] = await w.rows("SELECT * FROM tickets WHERE id = $1", kept)
    async with w.group() as store:
        customer_id = prepared.customers[(w.shop, "taobao", "b1")][0]
        saved = _saved(placeholder, customer_id, now, tier=1, priority=900, primary_intent="bad_review_threat",
                       intents=["bad_review_threat", "logistics"], escalated=True, unread=2, opened_seq=7,
                       first_response_due_at=now + timedelta(seconds=20))
        events = [{"ticket_id": kept, "shop_id": w.shop, "at": now, "kind": EventKind.CREATED, "actor": "webhook",
                   "data": {"queue": "complaints", "中文": [1, 2]}}]
        await store.finish(deleted=[dropped], saved=[saved], events=events,
                           customers=[{**w.customer("b1"), "opened": 1}, {**w.customer("b2"), "opened": 0}],
                           channel="triage_test", payloads=[w.shop], previous=[], now=now)
    [ticket] = await w.rows("SELECT * FROM tickets WHERE id = $1", kept)
    assert {k: ticket[k] for k in ("tier", "priority", "intents", "escalated", "unread", "opened_seq",
                                   "first_response_due_at", "customer_id")} == {
        "tier": 1, "priority": 900, "intents": ["bad_review_threat", "logistics"], "escalated": True, "unread": 2,
        "opened_seq": 7, "first_response_due_at": now + timedelta(seconds=20), "customer_id": customer_id}
    assert await w.rows("SELECT id FROM tickets WHERE id = $1", dropped) == []
    assert await w.rows("SELECT kind, actor, data, at FROM ticket_events WHERE ticket_id = $1", kept) == [
        {"kind": EventKind.CREATED, "actor": "webhook", "data": {"queue": "complaints", "中文": [1, 2]}, "at": now}]
    contacts = await w.rows("SELECT external_id, contacts FROM customers WHERE shop_id = $1 ORDER BY external_id",
                            w.shop)
    assert contacts == [{"external_id": "b1", "contacts": 1}, {"external_id": "b2", "contacts": 0}]


async def more_rows_than_one_statement_takes_are_written_in_chunks(w: World) -> None:
    now = utcnow()
    count = SharedIngestStore.CHUNK + 5
    async with w.group() as store:
        prepared = await store.prepare([w.customer(f"b{i}") for i in range(count)],
                                       [w.conversation(f"c{i}") for i in range(count)], now=now)
        stored = await store.insert_messages([w.message(prepared.tickets[(w.shop, "taobao", f"c{i}")], f"m{i}", now)
                                              for i in range(count)])
    assert (len(prepared.customers), len(prepared.created), len(stored)) == (count, count, count)
    [row] = await w.rows("SELECT count(*) AS n FROM messages WHERE shop_id = $1", w.shop)
    assert row["n"] == count


async def texts_holding_separators_or_nothing_are_stored_as_sent(w: World) -> None:
    # PostgresIngestStore packs a text column into one string (app/db/ingest.py, _pack): values holding its marks,
    # empty ones and absent ones must come back unchanged.
    now = utcnow()
    odd = ["\x1f", "\x1e", "a\x1fb\x1ec", "", "引号\x1f\x1f"]
    customers = [w.customer(f"b{i}", nick=nick) for i, nick in enumerate(odd)]
    async with w.group() as store:
        prepared = await store.prepare(customers, [w.conversation("\x1e")], now=now)
        ticket_id = prepared.tickets[(w.shop, "taobao", "\x1e")]
        messages = [{**w.message(ticket_id, f"m{i}", now, text=text), "order_id": None if i % 2 else text}
                    for i, text in enumerate(odd)]
        stored = await store.insert_messages(messages)
    assert len(stored) == len(odd)
    rows = await w.rows("SELECT text, order_id FROM messages WHERE ticket_id = $1 ORDER BY id", ticket_id)
    assert rows == [{"text": m["text"], "order_id": m["order_id"]} for m in messages]
    nicks = await w.rows("SELECT external_id, nick FROM customers WHERE shop_id = $1 ORDER BY external_id", w.shop)
    assert nicks == [{"external_id": f"b{i}", "nick": nick} for i, nick in enumerate(odd)]


async def a_saved_ticket_keeps_what_did_not_change_and_gets_what_did(w: World) -> None:
    # The shared store sets only the columns that differ from what prepare read; ingestion appends to the context
    # list that lock_tickets gave it, so that list must not be what the store compares with.
    first = utcnow()
    _, ticket_id, customer_id = await _open_episode(w, first, context=["在吗"], intents=["logistics"], unread=1)
    later = first + timedelta(seconds=30)
    async with w.group() as store:
        await store.prepare([w.customer("b1")], [w.conversation("c1")], now=later)
        [locked] = await store.lock_tickets([ticket_id])
        locked["context"].append("快递到哪了")
        saved = _saved(locked, customer_id, later, context=locked["context"], last_message_at=later, unread=2)
        await store.finish(deleted=[], saved=[saved], events=[], customers=[], channel="triage_test", payloads=[],
                           previous=[], now=later)
    [ticket] = await w.rows("SELECT * FROM tickets WHERE id = $1", ticket_id)
    assert {k: ticket[k] for k in ("context", "last_message_at", "unread", "updated_at", "intents", "awaiting_since",
                                   "status", "customer_id")} == {
        "context": ["在吗", "快递到哪了"], "last_message_at": later, "unread": 2, "updated_at": later,
        "intents": ["logistics"], "awaiting_since": first, "status": Status.QUEUED, "customer_id": customer_id}


CASES: list[Callable[[World], Awaitable[None]]] = [
    a_new_conversation_gets_a_placeholder_ticket_and_its_buyer_a_row,
    a_known_conversation_is_found_with_its_open_episode,
    an_open_episodes_latest_buyer_texts_are_read_where_asked,
    a_message_is_stored_once_and_its_duplicate_read_back,
    finish_writes_tickets_events_and_contacts_and_drops_unused_placeholders,
    more_rows_than_one_statement_takes_are_written_in_chunks,
    texts_holding_separators_or_nothing_are_stored_as_sent,
    a_saved_ticket_keeps_what_did_not_change_and_gets_what_did,
]


@pytest.fixture(params=["shared", "postgres"])
def adapter(request: pytest.FixtureRequest, database_url: str) -> type[SharedIngestStore]:
    """The shared store on each database, and PostgreSQL's own on PostgreSQL."""
    if request.param == "postgres" and not database_url.startswith("postgresql"):
        pytest.skip("PostgresIngestStore runs on PostgreSQL only")
    return PostgresIngestStore if request.param == "postgres" else SharedIngestStore


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_ingest_store_contract(case: Callable[[World], Awaitable[None]], adapter: type[SharedIngestStore],
                                     app: FastAPI, new_shop: Any) -> None:
    shop = await new_shop()
    async with rolled_back_driver(app) as db:
        await case(World(db, adapter, shop["id"]))



async def test_a_case_leaves_nothing_behind(adapter: type[SharedIngestStore], app: FastAPI, new_shop: Any) -> None:
    shop = await new_shop()
    async with rolled_back_driver(app) as db:
        await finish_writes_tickets_events_and_contacts_and_drops_unused_placeholders(World(db, adapter, shop["id"]))
    async with driver(app.state.drivers) as db:
        for table in ("customers", "tickets", "ticket_events"):
            assert await db.rows(f"SELECT 1 AS found FROM {table} WHERE shop_id = $1", shop["id"]) == [], table


def test_the_ticket_has_one_column_list() -> None:
    # TicketState (app/domain.py) names the columns of `tickets` in table order; the stores' column lists are
    # derived from it and from app/db/models.py, so a column added to one and not the other fails here. The one
    # column it leaves out, the open episode's latest buyer texts, only ingestion reads and writes (migration 0033).
    from app.db.ingest import TICKET_COLUMNS
    from app.db.models import Ticket
    from app.domain import TICKET_FIELDS

    assert tuple(column.name for column in Ticket.__table__.columns) == (*TICKET_FIELDS, "context")
    assert TICKET_FIELDS == tuple(TICKET_COLUMNS)
    assert (TICKET_COLUMNS["intents"], TICKET_COLUMNS["tier"], TICKET_COLUMNS["opened_seq"],
            TICKET_COLUMNS["lease_expires_at"]) == ("jsonb", "smallint", "bigint", "timestamptz")


@pytest.mark.parametrize("values", [[], [""], [None], ["", ""], ["\x1f"], ["\x1e"], ["a", None, "", "\x1f\x1e"]],
                         ids=repr)
async def test_a_packed_text_column_comes_back_as_it_was(values: list[str | None], app: FastAPI,
                                                       database_url: str) -> None:
    from app.db.ingest import _Params, _packed_array

    if not database_url.startswith("postgresql"):
        pytest.skip("packed columns are PostgresIngestStore's")
    params = _Params().texts(values).all()
    async with rolled_back_driver(app) as db:
        [row] = await db.rows(f"SELECT {_packed_array(3)} AS back", *params)
    assert row["back"] == values
    assert params[:2] != ["\x1f", "\x1e"] or not any(v and ("\x1f" in v or v == "\x1e") for v in values)


async def test_sqlite_sets_only_the_changed_columns_and_finds_tickets_by_key(app: FastAPI, new_shop: Any,
                                                                             database_url: str) -> None:
    # SQLite rewrites the entries of every index holding a column an UPDATE sets, changed or not, and scanned all of
    # `tickets` for `(a, b, c) IN (VALUES ...)`: the statements the shared store sends say what it costs there.
    if database_url.startswith("postgresql"):
        pytest.skip("SQLite's statements")
    shop = await new_shop()
    async with rolled_back_driver(app) as db:
        w = World(db, SharedIngestStore, shop["id"])
        first = utcnow()
        _, ticket_id, customer_id = await _open_episode(w, first, context=["在吗"])
        later = first + timedelta(seconds=5)
        sent: list[str] = []
        await db.connection.set_trace_callback(sent.append)
        async with w.group() as store:
            await store.prepare([w.customer("b1")], [w.conversation("c1"), w.conversation("c2")], now=later)
            [locked] = await store.lock_tickets([ticket_id])
            await store.finish(deleted=[], saved=[_saved(locked, customer_id, first, context=["在吗"],
                                                         last_message_at=later)],
                               events=[], customers=[], channel="triage_test", payloads=[], previous=[], now=later)
        await db.connection.set_trace_callback(None)
        [update] = {s for s in sent if s.startswith("UPDATE tickets")}
        assert update.startswith("UPDATE tickets SET last_message_at = ") and "," not in update.split(" WHERE ")[0]
        [read] = {s for s in sent if s.startswith("SELECT") and "FROM tickets" in s}
        plan = await db.rows("EXPLAIN QUERY PLAN " + read)
        details = [row["detail"] for row in plan]
        assert any(d.startswith("SEARCH tickets USING INDEX") for d in details), details
        assert not any(d.startswith("SCAN tickets") for d in details), details
