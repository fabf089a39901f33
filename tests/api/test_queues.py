"""Agent work queues on both databases: claim order, races, long poll, leases, idempotent writes, scoping."""

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.clock import utcnow
from app.db.models import IdempotencyKey, Message, TicketEvent
from app.main import create_app
from tests.conftest import make_settings
from tests.support.queues import claim, eventually, new_agent, new_ticket
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

P1, P2, P3, P4 = "再不发货就给差评", "我要退货", "快递三天没动了", "请问这款还有货吗"


@asynccontextmanager
async def second_app(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Another app on the same database, as another process would be: its own engine, reaper and notifier."""
    application = create_app(make_settings(database_url, **settings))
    async with (application.router.lifespan_context(application),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://second") as http):
        yield http


def short_lease(database_url: str, lease_seconds: int = 1) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """A second app whose leases last `lease_seconds` (its reaper looks every quarter of it)."""
    return second_app(database_url, lease_seconds=lease_seconds)


async def one_batch(client: httpx.AsyncClient, shop: dict[str, Any], count: int) -> list[str]:
    """`count` equal-priority tickets from one webhook request (one commit, one `now`), in request order.

    The conversation ids are shuffled, so the order tickets are inserted in (sorted by conversation) cannot
    pass for the request order.
    """
    names = [f"c-{n:03d}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    random.Random(count).shuffle(names)
    msgs = [message(P4, conversation=name, customer=f"b-{name}") for name in names]
    response = await post_signed(client, shop["id"], shop["webhook_secret"], msgs)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert len({r["priority"] for r in results}) == 1
    return [r["ticket_id"] for r in results]


async def events(app: FastAPI, ticket_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(select(TicketEvent.kind, TicketEvent.actor, TicketEvent.data)
                                     .where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))
        return [(kind, actor, data) for kind, actor, data in rows]


async def outbound_count(app: FastAPI, ticket_id: str) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)
                                        .where(Message.ticket_id == ticket_id, Message.direction == "outbound")))


async def admin_ticket(client: httpx.AsyncClient, admin_headers: dict[str, str], ticket_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_claim_answers_the_ticket_with_evidence_and_a_lease(app: FastAPI, client: httpx.AsyncClient,
                                                                  admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, "亲，快递三天没动了，再不到就给差评", order_id="o-9")
    before = datetime.now().astimezone()
    response = await claim(client, agent)
    assert response.status_code == 200, response.text
    ticket = response.json()
    assert ticket["id"] == ticket_id and ticket["status"] == "assigned" and ticket["assigned_agent_id"] == agent["id"]
    assert (ticket["tier"], ticket["primary"], ticket["queue"]) == ("P1", "bad_review_threat", "complaints")
    assert set(ticket["intents"]) >= {"bad_review_threat", "logistics"} and ticket["escalated"] is False
    assert ticket["customer"]["nick"] == "小王" and ticket["deliveries"] == 0 and ticket["unread"] == 1
    assert 119 <= (ts(ticket["lease_expires_at"]) - before).total_seconds() <= 125
    [msg] = ticket["messages"]
    assert msg["direction"] == "inbound" and msg["order_id"] == "o-9"
    evidence = {hit["intent"]: hit["evidence"] for hit in msg["triage"]["intents"]}
    assert any(e["text"] in msg["text"] for e in evidence["bad_review_threat"])
    assert ts(ticket["first_response_due_at"]) == ts(ticket["opened_at"]) + timedelta(seconds=20)  # P1 target
    assert [(k, a) for k, a, _ in await events(app, ticket_id)][-1] == ("claimed", f"agent:{agent['id']}")
    assert (await claim(client, agent)).status_code == 204


async def test_order_is_tier_then_priority_then_oldest(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                       new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"], capacity=10)
    fifo = [await new_ticket(client, shop, P4) for _ in range(3)]        # equal priority: first come, first served
    p3 = await new_ticket(client, shop, P3)
    p2 = await new_ticket(client, shop, P2)
    p1 = await new_ticket(client, shop, P1)                               # posted last, claimed first
    claimed = [(await claim(client, agent)).json() for _ in range(6)]
    assert [t["id"] for t in claimed] == [p1, p2, p3, *fifo]
    assert len({t["priority"] for t in claimed[3:]}) == 1


async def test_one_batch_of_equal_priority_is_claimed_in_request_order(client: httpx.AsyncClient,
                                                                       admin_headers: dict[str, str],
                                                                       new_shop: Any) -> None:
    shop = await new_shop()
    # 100 tickets share opened_at: only the tie-breaker (the opening message's id) orders them.
    tickets = await one_batch(client, shop, 100)
    team = [await new_agent(client, admin_headers, shop["id"], capacity=50) for _ in range(2)]
    claimed = [(await claim(client, agent)).json() for agent in team for _ in range(50)]
    assert len({t["opened_at"] for t in claimed}) == 1
    assert [t["id"] for t in claimed] == tickets


@pytest.mark.parametrize("agents", [20])
async def test_concurrent_agents_claim_each_ticket_exactly_once(app: FastAPI, client: httpx.AsyncClient,
                                                                admin_headers: dict[str, str], new_shop: Any,
                                                                agents: int) -> None:
    shop = await new_shop()
    team = [await new_agent(client, admin_headers, shop["id"], capacity=50) for _ in range(agents)]
    texts = [P1, P2, P3, P4]
    for batch in range(5):
        msgs = [message(texts[i % 4], conversation=f"c-{batch}-{i}", customer=f"b-{batch}-{i}") for i in range(100)]
        assert (await post_signed(client, shop["id"], shop["webhook_secret"], msgs)).status_code == 202

    async def work(agent: dict[str, Any]) -> list[str]:
        taken = []
        while (response := await claim(client, agent)).status_code == 200:
            taken.append(response.json()["id"])
        assert response.status_code == 204, response.text
        return taken

    results = await asyncio.gather(*(work(a) for a in team))
    every = [ticket_id for taken in results for ticket_id in taken]
    assert len(every) == 500 and len(set(every)) == 500
    async with app.state.sessionmaker() as session:
        claims = await session.execute(select(TicketEvent.ticket_id, func.count()).where(
            TicketEvent.shop_id == shop["id"], TicketEvent.kind == "claimed").group_by(TicketEvent.ticket_id))
        assert {count for _, count in claims} == {1}


async def test_long_poll_is_woken_by_a_new_message_at_once(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                           new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    waiting = asyncio.create_task(claim(client, agent, wait=10))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    ticket_id = await new_ticket(client, shop, P3)
    stored = time.monotonic()
    response = await waiting
    assert response.status_code == 200 and response.json()["id"] == ticket_id
    assert time.monotonic() - stored < 0.1

    started = time.monotonic()
    assert (await claim(client, agent, wait=0.4)).status_code == 204
    assert 0.4 <= time.monotonic() - started < 1.4


async def test_capacity_is_enforced_also_under_concurrent_claims(client: httpx.AsyncClient,
                                                                 admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"], capacity=2)
    tickets = [await new_ticket(client, shop, P3) for _ in range(5)]
    answers = await asyncio.gather(*(claim(client, agent) for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [200, 200, 409, 409, 409, 409]
    refused = next(r for r in answers if r.status_code == 409).json()["error"]
    assert refused["code"] == "at_capacity" and refused["details"] == {"held": 2, "capacity": 2}
    held = [r.json()["id"] for r in answers if r.status_code == 200]
    assert held == tickets[:len(held)] or set(held) <= set(tickets)
    assert (await client.post(f"/v1/tickets/{held[0]}/resolve", headers=agent["headers"])).status_code == 200
    assert (await claim(client, agent)).status_code == 200
    assert (await claim(client, agent, wait=5)).status_code == 409  # at capacity: refused at once, not after the wait


async def test_reply_stops_the_first_response_clock_and_extends_the_lease(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, P2)
    claimed = (await claim(client, agent)).json()
    assert claimed["first_response_at"] is None and claimed["awaiting_since"] is not None
    first = await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "亲，马上为您处理退货"},
                              headers=agent["headers"])
    assert first.status_code == 201, first.text
    reply, ticket = first.json()["message"], first.json()["ticket"]
    assert reply["direction"] == "outbound" and reply["agent_id"] == agent["id"] and reply["triage"] is None
    assert ticket["first_response_at"] == reply["sent_at"] and ticket["awaiting_since"] is None
    assert ticket["unread"] == 0 and ts(ticket["lease_expires_at"]) > ts(claimed["lease_expires_at"])
    assert [m["direction"] for m in ticket["messages"]] == ["inbound", "outbound"]
    second = (await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "还有别的问题吗"},
                                headers=agent["headers"])).json()
    assert second["ticket"]["first_response_at"] == ticket["first_response_at"]
    replied = [d for kind, _, d in await events(app, ticket_id) if kind == "replied"]
    assert [d["first_response"] for d in replied] == [True, False] and replied[0]["within_target"] is True
    assert await outbound_count(app, ticket_id) == 2


async def test_every_answer_shows_the_thread_a_later_read_shows(client: httpx.AsyncClient,
                                                                admin_headers: dict[str, str], new_shop: Any) -> None:
    # Claim and holder writes answer with the thread read in their own statement (PostgreSQL: triage_thread(),
    # JSON); a read takes the plain path. Both must give the same messages, customer and timestamps.
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    conversation = f"thread-{uuid.uuid4().hex[:6]}"
    for text in (P3, P1):
        response = await post_signed(client, shop["id"], shop["webhook_secret"],
                                     [message(text, conversation=conversation, customer="b-thread")])
        assert response.status_code == 202, response.text
    claimed = (await claim(client, agent)).json()
    read = (await client.get(f"/v1/tickets/{claimed['id']}", headers=agent["headers"])).json()
    assert claimed == read
    assert [m["direction"] for m in claimed["messages"]] == ["inbound", "inbound"]
    assert claimed["customer"]["nick"] == "小王" and claimed["messages"][1]["triage"]["intents"]
    replied = (await client.post(f"/v1/tickets/{claimed['id']}/replies", json={"text": "马上处理"},
                                 headers=agent["headers"])).json()
    read = (await client.get(f"/v1/tickets/{claimed['id']}", headers=agent["headers"])).json()
    assert replied["ticket"] == read and replied["ticket"]["messages"][-1] == replied["message"]
    resolved = (await client.post(f"/v1/tickets/{claimed['id']}/resolve", headers=agent["headers"])).json()
    read = (await client.get(f"/v1/tickets/{claimed['id']}", headers=admin_headers)).json()
    assert resolved == read and len(resolved["messages"]) == 3


async def test_a_reply_replayed_20_times_with_one_key_is_stored_once(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, P2)
    await claim(client, agent)
    headers = {**agent["headers"], "Idempotency-Key": f"reply-{uuid.uuid4()}"}
    url = f"/v1/tickets/{ticket_id}/replies"
    concurrent = await asyncio.gather(*(client.post(url, json={"text": "好的亲"}, headers=headers) for _ in range(10)))
    sequential = [await client.post(url, json={"text": "好的亲"}, headers=headers) for _ in range(10)]
    answers = concurrent + sequential
    assert {r.status_code for r in answers} == {201}
    assert len({r.text for r in answers}) == 1
    assert await outbound_count(app, ticket_id) == 1
    assert [kind for kind, _, _ in await events(app, ticket_id)].count("replied") == 1
    other = await client.post(url, json={"text": "another text"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert await outbound_count(app, ticket_id) == 1


async def test_keys_past_the_retention_are_purged_by_the_reaper(app: FastAPI, client: httpx.AsyncClient,
                                                                database_url: str, admin_headers: dict[str, str],
                                                                new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, P2)
    await claim(client, agent)
    url = f"/v1/tickets/{ticket_id}/replies"
    old, young = (f"{age}-{uuid.uuid4()}" for age in ("old", "young"))
    first: dict[str, httpx.Response] = {}
    for key in (old, young):
        first[key] = await client.post(url, json={"text": "好的亲"}, headers={**agent["headers"], "Idempotency-Key": key})
        assert first[key].status_code == 201
    # Age the keys around the default retention of 24 hours.
    async with app.state.sessionmaker() as session:
        for key, hours in ((old, 25), (young, 23)):
            await session.execute(update(IdempotencyKey).where(IdempotencyKey.key == key)
                                  .values(created_at=utcnow() - timedelta(hours=hours)))
        await session.commit()

    async def keys() -> set[str]:
        async with app.state.sessionmaker() as session:
            stored = await session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.key.in_([old, young])))
            return set(stored)

    async def old_purged() -> bool:
        return await keys() == {young}

    # Another process's reaper purges at its start; the session app's would within PURGE_SECONDS.
    async with second_app(database_url):
        await eventually(old_purged)
    again = {key: await client.post(url, json={"text": "好的亲"}, headers={**agent["headers"], "Idempotency-Key": key})
             for key in (old, young)}
    assert again[young].status_code == 201 and again[young].json() == first[young].json()
    # The forgotten key runs afresh: a third reply is stored, under a new message id.
    assert again[old].status_code == 201 and again[old].json()["message"]["id"] != first[old].json()["message"]["id"]
    assert await outbound_count(app, ticket_id) == 3 and await keys() == {old, young}


async def test_resolve_release_transfer_replays_answer_the_same(client: httpx.AsyncClient,
                                                                admin_headers: dict[str, str], new_shop: Any) -> None:
    for action, body in [("resolve", None), ("release", {"reason": "break"}),
                         ("transfer", {"queue": "escalations", "reason": "needs a supervisor"})]:
        shop = await new_shop()
        agent = await new_agent(client, admin_headers, shop["id"])
        ticket_id = await new_ticket(client, shop, P3)
        assert (await claim(client, agent)).json()["id"] == ticket_id
        headers = {**agent["headers"], "Idempotency-Key": f"{action}-{ticket_id}"}
        url = f"/v1/tickets/{ticket_id}/{action}"
        first = await client.post(url, json=body, headers=headers)
        again = await client.post(url, json=body, headers=headers)
        assert first.status_code == again.status_code == 200 and first.json() == again.json(), action
        assert (await client.post(url, json=body, headers=agent["headers"])).status_code in (404, 409)
        if body is not None:
            changed = await client.post(url, json={**body, "reason": "other"}, headers=headers)
            assert changed.status_code == 422, action


async def test_release_puts_the_ticket_back_at_its_place(app: FastAPI, client: httpx.AsyncClient,
                                                         admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    older, newer = await new_ticket(client, shop, P3), await new_ticket(client, shop, P3)
    assert (await claim(client, agent)).json()["id"] == older
    released = await client.post(f"/v1/tickets/{older}/release", json={"reason": "wrong skill"},
                                 headers=agent["headers"])
    assert released.status_code == 200
    assert released.json()["status"] == "queued" and released.json()["assigned_agent_id"] is None
    assert released.json()["deliveries"] == 0
    assert (await claim(client, agent)).json()["id"] == older
    assert (await claim(client, agent)).json()["id"] == newer
    kinds = [(kind, actor) for kind, actor, _ in await events(app, older)]
    assert ("released", f"agent:{agent['id']}") in kinds


async def test_release_and_expiry_keep_the_place_among_equal_ages(database_url: str, admin_headers: dict[str, str],
                                                                   new_shop: Any) -> None:
    shop = await new_shop()
    async with short_lease(database_url, lease_seconds=2) as http:
        agent = await new_agent(http, admin_headers, shop["id"], capacity=10)
        tickets = await one_batch(http, shop, 6)
        assert [(await claim(http, agent)).json()["id"] for _ in range(3)] == tickets[:3]
        released = await http.post(f"/v1/tickets/{tickets[1]}/release", headers=agent["headers"])
        assert released.status_code == 200, released.text

        async def expired() -> bool:
            held = [await admin_ticket(http, admin_headers, t) for t in tickets[:3]]
            return all(t["status"] == "queued" for t in held)

        await eventually(expired)
        # Released, expired and never claimed tickets of one batch come out in the order they came in.
        again = [(await claim(http, agent)).json() for _ in range(6)]
        assert [t["id"] for t in again] == tickets
        assert [t["deliveries"] for t in again] == [1, 0, 1, 0, 0, 0]


async def test_transfer_keeps_the_age(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                      new_shop: Any) -> None:
    shop = await new_shop()
    assert (await client.post(f"/v1/shops/{shop['id']}/queues", json={"name": "special"},
                              headers=admin_headers)).status_code == 201
    agent = await new_agent(client, admin_headers, shop["id"])
    specialist = await new_agent(client, admin_headers, shop["id"], queues=("special",))
    older, newer = await new_ticket(client, shop, P3), await new_ticket(client, shop, P3)
    opened = (await claim(client, agent)).json()["opened_at"]
    assert (await claim(client, agent)).json()["id"] == newer
    # The newer ticket reaches the queue first; the older one still goes ahead of it there.
    for ticket_id in (newer, older):
        moved = await client.post(f"/v1/tickets/{ticket_id}/transfer", json={"queue": "special", "reason": "VIP"},
                                  headers=agent["headers"])
        assert moved.status_code == 200 and moved.json()["queue"] == "special" and moved.json()["status"] == "queued"
    first = (await claim(client, specialist)).json()
    assert first["id"] == older and first["opened_at"] == opened
    unknown = await client.post(f"/v1/tickets/{newer}/transfer", json={"queue": "nowhere"}, headers=agent["headers"])
    assert unknown.status_code == 422


async def test_scoping_other_shop_404_foreign_ticket_409_unserved_queue_invisible(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop, other_shop = await new_shop(), await new_shop()
    holder = await new_agent(client, admin_headers, shop["id"], queues=("aftersale",))
    colleague = await new_agent(client, admin_headers, shop["id"], queues=("aftersale",))
    presale_only = await new_agent(client, admin_headers, shop["id"], queues=("presale",))
    stranger = await new_agent(client, admin_headers, other_shop["id"], queues=("aftersale",))
    ticket_id = await new_ticket(client, shop, P3)
    assert (await claim(client, stranger)).status_code == 204
    assert (await claim(client, presale_only)).status_code == 204
    assert (await claim(client, holder)).json()["id"] == ticket_id
    for action in ("replies", "resolve", "release", "heartbeat", "transfer"):
        body = {"replies": {"text": "x"}, "transfer": {"queue": "presale"}}.get(action)
        url = f"/v1/tickets/{ticket_id}/{action}"
        assert (await client.post(url, json=body, headers=stranger["headers"])).status_code == 404, action
        assert (await client.post(url, json=body, headers=presale_only["headers"])).status_code == 404, action
        refused = await client.post(url, json=body, headers=colleague["headers"])
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "ticket_not_held", action
    assert (await client.get(f"/v1/tickets/{ticket_id}", headers=stranger["headers"])).status_code == 404
    assert (await client.get(f"/v1/tickets/{ticket_id}", headers=presale_only["headers"])).status_code == 404
    assert (await client.get(f"/v1/tickets/{ticket_id}", headers=colleague["headers"])).status_code == 200
    assert (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).status_code == 200
    assert (await client.get("/v1/tickets/no-such-ticket", headers=holder["headers"])).status_code == 404
    assert (await client.get(f"/v1/tickets/{ticket_id}")).status_code == 401
    presale_view = (await client.get("/v1/queues", headers=presale_only["headers"])).json()
    assert [q["name"] for q in presale_view["queues"]] == ["presale"]
    assert (await client.get(f"/v1/queues?shop_id={shop['id']}", headers=stranger["headers"])).status_code == 404
    assert (await client.get("/v1/agents/me/claim", headers=holder["headers"])).status_code == 405


async def test_reopen_after_resolve_is_claimed_as_a_new_episode(client: httpx.AsyncClient,
                                                                 admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    ticket_id = await new_ticket(client, shop, P2, conversation=conversation, customer="buyer-r")
    await claim(client, agent)
    await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "已退款"}, headers=agent["headers"])
    resolved = await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])
    assert resolved.json()["status"] == "resolved" and resolved.json()["resolved_at"] is not None
    assert (await claim(client, agent)).status_code == 204
    again = await new_ticket(client, shop, P4, conversation=conversation, customer="buyer-r")
    assert again == ticket_id
    reopened = (await claim(client, agent)).json()
    assert reopened["id"] == ticket_id and reopened["episodes"] == 2 and reopened["tier"] == "P4"
    assert reopened["first_response_at"] is None and reopened["resolved_at"] is None
    assert [m["direction"] for m in reopened["messages"]] == ["inbound", "outbound", "inbound"]


async def test_a_held_ticket_that_turns_into_a_complaint_goes_back_to_complaints(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    presale = await new_agent(client, admin_headers, shop["id"], queues=("presale",))
    senior = await new_agent(client, admin_headers, shop["id"], queues=("complaints",))
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    ticket_id = await new_ticket(client, shop, P4, conversation=conversation, customer="b-turns")
    assert (await claim(client, presale)).json()["id"] == ticket_id
    await new_ticket(client, shop, "你们这态度我要投诉，找小二介入", conversation=conversation, customer="b-turns")
    # The holder keeps it, flagged, though it is no longer in a queue the holder serves.
    held = (await client.get("/v1/agents/me/tickets", headers=presale["headers"])).json()["tickets"]
    assert [(t["id"], t["escalated"], t["tier"], t["queue"]) for t in held] == [(ticket_id, True, "P1", "complaints")]
    assert (await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "马上处理"},
                              headers=presale["headers"])).status_code == 201
    released = await client.post(f"/v1/tickets/{ticket_id}/release", json={"reason": "for a senior"},
                                 headers=presale["headers"])
    assert released.status_code == 200 and released.json()["queue"] == "complaints"
    # Back in the queue, it is the seniors' to take, no longer visible to presale.
    assert (await claim(client, presale)).status_code == 204
    assert (await client.get(f"/v1/tickets/{ticket_id}", headers=presale["headers"])).status_code == 404
    taken = await claim(client, senior)
    assert taken.status_code == 200 and taken.json()["id"] == ticket_id
    routed = [data for kind, _, data in await events(app, ticket_id) if kind == "routed"]
    assert routed == [{"from": "presale", "to": "complaints", "reason": "tier rose"}]


async def test_the_audit_trail_reads_in_order_in_pages_for_whoever_may_see_the_ticket(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop, other_shop = await new_shop(), await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    stranger = await new_agent(client, admin_headers, other_shop["id"])
    ticket_id = await new_ticket(client, shop, P3)
    assert (await claim(client, agent)).json()["id"] == ticket_id
    await new_ticket(client, shop, P1, conversation=(await admin_ticket(client, admin_headers, ticket_id))[
        "conversation_id"])
    assert (await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "在的"},
                              headers=agent["headers"])).status_code == 201
    assert (await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])).status_code == 200

    trail = await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin_headers)
    assert trail.status_code == 200, trail.text
    events = trail.json()["events"]
    assert [e["kind"] for e in events] == ["message_received", "created", "claimed", "message_received", "reranked",
                                           "escalated", "routed", "replied", "resolved"]
    assert {e["actor"] for e in events} == {"webhook", f"agent:{agent['id']}"}
    assert [e["id"] for e in events] == sorted(e["id"] for e in events) and trail.json()["next_after"] is None
    assert events[-2]["data"]["first_response"] is True

    # Pages of two walk the same trail.
    walked, after = [], 0
    while after is not None:
        page = (await client.get(f"/v1/tickets/{ticket_id}/events?limit=2&after={after}",
                                 headers=agent["headers"])).json()
        assert len(page["events"]) <= 2
        walked += page["events"]
        after = page["next_after"]
    assert walked == events

    for headers, status in ((stranger["headers"], 404), ({}, 401)):
        assert (await client.get(f"/v1/tickets/{ticket_id}/events", headers=headers)).status_code == status
    assert (await client.get("/v1/tickets/no-such-ticket/events", headers=admin_headers)).status_code == 404
    refused = await client.get(f"/v1/tickets/{ticket_id}/events?limit=0", headers=admin_headers)
    assert refused.status_code == 422 and "query.limit" in refused.text


async def test_deactivating_an_agent_hands_its_tickets_back_at_once_without_a_delivery(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    leaving = await new_agent(client, admin_headers, shop["id"])
    staying = await new_agent(client, admin_headers, shop["id"])
    first, second = [await new_ticket(client, shop, P3) for _ in range(2)]
    assert [(await claim(client, leaving)).json()["id"] for _ in range(2)] == [first, second]

    # The staying agent waits on an empty queue; the hand-back wakes it, long before its wait is over.
    waiting = asyncio.create_task(claim(client, staying, wait=10))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    deactivated = await client.patch(f"/v1/shops/{shop['id']}/agents/{leaving['id']}", json={"active": False},
                                     headers=admin_headers)
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    woken = await waiting
    assert woken.status_code == 200 and woken.json()["id"] == first and time.monotonic() - started < 2
    assert woken.json()["deliveries"] == 0  # not the agent's lease running out: no delivery counted
    assert (await claim(client, staying)).json()["id"] == second
    for ticket_id in (first, second):
        released = [(actor, data) for kind, actor, data in await events(app, ticket_id) if kind == "released"]
        assert released == [("admin", {"agent_id": leaving["id"], "reason": "agent deactivated"})]
    assert (await claim(client, leaving)).status_code == 401
    # Deactivating again, or changing anything else, hands nothing back twice.
    again = await client.patch(f"/v1/shops/{shop['id']}/agents/{leaving['id']}", json={"active": False},
                               headers=admin_headers)
    assert again.status_code == 200
    assert [kind for kind, _, _ in await events(app, first)].count("released") == 1


async def test_a_new_token_replaces_the_old_one_and_the_agent_keeps_its_tickets(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, P2)
    assert (await claim(client, agent)).json()["id"] == ticket_id
    reissued = await client.post(f"/v1/shops/{shop['id']}/agents/{agent['id']}/token", headers=admin_headers)
    assert reissued.status_code == 201
    body = reissued.json()
    assert body["id"] == agent["id"] and body["token"] != agent["token"] and body["token"].startswith("agt_")
    old = await client.get("/v1/agents/me/tickets", headers=agent["headers"])
    assert old.status_code == 401
    new_headers = {"Authorization": f"Bearer {body['token']}"}
    held = (await client.get("/v1/agents/me/tickets", headers=new_headers)).json()["tickets"]
    assert [t["id"] for t in held] == [ticket_id]
    assert (await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=new_headers)).status_code == 200
    unknown = await client.post(f"/v1/shops/{shop['id']}/agents/no-such-agent/token", headers=admin_headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "agent_not_found"


async def test_ops_find_a_conversation_s_ticket_by_the_platform_s_names(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    ticket_id = await new_ticket(client, shop, P2, conversation=conversation)
    await new_ticket(client, other, P2, conversation=conversation)  # the same name in another shop

    def find(shop_id: str, **query: str) -> Any:
        return client.get(f"/v1/shops/{shop_id}/tickets", params=query, headers=admin_headers)

    found = await find(shop["id"], platform="taobao", conversation_id=conversation)
    assert found.status_code == 200
    [ticket] = found.json()["tickets"]
    assert ticket["id"] == ticket_id and ticket["messages"][0]["text"] == P2
    for query in ({"platform": "jd", "conversation_id": conversation},
                  {"platform": "taobao", "conversation_id": "never-heard-of"}):
        assert (await find(shop["id"], **query)).json() == {"tickets": []}
    assert (await find("no-such-shop", platform="taobao", conversation_id=conversation)).status_code == 404
    missing = await find(shop["id"], platform="taobao")
    assert missing.status_code == 422 and "query.conversation_id" in missing.text
    agent = await new_agent(client, admin_headers, shop["id"])
    assert (await client.get(f"/v1/shops/{shop['id']}/tickets", params={"platform": "taobao",
                             "conversation_id": conversation}, headers=agent["headers"])).status_code == 401


async def test_my_tickets_show_unread_and_escalation(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                     new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    ticket_id = await new_ticket(client, shop, P3, conversation=conversation, customer="buyer-e")
    calm = await new_ticket(client, shop, P4)
    await claim(client, agent)
    await claim(client, agent)
    await new_ticket(client, shop, "明天再不到就给差评，我要打12315", conversation=conversation, customer="buyer-e")
    mine = (await client.get("/v1/agents/me/tickets", headers=agent["headers"])).json()["tickets"]
    assert [t["id"] for t in mine] == [ticket_id, calm]
    assert mine[0]["escalated"] is True and mine[0]["unread"] == 2 and mine[0]["tier"] == "P1"
    assert mine[1]["escalated"] is False and mine[1]["unread"] == 1


async def test_queue_depths_for_agent_and_admin(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"], queues=("aftersale",))
    for text in (P2, P3, P3, P1, P4):
        await new_ticket(client, shop, text)
    mine = (await client.get("/v1/queues", headers=agent["headers"])).json()
    assert mine["shop_id"] == shop["id"]
    [aftersale] = mine["queues"]
    assert aftersale["name"] == "aftersale" and aftersale["depth"] == {"P1": 0, "P2": 1, "P3": 2, "P4": 0}
    assert aftersale["total"] == 3 and 0 <= aftersale["oldest_wait_seconds"] < 30
    assert (await client.get("/v1/queues", headers=admin_headers)).status_code == 422
    everything = (await client.get(f"/v1/queues?shop_id={shop['id']}", headers=admin_headers)).json()["queues"]
    assert {q["name"]: q["total"] for q in everything} == {"aftersale": 3, "complaints": 1, "escalations": 0,
                                                            "presale": 1}
    assert everything[1]["oldest_wait_seconds"] is None or everything[1]["name"] != "escalations"


async def test_lease_expiry_redelivers_in_the_same_order(app: FastAPI, database_url: str,
                                                         admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    async with short_lease(database_url) as http:
        agent = await new_agent(http, admin_headers, shop["id"])
        first, second, third = [await new_ticket(http, shop, text) for text in (P3, P2, P3)]
        assert [(await claim(http, agent)).json()["id"] for _ in range(2)] == [second, first]

        async def requeued() -> bool:
            tickets = [await admin_ticket(http, admin_headers, t) for t in (first, second)]
            return all(t["status"] == "queued" for t in tickets)

        await eventually(requeued)
        again = [(await claim(http, agent)).json() for _ in range(3)]
        assert [t["id"] for t in again] == [second, first, third]
        assert [t["deliveries"] for t in again] == [1, 1, 0]
    # Two reapers (this app's and the short-lease one) watched these leases: each expiry is recorded once,
    # counting one delivery (the second claim's lease may have run out by now too: 1, 2).
    for ticket_id in (first, second):
        expired = [d for kind, actor, d in await events(app, ticket_id)
                   if kind == "lease_expired" and actor == "system"]
        assert [d["deliveries"] for d in expired] in ([1], [1, 2])
        assert expired[0]["agent_id"] == agent["id"]


async def test_three_expiries_move_a_ticket_to_escalations_never_earlier(
        app: FastAPI, database_url: str, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    async with short_lease(database_url) as http:
        agent = await new_agent(http, admin_headers, shop["id"], queues=("complaints",))
        ticket_id = await new_ticket(http, shop, P1)
        for delivery in (1, 2, 3):
            assert (await claim(http, agent)).json()["id"] == ticket_id

            async def expired(n: int = delivery) -> bool:
                return (await admin_ticket(http, admin_headers, ticket_id))["deliveries"] == n

            await eventually(expired)
            ticket = await admin_ticket(http, admin_headers, ticket_id)
            assert ticket["status"] == "queued"
            assert ticket["queue"] == ("escalations" if delivery == 3 else "complaints"), delivery
        assert ticket["escalated"] is True
        assert (await claim(http, agent)).status_code == 204  # escalations is for supervisors
    moved = [(actor, d) for kind, actor, d in await events(app, ticket_id) if kind == "transferred"]
    assert moved == [("system", {"from": "complaints", "to": "escalations",
                                 "reason": "lease expired 3 times (max_deliveries 3)"})]


async def test_a_stale_holder_cannot_write_after_its_lease_ran_out(
        app: FastAPI, database_url: str, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    async with short_lease(database_url, lease_seconds=2) as http:
        agent = await new_agent(http, admin_headers, shop["id"])
        ticket_id = await new_ticket(http, shop, P2)
        claimed = (await claim(http, agent)).json()
        beat = await http.post(f"/v1/tickets/{ticket_id}/heartbeat", headers=agent["headers"])
        assert beat.status_code == 200 and beat.json()["lease_expires_at"] > claimed["lease_expires_at"]
        await asyncio.sleep(2.1)
        for action, body in [("replies", {"text": "sorry, late"}), ("resolve", None), ("heartbeat", None),
                             ("release", None), ("transfer", {"queue": "presale"})]:
            late = await http.post(f"/v1/tickets/{ticket_id}/{action}", json=body,
                                   headers={**agent["headers"], "Idempotency-Key": f"late-{action}"})
            assert late.status_code == 409 and late.json()["error"]["code"] == "ticket_not_held", action
        assert await outbound_count(app, ticket_id) == 0
        ticket = await admin_ticket(http, admin_headers, ticket_id)
        assert ticket["status"] in ("queued", "assigned") and ticket["resolved_at"] is None


async def test_ops_take_a_held_ticket_back_to_its_queue_for_the_next_agent(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    stuck = await new_agent(client, admin_headers, shop["id"])
    other = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, P1)
    assert (await claim(client, stuck)).json()["id"] == ticket_id
    waiting = asyncio.create_task(claim(client, other, wait=10))
    await asyncio.sleep(0.2)
    url = f"/v1/shops/{shop['id']}/tickets/{ticket_id}/release"
    released = await client.post(url, headers=admin_headers, json={"reason": "console stuck on it"})
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "queued" and released.json()["deliveries"] == 0
    woken = await waiting
    assert woken.status_code == 200 and woken.json()["id"] == ticket_id
    late = await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "在的"}, headers=stuck["headers"])
    assert late.status_code == 409 and late.json()["error"]["code"] == "ticket_not_held"
    assert [e for e in await events(app, ticket_id) if e[0] == "released"] == [("released", "admin", {
        "agent_id": stuck["id"], "status_before": "assigned", "reason": "console stuck on it"})]
    # Nobody holds a queued or a resolved ticket: nothing to take back.
    assert (await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=other["headers"])).status_code == 200
    for status, path in (("resolved", url), ("queued", url.replace(ticket_id, await new_ticket(client, shop, P4)))):
        refused = await client.post(path, headers=admin_headers)
        assert refused.status_code == 409 and refused.json()["error"]["details"] == {"status": status}
    assert (await client.post(url, headers=stuck["headers"])).status_code == 401


async def test_ops_resolve_a_queued_or_held_ticket_and_the_holder_loses_it(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"], capacity=1)
    conversation = f"c-{uuid.uuid4().hex[:8]}"
    held = await new_ticket(client, shop, P1, conversation=conversation, customer="buyer-o")
    queued = await new_ticket(client, shop, P4)
    assert (await claim(client, agent)).json()["id"] == held
    assert (await claim(client, agent)).status_code == 409  # at capacity

    url = f"/v1/shops/{shop['id']}/tickets/{{}}/resolve"
    resolved = await client.post(url.format(held), headers=admin_headers, json={"reason": "buyer wrote elsewhere"})
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["status"] == "resolved" and body["assigned_agent_id"] is None and body["resolved_at"] is not None
    # The holder lost it: its writes are refused, and its capacity is free again.
    late = await client.post(f"/v1/tickets/{held}/replies", json={"text": "在的"}, headers=agent["headers"])
    assert late.status_code == 409 and late.json()["error"]["code"] == "ticket_not_held"
    assert await outbound_count(app, held) == 0
    assert (await client.get("/v1/agents/me/tickets", headers=agent["headers"])).json()["tickets"] == []
    assert (await claim(client, agent)).json()["id"] == queued
    # A queued ticket, without a body; it leaves the queue.
    other_queued = await new_ticket(client, shop, P4)
    assert (await client.post(url.format(other_queued), headers=admin_headers)).json()["status"] == "resolved"
    assert (await claim(client, agent)).status_code == 409  # it holds `queued`
    await client.post(f"/v1/tickets/{queued}/resolve", headers=agent["headers"])
    assert (await claim(client, agent)).status_code == 204

    assert (await events(app, held))[-1] == ("resolved", "admin", {
        "agent_id": agent["id"], "status_before": "assigned", "reason": "buyer wrote elsewhere"})
    assert (await events(app, other_queued))[-1] == ("resolved", "admin", {
        "agent_id": None, "status_before": "queued", "reason": None})

    again = await client.post(url.format(held), headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "ticket_already_resolved"
    refused = {
        "another shop's ticket": (f"/v1/shops/{other['id']}/tickets/{held}/resolve", admin_headers, 404),
        "no such ticket": (url.format("no-such-ticket"), admin_headers, 404),
        "no such shop": (f"/v1/shops/no-such-shop/tickets/{held}/resolve", admin_headers, 404),
        "an agent's token": (url.format(queued), agent["headers"], 401),
    }
    for case, (path, headers, status) in refused.items():
        assert (await client.post(path, headers=headers)).status_code == status, case
    long_reason = await client.post(url.format(queued), headers=admin_headers, json={"reason": "x" * 501})
    assert long_reason.status_code == 422 and "reason" in long_reason.text
    # A buyer message reopens it, as after any resolve.
    assert await new_ticket(client, shop, P3, conversation=conversation, customer="buyer-o") == held
    reopened = await admin_ticket(client, admin_headers, held)
    assert reopened["status"] == "queued" and reopened["episodes"] == 2
