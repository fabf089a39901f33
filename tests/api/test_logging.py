"""Planted personal data never reaches a log line, whatever the request carried."""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.logs import JsonFormatter
from tests.support import ADMIN_TOKEN
from tests.support.webhooks import encode, message, post_signed, signed_headers

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


@contextmanager
def every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every logger, SQLAlchemy's engine included, emits DEBUG records into caplog for the block."""
    loggers = [logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    saved = [(logger, logger.level, logger.propagate, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.propagate, logger.disabled = True, False
    try:
        with caplog.at_level(logging.DEBUG):
            yield
    finally:
        for logger, level, propagate, disabled in saved:
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


async def test_tokens_and_secrets_never_reach_a_log_record(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    wrong_admin, wrong_agent = "adm_planted-wrong-admin-token", "agt_planted-wrong-agent-token"
    with every_logger_at_debug(caplog):
        shop = (await client.post("/v1/shops", json={"id": f"logs-{uuid.uuid4().hex[:8]}", "name": "Logs"},
                                  headers=admin_headers)).json()
        base = f"/v1/shops/{shop['id']}"
        rotated = (await client.post(f"{base}/webhook-secrets", headers=admin_headers)).json()
        agent = (await client.post(f"{base}/agents", json={"name": "Lin", "queues": ["presale"]},
                                   headers=admin_headers)).json()
        accepted = await post_signed(client, shop["id"], rotated["webhook_secret"], [message("在吗")])
        own = await client.get("/v1/queues", headers={"Authorization": f"Bearer {agent['token']}"})
        refused = [
            await client.get("/v1/shops", headers={"Authorization": f"Bearer {wrong_admin}"}),
            await client.get("/v1/shops", headers={"Authorization": f"Bearer {agent['token']}"}),  # wrong kind
            await client.get("/v1/agents/me/tickets", headers={"Authorization": f"Bearer {wrong_agent}"}),
            await client.get("/v1/agents/me/tickets", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}),
            await post_signed(client, shop["id"], "whsec_" + rotated["webhook_secret"][6:][::-1], [message("在吗")]),
        ]
    assert (accepted.status_code, own.status_code) == (202, 200), (accepted.text, own.text)
    assert [r.status_code for r in refused] == [401, 401, 401, 401, 401]

    secrets = [shop["webhook_secret"], rotated["webhook_secret"], agent["token"], ADMIN_TOKEN, wrong_admin, wrong_agent]
    # The key part alone (after the prefix) is as secret as the whole.
    secrets += [value.split("_", 1)[1] for value in secrets]
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)  # the SQL log was captured too
    formatter = JsonFormatter()
    for record in caplog.records:
        rendered = formatter.format(record) + repr(vars(record))
        for secret in secrets:
            assert secret not in rendered, (record.name, record.getMessage()[:200])
