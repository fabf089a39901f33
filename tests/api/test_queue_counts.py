"""The queue counters (migration 0018) against a count of the tickets themselves, on both databases: after every
kind of change a ticket can go through (snoozes and wake-ups too), folded or not, and with claims, replies and breach records racing."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.claims import claim_store
from app.db.driver import decoded, driver
from app.services.autoclose import close_quiet
from app.services.counts import CountFolder
from app.services.queues import expire_leases, wake_snoozed
from app.services.sla import record_breaches
from tests.support.clock import FrozenClock, freeze
from tests.support.queues import claim, new_agent, new_ticket
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio


async def truth(app: FastAPI, shop_id: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(queue, tier) -> (queued, overdue) counted from the tickets: overdue is an open, unanswered ticket whose
    episode's breach the SLA watch recorded."""
    async with driver(app.state.drivers) as db:
        rows = await db.rows(
            "SELECT queue, tier, sum(CASE WHEN status = 'queued' THEN 1 ELSE 0 END) AS queued, "
            "sum(CASE WHEN status <> 'resolved' AND first_response_at IS NULL AND EXISTS (SELECT 1 FROM sla_breaches "
            "b WHERE b.ticket_id = t.id AND b.opened_at = t.opened_at) THEN 1 ELSE 0 END) AS overdue "
            "FROM tickets t WHERE shop_id = $1 GROUP BY queue, tier", shop_id)
    return {(r["queue"], r["tier"]): (int(r["queued"]), int(r["overdue"])) for r in rows
            if r["queued"] or r["overdue"]}


async def counted(app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str],
                  shop_id: str, now: datetime) -> dict[tuple[str, int], tuple[int, int]]:
    """The same as /metrics shows it; /v1/queues must agree on the depths and the oldest waits."""
    text = (await client.get("/metrics")).text
    found: dict[tuple[str, int], list[int]] = {}
    for line in text.splitlines():
        for name, slot in (("triage_queue_depth{", 0), ("triage_first_response_overdue{", 1)):
            if line.startswith(name) and f'shop="{shop_id}"' in line:
                labels = dict(part.split("=") for part in line[len(name):line.index("}")].split(","))
                key = (labels["queue"].strip('"'), int(labels["tier"].strip('"')[1]))
                found.setdefault(key, [0, 0])[slot] = int(float(line.rsplit(" ", 1)[1]))
    result = {key: (q, o) for key, (q, o) in found.items() if q or o}
    queues = (await client.get("/v1/queues", params={"shop_id": shop_id}, headers=admin)).json()["queues"]
    depths = {(q["name"], int(tier[1])): n for q in queues for tier, n in q["depth"].items() if n}
    assert depths == {key: q for key, (q, _) in result.items() if q}
    async with driver(app.state.drivers) as db:
        oldest = {r["queue"]: decoded(r)["opened_at"] for r in await db.rows(
            "SELECT queue, min(opened_at) AS opened_at FROM tickets WHERE shop_id = $1 AND status = 'queued' "
            "GROUP BY queue", shop_id)}
    for q in queues:
        wait = None if q["name"] not in oldest else round((now - oldest[q["name"]]).total_seconds(), 3)
        assert q["oldest_wait_seconds"] == wait, (q, wait)
    return result


async def check(app: FastAPI, client: httpx.AsyncClient, admin: dict[str, str], shop_id: str, *,
                clock: FrozenClock, fold: bool) -> None:
    if fold:
        await CountFolder(app.state.drivers).run_once()
    assert await counted(app, client, admin, shop_id, clock.now) == await truth(app, shop_id)


