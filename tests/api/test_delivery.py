"""The outbound channel (SPEC 9.1) against a real receiver on loopback, on both databases: endpoints, signed
deliveries with stable ids, retries, Retry-After, 410, a hanging receiver beside a healthy one, ops resend."""

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.services import delivery
from app.services.delivery import DeliveryPolicy
from tests.conftest import make_settings
from tests.support.queues import claim, eventually, new_agent, new_ticket
from tests.support.receiver import Receiver, Reply, verify

pytestmark = pytest.mark.asyncio

Endpoint = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
async def endpoint(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> AsyncIterator[Endpoint]:
    """Create endpoints; each is deleted after the test, with its deliveries, so no relay keeps retrying them."""
    made: list[tuple[str, str]] = []

    async def create(shop_id: str, url: str, events: tuple[str, ...] = ("reply.created",)) -> dict[str, Any]:
        response = await client.post(f"/v1/shops/{shop_id}/endpoints", headers=admin_headers,
                                     json={"url": url, "events": list(events)})
        assert response.status_code == 201, response.text
        made.append((shop_id, response.json()["id"]))
        return response.json()

    yield create
    for shop_id, endpoint_id in made:
        await client.delete(f"/v1/shops/{shop_id}/endpoints/{endpoint_id}", headers=admin_headers)


async def held_ticket(client: httpx.AsyncClient, admin_headers: dict[str, str], shop: dict[str, Any],
                      text: str = "快递怎么还没到") -> tuple[dict[str, Any], str]:
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, text)
    claimed = await claim(client, agent)
    assert claimed.status_code == 200 and claimed.json()["id"] == ticket_id
    return agent, ticket_id


async def reply(client: httpx.AsyncClient, agent: dict[str, Any], ticket_id: str, text: str) -> dict[str, Any]:
    response = await client.post(f"/v1/tickets/{ticket_id}/replies", headers=agent["headers"], json={"text": text})
    assert response.status_code == 201, response.text
    return response.json()


async def arrived(receiver: Receiver, path: str, count: int, *, timeout: float = 15.0) -> list[Any]:
    async def enough() -> bool:
        return len(receiver.at(path)) >= count
    await eventually(enough, timeout=timeout)
    return receiver.at(path)


def body(received: Any) -> dict[str, Any]:
    return json.loads(received.body)  # type: ignore[no-any-return]


async def test_endpoints_are_created_listed_changed_rotated_and_deleted(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver) -> None:
    shop = await new_shop()
    base = f"/v1/shops/{shop['id']}/endpoints"
    created = await client.post(base, headers=admin_headers, json={
        "url": receiver.url("/a"), "events": ["reply.created", "sla.breached", "reply.created"],
        "description": "platform"})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
    assert endpoint["events"] == ["reply.created", "sla.breached"]
    listed = (await client.get(base, headers=admin_headers)).json()
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]  # shown once only
    path = f"{base}/{endpoint['id']}"
    changed = await client.patch(path, headers=admin_headers, json={"events": ["ticket.escalated"], "enabled": False})
    assert changed.status_code == 200 and changed.json()["events"] == ["ticket.escalated"]
    assert changed.json()["enabled"] is False
    rotated = await client.post(f"{path}/secret", headers=admin_headers, json={"previous_valid_seconds": 60})
    assert rotated.status_code == 201 and rotated.json()["secret"] not in (endpoint["secret"], None)
    assert (await client.get(path, headers=admin_headers)).json()["previous_secret_valid_until"] is not None
    assert (await client.delete(path, headers=admin_headers)).status_code == 204
    gone = await client.get(path, headers=admin_headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "endpoint_not_found"


@pytest.mark.parametrize(("body_", "field"), [
    ({"url": "ftp://example.com/x", "events": ["reply.created"]}, "body.url"),   # not http(s)
    ({"url": "https://example.com/x", "events": []}, "body.events"),            # subscribes to nothing
    ({"url": "https://example.com/x", "events": ["reply.sent"]}, "body.events[0]"),  # no such event
])
async def test_bad_endpoints_are_refused_naming_the_field(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                          new_shop: Any, body_: dict[str, Any], field: str) -> None:
    shop = await new_shop()
    response = await client.post(f"/v1/shops/{shop['id']}/endpoints", headers=admin_headers, json=body_)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]
    assert (await client.get(f"/v1/shops/{shop['id']}/endpoints", headers=admin_headers)).json() == []


