"""Threads in pages: a ticket's answers carry its latest messages and a cursor; the rest is read page by page."""

import uuid
from typing import Any

import httpx

from tests.support.queues import bearer, claim, new_agent
from tests.support.webhooks import message, post_signed

PAGE = 50  # TRIAGE_THREAD_PAGE's default, which the suite's apps keep


async def long_thread(client: httpx.AsyncClient, shop: dict[str, Any], count: int) -> str:
    """One conversation of `count` buyer messages, sent 100 to a request; its ticket id."""
    conversation, ticket = f"c-{uuid.uuid4().hex[:8]}", None
    for start in range(0, count, 100):
        batch = [message(f"第{n}条：快递到哪了", conversation=conversation, customer="buyer-long",
                         message_id=f"{conversation}-{n}") for n in range(start, min(count, start + 100))]
        response = await post_signed(client, shop["id"], shop["webhook_secret"], batch)
        assert response.status_code == 202, response.text
        ticket = response.json()["results"][0]["ticket_id"]
    assert ticket is not None
    return str(ticket)


async def read_all_pages(client: httpx.AsyncClient, headers: dict[str, str], ticket_id: str, before: int | None,
                         limit: int) -> list[dict[str, Any]]:
    """Every message older than `before`, following next_before to the first one."""
    older: list[dict[str, Any]] = []
    while before is not None:
        response = await client.get(f"/v1/tickets/{ticket_id}/messages", params={"before": before, "limit": limit},
                                    headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["messages"]) <= limit
        older = page["messages"] + older
        before = page["next_before"]
    return older


async def test_a_3000_message_thread_answers_a_claim_in_under_50_kb(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    ticket_id = await long_thread(client, shop, 3000)
    agent = await new_agent(client, admin_headers, shop["id"])

    claimed = await claim(client, agent)
    assert claimed.status_code == 200, claimed.text
    assert len(claimed.content) < 50 * 1024, len(claimed.content)
    print(f"claim of a 3,000-message thread: {len(claimed.content) / 1024:.1f} KiB")
    ticket = claimed.json()
    assert ticket["id"] == ticket_id and len(ticket["messages"]) == PAGE
    assert ticket["messages"][-1]["text"] == "第2999条：快递到哪了"
    assert ticket["messages_before"] == ticket["messages"][0]["id"]
    assert ticket["customer"]["id"] == "buyer-long"

    # The holder's writes and the reads answer the same page.
    for response in (await client.post(f"/v1/tickets/{ticket_id}/heartbeat", headers=agent["headers"]),
                     await client.get(f"/v1/tickets/{ticket_id}", headers=agent["headers"]),
                     await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers),
                     await client.get("/v1/agents/me/tickets", headers=agent["headers"])):
        assert response.status_code == 200 and len(response.content) < 50 * 1024, len(response.content)
    replied = await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "亲，马上查"}, headers=agent["headers"])
    assert replied.status_code == 201 and len(replied.content) < 50 * 1024, len(replied.content)
    assert len(replied.json()["ticket"]["messages"]) == PAGE

    # Page by page, the rest: every message once, oldest first, up to where the answer's page starts.
    older = await read_all_pages(client, admin_headers, ticket_id, ticket["messages_before"], limit=1000)
    texts = [m["text"] for m in older + ticket["messages"]]
    assert texts == [f"第{n}条：快递到哪了" for n in range(3000)]
    ids = [m["id"] for m in older]
    assert ids == sorted(set(ids)) and ids[-1] < ticket["messages_before"]


async def test_pages_of_any_size_cover_the_thread_and_a_short_thread_has_no_cursor(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    ticket_id = await long_thread(client, shop, 120)
    latest = await client.get(f"/v1/tickets/{ticket_id}/messages", params={"limit": 7}, headers=admin_headers)
    page = latest.json()
    assert [m["text"] for m in page["messages"]] == [f"第{n}条：快递到哪了" for n in range(113, 120)]
    older = await read_all_pages(client, admin_headers, ticket_id, page["next_before"], limit=7)
    assert [m["text"] for m in older + page["messages"]] == [f"第{n}条：快递到哪了" for n in range(120)]

    short = await long_thread(client, shop, 3)
    ticket = (await client.get(f"/v1/tickets/{short}", headers=admin_headers)).json()
    assert len(ticket["messages"]) == 3 and ticket["messages_before"] is None
    whole = (await client.get(f"/v1/tickets/{short}/messages", headers=admin_headers)).json()
    assert [m["id"] for m in whole["messages"]] == [m["id"] for m in ticket["messages"]]
    assert whole["next_before"] is None


async def test_messages_are_read_as_the_ticket_is(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                  new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    ticket_id = await long_thread(client, shop, 2)
    outsider = await new_agent(client, admin_headers, other["id"])
    path = f"/v1/tickets/{ticket_id}/messages"
    assert (await client.get(path, headers=outsider["headers"])).status_code == 404
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=bearer("wrong"))).status_code == 401
    assert (await client.get("/v1/tickets/none/messages", headers=admin_headers)).status_code == 404
    for params in ({"limit": 0}, {"limit": 1001}, {"before": 0}, {"befor": 5}):
        response = await client.get(path, params=params, headers=admin_headers)
        assert response.status_code == 422, params