async def test_the_counters_follow_every_change_of_a_ticket(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop(auto_close_after_hours=48)
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    wu = await new_agent(client, admin_headers, shop["id"], queues=("presale",))
    tickets = [await new_ticket(client, shop, text, conversation=f"c{n}") for n, text in enumerate(
        ["请问这款有M码吗？", "快递三天没动了", "我要退款，质量太差了", "在吗", "这个有现货吗", "你们客服态度太差了，我要投诉"])]
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)  # new tickets, nothing folded yet
    # A later message raises a ticket's tier and moves it to complaints.
    await post_signed(client, shop["id"], shop["webhook_secret"], [message("再不发货就给差评", conversation="c1")])
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=True)

    first = (await claim(client, lin)).json()
    second = (await claim(client, lin)).json()
    await client.post(f"/v1/tickets/{second['id']}/release", headers=lin["headers"])
    third = (await claim(client, wu)).json()
    await client.post(f"/v1/tickets/{third['id']}/transfer", headers=wu["headers"],
                      json={"queue": "aftersale", "reason": "logistics"})
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)

    # Past the due times: the watch records the breaches, which count as overdue until answered.
    clock.advance(3600)
    await record_breaches(app.state.drivers, now=clock.now)
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    await client.post(f"/v1/tickets/{first['id']}/replies", headers=lin["headers"], json={"text": "马上处理"})
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=True)
    # Its lease runs out: back in its queue, still answered.
    async with claim_store(app.state.drivers) as store:
        await expire_leases(store, now=clock.now + timedelta(hours=1), max_deliveries=3)
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    # Ops resolve a queued ticket; a seller's message answers another on the platform.
    await client.post(f"/v1/shops/{shop['id']}/tickets/{tickets[3]}/resolve", headers=admin_headers, json={})
    await post_signed(client, shop["id"], shop["webhook_secret"], [
        message("亲，有的", conversation="c4", sender="seller")])
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=True)
    # Silent for two days: auto-closed; then a buyer writes again and it reopens as a new episode.
    clock.advance(48 * 3600)
    await close_quiet(app.state.drivers, now=clock.now)
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    await post_signed(client, shop["id"], shop["webhook_secret"], [message("还在吗？", conversation="c0")])
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    # Snoozed: out of its queue; woken by the buyer's message, and another by its time (the lease reaper's pass).
    for n in range(2):
        await new_ticket(client, shop, "这个有现货吗", conversation=f"z{n}")
    snoozing = [(await claim(client, lin)).json()["id"] for _ in range(2)]
    for ticket_id in snoozing:
        answer = await client.post(f"/v1/tickets/{ticket_id}/snooze", headers=lin["headers"],
                                   json={"until": (clock.now + timedelta(hours=1)).isoformat()})
        assert answer.status_code == 200, answer.text
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    conversation = (await client.get(f"/v1/tickets/{snoozing[0]}", headers=admin_headers)).json()["conversation_id"]
    await post_signed(client, shop["id"], shop["webhook_secret"], [message("照片发了", conversation=conversation)])
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=True)
    clock.advance(3600)
    async with claim_store(app.state.drivers) as store:
        assert (await wake_snoozed(store, now=clock.now))[0] >= 1
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    assert {(await client.get(f"/v1/tickets/{t}", headers=admin_headers)).json()["status"] for t in snoozing} == {
        "queued"}
    # An agent deactivated hands its tickets back.
    await claim(client, lin)
    await client.patch(f"/v1/shops/{shop['id']}/agents/{lin['id']}", headers=admin_headers, json={"active": False})
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=True)
    assert any(q for q, _ in (await truth(app, shop["id"])).values())  # something is still queued


async def test_the_counters_hold_with_claims_replies_and_breaches_racing(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    clock: FrozenClock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    agents = [await new_agent(client, admin_headers, shop["id"], capacity=10) for _ in range(4)]
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], [
        message("我要退货" if n % 2 else "请问这款有M码吗？", conversation=f"r{n}", customer=f"b{n}") for n in range(30)])
    assert answer.status_code == 202
    clock.advance(600)  # every ticket is past its due time

    async def work(agent: dict[str, Any]) -> int:
        """Claims and replies; how many replies. A claim finds nothing while the SLA watch's transaction holds the
        tickets it is recording (claims skip locked rows), so fewer than four may be answered."""
        replied = 0
        for _ in range(4):
            held = await claim(client, agent)
            if held.status_code != 200:
                break
            answer = await client.post(f"/v1/tickets/{held.json()['id']}/replies", headers=agent["headers"],
                                       json={"text": "好的"})
            replied += answer.status_code == 201
        return replied

    folder = CountFolder(app.state.drivers)
    *replies, _, _, _ = await asyncio.gather(*(work(a) for a in agents),
                                             record_breaches(app.state.drivers, now=clock.now),
                                             folder.run_once(), folder.run_once())
    await record_breaches(app.state.drivers, now=clock.now)
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=False)
    await check(app, client, admin_headers, shop["id"], clock=clock, fold=True)
    overdue = sum(o for _, o in (await truth(app, shop["id"])).values())
    assert sum(replies) > 0
    assert overdue == 30 - sum(replies)  # the unanswered ones, however the replies and the records raced
