"""ticket.tier_raised, ticket.escalated and sla.breached (SPEC 9.1): each produced once, in the transaction of its
change, delivered to a real receiver on loopback; on both databases."""

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db import sla as sla_sql
from app.db.claims import claim_store
from app.db.driver import driver
from app.services.queues import expire_leases
from app.services.sla import record_breaches
from tests.api.test_delivery import Endpoint, arrived, endpoint, receiver  # noqa: F401  (fixtures)
from tests.support.queues import claim, new_agent, new_ticket
from tests.support.receiver import Receiver, verify
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio


def events_of(receiver: Receiver, path: str, secret: str) -> list[dict[str, Any]]:
    found = []
    for received in receiver.at(path):
        verify(received, secret)
        found.append(json.loads(received.body))
    return found


async def test_a_tier_rise_to_p1_produces_its_event_once(
        client: httpx.AsyncClient, new_shop: Any, receiver: Receiver, endpoint: Endpoint) -> None:
    shop = await new_shop()
    hook = await endpoint(shop["id"], receiver.url("/tiers"), events=("ticket.tier_raised",))
    first = message("快递三天了还没到", conversation="c-rise", customer="b-rise")
    assert (await post_signed(client, shop["id"], shop["webhook_secret"], [first])).json()["results"][0]["tier"] == "P3"
    threat = message("再不到就给差评", conversation="c-rise", customer="b-rise")
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], [threat])
    assert answer.json()["results"][0]["tier"] == "P1"
    # The same message again (a duplicate), and another P1 message: neither raises the tier again.
    await post_signed(client, shop["id"], shop["webhook_secret"], [threat])
    await post_signed(client, shop["id"], shop["webhook_secret"],
                      [message("我要投诉你们", conversation="c-rise", customer="b-rise")])
    await arrived(receiver, "/tiers", 1)
    await asyncio.sleep(1.0)
    [event] = events_of(receiver, "/tiers", hook["secret"])
    assert event["type"] == "ticket.tier_raised"
    data = event["data"]
    assert (data["from_tier"], data["to_tier"], data["message_id"]) == ("P3", "P1", threat["message_id"])
    assert data["ticket_id"] == answer.json()["results"][0]["ticket_id"] and data["conversation_id"] == "c-rise"


async def test_an_sla_breach_produces_its_event_once(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint, app: FastAPI) -> None:
    shop = await new_shop(sla_targets={"P1": 1, "P2": 1, "P3": 1, "P4": 1})
    hook = await endpoint(shop["id"], receiver.url("/sla"), events=("sla.breached",))
    ticket_id = await new_ticket(client, shop, "这个有货吗")
    # Two watchers at once besides the app's own: the breach is still recorded and sent once.
    later = utcnow() + timedelta(seconds=2)
    await asyncio.gather(record_breaches(app.state.drivers, now=later), record_breaches(app.state.drivers, now=later))
    await arrived(receiver, "/sla", 1)
    await asyncio.sleep(1.5)  # the app's watch looks again meanwhile
    [event] = events_of(receiver, "/sla", hook["secret"])
    assert event["type"] == "sla.breached" and event["data"]["ticket_id"] == ticket_id
    assert event["data"]["tier"] == "P4" and event["data"]["due_at"]
    trail = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin_headers)).json()["events"]
    assert [e["kind"] for e in trail].count("sla_breached") == 1


async def test_each_episode_breaches_once_and_a_reopening_breaches_again(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, app: FastAPI) -> None:
    shop = await new_shop(sla_targets={"P1": 1, "P2": 1, "P3": 1, "P4": 1})
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, "这个有货吗", conversation="c-twice")
    later = utcnow() + timedelta(seconds=5)
    await record_breaches(app.state.drivers, now=later)

    async def marked() -> bool:
        """Whether the current episode's breach is marked on the ticket, which keeps it out of the watch's index."""
        async with driver(app.state.drivers) as db:
            row = await db.row("SELECT breach_recorded_for = opened_at AS marked FROM tickets WHERE id = $1",
                               ticket_id)
        return bool(row and row["marked"])

    # Recorded: marked, and the watch's look no longer finds the episode, however late it is.
    assert await marked()
    async with driver(app.state.drivers) as db:
        assert ticket_id not in [t["id"] for t in await sla_sql.overdue(db, now=later + timedelta(days=1), limit=500)]
    assert (await claim(client, agent)).json()["id"] == ticket_id
    assert (await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])).status_code == 200
    assert await new_ticket(client, shop, "还在吗", conversation="c-twice") == ticket_id  # a new episode
    async with driver(app.state.drivers) as db:
        found = [t["id"] for t in await sla_sql.overdue(db, now=utcnow() + timedelta(seconds=5), limit=500)]
    assert ticket_id in found or await marked()  # the app's own watch may have recorded it already
    await record_breaches(app.state.drivers, now=utcnow() + timedelta(seconds=5))
    assert await marked()
    trail = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin_headers)).json()["events"]
    assert [e["kind"] for e in trail].count("sla_breached") == 2
    assert (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()["episodes"] == 2


async def test_an_answered_ticket_does_not_breach(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, app: FastAPI) -> None:
    shop = await new_shop(sla_targets={"P1": 1, "P2": 1, "P3": 1, "P4": 1})
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, "这个有货吗")
    assert (await claim(client, agent)).status_code == 200
    assert (await client.post(f"/v1/tickets/{ticket_id}/replies", headers=agent["headers"],
                              json={"text": "有的"})).status_code == 201
    await record_breaches(app.state.drivers, now=utcnow() + timedelta(seconds=5))
    trail = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin_headers)).json()["events"]
    assert "sla_breached" not in [e["kind"] for e in trail]


async def test_moves_to_escalations_produce_ticket_escalated(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint, app: FastAPI) -> None:
    shop = await new_shop()
    hook = await endpoint(shop["id"], receiver.url("/esc"), events=("ticket.escalated",))
    agent = await new_agent(client, admin_headers, shop["id"])
    transferred = await new_ticket(client, shop, "我要退货")
    assert (await claim(client, agent)).status_code == 200
    moved = await client.post(f"/v1/tickets/{transferred}/transfer", headers=agent["headers"],
                              json={"queue": "escalations", "reason": "buyer asks for a supervisor"})
    assert moved.status_code == 200, moved.text
    await arrived(receiver, "/esc", 1)
    [event] = events_of(receiver, "/esc", hook["secret"])
    assert event["type"] == "ticket.escalated" and event["data"]["ticket_id"] == transferred
    assert event["data"]["reason"] == "buyer asks for a supervisor" and event["data"]["queue"] == "escalations"
    assert event["data"]["from_queue"] == "aftersale"
    # A lease that ran out max_deliveries times moves its ticket too (the reaper). The reaper
    # is run an hour ahead, so its event is due then: read from the outbox, not the receiver.
    expired = await new_ticket(client, shop, "我要退货")
    assert (await claim(client, agent)).json()["id"] == expired
    async with claim_store(app.state.drivers) as store:
        assert (await expire_leases(store, now=utcnow() + timedelta(hours=1), max_deliveries=1))[2]
    base = f"/v1/shops/{shop['id']}/deliveries"
    listed = (await client.get(base, headers=admin_headers)).json()["deliveries"]
    [pending] = [d for d in listed if d["ticket_id"] == expired]
    detail = (await client.get(f"{base}/{pending['id']}", headers=admin_headers)).json()
    assert detail["type"] == "ticket.escalated" and detail["status"] == "pending"
    assert "lease expired 1 times" in detail["data"]["reason"] and detail["data"]["queue"] == "escalations"
