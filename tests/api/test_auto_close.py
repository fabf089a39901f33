"""Stale work closes itself, on both databases: a queued ticket silent for its shop's auto_close_after_hours is
resolved by `system`, once, whoever races to close it; held tickets, talking buyers and shops that opted out are
left alone; a later message reopens the ticket."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.services.autoclose import close_quiet
from tests.support.clock import FrozenClock, freeze
from tests.support.queues import claim, new_agent, new_ticket
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

HOUR = 3600


@pytest.fixture
async def no_background_closer(app: FastAPI) -> AsyncIterator[None]:
    """The app's own auto-close worker stopped for the test, so only the test's passes close anything."""
    await app.state.workers.stop("auto-close")
    yield
    app.state.workers.start()


async def trail(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin, params={"limit": 200})
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


async def status(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str) -> str:
    response = await client.get(f"/v1/tickets/{ticket_id}", headers=admin)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def close_now(app: FastAPI, clock: FrozenClock) -> int:
    return sum((await close_quiet(app.state.drivers, now=clock.now)).values())


async def test_a_silent_queued_ticket_is_closed_once_after_its_shops_hours(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    # All the app's workers stopped, not only auto-close: the lease reaper, on the frozen clock moved 20 hours,
    # could hand the held ticket back between the test's steps (CI failed so once).
    clock = freeze(monkeypatch, utcnow())
    started = clock.now
    shop = await new_shop(auto_close_after_hours=24)
    off = await new_shop(auto_close_after_hours=0)
    usual = (await client.post("/v1/shops", headers=admin_headers, json={"id": f"{shop['id']}-d", "name": "D"})).json()
    assert (await client.get(f"/v1/shops/{usual['id']}", headers=admin_headers)).json()["auto_close_after_hours"] == 72

    silent = await new_ticket(client, shop, "请问这款有M码吗？", conversation="silent")
    talking = await new_ticket(client, shop, "我要退货", conversation="talking")
    held = await new_ticket(client, shop, "你们客服态度太差了，我要投诉", conversation="held")
    never = await new_ticket(client, off, "请问这款有M码吗？")
    later = await new_ticket(client, usual, "请问这款有M码吗？")
    agent = await new_agent(client, admin_headers, shop["id"], queues=("complaints",))
    clock.advance(20 * HOUR)
    assert (await post_signed(client, shop["id"], shop["webhook_secret"],
                              [message("还在吗", conversation="talking")])).status_code == 202

    clock.set(started + timedelta(hours=24, seconds=-1))
    # Held under a running lease, a ticket is an agent's, however long its buyer has been silent.
    assert (await claim(client, agent)).json()["id"] == held
    assert await close_now(app, clock) == 0  # a second short of 24 hours
    clock.advance(1)
    assert await close_now(app, clock) == 1
    assert await status(client, admin_headers, silent) == "resolved"
    closing = (await trail(client, admin_headers, silent))[-1]
    assert (closing["kind"], closing["actor"]) == ("resolved", "system")
    assert closing["data"]["reason"] == "auto_close" and closing["data"]["after_hours"] == 24
    ticket = (await client.get(f"/v1/tickets/{silent}", headers=admin_headers)).json()
    assert ticket["resolved_at"] is not None and ticket["assigned_agent_id"] is None
    assert [await status(client, admin_headers, t) for t in (talking, held, never, later)] == [
        "queued", "assigned", "queued", "queued"]
    assert await close_now(app, clock) == 0  # closed once: a second pass finds nothing
    assert (await client.post(f"/v1/tickets/{held}/resolve", headers=agent["headers"])).status_code == 200

    clock.advance(20 * HOUR)  # 24 hours after the talking buyer's last message
    assert await close_now(app, clock) == 1
    assert await status(client, admin_headers, talking) == "resolved"
    clock.set(started + timedelta(hours=72, seconds=1))
    assert await close_now(app, clock) == 1  # the shop that kept the default, after 72 hours
    assert [await status(client, admin_headers, t) for t in (never, later)] == ["queued", "resolved"]
    assert [e["actor"] for e in await trail(client, admin_headers, silent) if e["kind"] == "resolved"] == ["system"]
    assert [e["actor"] for e in await trail(client, admin_headers, held) if e["kind"] == "resolved"] == [
        f"agent:{agent['id']}"]

    # The buyer writes again: the closed ticket reopens as a new episode, queued.
    assert (await post_signed(client, shop["id"], shop["webhook_secret"],
                              [message("怎么没人回复", conversation="silent")])).status_code == 202
    reopened = (await client.get(f"/v1/tickets/{silent}", headers=admin_headers)).json()
    assert (reopened["status"], reopened["episodes"]) == ("queued", 2)

    # Statistics count the closes apart: not resolutions, and no agent's.
    stats = (await client.get(f"/v1/shops/{shop['id']}/stats", headers=admin_headers, params={
        "since": (started - timedelta(hours=1)).isoformat(),
        "until": (clock.now + timedelta(seconds=1)).isoformat()})).json()
    overall = stats["overall"]
    assert (overall["conversations_received"], overall["auto_closed"], overall["resolution"]["count"]) == (4, 2, 1)
    by_queue = {q["queue"]: (q["auto_closed"], q["resolution"]["count"]) for q in stats["queues"]}
    assert (by_queue["presale"], by_queue["aftersale"], by_queue["complaints"]) == ((1, 0), (1, 0), (0, 1))
    assert [(a["agent_id"], a["auto_closed"], a["resolution"]["count"]) for a in stats["agents"]] == [
        (agent["id"], 0, 1)]


async def test_two_closers_racing_close_each_ticket_once(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, no_background_closer: None) -> None:
    clock = freeze(monkeypatch, utcnow())
    shop = await new_shop(auto_close_after_hours=1)
    body = [message("请问这款有M码吗？" if i % 2 else "快递三天没动了", conversation=f"race-{i}", customer=f"b{i}")
            for i in range(40)]
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], body)
    tickets = {r["ticket_id"] for r in answer.json()["results"]}
    clock.advance(HOUR + 1)
    # Small batches, so the two passes interleave their picks and writes.
    first, second = await asyncio.gather(close_quiet(app.state.drivers, now=clock.now, limit=3),
                                         close_quiet(app.state.drivers, now=clock.now, limit=3))
    mine = {key: n for key, n in (*first.items(), *second.items()) if key[0] == shop["id"]}
    assert sum(n for (s, _), n in (*first.items(), *second.items()) if s == shop["id"]) == len(tickets)
    assert {queue for _, queue in mine} == {"presale", "aftersale"}
    for ticket in tickets:
        kinds = [e["kind"] for e in await trail(client, admin_headers, ticket)]
        assert kinds.count("resolved") == 1, (ticket, kinds)
        assert await status(client, admin_headers, ticket) == "resolved"


@pytest.mark.parametrize(("value", "field"), [
    (-1, "body.auto_close_after_hours"),       # below 0
    (8761, "body.auto_close_after_hours"),     # more than a year
    ("72", "body.auto_close_after_hours"),     # a string is not an integer
    (1.5, "body.auto_close_after_hours"),      # nor a fraction
])
async def test_a_bad_auto_close_setting_is_refused_naming_the_field(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, value: Any, field: str) -> None:
    shop = await new_shop(auto_close_after_hours=24)
    answer = await client.patch(f"/v1/shops/{shop['id']}", headers=admin_headers,
                                json={"auto_close_after_hours": value, "name": "Renamed"})
    assert answer.status_code == 422, answer.text
    assert field in {d["field"] for d in answer.json()["error"]["details"]}
    stored = (await client.get(f"/v1/shops/{shop['id']}", headers=admin_headers)).json()
    assert (stored["auto_close_after_hours"], stored["name"]) == (24, "Test shop")  # nothing of the request stored
    changed = await client.patch(f"/v1/shops/{shop['id']}", headers=admin_headers, json={"auto_close_after_hours": 0})
    assert changed.status_code == 200 and changed.json()["auto_close_after_hours"] == 0