async def test_a_reply_reaches_the_receiver_signed_and_verifiable(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    hook = await endpoint(shop["id"], receiver.url("/platform"))
    agent, ticket_id = await held_ticket(client, admin_headers, shop)
    answer = await reply(client, agent, ticket_id, "亲，已经帮您催快递了")
    assert answer["message"]["delivery"] == {"status": "pending", "attempts": 0, "last_error": None}
    [received] = await arrived(receiver, "/platform", 1)
    webhook_id = verify(received, hook["secret"])
    event = body(received)
    assert event["type"] == "reply.created"
    data = event["data"]
    assert data["ticket_id"] == ticket_id and data["text"] == "亲，已经帮您催快递了"
    assert data["message_id"] == answer["message"]["id"] and data["agent_id"] == agent["id"]
    assert data["shop_id"] == shop["id"] and data["platform"] == "taobao"
    assert data["conversation_id"] == answer["ticket"]["conversation_id"]

    async def shown_delivered() -> bool:
        ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
        return ticket["messages"][-1]["delivery"] == {"status": "delivered", "attempts": 1, "last_error": None}
    await eventually(shown_delivered)
    listed = (await client.get(f"/v1/shops/{shop['id']}/deliveries", headers=admin_headers)).json()["deliveries"]
    assert [(d["status"], d["attempts"], d["webhook_id"], d["type"]) for d in listed] == [
        ("delivered", 1, webhook_id, "reply.created")]
    # Inbound messages carry no delivery; a shop without endpoints has none on its replies either.
    ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
    assert ticket["messages"][0]["delivery"] is None


async def test_a_reply_without_an_endpoint_is_stored_with_no_delivery(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent, ticket_id = await held_ticket(client, admin_headers, shop)
    answer = await reply(client, agent, ticket_id, "在的")
    assert answer["message"]["delivery"] is None
    assert (await client.get(f"/v1/shops/{shop['id']}/deliveries", headers=admin_headers)).json()["deliveries"] == []


async def test_failures_are_retried_with_the_same_webhook_id_in_conversation_order(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    hook = await endpoint(shop["id"], receiver.url("/flaky"))
    receiver.script("/flaky", Reply(500), Reply(500), Reply(500))
    agent, ticket_id = await held_ticket(client, admin_headers, shop)
    first = await reply(client, agent, ticket_id, "第一条")
    second = await reply(client, agent, ticket_id, "第二条")
    received = await arrived(receiver, "/flaky", 5)
    await asyncio.sleep(0.5)  # nothing more comes: each failure got exactly one attempt more
    received = receiver.at("/flaky")
    texts = [body(r)["data"]["text"] for r in received]
    ids = [verify(r, hook["secret"]) for r in received]
    # The first reply four times (500, 500, 500, 200), the same id each time; the second only after it.
    assert texts == ["第一条"] * 4 + ["第二条"]
    assert len(set(ids[:4])) == 1 and ids[4] != ids[0]
    assert [r.body for r in received[:4]] == [received[0].body] * 4  # the same body too
    # Backoff: each retry waited longer than the one before (0.2 s doubling, ±20 %).
    gaps = [b.at - a.at for a, b in zip(received, received[1:4], strict=False)]
    assert gaps[0] >= 0.15 and gaps[2] > gaps[0]
    listed = (await client.get(f"/v1/shops/{shop['id']}/deliveries", headers=admin_headers)).json()["deliveries"]
    by_message = {d["message_id"]: d for d in listed}
    detail = (await client.get(f"/v1/shops/{shop['id']}/deliveries/{by_message[first['message']['id']]['id']}",
                               headers=admin_headers)).json()
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 500, 500, 200]
    assert detail["status"] == "delivered" and detail["attempts"] == 4
    assert by_message[second["message"]["id"]]["attempts"] == 1


async def test_429_with_retry_after_waits_that_long(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    await endpoint(shop["id"], receiver.url("/busy"))
    receiver.script("/busy", Reply(429, {"Retry-After": "2"}))
    agent, ticket_id = await held_ticket(client, admin_headers, shop)
    await reply(client, agent, ticket_id, "稍等")
    first, again = await arrived(receiver, "/busy", 2)
    assert again.at - first.at >= 1.9  # not the 0.2 s backoff


async def test_a_hanging_receiver_does_not_delay_another_endpoint(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    await endpoint(shop["id"], receiver.url("/hang"))
    await endpoint(shop["id"], receiver.url("/fine"))
    receiver.script("/hang", *[Reply(200, delay=30) for _ in range(40)])
    agent, _ = await held_ticket(client, admin_headers, shop)
    tickets = [await new_ticket(client, shop, "在吗") for _ in range(11)]
    for _ in tickets:
        assert (await claim(client, agent)).status_code in (200, 409)
    held = [t["id"] for t in (await client.get("/v1/agents/me/tickets", headers=agent["headers"])).json()["tickets"]]
    started = time.monotonic()
    for ticket_id in held:  # more conversations than the hanging endpoint has sends at once
        await reply(client, agent, ticket_id, "您好")
    fine = await arrived(receiver, "/fine", len(held), timeout=4.0)  # the hang is given up only after 5 s
    assert fine[-1].at - started < 4.0
    assert len(receiver.at("/hang")) >= 1  # the hanging one was being tried meanwhile


async def test_410_disables_the_endpoint_and_ops_resend_the_failed_delivery(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    hook = await endpoint(shop["id"], receiver.url("/gone"))
    receiver.script("/gone", Reply(410))
    agent, ticket_id = await held_ticket(client, admin_headers, shop)
    await reply(client, agent, ticket_id, "好的")
    [gone] = await arrived(receiver, "/gone", 1)
    base = f"/v1/shops/{shop['id']}"

    async def disabled() -> bool:
        return (await client.get(f"{base}/endpoints/{hook['id']}", headers=admin_headers)).json()["enabled"] is False
    await eventually(disabled)
    [failed] = (await client.get(f"{base}/deliveries?status=failed", headers=admin_headers)).json()["deliveries"]
    assert failed["last_status"] == 410
    ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
    assert ticket["messages"][-1]["delivery"]["status"] == "failed"
    # Resent while the endpoint is off: it waits; enabled again, it goes with the same webhook-id.
    resent = await client.post(f"{base}/deliveries/{failed['id']}/retry", headers=admin_headers)
    assert resent.status_code == 200 and resent.json()["status"] == "pending"
    again = await client.post(f"{base}/deliveries/{failed['id']}/retry", headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "delivery_not_failed"
    enabled = await client.patch(f"{base}/endpoints/{hook['id']}", headers=admin_headers, json={"enabled": True})
    assert enabled.json()["disabled_reason"] is None
    _, second = await arrived(receiver, "/gone", 2)
    assert verify(second, hook["secret"]) == verify(gone, hook["secret"]) == failed["webhook_id"]
    missing = await client.post(f"{base}/deliveries/999999999/retry", headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "delivery_not_found"


@pytest.fixture
async def guarded_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An app without TRIAGE_DELIVERY_ALLOW_PRIVATE, as in production."""
    application: FastAPI = create_app(make_settings(database_url, delivery_allow_private=False))
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://test") as http:
        yield http


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook",         # loopback
    "https://10.0.0.1/hook",              # private
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[::1]/hook",                  # IPv6 loopback
    "http://[::ffff:10.0.0.1]/hook",      # a private IPv4 address written as IPv6
    "http://100.100.100.200/",            # Alibaba Cloud's metadata (shared address space)
    "http://localhost:9/hook",            # a name resolving to loopback
])
async def test_private_addresses_are_refused_without_the_setting(
        guarded_client: httpx.AsyncClient, admin_headers: dict[str, str], url: str) -> None:
    shop_id = f"shop-{uuid.uuid4().hex[:10]}"
    assert (await guarded_client.post("/v1/shops", headers=admin_headers,
                                      json={"id": shop_id, "name": "S"})).status_code == 201
    response = await guarded_client.post(f"/v1/shops/{shop_id}/endpoints", headers=admin_headers,
                                         json={"url": url, "events": ["reply.created"]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == "body.url" and "not allowed" in error["details"][0]["reason"]


async def test_the_address_is_checked_again_when_connecting(receiver: Receiver) -> None:
    # An endpoint set while allowed (or whose name now answers a private address) is refused at send time.
    item = {"type": "reply.created", "created_at": delivery.utcnow(), "data": {}, "event_id": 1,
            "secret": "whsec_" + "A" * 32, "previous_secret": None, "previous_valid_until": None,
            "url": receiver.url("/never")}
    guarded, allowing = DeliveryPolicy(allow_private=False), DeliveryPolicy(allow_private=True)
    async with delivery.new_pool(guarded) as pool:
        answer = await delivery.send(pool, item, policy=guarded, now=delivery.utcnow())
        assert answer.kind == "refused" and "127.0.0.1" in (answer.error or "")
    async with delivery.new_pool(allowing) as pool:
        allowed = await delivery.send(pool, item, policy=allowing, now=delivery.utcnow())
        assert allowed.status_code == 200
    assert len(receiver.at("/never")) == 1  # only the allowed one arrived


@pytest.fixture(scope="module")
def localhost_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name localhost (made by openssl, valid a day)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    if socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    return certificate, key


async def test_https_connects_to_the_checked_address_and_verifies_the_name(
        localhost_certificate: tuple[Path, Path]) -> None:
    certificate, _ = localhost_certificate
    policy = DeliveryPolicy(allow_private=True)
    with Receiver(tls=localhost_certificate) as receiver:
        item = {"type": "reply.created", "created_at": delivery.utcnow(), "data": {}, "event_id": 3,
                "secret": "whsec_" + "A" * 32, "previous_secret": None, "previous_valid_until": None,
                "url": f"https://localhost:{receiver.port}/secure"}
        trusting = ssl.create_default_context(cafile=str(certificate))
        async with delivery.new_pool(policy, trusting) as pool:
            answers = [await delivery.send(pool, item, policy=policy, now=delivery.utcnow()) for _ in range(2)]
            # The certificate names localhost, not the address the name resolved to.
            by_address = await delivery.send(pool, {**item, "url": f"https://127.0.0.1:{receiver.port}/secure"},
                                             policy=policy, now=delivery.utcnow())
        async with delivery.new_pool(policy) as pool:  # the system's authorities do not know this certificate
            untrusted = await delivery.send(pool, item, policy=policy, now=delivery.utcnow())
        arrived = receiver.at("/secure")
    assert [a.status_code for a in answers] == [200, 200]
    assert by_address.kind == untrusted.kind == "error" and "certificate" in (untrusted.error or "").lower()
    assert len(arrived) == 2 and arrived[0].headers["host"] == f"localhost:{receiver.port}"


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.script("/moved", Reply(307, {"Location": receiver.url("/elsewhere")}))
    item = {"type": "reply.created", "created_at": delivery.utcnow(), "data": {}, "event_id": 2,
            "secret": "whsec_" + "A" * 32, "previous_secret": None, "previous_valid_until": None,
            "url": receiver.url("/moved")}
    policy = DeliveryPolicy(allow_private=True)
    async with delivery.new_pool(policy) as pool:
        answer = await delivery.send(pool, item, policy=policy, now=delivery.utcnow())
    assert answer.status_code == 307 and receiver.at("/elsewhere") == []
    result = delivery.outcome(answer, item={"attempts": 0, "started_at": delivery.utcnow()},
                              now=delivery.utcnow(), duration_ms=1, policy=policy)
    assert result["status"] == "pending"  # a redirect is a failure to retry, not a success


async def test_metrics_count_deliveries_attempts_latency_and_the_oldest_pending(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    fine = await endpoint(shop["id"], receiver.url("/m-fine"))
    stuck = await endpoint(shop["id"], receiver.url("/m-stuck"))
    receiver.script("/m-stuck", *[Reply(500) for _ in range(100)])
    agent, ticket_id = await held_ticket(client, admin_headers, shop)
    await reply(client, agent, ticket_id, "好的")
    await arrived(receiver, "/m-fine", 1)
    await arrived(receiver, "/m-stuck", 2)

    async def counted() -> bool:
        samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in text_string_to_metric_families((await client.get("/metrics")).text)
                   for sample in family.samples}

        def value(name: str, endpoint_id: str, **labels: str) -> float | None:
            key = tuple(sorted({"shop": shop["id"], "endpoint": endpoint_id, **labels}.items()))
            return samples.get((name, key))
        return (value("triage_deliveries_total", fine["id"], outcome="delivered") == 1
                and value("triage_delivery_attempts_total", fine["id"], outcome="2xx") == 1
                and value("triage_delivery_latency_seconds_count", fine["id"]) == 1
                and (value("triage_delivery_attempts_total", stuck["id"], outcome="5xx") or 0) >= 2
                and (value("triage_delivery_oldest_pending_seconds", stuck["id"]) or -1) >= 0
                and value("triage_delivery_oldest_pending_seconds", fine["id"]) is None)
    await eventually(counted)
