"""Contract of the delivery store's relay side (app/db/deliveries.py): the pick, the batch record, the heads of
conversation lines and the resend, on SQLite (SharedDeliveryStore) and PostgreSQL (PostgresDeliveryStore).

Each backend gets a database of its own, with no service running: nothing but these tests picks its deliveries.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from app.clock import utcnow
from app.db.deliveries import OutboxEvent, Outcome, delivery_store
from app.db.migrate import upgrade_async
from app.db.models import Shop
from app.db.session import DriverConnections, create_engine
from app.domain import DELIVERY_EVENT_BITS, DeliveryEvent, DeliveryStatus
from tests.support import BACKENDS, fresh_database

LOCK = timedelta(seconds=60)
REPLY = DeliveryEvent.REPLY_CREATED


@dataclass
class Outbox:
    drivers: DriverConnections
    shop_id: str
    endpoints: list[str]

    async def call(self, name: str, **kwargs: Any) -> Any:
        async with delivery_store(self.drivers) as store:
            return await getattr(store, name)(**kwargs)

    async def reply(self, ticket_id: str, message_id: int | None = None, *, event: str = REPLY) -> None:
        assert await self.call("enqueue", shop_id=self.shop_id, event=event, ticket_id=ticket_id, message_id=message_id,
                               data={"text": "在的"}, now=utcnow()) == len(self.endpoints)

    async def claim(self, token: str = "relay-a", *, rooms: dict[str, int] | None = None, room: int = 10,
                    now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or utcnow()
        return await self.call("claim", now=now, lock_until=now + LOCK, token=token,  # type: ignore[no-any-return]
                               rooms=rooms or {}, room=room, limit=100)

    async def record(self, items: list[dict[str, Any]], status: str = DeliveryStatus.DELIVERED, *,
                     token: str = "relay-a", retry_in: float = 0, code: int | None = 200) -> set[int]:
        at = utcnow()
        outcomes = [Outcome(delivery_id=i["id"], order_key=i["order_key"], at=at, status_code=code,
                            error=None if status == DeliveryStatus.DELIVERED else f"HTTP {code}", duration_ms=3,
                            status=status, next_attempt_at=at + timedelta(seconds=retry_in)) for i in items]
        recorded = await self.call("record", token=token, outcomes=outcomes, disable=[], now=at)
        return {r["id"] for r in recorded}

    async def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with delivery_store(self.drivers) as store:
            return await store.db.rows(sql, *params)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="module", params=BACKENDS)
async def drivers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[DriverConnections]:
    async with fresh_database(request.param, tmp_path_factory.mktemp("outbox")) as url:
        await upgrade_async(url)
        engine = create_engine(url)
        connections = await DriverConnections.open(engine, url)
        try:
            yield connections
        finally:
            await connections.close()
            await engine.dispose()


@pytest.fixture
async def outbox(drivers: DriverConnections) -> AsyncIterator[Outbox]:
    """A new shop with two endpoints taking every event; its deliveries go with them after the test, so the
    next test's picks find only its own."""
    box = await new_outbox(drivers)
    yield box
    for endpoint_id in box.endpoints:
        await box.call("delete_endpoint", shop_id=box.shop_id, endpoint_id=endpoint_id)


async def new_outbox(drivers: DriverConnections) -> Outbox:
    shop_id = f"shop-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    async with drivers.engine.begin() as connection:
        await connection.execute(insert(Shop).values(id=shop_id, name="S", sla_targets={}, created_at=now))
    endpoints = []
    for n in range(2):
        endpoint_id = f"ep_{uuid.uuid4().hex[:12]}"
        async with delivery_store(drivers) as store:
            await store.create_endpoint({
                "id": endpoint_id, "shop_id": shop_id, "url": f"https://example.com/{n}",
                "event_mask": sum(DELIVERY_EVENT_BITS.values()), "description": "", "secret": "whsec_" + "A" * 32,
                "previous_secret": None, "previous_valid_until": None, "enabled": True, "disabled_reason": None,
                "created_at": now, "updated_at": now})
        endpoints.append(endpoint_id)
    return Outbox(drivers, shop_id, endpoints)


def of(items: list[dict[str, Any]], endpoint: str) -> list[dict[str, Any]]:
    return [i for i in items if i["endpoint_id"] == endpoint]


