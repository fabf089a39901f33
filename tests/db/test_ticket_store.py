"""Contract of the ticket store (app/db/claims.py): one table of cases, run against every adapter.

The shared store (SharedTicketStore) runs on SQLite, as the service runs it, and on PostgreSQL too (its
statements are written once for both); PostgresTicketStore, with its own claim, holder writes, reply and
threads, on PostgreSQL. Every case must hold for each.
"""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.claims import PostgresTicketStore, SharedTicketStore, TicketStore, reply_event
from app.db.driver import decoded, driver
from app.domain import EventKind, Status
from tests.support.queues import new_agent, new_ticket
from tests.support import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LEASE = timedelta(seconds=120)
TOUCH = timedelta(seconds=10)


class OnDemand:
    """The store's operations, each on a connection of its own (SQLite's pool has one, which the API needs too)."""

    def __init__(self, app: FastAPI, adapter: type[SharedTicketStore]) -> None:
        self._app = app
        self._adapter = adapter

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[TicketStore]:
        async with driver(self._app.state.drivers) as db:
            yield self._adapter(db)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self.connected() as store:
                return await getattr(store, name)(*args, **kwargs)
        return call


@dataclass
class World:
    store: OnDemand
    shop: dict[str, Any]
    agent: dict[str, Any]
    other: dict[str, Any]
    client: httpx.AsyncClient

    async def ticket(self, text: str) -> str:
        return await new_ticket(self.client, self.shop, text)

    async def claim(self, agent: dict[str, Any] | None = None, *, now: datetime | None = None) -> Any:
        agent = agent or self.agent
        now = now or utcnow()
        return await self.store.claim(agent_id=agent["id"], shop_id=self.shop["id"], now=now, lease_until=now + LEASE,
                                      event={"agent_id": agent["id"]}, touch_before=now - TOUCH,
                                      online_after=now - timedelta(minutes=2))

    async def events(self, ticket_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        async with self.store.connected() as store:
            rows = await store.db.rows("SELECT kind, actor, data FROM ticket_events WHERE ticket_id = $1 ORDER BY id",
                                       ticket_id)
        return [(r["kind"], r["actor"], decoded(r)["data"]) for r in rows]


async def claim_takes_the_most_urgent_ticket_with_its_event(w: World) -> None:
    calm = await w.ticket("这个有货吗")
    urgent = await w.ticket("再不发货就给差评")
    claimed = await w.claim()
    assert claimed is not None and claimed.state.id == urgent and claimed.state.id != calm
    assert claimed.state.status == Status.ASSIGNED and claimed.state.assigned_agent_id == w.agent["id"]
    assert (await w.events(urgent))[-1] == (EventKind.CLAIMED, f"agent:{w.agent['id']}",
                                             {"agent_id": w.agent["id"], "deliveries": 0})


async def claim_stops_at_the_agents_capacity(w: World) -> None:
    for text in ("我要退货", "快递三天没动了", "这个有货吗"):
        await w.ticket(text)
    assert await w.claim() is not None and await w.claim() is not None
    assert await w.claim() is None  # capacity 2
    state = await w.store.agent_state(agent_id=w.agent["id"])
    assert state == {"active": True, "capacity": 2, "held": 2}


async def claim_finds_nothing_in_queues_the_agent_does_not_serve(w: World) -> None:
    await w.ticket("我要投诉你们，12315")  # complaints: the other agent serves only presale
    assert await w.claim(w.other) is None
    assert await w.store.served_queues(agent_id=w.other["id"]) == ["presale"]
    assert await w.store.queue_exists(shop_id=w.shop["id"], name="complaints")
    assert not await w.store.queue_exists(shop_id=w.shop["id"], name="nowhere")


async def only_the_holder_under_a_running_lease_writes(w: World) -> None:
    ticket_id = await w.ticket("我要退货")
    now = utcnow()
    claimed = await w.claim(now=now)
    assert claimed is not None
    values = {"status": Status.QUEUED, "assigned_agent_id": None, "lease_expires_at": None}
    event = (EventKind.RELEASED, {"agent_id": w.agent["id"], "reason": None})
    assert await w.store.write_held(ticket_id=ticket_id, agent_id=w.other["id"], now=now, values=values,
                                    event=event) is None
    expired = now + LEASE + timedelta(seconds=1)
    assert await w.store.write_held(ticket_id=ticket_id, agent_id=w.agent["id"], now=expired, values=values,
                                    event=event) is None
    released = await w.store.write_held(ticket_id=ticket_id, agent_id=w.agent["id"], now=now, values=values,
                                        event=event)
    assert released is not None and released.state.status == Status.QUEUED and released.state.assigned_agent_id is None
    assert [e[0] for e in await w.events(ticket_id)][-2:] == [EventKind.CLAIMED, EventKind.RELEASED]


async def the_first_reply_stops_the_clock_and_later_ones_do_not(w: World) -> None:
    ticket_id = await w.ticket("快递三天没动了")
    first = utcnow()
    assert await w.claim(now=first) is not None
    stored = await w.store.reply(ticket_id=ticket_id, agent_id=w.agent["id"], now=first, lease_until=first + LEASE,
                                 text="马上帮您查")
    assert stored is not None
    ticket, message = stored
    assert ticket.state.first_response_at == first and ticket.state.unread == 0
    assert ticket.state.awaiting_since is None and ticket.state.lease_expires_at == first + LEASE
    assert (message["direction"], message["text"], message["sent_at"], message["triage"]) == \
        ("outbound", "马上帮您查", first, None)
    later = first + timedelta(seconds=5)
    again = await w.store.reply(ticket_id=ticket_id, agent_id=w.agent["id"], now=later, lease_until=later + LEASE,
                                text="还在查")
    assert again is not None and again[0].state.first_response_at == first
    replied = [e[2] for e in await w.events(ticket_id) if e[0] == EventKind.REPLIED]
    assert [r["first_response"] for r in replied] == [True, False]
    assert replied[0]["message_id"] == message["id"] and "within_target" in replied[0]


async def a_replys_event_is_what_reply_event_makes_of_it(w: World) -> None:
    # PostgresTicketStore builds the body in its statement (docs/design.md); it must equal reply_event()'s.
    for late in (False, True):
        ticket_id = await w.ticket("快递三天没动了")
        now = utcnow() + timedelta(hours=1 if late else 0)
        assert await w.claim(now=now) is not None
        bodies = []
        for at in (now, now + timedelta(seconds=5)):
            stored = await w.store.reply(ticket_id=ticket_id, agent_id=w.agent["id"], now=at, lease_until=at + LEASE,
                                         text="在的")
            assert stored is not None
            bodies.append(reply_event(message_id=stored[1]["id"], ticket=stored[0].state, now=at,
                                      lease_until=at + LEASE))
        assert [e[2] for e in await w.events(ticket_id) if e[0] == EventKind.REPLIED] == bodies
        assert bodies[0]["within_target"] is not late and "within_target" not in bodies[1]


async def threads_carry_the_customer_and_the_triage(w: World) -> None:
    ticket_id = await w.ticket("我要退货")
    [thread] = (await w.store.threads([ticket_id])).values()
    assert [(m["direction"], m["text"]) for m in thread] == [("inbound", "我要退货")]
    assert thread[0]["customer_external_id"] is not None and thread[0]["triage"]["primary"] == "return_refund"
    assert isinstance(thread[0]["sent_at"], datetime) and thread[0]["sent_at"].tzinfo is not None
    stored = await w.store.ticket(ticket_id=ticket_id)
    assert stored is not None and stored.state.intents == ["return_refund"] and stored.state.escalated is False
    assert await w.store.ticket(ticket_id=str(uuid.uuid4())) is None
    assert await w.store.threads([]) == {}


async def the_agents_tickets_are_in_claim_order(w: World) -> None:
    calm = await w.ticket("这个有货吗")
    urgent = await w.ticket("再不发货就给差评")
    await w.claim()
    await w.claim()
    assert [t.state.id for t in await w.store.agent_tickets(agent_id=w.agent["id"])] == [urgent, calm]


async def an_idempotency_key_is_taken_once_and_remembers_its_answer(w: World) -> None:
    key, now = uuid.uuid4().hex, utcnow()
    async with w.store.connected() as store, store.transaction():
        assert await store.reserve_key(agent_id=w.agent["id"], key=key, request_hash="h1", now=now)
        await store.store_answer(agent_id=w.agent["id"], key=key, status_code=201, response={"ok": ["中文", 1]})
    assert not await w.store.reserve_key(agent_id=w.agent["id"], key=key, request_hash="h2", now=now)
    assert await w.store.key_record(agent_id=w.agent["id"], key=key) == {
        "request_hash": "h1", "status_code": 201, "response": {"ok": ["中文", 1]}}
    assert await w.store.key_record(agent_id=w.agent["id"], key="never") is None


async def an_ops_write_applies_only_to_the_ticket_as_read(w: World) -> None:
    ticket_id = await w.ticket("我要退货")
    now = utcnow()
    await w.claim(now=now)
    async with w.store.connected() as store, store.transaction():
        assert await store.shop_ticket(shop_id="no-such-shop", ticket_id=ticket_id) is None
        read = await store.shop_ticket(shop_id=w.shop["id"], ticket_id=ticket_id)
        assert read is not None and read.status == Status.ASSIGNED
        stale = replace(read, status=Status.QUEUED, assigned_agent_id=None)
        data = {"agent_id": read.assigned_agent_id}
        assert not await store.write_as_read(ticket=stale, values={"escalated": True}, now=now,
                                             event=(EventKind.RESOLVED, "admin", data))
        assert await store.write_as_read(ticket=read, now=now, event=(EventKind.RELEASED, "admin", data),
                                         values={"status": Status.QUEUED, "assigned_agent_id": None,
                                                 "lease_expires_at": None})
    stored = await w.store.ticket(ticket_id=ticket_id)
    assert stored is not None and stored.state.status == Status.QUEUED and stored.state.escalated is False
    assert (await w.events(ticket_id))[-1] == (EventKind.RELEASED, "admin", data)


async def events_come_in_pages_oldest_first(w: World) -> None:
    ticket_id = await w.ticket("我要退货")
    await w.claim()
    first = await w.store.events(ticket_id=ticket_id, after=0, limit=2)
    assert [e["kind"] for e in first] == [EventKind.MESSAGE_RECEIVED, EventKind.CREATED]
    rest = await w.store.events(ticket_id=ticket_id, after=first[-1]["id"], limit=10)
    assert [e["kind"] for e in rest] == [EventKind.CLAIMED]
    assert isinstance(rest[0]["at"], datetime) and rest[0]["data"]["agent_id"] == w.agent["id"]


async def a_conversation_is_found_by_the_platforms_names(w: World) -> None:
    ticket_id = await new_ticket(w.client, w.shop, "在吗", conversation="conv-1")
    assert await w.store.conversation_ticket(shop_id=w.shop["id"], platform="taobao",
                                             conversation_id="conv-1") == ticket_id
    assert await w.store.conversation_ticket(shop_id=w.shop["id"], platform="jd", conversation_id="conv-1") is None
    assert await w.store.shop_exists(shop_id=w.shop["id"])
    assert not await w.store.shop_exists(shop_id="no-such-shop")


async def an_expired_lease_is_found_and_requeued_only_as_it_was_read(w: World) -> None:
    ticket_id = await w.ticket("我要退货")
    now = utcnow()
    await w.claim(now=now)
    later = now + LEASE + timedelta(seconds=1)
    # Other tests' tickets share the database: a limit above them all, and only this ticket looked at.
    assert ticket_id not in [r["id"] for r in await w.store.expiring(now=now, limit=1_000_000)]  # it still runs
    async with w.store.connected() as store, store.transaction():
        [expired] = [r for r in await store.expiring(now=later, limit=1_000_000) if r["id"] == ticket_id]
        assert (expired["assigned_agent_id"], expired["lease_expires_at"], expired["deliveries"]) == \
            (w.agent["id"], now + LEASE, 0)
        renewed = {**expired, "agent_id": expired["assigned_agent_id"], "lease_expires_at": later,
                   "deliveries": 1, "queue": "escalations", "escalated": True}
        await store.requeue_expired([renewed], now=later)  # names another lease: kept
        assert (await store.ticket(ticket_id=ticket_id)).state.status == Status.ASSIGNED  # type: ignore[union-attr]
        await store.requeue_expired([{**renewed, "lease_expires_at": expired["lease_expires_at"]}], now=later)
        await store.add_events([{"ticket_id": ticket_id, "shop_id": w.shop["id"], "at": later,
                                 "kind": EventKind.LEASE_EXPIRED, "actor": "system", "data": {"deliveries": 1}}])
    stored = await w.store.ticket(ticket_id=ticket_id)
    assert stored is not None
    assert (stored.state.status, stored.state.queue, stored.state.deliveries, stored.state.escalated,
            stored.state.assigned_agent_id) == (Status.QUEUED, "escalations", 1, True, None)
    assert (await w.events(ticket_id))[-1] == (EventKind.LEASE_EXPIRED, "system", {"deliveries": 1})
    assert await w.store.shops_with_queue(shop_ids=[w.shop["id"], "no-such-shop"], name="escalations") == \
        {w.shop["id"]}
    assert await w.store.shops_with_queue(shop_ids=[], name="escalations") == set()


async def an_agents_held_tickets_are_handed_back_together(w: World) -> None:
    first, second = await w.ticket("我要退货"), await w.ticket("快递三天没动了")
    now = utcnow()
    await w.claim(now=now)
    await w.claim(now=now)
    released = await w.store.release_all(agent_id=w.agent["id"], now=now)
    assert sorted(r["id"] for r in released) == sorted([first, second])
    assert {r["shop_id"] for r in released} == {w.shop["id"]}
    assert await w.store.agent_tickets(agent_id=w.agent["id"]) == []
    assert await w.store.release_all(agent_id=w.agent["id"], now=now) == []


async def queue_depths_count_queued_tickets_per_queue_and_tier(w: World) -> None:
    before = utcnow()
    await w.ticket("我要退货")
    await w.ticket("快递三天没动了")
    await w.ticket("这个有货吗")
    names = await w.store.queue_names(shop_id=w.shop["id"])
    assert names == ["aftersale", "complaints", "escalations", "presale"]
    rows = await w.store.queue_depths(shop_id=w.shop["id"], queues=names)
    assert sum(r["n"] for r in rows) == 3 and {r["queue"] for r in rows} == {"aftersale", "presale"}
    assert all(isinstance(r["opened_at"], datetime) and r["opened_at"] >= before for r in rows)
    assert await w.store.queue_depths(shop_id=w.shop["id"], queues=["complaints"]) == []
    assert await w.store.queue_depths(shop_id=w.shop["id"], queues=[]) == []


async def old_idempotency_keys_are_purged_oldest_first(w: World) -> None:
    # Ten years back, so no other key is as old; in one transaction, so no reaper purges them meanwhile.
    ancient = utcnow() - timedelta(days=3650)
    keys = [uuid.uuid4().hex for _ in range(3)]
    async with w.store.connected() as store, store.transaction():
        for age, key in enumerate(keys):
            assert await store.reserve_key(agent_id=w.agent["id"], key=key, request_hash="h",
                                           now=ancient - timedelta(seconds=10 - age))
        assert await store.purge_keys(before=ancient, limit=2) == 2
        assert [await store.key_record(agent_id=w.agent["id"], key=k) is None for k in keys] == [True, True, False]
        assert await store.purge_keys(before=ancient, limit=10) == 1
        assert await store.purge_keys(before=ancient, limit=10) == 0


async def a_claim_makes_its_agent_online_writing_its_row_only_when_stale(w: World) -> None:
    async def seen() -> tuple[str, datetime | None]:
        card = await w.store.agent_card(agent_id=w.agent["id"])
        return card["presence"], card["seen_at"]

    assert await seen() == ("offline", None)
    first = utcnow()
    assert await w.claim(now=first) is None  # nothing queued: seen all the same
    assert await seen() == ("online", first)
    assert await w.claim(now=first + TOUCH / 2) is None
    assert await seen() == ("online", first)  # seen lately: the row is not written again
    later = first + TOUCH + timedelta(seconds=1)
    assert await w.claim(now=later) is None
    assert await seen() == ("online", later)
    # A heartbeat's touch refreshes the sighting and keeps what the agent set; a claim sets it online again.
    async with w.store.connected() as store:
        await store.db.execute("UPDATE agents SET presence = 'away' WHERE id = $1", w.agent["id"])
    beat = later + TOUCH * 2
    await w.store.touch_agent(agent_id=w.agent["id"], now=beat, touch_before=beat - TOUCH)
    assert await seen() == ("away", beat)
    assert await w.claim(now=beat + timedelta(seconds=1)) is None
    assert await seen() == ("online", beat + timedelta(seconds=1))


async def an_agents_card_has_what_a_hand_over_checks(w: World) -> None:
    for text in ("我要退货", "快递三天没动了"):
        await w.ticket(text)
    now = utcnow()
    assert await w.claim(now=now) is not None
    card = await w.store.agent_card(agent_id=w.agent["id"])
    assert card == {"shop_id": w.shop["id"], "active": True, "capacity": 2, "held": 1, "presence": "online",
                    "seen_at": now, "queues": ["aftersale", "complaints", "presale"]}
    assert await w.store.agent_card(agent_id="no-such-agent") is None


async def silent_queued_tickets_are_picked_by_queue_and_closed_once(w: World) -> None:
    # The shop closes nothing (the suite's shops): the store's pick is asked directly, with a cut-off.
    quiet = await w.ticket("我要退货")
    talking = await w.ticket("快递三天没动了")
    held = await w.ticket("我要退款，质量太差了")
    queued_at = (await w.store.ticket(ticket_id=quiet)).state.last_message_at  # type: ignore[union-attr]
    async with w.store.connected() as store:
        await store.db.execute("UPDATE tickets SET last_message_at = $2 WHERE id = $1", talking,
                               queued_at + timedelta(seconds=5))
    await w.claim(now=queued_at)  # the most urgent of the three is held now
    claimed = (await w.store.agent_tickets(agent_id=w.agent["id"]))[0].state.id
    cut_off = queued_at + timedelta(seconds=1)
    picked = [r["id"] for tier in (2, 3) for r in await w.store.quiet_tickets(
        shop_id=w.shop["id"], queue="aftersale", tier=tier, before=cut_off, limit=10)]
    assert picked == [t for t in (quiet, held) if t != claimed]
    assert await w.store.quiet_tickets(shop_id=w.shop["id"], queue="presale", tier=4, before=cut_off, limit=10) == []
    assert w.shop["id"] not in {q["shop_id"] for q in await w.store.auto_close_queues()}
    async with w.store.connected() as store, store.transaction():
        rows = await store.quiet_tickets(shop_id=w.shop["id"], queue="aftersale", tier=2, before=cut_off, limit=10)
        await store.close_quiet(rows, now=cut_off)
    assert [(await w.store.ticket(ticket_id=t)).state.status for t in (quiet, talking, claimed)] == [  # type: ignore[union-attr]
        Status.RESOLVED, Status.QUEUED, Status.ASSIGNED]
    assert await w.store.quiet_tickets(shop_id=w.shop["id"], queue="aftersale", tier=2, before=cut_off,
                                       limit=10) == []


CASES: list[Callable[[World], Awaitable[None]]] = [
    a_claim_makes_its_agent_online_writing_its_row_only_when_stale,
    an_agents_card_has_what_a_hand_over_checks,
    claim_takes_the_most_urgent_ticket_with_its_event,
    claim_stops_at_the_agents_capacity,
    claim_finds_nothing_in_queues_the_agent_does_not_serve,
    only_the_holder_under_a_running_lease_writes,
    the_first_reply_stops_the_clock_and_later_ones_do_not,
    a_replys_event_is_what_reply_event_makes_of_it,
    threads_carry_the_customer_and_the_triage,
    the_agents_tickets_are_in_claim_order,
    an_idempotency_key_is_taken_once_and_remembers_its_answer,
    an_ops_write_applies_only_to_the_ticket_as_read,
    events_come_in_pages_oldest_first,
    a_conversation_is_found_by_the_platforms_names,
    an_expired_lease_is_found_and_requeued_only_as_it_was_read,
    an_agents_held_tickets_are_handed_back_together,
    queue_depths_count_queued_tickets_per_queue_and_tier,
    old_idempotency_keys_are_purged_oldest_first,
    silent_queued_tickets_are_picked_by_queue_and_closed_once,
]


@pytest.fixture(params=["shared", "postgres"])
def store(request: pytest.FixtureRequest, app: FastAPI, database_url: str) -> OnDemand:
    """The shared store on each database, and PostgreSQL's own on PostgreSQL."""
    if request.param == "postgres" and not database_url.startswith("postgresql"):
        pytest.skip("PostgresTicketStore runs on PostgreSQL only")
    return OnDemand(app, PostgresTicketStore if request.param == "postgres" else SharedTicketStore)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_ticket_store_contract(case: Callable[[World], Awaitable[None]], store: OnDemand,
                                     client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, ADMIN, shop["id"], capacity=2)
    other = await new_agent(client, ADMIN, shop["id"], queues=("presale",))
    await case(World(store, shop, agent, other, client))
