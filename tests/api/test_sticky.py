"""Sticky owner (SPEC 10), on both databases with a frozen clock: a buyer's new conversation or reopened ticket within
the shop's sticky_hours of an agent's last reply is claimable only by that agent for the hold while it is online, by
anyone serving the queue after, and by anyone at once when that agent is away or offline; the ticket keeps its place
in the order; a snoozed ticket comes back held for the agent that snoozed it."""

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from tests.support.clock import FrozenClock, freeze
from tests.support.queues import claim, new_agent, new_ticket
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

ASK = "请问这款有M码吗？"  # presale
HOLD = 60  # TRIAGE_STICKY_HOLD_SECONDS in the suite's settings (the default)


async def presence(client: httpx.AsyncClient, agent: dict[str, Any], status: str) -> None:
    answer = await client.put("/v1/agents/me/presence", headers=agent["headers"], json={"status": status})
    assert answer.status_code == 200, answer.text


async def served(client: httpx.AsyncClient, agent: dict[str, Any], shop: dict[str, Any], buyer: str,
                 conversation: str) -> str:
    """A conversation of the buyer, claimed, answered and resolved by the agent: the buyer's last agent."""
    ticket_id = await new_ticket(client, shop, ASK, conversation=conversation, customer=buyer)
    assert (await claim(client, agent)).json()["id"] == ticket_id
    answer = await client.post(f"/v1/tickets/{ticket_id}/replies", headers=agent["headers"], json={"text": "有的亲"})
    assert answer.status_code == 201, answer.text
    assert (await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])).status_code == 200
    return ticket_id


async def holds(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str) -> list[dict[str, Any]]:
    events = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin)).json()["events"]
    return [e["data"] for e in events if e["kind"] == "held"]


