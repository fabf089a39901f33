"""The seller's own messages (SPEC 9.2, `sender: "seller"`), on both databases: stored as outbound, they stop the
first-response clock like a console reply, are not triaged, not delivered back, and count as the shop's replies."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.test_delivery import Endpoint, endpoint, receiver  # noqa: F401  (fixtures)
from tests.support.receiver import Receiver
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_seller_message_stops_the_first_response_clock(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint) -> None:
    shop = await new_shop()
    await endpoint(shop["id"], receiver.url("/platform"), events=("reply.created", "sla.breached"))
    buyer = message("这款有现货吗", conversation="c-s", customer="b-s")
    first = (await post_signed(client, shop["id"], shop["webhook_secret"], [buyer])).json()["results"][0]
    ticket_id = first["ticket_id"]
    before = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
    assert before["first_response_at"] is None and before["awaiting_since"] is not None
    replied_at = datetime.now(UTC)
    seller = message("亲，有的，今天下单今天发", conversation="c-s", customer="b-s", sender="seller",
                     sent_at=stamp(replied_at))
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], [seller])
    assert answer.status_code == 202, answer.text
    assert answer.json()["results"][0] == {"message_id": seller["message_id"], "ticket_id": ticket_id,
                                           "duplicate": False, "sender": "seller", "primary": None, "tier": None,
                                           "priority": None, "queue": None}
    ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
    assert ticket["first_response_at"] is not None and ticket["awaiting_since"] is None and ticket["unread"] == 0
    assert abs(datetime.fromisoformat(ticket["first_response_at"]) - replied_at) < timedelta(seconds=1)
    stored = ticket["messages"][-1]
    assert (stored["direction"], stored["triage"], stored["agent_id"], stored["delivery"]) == (
        "outbound", None, None, None)  # not triaged, not delivered back
    trail = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin_headers)).json()["events"]
    assert trail[-1]["kind"] == "replied" and trail[-1]["data"]["sender"] == "seller"
    assert trail[-1]["data"]["first_response"] is True
    # Resent: a duplicate, stored once.
    again = await post_signed(client, shop["id"], shop["webhook_secret"], [seller])
    assert again.json()["results"][0]["duplicate"] is True and again.json()["results"][0]["sender"] == "seller"
    # The shop's statistics count it as the reply.
    stats = (await client.get(f"/v1/shops/{shop['id']}/stats", headers=admin_headers)).json()
    assert (stats["overall"]["conversations_received"], stats["overall"]["replied"]) == (1, 1)
    assert stats["overall"]["reply_rate"] == 1.0 and stats["overall"]["first_response"]["p50"] is not None
    await asyncio.sleep(0.5)
    assert receiver.at("/platform") == []  # nothing went back to the platform


async def test_a_conversation_the_seller_starts_waits_for_the_buyer(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    seller = message("亲，您的包裹已发出", conversation="c-out", customer="b-out", sender="seller")
    ticket_id = (await post_signed(client, shop["id"], shop["webhook_secret"], [seller])).json()["results"][0][
        "ticket_id"]
    ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
    assert ticket["status"] == "resolved" and ticket["messages"][0]["direction"] == "outbound"
    queues = (await client.get(f"/v1/queues?shop_id={shop['id']}", headers=admin_headers)).json()["queues"]
    assert sum(q["total"] for q in queues) == 0  # nothing for agents yet
    buyer = message("好的，谢谢，什么时候到？", conversation="c-out", customer="b-out")
    await post_signed(client, shop["id"], shop["webhook_secret"], [buyer])
    ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)).json()
    assert ticket["status"] == "queued" and ticket["first_response_at"] is None and ticket["episodes"] == 1
    # Seller first and buyer after in one batch: the same.
    both = [message("亲，在吗", conversation="c-both", customer="b-both", sender="seller"),
            message("在的，我要退货", conversation="c-both", customer="b-both")]
    results = (await post_signed(client, shop["id"], shop["webhook_secret"], both)).json()["results"]
    ticket = (await client.get(f"/v1/tickets/{results[1]['ticket_id']}", headers=admin_headers)).json()
    assert ticket["status"] == "queued" and ticket["episodes"] == 1 and ticket["primary"] == "return_refund"
