"""/metrics after a scripted session: names, labels and values; several processes in multiprocess mode."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from app.clock import utcnow
from app.db.models import Ticket
from tests.support.queues import claim, eventually, new_agent
from tests.support.webhooks import encode, message, post_signed, signed_headers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def set_ticket(app: FastAPI, ticket_id: str, **values: Any) -> None:
    async with app.state.sessionmaker() as session:
        await session.execute(update(Ticket).where(Ticket.id == ticket_id).values(**values))
        await session.commit()


async def test_a_scripted_session_shows_in_the_metrics(app: FastAPI, client: httpx.AsyncClient,
                                                       admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    sid, secret = shop["id"], shop["webhook_secret"]
    agent = await new_agent(client, admin_headers, sid)
    before = await scrape(client)

    threat = message("再不发货就给差评", conversation="c-threat")
    refund = message("我要退货", conversation="c-refund")
    assert (await post_signed(client, sid, secret, [threat, refund])).status_code == 202
    assert (await post_signed(client, sid, secret, [threat])).status_code == 202  # a resend: duplicate
    body = encode({"platform": "taobao", "messages": [message("hi")]})
    forged = await client.post(f"/v1/shops/{sid}/webhooks/messages", content=body,
                               headers=signed_headers("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", body))
    assert forged.status_code == 401
    unsigned = await client.post(f"/v1/shops/{sid}/webhooks/messages", content=body,
                                 headers={"content-type": "application/json"})
    assert unsigned.status_code == 401

    # The P1 ticket is claimed first; its due time is put in the past, so the reply is a breach.
    first = (await claim(client, agent)).json()
    assert first["tier"] == "P1"
    await set_ticket(app, first["id"], first_response_due_at=utcnow() - timedelta(seconds=1))
    replied = await client.post(f"/v1/tickets/{first['id']}/replies", json={"text": "您好"}, headers=agent["headers"])
    assert replied.status_code == 201
    moved = await client.post(f"/v1/tickets/{first['id']}/transfer", headers=agent["headers"],
                              json={"queue": "escalations", "reason": "supervisor"})
    assert moved.status_code == 200, moved.text
    # The P2 ticket is claimed and its lease made to run out; the app's reaper puts it back.
    second = (await claim(client, agent)).json()
    assert second["queue"] == "aftersale"
    await set_ticket(app, second["id"], lease_expires_at=utcnow() - timedelta(seconds=1))

    async def requeued() -> bool:
        ticket = (await client.get(f"/v1/tickets/{second['id']}", headers=admin_headers)).json()
        return bool(ticket["status"] == "queued")

    await eventually(requeued)
    assert (await client.get(f"/v1/shops/{sid}/no-such-thing/{uuid.uuid4().hex}")).status_code == 404
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("triage_messages_ingested_total", shop=sid, tier="P1", intent="bad_review_threat") == 1
    assert delta("triage_messages_ingested_total", shop=sid, tier="P2", intent="return_refund") == 1
    assert delta("triage_messages_duplicate_total", shop=sid) == 1
    assert delta("triage_webhook_rejections_total", reason="invalid_signature") >= 1
    assert delta("triage_webhook_rejections_total", reason="missing_signature_headers") >= 1
    assert delta("triage_claims_total", shop=sid, queue="complaints") == 1
    assert delta("triage_claims_total", shop=sid, queue="aftersale") == 1
    assert delta("triage_transfers_total", shop=sid, to_queue="escalations") == 1
    assert delta("triage_lease_expiries_total", shop=sid, queue="aftersale") == 1
    assert delta("triage_first_response_seconds_count", shop=sid, tier="P1") == 1
    assert 0 <= delta("triage_first_response_seconds_sum", shop=sid, tier="P1") < 60
    assert delta("triage_first_response_seconds_bucket", shop=sid, tier="P1", le="+Inf") == 1
    assert delta("triage_sla_breaches_total", shop=sid, tier="P1") == 1

    # Gauges from the database: the transferred ticket waits in escalations, the expired one in aftersale.
    assert value(after, "triage_queue_depth", shop=sid, queue="escalations", tier="P1") == 1
    assert value(after, "triage_queue_depth", shop=sid, queue="aftersale", tier="P2") == 1
    assert value(after, "triage_queue_depth", shop=sid, queue="presale", tier="P4") == 0
    assert 0 < value(after, "triage_queue_oldest_wait_seconds", shop=sid, queue="aftersale") < 600
    assert value(after, "triage_queue_oldest_wait_seconds", shop=sid, queue="presale") == 0
    assert ("triage_queue_oldest_wait_seconds", frozenset({("shop", sid), ("queue", "complaints")})) in after

    webhook = {"route": "/v1/shops/{shop_id}/webhooks/messages", "method": "POST"}
    assert delta("triage_http_request_duration_seconds_count", **webhook, status="2xx") == 2
    assert delta("triage_http_request_duration_seconds_count", **webhook, status="4xx") == 2
    assert delta("triage_http_request_duration_seconds_count", route="<unmatched>", method="GET", status="4xx") >= 1
    routes = {dict(labels).get("route", "") for name, labels in after if name.startswith("triage_http_request")}
    assert not any(sid in route for route in routes)  # templates, never raw paths


async def test_gauges_need_no_process_state(app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    assert (await post_signed(client, shop["id"], shop["webhook_secret"], [message("请问这款还有货吗")])).status_code == 202
    samples = await scrape(client)
    assert value(samples, "triage_queue_depth", shop=shop["id"], queue="presale", tier="P4") == 1
    assert value(samples, "triage_first_response_overdue", shop=shop["id"], queue="presale", tier="P4") == 0


WORKER = """
from app import metrics
metrics.webhook_rejected("invalid_signature")
metrics.request_done("/healthz", "GET", 200, 0.01)
"""
SCRAPER = """
import sys
from app import metrics
sys.stdout.write(metrics.exposition([]).decode())
"""


def test_multiprocess_mode_sums_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, cwd=Path(__file__).parents[2])
    text = subprocess.run([sys.executable, "-c", SCRAPER], env=env, check=True, capture_output=True, text=True,
                          cwd=Path(__file__).parents[2]).stdout
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert value(samples, "triage_webhook_rejections_total", reason="invalid_signature") == 2
    assert value(samples, "triage_http_request_duration_seconds_count", route="/healthz", method="GET",
                 status="2xx") == 2
