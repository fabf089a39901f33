"""Building signed webhook requests the way a shop platform does."""

import json
import time
import uuid
from typing import Any

import httpx

from app.services.signing import sign


def message(text: str, *, conversation: str | None = None, message_id: str | None = None, customer: str = "buyer-1",
            vip: int = 0, sent_at: str = "2026-11-25T08:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"message_id": f"m-{uuid.uuid4().hex[:12]}" if message_id is None else message_id, "conversation_id": conversation or "c-1",
            "sent_at": sent_at, "customer": {"id": customer, "nick": "小王", "vip_level": vip}, "text": text, **extra}


def signed_headers(secret: str, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id=webhook_id, timestamp=timestamp, body=body),
            "content-type": content_type}


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


async def post_signed(client: httpx.AsyncClient, shop_id: str, secret: str, messages: list[dict[str, Any]], *,
                      platform: str = "taobao") -> httpx.Response:
    body = encode({"platform": platform, "messages": messages})
    return await client.post(f"/v1/shops/{shop_id}/webhooks/messages", content=body,
                             headers=signed_headers(secret, body))
