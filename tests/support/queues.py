"""Agents and tickets for the work-queue tests, made through the real API."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.support.webhooks import message, post_signed


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_agent(client: httpx.AsyncClient, admin_headers: dict[str, str], shop_id: str, *,
                    queues: tuple[str, ...] = ("presale", "aftersale", "complaints"), capacity: int = 5,
                    level: str = "senior") -> dict[str, Any]:
    """Create an agent; the answer plus `headers` carrying its token."""
    response = await client.post(f"/v1/shops/{shop_id}/agents", headers=admin_headers,
                                 json={"name": "Agent", "queues": list(queues), "capacity": capacity, "level": level})
    assert response.status_code == 201, response.text
    agent = response.json()
    return {**agent, "headers": bearer(agent["token"])}


async def new_ticket(client: httpx.AsyncClient, shop: dict[str, Any], text: str, *, conversation: str | None = None,
                     customer: str | None = None, **extra: Any) -> str:
    """Post one buyer message through the signed webhook; returns its ticket id."""
    msg = message(text, conversation=conversation or f"c-{uuid.uuid4().hex[:10]}",
                  customer=customer or f"buyer-{uuid.uuid4().hex[:8]}", **extra)
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [msg])
    assert response.status_code == 202, response.text
    return str(response.json()["results"][0]["ticket_id"])


async def claim(client: httpx.AsyncClient, agent: dict[str, Any], *, wait: float = 0) -> httpx.Response:
    return await client.post(f"/v1/agents/me/claim?wait={wait}", headers=agent["headers"])


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, every: float = 0.05) -> None:
    """Poll `check` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(every)
