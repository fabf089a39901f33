"""Webhook ingestion on both databases: trust, validation, idempotency, tickets and their re-ranking."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.clock import utcnow
from app.db.models import Customer, Message, Ticket, TicketEvent
from app.schemas.webhooks import IngestedMessage
from app.services import webhooks as webhook_service
from app.services.signing import sign
from tests.support.webhooks import encode, message, post_signed, signed_headers

pytestmark = pytest.mark.asyncio


def url(shop_id: str) -> str:
    return f"/v1/shops/{shop_id}/webhooks/messages"


async def count_messages(app: FastAPI, shop_id: str) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Message).where(Message.shop_id == shop_id)))


async def test_valid_webhook_is_stored_and_answered_after_commit(app: FastAPI, new_shop: Any) -> None:
    shop = await new_shop()
    msg = message("亲，快递三天没动了，再不到就给差评", order_id="o-9")
    # httpx waits for the whole app before it returns, so checking afterwards proves nothing: the rows
    # are read through a separate connection at the moment the 202 status line is sent.
    engine = create_async_engine(app.state.settings.database_url)
    seen_at_start: list[tuple[Any, Any]] = []

    async def read_rows() -> tuple[Any, Any]:
        async with engine.connect() as connection:
            row = (await connection.execute(select(Message.ticket_id, Message.text, Message.order_id)
                                            .where(Message.external_id == msg["message_id"]))).one_or_none()
            ticket = None if row is None else (await connection.execute(
                select(Ticket).where(Ticket.id == row.ticket_id))).one_or_none()
        return row, ticket

    async def checking_app(scope: Any, receive: Any, send: Any) -> None:
        async def send_after_reading(event: Any) -> None:
            if event["type"] == "http.response.start" and event["status"] == 202:
                seen_at_start.append(await read_rows())
            await send(event)
        await app(scope, receive, send_after_reading)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=checking_app), base_url="http://test") as http:
            response = await post_signed(http, shop["id"], shop["webhook_secret"], [msg])
    finally:
        await engine.dispose()
    assert response.status_code == 202, response.text
    [result] = response.json()["results"]
    assert result["message_id"] == msg["message_id"] and result["duplicate"] is False
    assert (result["primary"], result["tier"], result["queue"]) == ("bad_review_threat", "P1", "complaints")
    assert 700 <= result["priority"] <= 999

    [(row, ticket)] = seen_at_start
    assert row is not None and ticket is not None, "202 was sent before the rows were committed"
    assert row.ticket_id == result["ticket_id"] and row.text == msg["text"] and row.order_id == "o-9"
    assert ticket.queue == "complaints" and ticket.status == "queued" and ticket.tier == 1


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda h, b: {**h, "webhook-signature": "v1," + "A" * 44}, "invalid_signature"),      # wrong signature
    (lambda h, b: {**h, "webhook-id": h["webhook-id"] + "x"}, "invalid_signature"),      # tampered id
    (lambda h, b: {k: v for k, v in h.items() if k != "webhook-signature"}, "missing_signature_headers"),
    (lambda h, b: {k: v for k, v in h.items() if k != "webhook-id"}, "missing_signature_headers"),
    (lambda h, b: {k: v for k, v in h.items() if k != "webhook-timestamp"}, "missing_signature_headers"),
    (lambda h, b: {**h, "webhook-timestamp": "yesterday"}, "invalid_timestamp"),
    (lambda h, b: {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, "invalid_signature"),
    (lambda h, b: {**h, "webhook-signature": "garbage"}, "invalid_signature"),
])
async def test_untrusted_webhooks_are_401_and_store_nothing(app: FastAPI, client: httpx.AsyncClient, new_shop: Any,
                                                            mutate: Any, code: str) -> None:
    shop = await new_shop()
    body = encode({"platform": "taobao", "messages": [message("退款")]})
    headers = mutate(signed_headers(shop["webhook_secret"], body), body)
    response = await client.post(url(shop["id"]), content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert await count_messages(app, shop["id"]) == 0


async def test_tampered_body_and_wrong_secret_are_refused(app: FastAPI, client: httpx.AsyncClient,
                                                          new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    body = encode({"platform": "taobao", "messages": [message("退款")]})
    tampered = body.replace("退款".encode(), "差评".encode())
    headers = signed_headers(shop["webhook_secret"], body)
    assert (await client.post(url(shop["id"]), content=tampered, headers=headers)).status_code == 401
    foreign = signed_headers(other["webhook_secret"], body)
    assert (await client.post(url(shop["id"]), content=body, headers=foreign)).status_code == 401
    assert await count_messages(app, shop["id"]) == 0


@pytest.mark.parametrize(("skew", "accepted"), [
    (-300, True),    # exactly 300 s old is still accepted
    (300, True),     # exactly 300 s ahead too
    (-301, False),   # stale
    (301, False),    # from the future
])
async def test_timestamp_tolerance(client: httpx.AsyncClient, new_shop: Any, monkeypatch: pytest.MonkeyPatch,
                                   skew: int, accepted: bool) -> None:
    shop = await new_shop()
    # The server clock is frozen at the last microsecond of a second, where a ticking clock would move
    # the boundary between signing and checking; the timestamp is signed relative to that instant.
    frozen = utcnow().replace(microsecond=999_999)
    monkeypatch.setattr(webhook_service, "utcnow", lambda: frozen)
    body = encode({"platform": "taobao", "messages": [message("在吗")]})
    headers = signed_headers(shop["webhook_secret"], body, timestamp=int(frozen.timestamp()) + skew)
    response = await client.post(url(shop["id"]), content=body, headers=headers)
    assert response.status_code == (202 if accepted else 401), response.text
    if not accepted:
        assert response.json()["error"]["code"] == "timestamp_out_of_tolerance"


async def test_several_signatures_and_rotation_overlap(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                       new_shop: Any) -> None:
    shop = await new_shop()
    old = shop["webhook_secret"]
    new = (await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", headers=admin_headers)).json()["webhook_secret"]
    for secret in (old, new):  # both verify inside the overlap window
        response = await post_signed(client, shop["id"], secret, [message("在吗")])
        assert response.status_code == 202, response.text
    body = encode({"platform": "taobao", "messages": [message("在吗")]})
    headers = signed_headers(new, body)
    ts, wid = int(headers["webhook-timestamp"]), headers["webhook-id"]
    headers["webhook-signature"] = (f"v1,{'B' * 44} v1a,whatever "
                                    f"{sign(old, msg_id=wid, timestamp=ts, body=body)}")
    assert (await client.post(url(shop["id"]), content=body, headers=headers)).status_code == 202


async def test_unknown_shop_is_404(client: httpx.AsyncClient) -> None:
    body = encode({"platform": "taobao", "messages": [message("在吗")]})
    response = await client.post(url("no-such-shop"), content=body, headers=signed_headers("whsec_AAAA", body))
    assert response.status_code == 404 and response.json()["error"]["code"] == "shop_not_found"


async def test_batch_of_100_and_101(app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    batch = [message(f"第{i}个问题：这个有货吗", conversation=f"c-{i % 7}") for i in range(100)]
    response = await post_signed(client, shop["id"], shop["webhook_secret"], batch)
    assert response.status_code == 202
    assert [r["message_id"] for r in response.json()["results"]] == [m["message_id"] for m in batch]
    assert len({r["ticket_id"] for r in response.json()["results"]}) == 7
    too_many = [message("在吗") for _ in range(101)]
    response = await post_signed(client, shop["id"], shop["webhook_secret"], too_many)
    assert response.status_code == 422
    assert "body.messages" in [d["field"] for d in response.json()["error"]["details"]]
    assert await count_messages(app, shop["id"]) == 100


async def test_empty_batch_is_422_naming_messages(client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["body.messages"]


async def test_oversize_not_json_and_wrong_content_type(app: FastAPI, client: httpx.AsyncClient,
                                                        new_shop: Any) -> None:
    shop = await new_shop()
    secret = shop["webhook_secret"]
    big = encode({"platform": "taobao", "messages": [message("x" * 9000) for _ in range(30)]})
    assert len(big) > 256 * 1024
    response = await client.post(url(shop["id"]), content=big, headers=signed_headers(secret, big))
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    # No Content-Length: the limit must hold while reading. httpx pulls a chunk only when the app asks
    # for one, so counting pulls shows where the server stopped: just past 256 KiB of a 4 MiB body.
    pulled = 0

    async def chunked() -> Any:
        nonlocal pulled
        for _ in range(512):
            pulled += 1
            yield b"x" * 8192
    response = await client.post(url(shop["id"]), content=chunked(), headers=signed_headers(secret, b""))
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert 32 < pulled <= 34, pulled

    not_json = b"{platform: taobao"
    response = await client.post(url(shop["id"]), content=not_json, headers=signed_headers(secret, not_json))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"

    body = encode({"platform": "taobao", "messages": [message("在吗")]})
    response = await client.post(url(shop["id"]), content=body,
                                 headers=signed_headers(secret, body, content_type="text/plain"))
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    assert await count_messages(app, shop["id"]) == 0


@pytest.mark.parametrize(("messages", "field"), [
    ([message("在吗", message_id="")], "body.messages[0].message_id"),
    ([message("")], "body.messages[0].text"),
    ([message("x" * 10_001)], "body.messages[0].text"),
    ([message("在吗"), message("a\u0000b")], "body.messages[1].text"),
    ([message("在吗", sent_at="2026-11-25T08:00:00")], "body.messages[0].sent_at"),   # no zone
    ([message("在吗", sent_at="yesterday")], "body.messages[0].sent_at"),
    ([message("在吗", sent_at="1764057600")], "body.messages[0].sent_at"),         # unix seconds, not RFC 3339
    ([message("在吗", vip=11)], "body.messages[0].customer.vip_level"),
    ([message("在吗", status="resolved")], "body.messages[0].status"),              # unknown field
    ([{k: v for k, v in message("在吗").items() if k != "customer"}], "body.messages[0].customer"),
])
async def test_schema_errors_name_fields_and_store_nothing(app: FastAPI, client: httpx.AsyncClient, new_shop: Any,
                                                           messages: list[dict[str, Any]], field: str) -> None:
    shop = await new_shop()
    good_first = [message("这个有货吗"), *messages]
    response = await post_signed(client, shop["id"], shop["webhook_secret"], good_first)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    fields = [d["field"] for d in response.json()["error"]["details"]]
    expected = field.replace("messages[1]", "messages[2]").replace("messages[0]", "messages[1]")
    assert expected in fields, fields
    assert await count_messages(app, shop["id"]) == 0


@pytest.mark.parametrize("text", [
    "a\ud800b",      # a lone high surrogate
    "\udc00",        # a lone low surrogate
    "\ude00\ud83d",  # both halves, in the wrong order
])
async def test_lone_surrogate_escapes_are_422_naming_the_field(app: FastAPI, client: httpx.AsyncClient,
                                                               new_shop: Any, text: str) -> None:
    shop = await new_shop()
    # ensure_ascii writes the "\ud800" escape a platform would send: valid JSON, not storable text.
    body = json.dumps({"platform": "taobao", "messages": [message("在吗"), message(text)]}).encode()
    assert b"\\ud" in body
    response = await client.post(url(shop["id"]), content=body, headers=signed_headers(shop["webhook_secret"], body))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["body.messages[1].text"]
    assert await count_messages(app, shop["id"]) == 0


async def test_emoji_traditional_and_long_texts(client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    texts = ["😡😡😡 ★☆☆☆☆ 再不發貨就給差評", "請問幾時可以退貨？", "長" * 9_990 + "給差評"]
    response = await post_signed(client, shop["id"], shop["webhook_secret"],
                                 [message(t, conversation=f"c-{i}") for i, t in enumerate(texts)])
    assert response.status_code == 202
    results = response.json()["results"]
    assert results[0]["tier"] == "P1" and results[2]["tier"] == "P1"
    assert results[1]["primary"] == "return_refund"


async def test_exactly_10000_characters_with_4_byte_emoji_are_stored_unchanged(
        app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    # Characters, not bytes or UTF-16 units: 😡 and 𠮷 are one character and four UTF-8 bytes each.
    text = ("😡𠮷" * 2_500 + "给差评在吗" * 1_000)[:10_000]
    assert len(text) == 10_000 and len(text.encode()) > 20_000
    msg = message(text)
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [msg])
    assert response.status_code == 202, response.text
    async with app.state.sessionmaker() as session:
        stored = await session.scalar(select(Message.text).where(Message.shop_id == shop["id"],
                                                                 Message.external_id == msg["message_id"]))
    assert stored == text

    too_long = await post_signed(client, shop["id"], shop["webhook_secret"], [message(text + "😡")])
    assert too_long.status_code == 422
    assert [d["field"] for d in too_long.json()["error"]["details"]] == ["body.messages[0].text"]
    assert await count_messages(app, shop["id"]) == 1


async def test_replays_answer_the_original_with_duplicate_true(app: FastAPI, client: httpx.AsyncClient,
                                                               new_shop: Any) -> None:
    shop = await new_shop()
    msg = message("我要退款")
    first = (await post_signed(client, shop["id"], shop["webhook_secret"], [msg])).json()["results"][0]
    # A retry days later comes with a fresh timestamp and webhook id; same message id, same answer.
    again = (await post_signed(client, shop["id"], shop["webhook_secret"], [msg, msg])).json()["results"]
    assert [r["duplicate"] for r in again] == [True, True]
    assert all({**r, "duplicate": False} == first for r in again)
    assert await count_messages(app, shop["id"]) == 1


async def test_fifty_concurrent_identical_posts_store_one_message(app: FastAPI, client: httpx.AsyncClient,
                                                                  new_shop: Any) -> None:
    shop = await new_shop()
    body = encode({"platform": "taobao", "messages": [message("质量太差了，坏了")]})
    responses = await asyncio.gather(*[
        client.post(url(shop["id"]), content=body, headers=signed_headers(shop["webhook_secret"], body))
        for _ in range(50)])
    assert all(r.status_code == 202 for r in responses)
    results = [r.json()["results"][0] for r in responses]
    assert sum(not r["duplicate"] for r in results) == 1
    assert len({r["ticket_id"] for r in results}) == 1
    assert await count_messages(app, shop["id"]) == 1
    async with app.state.sessionmaker() as session:
        tickets = await session.scalar(select(func.count()).select_from(Ticket).where(Ticket.shop_id == shop["id"]))
    assert tickets == 1


async def events_of(app: FastAPI, ticket_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(select(TicketEvent.kind, TicketEvent.data)
                                     .where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))
        return [(kind, data) for kind, data in rows]


async def ticket_of(app: FastAPI, ticket_id: str) -> Ticket:
    async with app.state.sessionmaker() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


async def test_escalation_sequence_reranks_one_ticket(app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    steps = ["快递怎么还没到，物流三天没动了", "再不到我就给差评", "你们再拖我就打12315投诉"]
    tiers, ticket_ids = [], set()
    for text in steps:
        result = (await post_signed(client, shop["id"], shop["webhook_secret"],
                                    [message(text, conversation="c-esc")])).json()["results"][0]
        ticket_ids.add(result["ticket_id"])
        ticket = await ticket_of(app, result["ticket_id"])
        tiers.append((ticket.tier, ticket.queue, ticket.primary_intent))
    assert len(ticket_ids) == 1
    assert tiers == [(3, "aftersale", "logistics"), (1, "complaints", "bad_review_threat"),
                     (1, "complaints", "rights_protection")]
    kinds = [kind for kind, _ in await events_of(app, ticket_ids.pop())]
    assert kinds == ["message_received", "created", "message_received", "reranked", "routed",
                     "message_received", "reranked"]


async def test_priority_never_drops_while_open(app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    first = (await post_signed(client, shop["id"], shop["webhook_secret"],
                               [message("再不发货我就给差评", conversation="c-x")])).json()["results"][0]
    await post_signed(client, shop["id"], shop["webhook_secret"], [message("谢谢亲", conversation="c-x")])
    ticket = await ticket_of(app, first["ticket_id"])
    assert ticket.tier == 1 and ticket.priority == first["priority"] and ticket.unread == 2


async def test_held_ticket_is_flagged_escalated_and_keeps_its_agent(app: FastAPI, client: httpx.AsyncClient,
                                                                    new_shop: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from app.db.models import Agent

    shop = await new_shop()
    first = (await post_signed(client, shop["id"], shop["webhook_secret"],
                               [message("请问这个有货吗", conversation="c-held")])).json()["results"][0]
    async with app.state.sessionmaker() as session:
        agent = Agent(id=f"agent-{first['ticket_id'][:8]}", shop_id=shop["id"], name="A", level="mid", capacity=5,
                      token_hash=first["ticket_id"].replace("-", "") + "0" * 28, active=True, created_at=utcnow())
        session.add(agent)
        await session.flush()
        await session.execute(update(Ticket).where(Ticket.id == first["ticket_id"]).values(
            status="assigned", assigned_agent_id=agent.id, lease_expires_at=utcnow() + timedelta(minutes=2)))
        await session.commit()
    await post_signed(client, shop["id"], shop["webhook_secret"],
                      [message("你们这态度我要投诉，找小二介入", conversation="c-held")])
    ticket = await ticket_of(app, first["ticket_id"])
    assert ticket.status == "assigned" and ticket.assigned_agent_id == agent.id
    # It stays with its holder; should it go back to a queue, it goes where complaints are handled.
    assert ticket.escalated is True and ticket.tier == 1 and ticket.queue == "complaints"
    kinds = [kind for kind, _ in await events_of(app, ticket.id)]
    assert kinds[-3:] == ["reranked", "escalated", "routed"]


async def test_resolved_ticket_reopens_and_is_triaged_afresh(app: FastAPI, client: httpx.AsyncClient,
                                                             new_shop: Any) -> None:
    from sqlalchemy import update

    shop = await new_shop()
    first = (await post_signed(client, shop["id"], shop["webhook_secret"],
                               [message("不发货就差评", conversation="c-re")])).json()["results"][0]
    async with app.state.sessionmaker() as session:
        await session.execute(update(Ticket).where(Ticket.id == first["ticket_id"]).values(
            status="resolved", resolved_at=utcnow()))
        await session.commit()
    again = (await post_signed(client, shop["id"], shop["webhook_secret"],
                               [message("请问还有L码吗", conversation="c-re")])).json()["results"][0]
    assert again["ticket_id"] == first["ticket_id"]
    ticket = await ticket_of(app, first["ticket_id"])
    assert ticket.status == "queued" and ticket.tier == 4 and ticket.queue == "presale" and ticket.episodes == 2
    assert "reopened" in [kind for kind, _ in await events_of(app, ticket.id)]


async def test_vip_and_repeat_contacts_rank_higher_within_the_tier(client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    text = "请问这个有货吗"

    async def ingest(customer: str, conversation: str, vip: int = 0) -> dict[str, Any]:
        response = await post_signed(client, shop["id"], shop["webhook_secret"],
                                     [message(text, customer=customer, conversation=conversation, vip=vip)])
        assert response.status_code == 202, response.text
        return response.json()["results"][0]

    first_contact = await ingest("buyer-new", "c-new")
    vip = await ingest("buyer-vip", "c-vip", vip=5)
    await ingest("buyer-back", "c-back-1")            # the first conversation counts as a contact
    repeat = await ingest("buyer-back", "c-back-2")   # a new conversation of a known buyer
    assert first_contact["tier"] == vip["tier"] == repeat["tier"] == "P4"
    assert vip["priority"] > first_contact["priority"]
    assert repeat["priority"] > first_contact["priority"]


async def test_a_buyer_kept_waiting_rises_and_the_first_conversation_is_no_repeat_contact(
        app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    shop = await new_shop()

    async def ingest(text: str) -> dict[str, Any]:
        response = await post_signed(client, shop["id"], shop["webhook_secret"], [message(text, conversation="c-w")])
        assert response.status_code == 202, response.text
        return response.json()["results"][0]

    async def context_of(result: dict[str, Any]) -> dict[str, Any]:
        async with app.state.sessionmaker() as session:
            triage = await session.scalar(select(Message.triage).where(
                Message.shop_id == shop["id"], Message.external_id == result["message_id"]))
        assert triage is not None and triage["priority"] == result["priority"]
        return dict(triage["priority_context"])

    async def awaiting_since(value: Any) -> None:
        async with app.state.sessionmaker() as session:
            await session.execute(update(Ticket).where(Ticket.id == first["ticket_id"]).values(awaiting_since=value))
            await session.commit()

    first = await ingest("快递到哪了")
    # The same buyer again in the same, still open conversation, at once: neither a prior contact nor a wait.
    again = await ingest("快递到哪了")
    assert again["priority"] == first["priority"] and again["tier"] == "P3"
    assert (await context_of(again))["prior_contacts"] == 0
    # Unanswered for ten minutes: the default rules add 2 points a minute, and the ticket rises with the message.
    await awaiting_since(utcnow() - timedelta(minutes=10))
    waited = await ingest("快递到哪了")
    assert waited["tier"] == "P3" and waited["priority"] == first["priority"] + 20
    context = await context_of(waited)
    assert 600 <= context["waiting_seconds"] < 660 and context["prior_contacts"] == 0
    ticket = await ticket_of(app, first["ticket_id"])
    assert ticket.priority == waited["priority"]
    assert "reranked" in [kind for kind, _ in await events_of(app, ticket.id)]
    # Once an agent has answered, the wait starts over.
    await awaiting_since(None)
    answered = await ingest("快递到哪了")
    assert answered["priority"] == first["priority"] and (await context_of(answered))["waiting_seconds"] == 0


async def test_a_buyers_other_conversations_count_alike_in_one_request_or_several(client: httpx.AsyncClient,
                                                                                  new_shop: Any) -> None:
    shop = await new_shop()

    async def post(messages: list[dict[str, Any]]) -> list[int]:
        response = await post_signed(client, shop["id"], shop["webhook_secret"], messages)
        assert response.status_code == 202, response.text
        return [r["priority"] for r in response.json()["results"]]

    plan = [("c-a", "快递到哪了"), ("c-b", "快递到哪了"), ("c-b", "快递到哪了")]
    together = await post([message(text, conversation=f"{c}-1", customer="b-together") for c, text in plan])
    apart = [p for c, text in plan
             for p in await post([message(text, conversation=f"{c}-2", customer="b-apart")])]
    # The second conversation has the first as a prior contact (+20 under the default rules), whether the
    # platform sent them in one request or not; its follow-up is not a contact of its own.
    assert together == apart == [together[0], together[0] + 20, together[0] + 20]


async def test_customers_are_recorded_with_contacts(app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    for conversation in ("c-a", "c-b"):
        await post_signed(client, shop["id"], shop["webhook_secret"],
                          [message("在吗", conversation=conversation, customer="vip-9", vip=3)])
    async with app.state.sessionmaker() as session:
        customer = await session.scalar(select(Customer).where(Customer.shop_id == shop["id"]))
    assert customer is not None and customer.external_id == "vip-9"
    assert customer.vip_level == 3 and customer.contacts == 2 and customer.nick == "小王"


@pytest.mark.parametrize(("sent_at", "stored"), [
    ("0868-03-03T00:06:15Z", "0868-03-03T00:06:15Z"),              # a year before 1000 reads back (no unpadded %Y)
    ("2026-11-25T16:00:00+08:00", "2026-11-25T08:00:00Z"),          # kept in UTC
    ("9999-12-31T20:00:00-05:00", None),                            # past year 9999 in UTC: 422, not 500
    ("0001-01-01T00:00:00+01:00", None),                            # before year 1 in UTC: 422, not 500
])
async def test_sent_at_edges_are_stored_readably_or_refused(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                            new_shop: Any, sent_at: str, stored: str | None) -> None:
    shop = await new_shop()
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [message("请问有货吗", sent_at=sent_at)])
    if stored is None:
        assert response.status_code == 422, response.text
        assert [d["field"] for d in response.json()["error"]["details"]] == ["body.messages[0].sent_at"]
        return
    assert response.status_code == 202, response.text
    ticket = await client.get(f"/v1/tickets/{response.json()['results'][0]['ticket_id']}", headers=admin_headers)
    assert ticket.status_code == 200, ticket.text
    assert ticket.json()["messages"][0]["sent_at"].replace("+00:00", "Z") == stored


@pytest.mark.parametrize("vip_level", ["3", True, 2.5, 11, -1])
async def test_vip_level_is_a_json_integer_from_0_to_10(client: httpx.AsyncClient, new_shop: Any,
                                                        vip_level: Any) -> None:
    shop = await new_shop()
    msg = message("请问有货吗")
    msg["customer"]["vip_level"] = vip_level
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [msg])
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["body.messages[0].customer.vip_level"]


async def test_a_fragment_is_triaged_in_its_conversation(app: FastAPI, client: httpx.AsyncClient,
                                                         new_shop: Any, admin_headers: dict[str, str]) -> None:
    """A message the triage cannot read alone is read after the open episode's earlier buyer messages: those of
    the same request, and those already stored; a new conversation has none, and a resolved episode's are gone."""
    shop = await new_shop()
    first = await post_signed(client, shop["id"], shop["webhook_secret"],
                              [message("付款扣了两次钱", conversation="c-pay")])
    assert first.status_code == 202, first.text
    later = await post_signed(client, shop["id"], shop["webhook_secret"],
                              [message("订单只有一个", conversation="c-pay")])
    assert later.status_code == 202, later.text
    assert later.json()["results"][0]["primary"] == "payment_order"

    together = await post_signed(client, shop["id"], shop["webhook_secret"], [
        message("付款扣了两次钱", conversation="c-both"), message("订单只有一个", conversation="c-both")])
    assert [r["primary"] for r in together.json()["results"]] == ["payment_order", "payment_order"]

    # Several fragments of one request, each read after its own conversation's stored messages.
    for text, conversation in (("付款扣了两次钱", "c-x1"), ("快递三天没动了", "c-x2")):
        assert (await post_signed(client, shop["id"], shop["webhook_secret"],
                                  [message(text, conversation=conversation)])).status_code == 202
    mixed = await post_signed(client, shop["id"], shop["webhook_secret"], [
        message("还是没动", conversation="c-x3"), message("还是没动", conversation="c-x2"),
        message("订单只有一个", conversation="c-x1")])
    assert [r["primary"] for r in mixed.json()["results"]] == ["other", "logistics", "payment_order"]

    async with app.state.sessionmaker() as session:
        stored = (await session.execute(select(Message.triage).where(Message.shop_id == shop["id"],
                                                                      Message.text == "订单只有一个"))).scalars().all()
    assert len(stored) == 3
    for triage in stored:
        evidence = triage["intents"][0]["evidence"][0]
        assert evidence["rule"] == "context.payment_order" and evidence["text"] == "订单只有一个"
        assert triage["model"] is not None

    # A resolved episode's messages are not the next one's: the fragment that reopens the ticket is read alone,
    # as in a new conversation, and so is the one after it, whose episode holds only that first fragment.
    new_conversation = await post_signed(client, shop["id"], shop["webhook_secret"],
                                         [message("订单只有一个", conversation="c-new")])
    read_alone = new_conversation.json()["results"][0]["primary"]
    assert read_alone != "payment_order"
    ticket_id = first.json()["results"][0]["ticket_id"]
    resolved = await client.post(f"/v1/shops/{shop['id']}/tickets/{ticket_id}/resolve", headers=admin_headers,
                                 json={"reason": "done"})
    assert resolved.status_code == 200, resolved.text
    for _ in range(2):
        alone = await post_signed(client, shop["id"], shop["webhook_secret"],
                                  [message("订单只有一个", conversation="c-pay")])
        assert alone.status_code == 202, alone.text
        assert alone.json()["results"][0]["ticket_id"] == ticket_id
        assert alone.json()["results"][0]["primary"] == read_alone


async def test_the_webhook_route_refuses_an_unknown_query_parameter_and_stores_nothing(
        app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    # The route calls its declared dependencies itself (routers/webhooks.py, _WebhookRoute): the query check too.
    shop = await new_shop()
    body = encode({"platform": "taobao", "messages": [message("在吗")]})
    response = await client.post(f"{url(shop['id'])}?wait=1&x=2", content=body,
                                 headers=signed_headers(shop["webhook_secret"], body))
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["query.wait", "query.x"]
    assert await count_messages(app, shop["id"]) == 0


async def test_the_webhook_answer_is_the_documented_json(app: FastAPI, client: httpx.AsyncClient, new_shop: Any) -> None:
    shop = await new_shop()
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [message("我要退款"), message("在吗")])
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    schema = app.openapi()["paths"]["/v1/shops/{shop_id}/webhooks/messages"]["post"]["responses"]["202"]
    assert schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/IngestResult"}
    results = response.json()["results"]
    assert [sorted(r) for r in results] == [sorted(IngestedMessage.model_fields)] * 2
    assert [r["primary"] for r in results] == ["return_refund", "other"] and results[0]["tier"] == "P2"