async def test_a_conversation_goes_one_delivery_at_a_time_in_order(outbox: Outbox) -> None:
    ep = outbox.endpoints[0]
    for _ in range(3):
        await outbox.reply("t-1")
    await outbox.reply("t-2")
    events = [e["id"] for e in await outbox.rows("SELECT id FROM outbox_events WHERE shop_id = $1 ORDER BY id",
                                                   outbox.shop_id)]
    first = await outbox.claim()
    # Per endpoint: the first reply of t-1 and the only one of t-2, never a later reply of t-1.
    assert sorted((i["order_key"], i["event_id"]) for i in of(first, ep)) == [("t-1", events[0]), ("t-2", events[3])]
    assert len(first) == 4
    assert await outbox.claim() == []  # the heads are held; the rest wait behind them
    t1 = [i for i in first if i["order_key"] == "t-1"]
    assert await outbox.record(t1) == {i["id"] for i in t1}
    second = await outbox.claim()
    assert [(i["order_key"], i["event_id"]) for i in second] == [("t-1", events[1])] * 2
    # A failure that gives up passes the line on as a delivery does.
    await outbox.record(second, DeliveryStatus.FAILED, code=410)
    third = await outbox.claim()
    assert [(i["order_key"], i["event_id"]) for i in third] == [("t-1", events[2])] * 2


async def test_a_retry_keeps_its_place_and_holds_the_line(outbox: Outbox) -> None:
    await outbox.reply("t-1")
    await outbox.reply("t-1")
    first = await outbox.claim()
    await outbox.record(first, DeliveryStatus.PENDING, retry_in=30, code=500)
    assert await outbox.claim() == []  # the retry is not due, and the next reply waits for it
    later = await outbox.claim(now=utcnow() + timedelta(seconds=31))
    assert {i["id"] for i in later} == {i["id"] for i in first}
    assert [i["attempts"] for i in later] == [1, 1]


async def test_an_attempt_of_a_relay_that_lost_its_hold_changes_nothing_but_the_log(outbox: Outbox) -> None:
    await outbox.reply("t-1")
    await outbox.reply("t-1")
    first = await outbox.claim("relay-a")
    # relay-a's hold ran out and relay-b took the deliveries over.
    retaken = await outbox.claim("relay-b", now=utcnow() + LOCK + timedelta(seconds=1))
    assert {i["id"] for i in retaken} == {i["id"] for i in first}
    assert await outbox.record(first, token="relay-a") == set()
    assert await outbox.claim(now=utcnow() + LOCK + timedelta(seconds=2)) == []  # still relay-b's; the next waits
    assert await outbox.record(retaken, token="relay-b") == {i["id"] for i in first}
    ids = [i["id"] for i in first]
    attempts = await outbox.rows(f"SELECT delivery_id FROM delivery_attempts WHERE delivery_id IN ({ids[0]}, {ids[1]})")
    assert sorted(a["delivery_id"] for a in attempts) == sorted(ids * 2)  # both attempts are in the log
    assert len(await outbox.claim()) == 2  # the next reply, to each endpoint


async def test_an_endpoint_without_room_is_left_to_the_others(outbox: Outbox) -> None:
    full, free = outbox.endpoints
    for n in range(3):
        await outbox.reply(f"t-{n}")
    picked = await outbox.claim(rooms={full: 0})
    assert of(picked, full) == [] and len(of(picked, free)) == 3


async def test_a_resent_delivery_goes_after_the_pending_head_of_its_conversation(outbox: Outbox) -> None:
    await outbox.reply("t-1")
    [failed, other] = await outbox.claim()
    await outbox.record([failed], DeliveryStatus.FAILED, code=410)
    await outbox.record([other])
    await outbox.reply("t-1")
    [head, _] = await outbox.claim()
    assert head["endpoint_id"] == failed["endpoint_id"]
    resent = await outbox.call("retry", shop_id=outbox.shop_id, delivery_id=failed["id"], now=utcnow())
    assert resent is not None
    assert await outbox.claim() == []  # the head is held; the resent one is next in its line
    await outbox.record([head])
    [again] = await outbox.claim()
    assert again["id"] == failed["id"] and again["attempts"] == 1
    # With nothing pending in its line, a resend is the head at once.
    await outbox.record([again], DeliveryStatus.FAILED, code=410)
    await outbox.call("retry", shop_id=outbox.shop_id, delivery_id=failed["id"], now=utcnow())
    assert [i["id"] for i in await outbox.claim()] == [failed["id"]]


async def test_events_without_an_order_are_all_picked_at_once(outbox: Outbox) -> None:
    for _ in range(3):
        await outbox.reply("t-1", event=DeliveryEvent.TIER_RAISED)
    assert len(await outbox.claim()) == 6


