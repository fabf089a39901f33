"""Deliveries from real service processes to a real receiver: kill -9 in the middle of 500 replies loses no
committed reply and keeps each conversation's order; two processes on one PostgreSQL never send one delivery twice.
"""

import asyncio
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.db.listen import asyncpg_dsn
from app.db.migrate import upgrade_async
from tests.support import ADMIN_TOKEN, BACKENDS, POSTGRES_URL, fresh_database
from tests.support.receiver import Receiver, Reply, verify
from tests.support.serving import ServiceProcess
from tests.support.webhooks import encode, signed_headers

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CONVERSATIONS = 20
REPLIES = 500
KILL_AFTER = 200
DELIVERY_ENV = {"TRIAGE_DELIVERY_ALLOW_PRIVATE": "1", "TRIAGE_DELIVERY_BACKOFF_SECONDS": "0.2",
                "TRIAGE_DELIVERY_CONNECT_TIMEOUT_SECONDS": "0.5", "TRIAGE_DELIVERY_TIMEOUT_SECONDS": "1"}


async def setup_shop(http: httpx.AsyncClient, receiver: Receiver) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A shop with an endpoint at the receiver, CONVERSATIONS tickets, each held by one of four agents."""
    shop_id = f"shop-{uuid.uuid4().hex[:8]}"
    shop = (await http.post("/v1/shops", headers=ADMIN, json={"id": shop_id, "name": "S"})).json()
    created = await http.post(f"/v1/shops/{shop_id}/endpoints", headers=ADMIN,
                              json={"url": receiver.url("/platform"), "events": ["reply.created"]})
    assert created.status_code == 201, created.text
    shop["endpoint"] = created.json()
    messages = [{"message_id": f"m-{i}", "conversation_id": f"c-{i}", "sent_at": "2026-11-25T08:00:00Z",
                 "customer": {"id": f"b-{i}"}, "text": "快递怎么还没到"} for i in range(CONVERSATIONS)]
    body = encode({"platform": "taobao", "messages": messages})
    assert (await http.post(f"/v1/shops/{shop_id}/webhooks/messages", content=body,
                            headers=signed_headers(shop["webhook_secret"], body))).status_code == 202
    holders = []
    for _ in range(4):
        agent = (await http.post(f"/v1/shops/{shop_id}/agents", headers=ADMIN, json={
            "name": "A", "queues": ["presale", "aftersale", "complaints"], "capacity": 5})).json()
        headers = {"Authorization": f"Bearer {agent['token']}"}
        for _ in range(CONVERSATIONS // 4):
            claimed = await http.post("/v1/agents/me/claim", headers=headers)
            assert claimed.status_code == 200, claimed.text
            holders.append({"ticket_id": claimed.json()["id"], "headers": headers})
    return shop, holders


async def reply_all(base_urls: list[str], holders: list[dict[str, Any]], acknowledged: dict[str, list[str]], *,
                    stop_after: int | None = None) -> None:
    """REPLIES replies, each conversation's in turn, under Idempotency-Keys (a retry never stores one twice);
    stops once `stop_after` are acknowledged. `acknowledged`: per ticket, the texts answered 201, in order."""
    stop = asyncio.Event()

    async def conversation(n: int, holder: dict[str, Any]) -> None:
        ticket_id = holder["ticket_id"]
        done = acknowledged[ticket_id]
        async with httpx.AsyncClient(base_url=base_urls[n % len(base_urls)], timeout=30) as http:
            for i in range(len(done), REPLIES // CONVERSATIONS):
                if stop.is_set():
                    return
                text = f"{ticket_id}:{i}"
                try:
                    response = await http.post(f"/v1/tickets/{ticket_id}/replies", json={"text": text},
                                               headers={**holder["headers"], "Idempotency-Key": text})
                except httpx.TransportError:
                    return  # the server died under us: this one was never acknowledged
                assert response.status_code == 201, response.text
                done.append(text)
                if stop_after is not None and sum(map(len, acknowledged.values())) >= stop_after:
                    stop.set()

    await asyncio.gather(*[conversation(n, h) for n, h in enumerate(holders)])


def first_arrivals(receiver: Receiver, secret: str) -> dict[str, list[str]]:
    """Per ticket, the texts in the order they first reached the receiver (a retry after a crash may repeat one)."""
    seen: set[str] = set()
    order: dict[str, list[str]] = defaultdict(list)
    for received in receiver.at("/platform"):
        verify(received, secret)
        data = json.loads(received.body)["data"]
        if data["text"] not in seen:
            seen.add(data["text"])
            order[data["ticket_id"]].append(data["text"])
    return order


async def all_arrived(receiver: Receiver, secret: str, acknowledged: dict[str, list[str]], timeout: float) -> None:
    wanted = sum(map(len, acknowledged.values()))
    for _ in range(int(timeout * 10)):
        if sum(map(len, first_arrivals(receiver, secret).values())) >= wanted:
            return
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_kill_9_mid_stream_loses_no_committed_reply_and_keeps_order(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        with Receiver() as receiver:
            receiver.script("/platform", *[Reply(200, delay=0.005) for _ in range(REPLIES * 2)])
            server = ServiceProcess(url, ADMIN_TOKEN, extra_env=DELIVERY_ENV, log_path=tmp_path / "first.log")
            try:
                await server.ready()
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
                    shop, holders = await setup_shop(http, receiver)
                acknowledged: dict[str, list[str]] = defaultdict(list)
                await reply_all([server.base_url], holders, acknowledged, stop_after=KILL_AFTER)
                server.kill()
            finally:
                server.stop()
            assert KILL_AFTER <= sum(map(len, acknowledged.values())) < REPLIES
            restarted = ServiceProcess(url, ADMIN_TOKEN, extra_env=DELIVERY_ENV, log_path=tmp_path / "second.log")
            try:
                await restarted.ready()
                await reply_all([restarted.base_url], holders, acknowledged)
                assert sum(map(len, acknowledged.values())) == REPLIES
                # Deliveries the killed process held wait for its lock to run out (about 25 s here).
                secret = shop["endpoint"]["secret"]
                await all_arrived(receiver, secret, acknowledged, timeout=120)
            finally:
                restarted.stop()
            arrivals = first_arrivals(receiver, secret)
            # Every acknowledged reply arrived, each conversation's in the order they were committed.
            assert {t: arrivals.get(t, []) for t in acknowledged} == dict(acknowledged)


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL tests skipped: TRIAGE_TEST_POSTGRES_URL is not set")
async def test_two_processes_on_one_postgresql_never_send_one_delivery_twice(tmp_path: Path) -> None:
    async with fresh_database("postgres", tmp_path) as url:
        await upgrade_async(url)
        with Receiver() as receiver:
            # A slow-ish receiver widens the window in which both relays look at the same rows.
            receiver.script("/platform", *[Reply(200, delay=0.02) for _ in range(REPLIES * 2)])
            servers = [ServiceProcess(url, ADMIN_TOKEN, extra_env=DELIVERY_ENV, log_path=tmp_path / f"{n}.log")
                       for n in range(2)]
            try:
                for server in servers:
                    await server.ready()
                async with httpx.AsyncClient(base_url=servers[0].base_url, timeout=30) as http:
                    shop, holders = await setup_shop(http, receiver)
                acknowledged: dict[str, list[str]] = defaultdict(list)
                await reply_all([s.base_url for s in servers], holders, acknowledged)
                secret = shop["endpoint"]["secret"]
                await all_arrived(receiver, secret, acknowledged, timeout=60)
            finally:
                for server in servers:
                    server.stop()
        ids = [verify(r, secret) for r in receiver.at("/platform")]
        assert len(ids) == len(set(ids)) == REPLIES  # each delivery sent once, by one of the two relays
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            # Attempts of one delivery that overlapped in time, or two that both got an answer: none.
            attempts = await connection.fetch(
                "SELECT a.delivery_id FROM delivery_attempts a JOIN delivery_attempts b ON b.delivery_id = a.delivery_id "
                "AND b.id > a.id WHERE b.at - b.duration_ms * interval '1 millisecond' < a.at "
                "OR (a.status_code IS NOT NULL AND b.status_code IS NOT NULL)")
            delivered = await connection.fetchval("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        finally:
            await connection.close()
        assert attempts == [] and delivered == REPLIES
        arrivals = first_arrivals(receiver, secret)
        assert {t: arrivals.get(t, []) for t in acknowledged} == dict(acknowledged)
