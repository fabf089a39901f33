"""kill -9 in the middle of a burst: every message answered 202 is stored, and resending stores nothing twice."""

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import upgrade_async
from app.db.models import Message, Ticket
from tests.support.serving import ServiceProcess
from tests.support import ADMIN_TOKEN, BACKENDS, fresh_database
from tests.support.webhooks import encode, signed_headers

# slow: `make test-fast` leaves it out; `make test` runs it.
pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

TOTAL = 5_000
PER_REQUEST = 5
SENDERS = 16
KILL_AFTER = 2_000  # acknowledged messages before the kill


def batches(shop_tag: str) -> list[list[dict[str, Any]]]:
    texts = ["快递怎么还没到", "再不发货就差评", "我要退款", "这个有货吗", "質量太差了，壞了", "refund please",
             "I will report you to 12315", "谢谢亲"]
    messages = [{"message_id": f"{shop_tag}-{i}", "conversation_id": f"c-{i % 400}",
                 "sent_at": "2026-11-25T08:00:00Z", "customer": {"id": f"b-{i % 400}", "vip_level": i % 3},
                 "text": texts[i % len(texts)]} for i in range(TOTAL)]
    return [messages[i:i + PER_REQUEST] for i in range(0, TOTAL, PER_REQUEST)]


async def send_all(base_url: str, shop_id: str, secret: str, work: list[list[dict[str, Any]]],
                   acknowledged: set[str], *, kill_at: int | None = None, kill: Any = None) -> None:
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in work:
        queue.put_nowait(batch)
    killed = asyncio.Event()

    async def sender(http: httpx.AsyncClient) -> None:
        while not queue.empty() and not killed.is_set():
            batch = queue.get_nowait()
            body = encode({"platform": "taobao", "messages": batch})
            try:
                response = await http.post(f"/v1/shops/{shop_id}/webhooks/messages", content=body,
                                           headers=signed_headers(secret, body))
            except httpx.TransportError:
                continue  # the server died under us: this batch was never acknowledged
            if response.status_code == 202:
                acknowledged.update(m["message_id"] for m in batch)
                if kill_at is not None and len(acknowledged) >= kill_at and not killed.is_set():
                    killed.set()
                    kill()

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await asyncio.gather(*[sender(http) for _ in range(SENDERS)])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_kill_9_loses_no_acknowledged_message(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        server = ServiceProcess(url, ADMIN_TOKEN)
        await asyncio.to_thread(server.wait_ready)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        shop_id = f"crash-{uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            shop = (await http.post("/v1/shops", json={"id": shop_id, "name": "Crash"}, headers=admin)).json()
        work = batches(shop_id)

        acknowledged: set[str] = set()
        await send_all(server.base_url, shop_id, shop["webhook_secret"], work, acknowledged,
                       kill_at=KILL_AFTER, kill=server.kill)
        assert server.process.returncode is not None, "the server was not killed"
        assert KILL_AFTER <= len(acknowledged) < TOTAL

        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                stored = set((await connection.scalars(select(Message.external_id)
                                                       .where(Message.shop_id == shop_id))).all())
            assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged messages were lost"

            restarted = ServiceProcess(url, ADMIN_TOKEN)
            await asyncio.to_thread(restarted.wait_ready)
            try:
                resent: set[str] = set()
                await send_all(restarted.base_url, shop_id, shop["webhook_secret"], work, resent)
                assert len(resent) == TOTAL
            finally:
                restarted.stop()

            async with engine.connect() as connection:
                count = await connection.scalar(select(func.count()).select_from(Message)
                                                .where(Message.shop_id == shop_id))
                distinct = await connection.scalar(select(func.count(func.distinct(Message.external_id)))
                                                   .where(Message.shop_id == shop_id))
                tickets = await connection.scalar(select(func.count()).select_from(Ticket)
                                                  .where(Ticket.shop_id == shop_id))
                orphans = await connection.scalar(
                    select(func.count()).select_from(Ticket)
                    .where(Ticket.shop_id == shop_id, ~Ticket.id.in_(select(Message.ticket_id))))
        finally:
            await engine.dispose()
        assert count == distinct == TOTAL
        assert tickets == 400 and orphans == 0
