"""Snooze (SPEC 10), on both databases with a frozen clock: a snoozed ticket leaves the queues and comes back at its
time or at the buyer's next message, once, however many reapers and ingestions race; the refusals leave everything
as it was; ops snooze too; a buyer silent past the shop's hours closes a snoozed ticket."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.services.autoclose import close_quiet
from app.services.queues import LeaseReaper
from tests.support.clock import FrozenClock, freeze
from tests.support.queues import claim, new_agent, new_ticket
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

ASK = "请问这款有M码吗？"  # presale


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def read(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/tickets/{ticket_id}", headers=admin)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def kinds(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str, *wanted: str) -> list[dict[str, Any]]:
    events = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin)).json()["events"]
    return [e for e in events if e["kind"] in wanted]


async def depth(client: httpx.AsyncClient, admin: dict[str, str], shop_id: str) -> int:
    queues = (await client.get("/v1/queues", params={"shop_id": shop_id}, headers=admin)).json()["queues"]
    return sum(q["total"] for q in queues)


def second_reaper(app: FastAPI) -> LeaseReaper:
    """Another process's reaper, on its own connections: the two race for the same tickets."""
    return LeaseReaper(app.state.drivers, app.state.notifier, max_deliveries=3, interval=1.0,
                       key_retention=timedelta(days=1))


async def snoozed(client: httpx.AsyncClient, agent: dict[str, Any], ticket_id: str, until: datetime,
                  **body: Any) -> dict[str, Any]:
    answer = await client.post(f"/v1/tickets/{ticket_id}/snooze", headers=agent["headers"],
                               json={"until": iso(until), **body})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_snoozed_ticket_leaves_the_queues_and_comes_back_at_its_time_once(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    wu = await new_agent(client, admin_headers, shop["id"])
    tickets = [await new_ticket(client, shop, ASK, conversation=f"s{n}") for n in range(6)]
    held = [(await claim(client, lin)).json() for _ in tickets]
    assert sorted(t["id"] for t in held) == sorted(tickets)
    until = clock.now + timedelta(hours=1)
    for n, ticket in enumerate(held):
        answer = await snoozed(client, lin, ticket["id"], until, reason="等买家拍照" if n == 0 else None)
        assert (answer["status"], answer["assigned_agent_id"], answer["lease_expires_at"]) == ("pending", None, None)
        assert datetime.fromisoformat(answer["snoozed_until"]) == until
        assert answer["opened_at"] == ticket["opened_at"]  # its place in order is kept
    first = (await kinds(client, admin_headers, held[0]["id"], "snoozed"))[0]
    assert (first["actor"], first["data"]["agent_id"], first["data"]["reason"]) == (
        f"agent:{lin['id']}", lin["id"], "等买家拍照")
    # Out of every queue, the counters included, and no longer the agent's.
    assert await depth(client, admin_headers, shop["id"]) == 0
    assert (await client.get("/v1/agents/me/tickets", headers=lin["headers"])).json()["tickets"] == []
    assert (await claim(client, wu)).status_code == 204
    # The holder no longer holds it.
    assert (await client.post(f"/v1/tickets/{held[0]['id']}/heartbeat", headers=lin["headers"])).status_code == 409

    clock.advance(3599)
    await asyncio.gather(app.state.reaper.run_once(), second_reaper(app).run_once())
    assert {(await read(client, admin_headers, t))["status"] for t in tickets} == {"pending"}
    clock.advance(1)  # its time: two reapers race for the six tickets
    await asyncio.gather(app.state.reaper.run_once(), second_reaper(app).run_once())
    await asyncio.gather(app.state.reaper.run_once(), second_reaper(app).run_once())
    for ticket in held:
        now = await read(client, admin_headers, ticket["id"])
        assert (now["status"], now["snoozed_until"], now["opened_at"]) == ("queued", None, ticket["opened_at"])
        woken = await kinds(client, admin_headers, ticket["id"], "woken")
        assert len(woken) == 1, woken
        assert (woken[0]["actor"], woken[0]["data"]["reason"]) == ("system", "time")
    assert await depth(client, admin_headers, shop["id"]) == 6
    assert (await claim(client, wu)).json()["id"] in tickets


async def test_the_buyers_message_wakes_it_once(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, ASK, conversation="w1", customer="buyer-w1")
    ticket = (await claim(client, lin)).json()
    await client.post(f"/v1/tickets/{ticket_id}/replies", headers=lin["headers"], json={"text": "亲，发张照片看看"})
    await snoozed(client, lin, ticket_id, clock.now + timedelta(hours=2))
    clock.advance(600)
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], [
        message("照片发你了", conversation="w1", customer="buyer-w1")])
    assert answer.status_code == 202 and answer.json()["results"][0]["ticket_id"] == ticket_id
    now = await read(client, admin_headers, ticket_id)
    assert (now["status"], now["snoozed_until"], now["opened_at"], now["episodes"]) == (
        "queued", None, ticket["opened_at"], 1)  # the same episode, at its place
    [woken] = await kinds(client, admin_headers, ticket_id, "woken")
    assert (woken["actor"], woken["data"]["reason"]) == ("webhook", "message")
    # Its old time passes: nothing more to wake. Another message wakes nothing either.
    clock.advance(2 * 3600)
    await asyncio.gather(app.state.reaper.run_once(), second_reaper(app).run_once())
    await post_signed(client, shop["id"], shop["webhook_secret"], [
        message("在吗", conversation="w1", customer="buyer-w1")])
    assert len(await kinds(client, admin_headers, ticket_id, "woken")) == 1
    assert (await read(client, admin_headers, ticket_id))["status"] == "queued"