async def test_events_enqueued_together_are_written_in_order_only_where_an_endpoint_takes_them(outbox: Outbox) -> None:
    quiet_shop = f"shop-{uuid.uuid4().hex[:8]}"
    async with outbox.drivers.engine.begin() as connection:
        await connection.execute(insert(Shop).values(id=quiet_shop, name="Q", sla_targets={}, created_at=utcnow()))
    events = [OutboxEvent(outbox.shop_id, DeliveryEvent.TIER_RAISED, "t-1", None, {"to_tier": "P1"}),
              OutboxEvent(quiet_shop, DeliveryEvent.TIER_RAISED, "t-9", None, {"to_tier": "P1"}),
              OutboxEvent(outbox.shop_id, REPLY, "t-2", None, {"text": "在的"}),
              OutboxEvent(outbox.shop_id, REPLY, "t-3", None, {"text": "稍等"})]
    assert await outbox.call("enqueue_all", events=events, now=utcnow()) == 6
    written = await outbox.rows("SELECT shop_id, type, ticket_id FROM outbox_events WHERE shop_id IN ($1, $2) "
                                "ORDER BY id", outbox.shop_id, quiet_shop)
    assert [(r["type"], r["ticket_id"]) for r in written] == [
        ("ticket.tier_raised", "t-1"), ("reply.created", "t-2"), ("reply.created", "t-3")]
    assert {r["shop_id"] for r in written} == {outbox.shop_id}
    # Both conversations' replies are heads of their lines, and the tier rise has no line: all six go at once.
    assert len(await outbox.claim()) == 6
    with pytest.raises(ValueError, match="reply.created"):
        await outbox.call("enqueue_all", events=[events[2], events[2]], now=utcnow())
    assert await outbox.call("enqueue_all", events=[], now=utcnow()) == 0


async def test_replies_written_while_their_heads_are_recorded_keep_one_head_per_line(outbox: Outbox) -> None:
    """Writers add replies to a few conversations while a relay picks and records as fast as it can, each on
    connections of their own: every reply is sent once, each conversation's in the order written, and a line is
    never picked twice at once (on PostgreSQL this is the conversation lock and fresh read of both sides)."""
    conversations, replies = 6, 25
    sent: dict[tuple[str, str], list[int]] = {}
    written = asyncio.Event()

    async def writer(ticket: str) -> None:
        for _ in range(replies):
            await outbox.reply(ticket)
            await asyncio.sleep(0)

    async def relay() -> None:
        idle = 0
        while idle < 50:
            picked = await outbox.claim()
            lines = [(i["endpoint_id"], i["order_key"]) for i in picked]
            assert len(lines) == len(set(lines)), "two deliveries of one line picked at once"
            for i in picked:
                sent.setdefault((i["endpoint_id"], i["order_key"]), []).append(i["event_id"])
            if picked:
                await outbox.record(picked)
                idle = 0
            elif written.is_set():
                idle += 1
            await asyncio.sleep(0)

    async def write_all() -> None:
        await asyncio.gather(*[writer(f"race-{n}") for n in range(conversations)])
        written.set()

    await asyncio.gather(write_all(), relay())
    events = await outbox.rows("SELECT id, ticket_id FROM outbox_events WHERE shop_id = $1 ORDER BY id", outbox.shop_id)
    for endpoint in outbox.endpoints:
        for n in range(conversations):
            ticket = f"race-{n}"
            assert sent[(endpoint, ticket)] == [e["id"] for e in events if e["ticket_id"] == ticket]
    left = await outbox.rows("SELECT count(*) AS n FROM deliveries WHERE shop_id = $1 AND status = 'pending'",
                             outbox.shop_id)
    assert left[0]["n"] == 0


async def test_postgresql_picks_no_more_than_each_endpoints_room(drivers: DriverConnections) -> None:
    if not drivers.postgres:
        pytest.skip("SQLite's pick leaves the rest of a lane's room to the relay (one write lock, one pick)")
    box = await new_outbox(drivers)
    small, large = box.endpoints
    try:
        for n in range(5):
            await box.reply(f"t-{n}")
        picked = await box.claim(rooms={small: 2}, room=3)
        assert len(of(picked, small)) == 2 and len(of(picked, large)) == 3
    finally:
        for endpoint_id in box.endpoints:
            await box.call("delete_endpoint", shop_id=box.shop_id, endpoint_id=endpoint_id)
