"""Retention and the idempotency key on both databases: a month past TRIAGE_RETENTION_DAYS is removed (on
PostgreSQL its partitions dropped whole) with its messages' keys, and nothing newer; a message's key holds across
months; months are made ahead, by several processes at once without harm."""

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.driver import driver
from app.db.retention import Month, retention_store
from app.services.retention import MONTHS_AHEAD, RetentionWorker, make_months
from tests.support.clock import freeze
from tests.support.queues import claim, new_agent
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

DAYS = 400  # the default TRIAGE_RETENTION_DAYS


async def received(client: httpx.AsyncClient, shop: dict[str, Any], message_id: str, conversation: str,
                   text: str = "我要退货") -> dict[str, Any]:
    answer = await post_signed(client, shop["id"], shop["webhook_secret"],
                               [message(text, conversation=conversation, message_id=message_id)])
    assert answer.status_code == 202, answer.text
    return dict(answer.json()["results"][0])


async def count(app: FastAPI, sql: str, *params: Any) -> int:
    async with driver(app.state.drivers) as db:
        row = await db.row(sql, *params)
    assert row is not None
    return int(row["n"])


async def test_a_month_past_retention_goes_with_its_keys_and_nothing_newer(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = utcnow()
    old = Month.of(now - timedelta(days=DAYS + 70))  # all of it more than 400 days ago
    async with retention_store(app.state.drivers) as store:
        await store.ensure_months(old, old)
    clock = freeze(monkeypatch, old.start + timedelta(days=3))
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    first = await received(client, shop, "old-1", "c-old")
    ticket = (await claim(client, agent)).json()
    assert (await client.post(f"/v1/tickets/{ticket['id']}/replies", headers=agent["headers"],
                              json={"text": "已为您处理"})).status_code == 201
    assert (await client.post(f"/v1/tickets/{ticket['id']}/resolve", headers=agent["headers"])).status_code == 200
    clock.set(now)
    recent = await received(client, shop, "new-1", "c-new")

    removed = await RetentionWorker(app.state.drivers, retention_days=DAYS).run_once(now=now)
    if app.state.drivers.postgres:
        assert set(removed.partitions) >= {old.partition("messages"), old.partition("ticket_events")}
        months = await (await _store(app)).months()
        assert old not in months["messages"] and old not in months["ticket_events"]
    else:
        assert removed.messages >= 2 and removed.events >= 5 and removed.keys >= 1
    # The old conversation's messages, events and keys are gone; its ticket stays, as do the recent ones.
    assert await count(app, "SELECT count(*) AS n FROM messages WHERE ticket_id = $1", first["ticket_id"]) == 0
    assert await count(app, "SELECT count(*) AS n FROM ticket_events WHERE ticket_id = $1", first["ticket_id"]) == 0
    assert await count(app, "SELECT count(*) AS n FROM message_keys WHERE shop_id = $1", shop["id"]) == 1
    assert await count(app, "SELECT count(*) AS n FROM tickets WHERE id = $1", first["ticket_id"]) == 1
    assert await count(app, "SELECT count(*) AS n FROM messages WHERE ticket_id = $1", recent["ticket_id"]) == 1
    # A resend of the recent message is still answered as a duplicate; the forgotten one is a new message.
    again = await received(client, shop, "new-1", "c-new")
    assert (again["duplicate"], again["ticket_id"]) == (True, recent["ticket_id"])
    anew = await received(client, shop, "old-1", "c-old")
    assert anew["duplicate"] is False and anew["ticket_id"] == first["ticket_id"]  # the conversation's ticket reopens
    assert (await RetentionWorker(app.state.drivers, retention_days=DAYS).run_once(now=now)).anything is False


async def test_a_messages_key_holds_across_months(app: FastAPI, client: httpx.AsyncClient, new_shop: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    now = utcnow()
    clock = freeze(monkeypatch, Month.of(now).start - timedelta(seconds=1))  # the last second of last month
    shop = await new_shop()
    first = await received(client, shop, "edge-1", "c-edge")
    clock.set(Month.of(now).start + timedelta(seconds=1))  # this month: another partition on PostgreSQL
    again = await received(client, shop, "edge-1", "c-edge")
    assert (again["duplicate"], again["ticket_id"], again["priority"], again["queue"]) == (
        True, first["ticket_id"], first["priority"], first["queue"])
    # Racing resends: one stored, the others answered as duplicates.
    answers = await asyncio.gather(*(received(client, shop, "race-1", "c-race") for _ in range(5)))
    assert sorted(a["duplicate"] for a in answers) == [False, True, True, True, True]
    assert await count(app, "SELECT count(*) AS n FROM messages WHERE shop_id = $1", shop["id"]) == 2
    assert await count(app, "SELECT count(*) AS n FROM message_keys WHERE shop_id = $1", shop["id"]) == 2


async def test_months_are_made_ahead_by_processes_at_once(app: FastAPI) -> None:
    if not app.state.drivers.postgres:
        async with retention_store(app.state.drivers) as store:
            assert await store.months() == {} and await store.ensure_months(Month(2020, 1), Month(2030, 1)) == []
        return
    later = utcnow() + timedelta(days=120)
    await asyncio.gather(*(make_months(app.state.drivers, now=later, retention_days=DAYS) for _ in range(3)))
    months = await (await _store(app)).months()
    wanted = [Month.of(later).shifted(n) for n in range(MONTHS_AHEAD + 1)]
    for table in ("messages", "ticket_events"):
        assert all(month in months[table] for month in wanted), (table, months[table])
        assert len(months[table]) == len(set(months[table]))
    assert await make_months(app.state.drivers, now=later, retention_days=DAYS) == []  # nothing left to make


async def _store(app: FastAPI) -> Any:
    """A retention store on a connection of its own for one call (SQLite's pool has one, which the API needs)."""
    class OnDemand:
        async def months(self) -> Any:
            async with retention_store(app.state.drivers) as store:
                return await store.months()
    return OnDemand()