async def test_a_message_and_two_reapers_racing_at_its_time_wake_it_once(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    tickets = [await new_ticket(client, shop, ASK, conversation=f"r{n}", customer=f"buyer-r{n}") for n in range(4)]
    for _ in tickets:
        held = (await claim(client, lin)).json()
        await snoozed(client, lin, held["id"], clock.now + timedelta(minutes=30))
    clock.advance(1800)
    await asyncio.gather(
        app.state.reaper.run_once(), second_reaper(app).run_once(),
        *(post_signed(client, shop["id"], shop["webhook_secret"], [
            message("还在吗", conversation=f"r{n}", customer=f"buyer-r{n}")]) for n in range(4)))
    for ticket_id in tickets:
        assert (await read(client, admin_headers, ticket_id))["status"] == "queued"
        assert len(await kinds(client, admin_headers, ticket_id, "woken")) == 1


async def test_refusals_name_the_field_and_change_nothing(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop, other = await new_shop(), await new_shop()
    lin, wu = await new_agent(client, admin_headers, shop["id"]), await new_agent(client, admin_headers, shop["id"])
    stranger = await new_agent(client, admin_headers, other["id"])
    ticket_id = await new_ticket(client, shop, ASK)
    assert (await claim(client, lin)).json()["id"] == ticket_id
    before = await read(client, admin_headers, ticket_id)
    path = f"/v1/tickets/{ticket_id}/snooze"
    for until, what in ((iso(clock.now), "after now"), (iso(clock.now - timedelta(hours=1)), "after now"),
                        (iso(clock.now + timedelta(days=30, seconds=1)), "30 days")):
        answer = await client.post(path, headers=lin["headers"], json={"until": until})
        assert answer.status_code == 422, answer.text
        [detail] = answer.json()["error"]["details"]
        assert (detail["field"], detail["type"]) == ("body.until", "snooze_until") and what in detail["reason"]
    for body in ({"until": "2026-12-01T08:00:00"}, {}, {"until": "tomorrow"},
                 {"until": iso(clock.now + timedelta(hours=1)), "reason": "x" * 501}):
        answer = await client.post(path, headers=lin["headers"], json=body)
        assert answer.status_code == 422, answer.text
        assert any(d["field"].startswith("body") for d in answer.json()["error"]["details"])
    good = {"until": iso(clock.now + timedelta(hours=1))}
    refused = await client.post(path, headers=wu["headers"], json=good)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "ticket_not_held")
    assert (await client.post(path, headers=stranger["headers"], json=good)).status_code == 404
    assert (await client.post(path, json=good)).status_code == 401
    assert await read(client, admin_headers, ticket_id) == before
    assert await kinds(client, admin_headers, ticket_id, "snoozed") == []
    # The holder's snooze, replayed under its key, answers as before; snoozing it again is not the holder's.
    key = {**lin["headers"], "Idempotency-Key": "snooze-1"}
    first = await client.post(path, headers=key, json=good)
    replay = await client.post(path, headers=key, json=good)
    assert first.status_code == replay.status_code == 200 and replay.json() == first.json()
    assert len(await kinds(client, admin_headers, ticket_id, "snoozed")) == 1
    again = await client.post(path, headers=lin["headers"], json=good)
    assert (again.status_code, again.json()["error"]["details"]["status"]) == (409, "pending")


async def test_ops_snooze_any_open_ticket_and_take_it_back(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    lin, wu = await new_agent(client, admin_headers, shop["id"]), await new_agent(client, admin_headers, shop["id"])
    held_id = await new_ticket(client, shop, ASK)
    assert (await claim(client, lin)).json()["id"] == held_id
    queued_id = await new_ticket(client, shop, ASK)
    until = iso(clock.now + timedelta(hours=3))
    for ticket_id, status_before, holder in ((held_id, "assigned", lin["id"]), (queued_id, "queued", None)):
        answer = await client.post(f"/v1/shops/{shop['id']}/tickets/{ticket_id}/snooze", headers=admin_headers,
                                   json={"until": until, "reason": "买家说明天再联系"})
        assert answer.status_code == 200, answer.text
        assert (answer.json()["status"], answer.json()["assigned_agent_id"]) == ("pending", None)
        [event] = await kinds(client, admin_headers, ticket_id, "snoozed")
        assert (event["actor"], event["data"]["agent_id"], event["data"]["status_before"]) == (
            "admin", holder, status_before)
    assert (await client.post(f"/v1/tickets/{held_id}/replies", headers=lin["headers"],
                              json={"text": "好的"})).status_code == 409  # the holder lost it at once
    # Ops hand a snoozed ticket to an agent, or close one: its time to come back goes with it.
    await client.put("/v1/agents/me/presence", headers=wu["headers"], json={"status": "online"})
    handed = await client.post(f"/v1/shops/{shop['id']}/tickets/{held_id}/transfer", headers=admin_headers,
                               json={"agent_id": wu["id"]})
    assert handed.status_code == 200, handed.text
    assert (handed.json()["status"], handed.json()["snoozed_until"]) == ("assigned", None)
    closed = await client.post(f"/v1/shops/{shop['id']}/tickets/{queued_id}/resolve", headers=admin_headers,
                               json={"reason": "spam"})
    assert (closed.json()["status"], closed.json()["snoozed_until"]) == ("resolved", None)
    refused = await client.post(f"/v1/shops/{shop['id']}/tickets/{queued_id}/snooze", headers=admin_headers,
                                json={"until": until})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "ticket_already_resolved")
    past = await client.post(f"/v1/shops/{shop['id']}/tickets/{held_id}/snooze", headers=admin_headers,
                             json={"until": iso(clock.now)})
    assert past.status_code == 422 and past.json()["error"]["details"][0]["field"] == "body.until"
    assert (await client.post(f"/v1/shops/nope/tickets/{held_id}/snooze", headers=admin_headers,
                              json={"until": until})).status_code == 404


async def test_a_snoozed_ticket_whose_buyer_went_quiet_closes_itself(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop(auto_close_after_hours=24)
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    quiet = await new_ticket(client, shop, ASK, conversation="q1", customer="buyer-q1")
    assert (await claim(client, lin)).json()["id"] == quiet
    await snoozed(client, lin, quiet, clock.now + timedelta(days=5))
    clock.advance(20 * 3600)
    talking = await new_ticket(client, shop, ASK, conversation="q2", customer="buyer-q2")
    assert (await claim(client, lin)).json()["id"] == talking
    await snoozed(client, lin, talking, clock.now + timedelta(days=5))
    clock.advance(4 * 3600 + 1)  # q1 silent 24 h, q2 only 4 h
    closed = await close_quiet(app.state.drivers, now=clock.now)
    assert closed == {(shop["id"], "presale"): 1}
    done = await read(client, admin_headers, quiet)
    assert (done["status"], done["snoozed_until"]) == ("resolved", None)
    [event] = [e for e in await kinds(client, admin_headers, quiet, "resolved")]
    assert (event["actor"], event["data"]["reason"], event["data"]["status_before"]) == (
        "system", "auto_close", "pending")
    assert (await read(client, admin_headers, talking))["status"] == "pending"
    assert await close_quiet(app.state.drivers, now=clock.now) == {}
    # Nothing left for other tests' passes, which close every shop's silent tickets at their own clock.
    await client.post(f"/v1/shops/{shop['id']}/tickets/{talking}/resolve", headers=admin_headers, json={})
