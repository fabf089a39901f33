"""Planted personal data never reaches a log line, whatever the request carried."""

import logging
from typing import Any

import httpx
import pytest

from app.logs import JsonFormatter
from tests.webhooks import encode, message, post_signed, signed_headers

pytestmark = pytest.mark.asyncio

PLANTED = ["13912345678", "110101199003071234", "buyer.secret@example.com", "6222021234567890123"]


async def test_requests_log_one_json_line_each_without_personal_data(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    shop = await new_shop()
    text = f"我的手机{PLANTED[0]}，身份证{PLANTED[1]}，邮箱{PLANTED[2]}，退款到卡{PLANTED[3]}"
    with caplog.at_level(logging.DEBUG):
        ok = await post_signed(client, shop["id"], shop["webhook_secret"], [message(text)])
        bad = await post_signed(client, shop["id"], shop["webhook_secret"], [message(text, sent_at=PLANTED[0])])
        body = encode({"platform": "taobao", "messages": [message(text)]})
        forged = await client.post(f"/v1/shops/{shop['id']}/webhooks/messages", content=body,
                                   headers={**signed_headers("whsec_AAAA", body), "X-Request-ID": "planted-req"})
        classified = await client.post("/v1/triage/classify", json={"text": text}, headers=admin_headers)
    assert (ok.status_code, bad.status_code, forged.status_code, classified.status_code) == (202, 422, 401, 200)
    for response in (bad, forged):
        assert all(value not in response.text for value in PLANTED)

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    access = [line for line in lines if '"logger": "app.access"' in line]
    assert len(access) == 4
    assert any('"request_id": "planted-req"' in line and '"status": 401' in line for line in access)
    assert all('"route": "/v1/shops/{shop_id}/webhooks/messages"' in line for line in access[:3])
    for line in lines:
        for value in PLANTED:
            assert value not in line