@pytest.fixture
async def team(client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> dict[str, Any]:
    shop = await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    wu = await new_agent(client, admin_headers, shop["id"], capacity=10)
    return {"shop": shop, "lin": lin, "wu": wu}


async def test_a_buyers_second_conversation_waits_for_its_last_agent_while_online(
        client: httpx.AsyncClient, admin_headers: dict[str, str], team: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop, lin, wu = team["shop"], team["lin"], team["wu"]
    await served(client, lin, shop, "b1", "c1")
    clock.advance(71 * 3600)  # within 72 h of lin's reply
    await presence(client, lin, "online")
    second = await new_ticket(client, shop, ASK, conversation="c2", customer="b1")
    [held] = await holds(client, admin_headers, second)
    assert (held["agent_id"], held["reason"]) == (lin["id"], "sticky")
    ticket = (await client.get(f"/v1/tickets/{second}", headers=admin_headers)).json()
    assert (ticket["status"], ticket["held_for"]) == ("queued", lin["id"])
    assert (await claim(client, wu)).status_code == 204  # only lin may take it
    clock.advance(HOLD - 1)
    assert (await claim(client, wu)).status_code == 204
    clock.advance(1)  # the hold is over: anyone serving the queue
    assert (await claim(client, wu)).json()["id"] == second

    # Within the hold, lin itself takes it.
    await presence(client, lin, "online")
    third = await new_ticket(client, shop, ASK, conversation="c3", customer="b1")
    assert len(await holds(client, admin_headers, third)) == 1
    assert (await claim(client, wu)).status_code == 204
    assert (await claim(client, lin)).json()["id"] == third


async def test_anyone_takes_it_at_once_when_the_last_agent_is_away_or_offline(
        client: httpx.AsyncClient, admin_headers: dict[str, str], team: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop, lin, wu = team["shop"], team["lin"], team["wu"]
    await served(client, lin, shop, "b2", "d1")
    for n, status in enumerate(("offline", "away")):
        await presence(client, lin, status)
        ticket_id = await new_ticket(client, shop, ASK, conversation=f"d-{status}", customer="b2")
        assert len(await holds(client, admin_headers, ticket_id)) == 1  # held, yet not waiting for an absent agent
        assert (await claim(client, wu)).json()["id"] == ticket_id
    # Online, then silent past the presence timeout (120 s): offline by then, so no wait either.
    await presence(client, lin, "online")
    clock.advance(121)
    silent = await new_ticket(client, shop, ASK, conversation="d-silent", customer="b2")
    assert (await claim(client, wu)).json()["id"] == silent


async def test_a_reopened_ticket_is_held_and_its_place_in_the_order_kept(
        client: httpx.AsyncClient, admin_headers: dict[str, str], team: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop, lin, wu = team["shop"], team["lin"], team["wu"]
    first = await served(client, lin, shop, "b3", "e1")
    clock.advance(3600)
    await presence(client, lin, "online")
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], [
        message(ASK, conversation="e1", customer="b3")])
    assert answer.json()["results"][0]["ticket_id"] == first  # reopened
    assert [h["reason"] for h in await holds(client, admin_headers, first)] == ["sticky"]
    clock.advance(1)
    later = await new_ticket(client, shop, ASK, conversation="e2", customer="b-other")
    # wu skips the held ticket for the next one; lin gets the held one first, the oldest of the same tier.
    assert (await claim(client, wu)).json()["id"] == later
    assert (await claim(client, lin)).json()["id"] == first


async def test_no_hold_past_sticky_hours_or_when_the_shop_turns_it_off(
        client: httpx.AsyncClient, admin_headers: dict[str, str], team: dict[str, Any], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop, lin, wu = team["shop"], team["lin"], team["wu"]
    await served(client, lin, shop, "b4", "f1")
    clock.advance(72 * 3600 + 1)
    await presence(client, lin, "online")
    late = await new_ticket(client, shop, ASK, conversation="f2", customer="b4")
    assert await holds(client, admin_headers, late) == []
    assert (await claim(client, wu)).json()["id"] == late

    off = await new_shop(sticky_hours=0)
    zhao = await new_agent(client, admin_headers, off["id"])
    qian = await new_agent(client, admin_headers, off["id"])
    await served(client, zhao, off, "b5", "g1")
    await presence(client, zhao, "online")
    again = await new_ticket(client, off, ASK, conversation="g2", customer="b5")
    assert await holds(client, admin_headers, again) == []
    assert (await claim(client, qian)).json()["id"] == again


async def test_a_snoozed_ticket_comes_back_to_the_agent_that_snoozed_it_first(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], team: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop, lin, wu = team["shop"], team["lin"], team["wu"]
    tickets = [await new_ticket(client, shop, ASK, conversation=f"h{n}", customer=f"b-h{n}") for n in range(2)]
    for ticket_id in tickets:
        assert (await claim(client, lin)).json()["id"] == ticket_id
        answer = await client.post(f"/v1/tickets/{ticket_id}/snooze", headers=lin["headers"],
                                   json={"until": (clock.now + timedelta(minutes=10)).isoformat()})
        assert answer.status_code == 200, answer.text
    # One comes back at the buyer's message (its reaper stopped, the time has no say yet), the other at its time.
    clock.advance(600)
    await post_signed(client, shop["id"], shop["webhook_secret"], [message("好了", conversation="h0", customer="b-h0")])
    await app.state.reaper.run_once()
    await presence(client, lin, "online")
    for ticket_id in tickets:
        [held] = await holds(client, admin_headers, ticket_id)
        assert (held["agent_id"], held["reason"]) == (lin["id"], "snooze")
    assert (await claim(client, wu)).status_code == 204
    assert {(await claim(client, lin)).json()["id"] for _ in tickets} == set(tickets)


async def test_sticky_hours_is_a_validated_shop_setting(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    path = f"/v1/shops/{shop['id']}"
    assert (await client.get(path, headers=admin_headers)).json()["sticky_hours"] == 72
    before = (await client.get(path, headers=admin_headers)).json()
    for value in (-1, 721, "72h", 1.5):
        answer = await client.patch(path, headers=admin_headers, json={"sticky_hours": value, "name": "Renamed"})
        assert answer.status_code == 422, (value, answer.text)
        assert [d["field"] for d in answer.json()["error"]["details"]] == ["body.sticky_hours"]
    assert (await client.get(path, headers=admin_headers)).json() == before  # nothing half-stored
    answer = await client.patch(path, headers=admin_headers, json={"sticky_hours": 24})
    assert answer.status_code == 200 and answer.json()["sticky_hours"] == 24
    created = await new_shop(sticky_hours=0)
    assert (await client.get(f"/v1/shops/{created['id']}", headers=admin_headers)).json()["sticky_hours"] == 0
