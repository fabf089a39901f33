"""Transfer to a named agent, by the holder or by ops, on both databases: who may take a ticket, and the refusals
that leave everything as it was."""

from typing import Any

import httpx
import pytest

from tests.support.queues import claim, new_agent, new_ticket

pytestmark = pytest.mark.asyncio

RETURN = "我要退货"  # aftersale


async def online(client: httpx.AsyncClient, *agents: dict[str, Any]) -> None:
    for agent in agents:
        answer = await client.put("/v1/agents/me/presence", headers=agent["headers"], json={"status": "online"})
        assert answer.status_code == 200, answer.text


async def read(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/tickets/{ticket_id}", headers=admin)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def trail(client: httpx.AsyncClient, admin: dict[str, str], ticket_id: str) -> list[dict[str, Any]]:
    return list((await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin)).json()["events"])


async def held_by(client: httpx.AsyncClient, agent: dict[str, Any]) -> list[str]:
    return [t["id"] for t in (await client.get("/v1/agents/me/tickets", headers=agent["headers"])).json()["tickets"]]


async def test_the_holder_hands_its_ticket_to_a_colleague(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                          new_shop: Any) -> None:
    shop = await new_shop()
    lin, wu = await new_agent(client, admin_headers, shop["id"]), await new_agent(client, admin_headers, shop["id"])
    await online(client, wu)
    ticket_id = await new_ticket(client, shop, RETURN)
    assert (await claim(client, lin)).json()["id"] == ticket_id
    key = {"Idempotency-Key": "hand-1"}
    answer = await client.post(f"/v1/tickets/{ticket_id}/transfer", headers={**lin["headers"], **key},
                               json={"agent_id": wu["id"], "reason": "served this buyer yesterday"})
    assert answer.status_code == 200, answer.text
    ticket = answer.json()
    assert (ticket["status"], ticket["assigned_agent_id"], ticket["queue"]) == ("assigned", wu["id"], "aftersale")
    replay = await client.post(f"/v1/tickets/{ticket_id}/transfer", headers={**lin["headers"], **key},
                               json={"agent_id": wu["id"], "reason": "served this buyer yesterday"})
    assert replay.status_code == 200 and replay.json() == ticket  # answered as before, nothing done twice
    assert await held_by(client, wu) == [ticket_id] and await held_by(client, lin) == []
    # The giver holds it no more; the taker works on it under its own lease.
    assert (await client.post(f"/v1/tickets/{ticket_id}/heartbeat", headers=lin["headers"])).status_code == 409
    assert (await client.post(f"/v1/tickets/{ticket_id}/replies", headers=wu["headers"],
                              json={"text": "亲，我来处理"})).status_code == 201
    handed = [e for e in await trail(client, admin_headers, ticket_id) if e["kind"] == "transferred"]
    assert len(handed) == 1 and handed[0]["actor"] == f"agent:{lin['id']}"
    assert {k: handed[0]["data"][k] for k in ("agent_id", "to_agent", "from", "to", "reason")} == {
        "agent_id": lin["id"], "to_agent": wu["id"], "from": "aftersale", "to": "aftersale",
        "reason": "served this buyer yesterday"}


async def test_refusals_name_why_and_change_nothing(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                    new_shop: Any) -> None:
    shop, other_shop = await new_shop(), await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"])
    presale_only = await new_agent(client, admin_headers, shop["id"], queues=("presale",))
    gone = await new_agent(client, admin_headers, shop["id"])
    offline = await new_agent(client, admin_headers, shop["id"])
    full = await new_agent(client, admin_headers, shop["id"], capacity=1)
    stranger = await new_agent(client, admin_headers, other_shop["id"])
    await online(client, presale_only, gone, full, stranger)
    assert (await client.patch(f"/v1/shops/{shop['id']}/agents/{gone['id']}", headers=admin_headers,
                               json={"active": False})).status_code == 200
    await new_ticket(client, shop, RETURN)
    assert (await claim(client, full)).status_code == 200  # its one place taken
    ticket_id = await new_ticket(client, shop, RETURN)
    assert (await claim(client, lin)).json()["id"] == ticket_id
    before = await read(client, admin_headers, ticket_id)
    cases = [
        ({"agent_id": presale_only["id"]}, 422, "queue_not_served"),   # serves presale, the ticket is aftersale
        ({"agent_id": stranger["id"]}, 422, "unknown_agent"),           # an agent of another shop
        ({"agent_id": "no-such-agent"}, 422, "unknown_agent"),
        ({"agent_id": gone["id"]}, 422, "agent_inactive"),
        ({"agent_id": lin["id"]}, 422, "same_agent"),
        ({"agent_id": offline["id"]}, 409, "agent_offline"),            # never signed in
        ({"agent_id": full["id"]}, 409, "agent_at_capacity"),
        ({"agent_id": full["id"], "queue": "complaints"}, 422, "validation_error"),  # one target, not two
        ({"reason": "nobody named"}, 422, "validation_error"),
        ({"agent_id": None}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        answer = await client.post(f"/v1/tickets/{ticket_id}/transfer", headers=lin["headers"], json=body)
        error = answer.json()["error"]
        if status == 422 and code != "validation_error":
            # A semantic refusal: a validation error naming the field, with why as its type.
            assert (answer.status_code, error["code"]) == (422, "validation_error"), (body, answer.text)
            assert [(d["field"], d["type"]) for d in error["details"]] == [("body.agent_id", code)]
        else:
            assert (answer.status_code, error["code"]) == (status, code), (body, answer.text)
        if code == "agent_at_capacity":
            assert answer.json()["error"]["details"] == {"agent_id": full["id"], "held": 1, "capacity": 1}
    after = await read(client, admin_headers, ticket_id)
    assert after == before
    assert [e for e in await trail(client, admin_headers, ticket_id) if e["kind"] == "transferred"] == []


async def test_only_the_holder_hands_over(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                          new_shop: Any) -> None:
    shop = await new_shop()
    lin, wu = await new_agent(client, admin_headers, shop["id"]), await new_agent(client, admin_headers, shop["id"])
    await online(client, lin, wu)
    ticket_id = await new_ticket(client, shop, RETURN)
    assert (await claim(client, lin)).status_code == 200
    # Another agent of the shop, naming itself or anyone: the ticket is not its to give (409 before any body check).
    for body in ({"agent_id": wu["id"]}, {"agent_id": "no-such-agent"}):
        answer = await client.post(f"/v1/tickets/{ticket_id}/transfer", headers=wu["headers"], json=body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (409, "ticket_not_held")
    assert (await read(client, admin_headers, ticket_id))["assigned_agent_id"] == lin["id"]


async def test_ops_give_a_queued_held_or_resolved_ticket(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                         new_shop: Any) -> None:
    shop = await new_shop()
    lin, wu = await new_agent(client, admin_headers, shop["id"]), await new_agent(client, admin_headers, shop["id"])
    await online(client, wu)
    queued = await new_ticket(client, shop, RETURN)
    path = f"/v1/shops/{shop['id']}/tickets/{queued}/transfer"
    answer = await client.post(path, headers=admin_headers, json={"agent_id": wu["id"], "reason": "VIP"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["assigned_agent_id"]) == ("assigned", wu["id"])
    [handed] = [e for e in await trail(client, admin_headers, queued) if e["kind"] == "transferred"]
    assert (handed["actor"], handed["data"]["agent_id"], handed["data"]["to_agent"],
            handed["data"]["status_before"]) == ("admin", None, wu["id"], "queued")

    # A held ticket: its holder loses it at once.
    held = await new_ticket(client, shop, RETURN)
    assert (await claim(client, lin)).json()["id"] == held
    answer = await client.post(f"/v1/shops/{shop['id']}/tickets/{held}/transfer", headers=admin_headers,
                               json={"agent_id": wu["id"]})
    assert answer.status_code == 200 and answer.json()["assigned_agent_id"] == wu["id"]
    assert (await client.post(f"/v1/tickets/{held}/resolve", headers=lin["headers"])).status_code == 409
    assert sorted(await held_by(client, wu)) == sorted([queued, held])

    # Resolved: nothing to give. Another shop's ticket, or an unknown one: 404.
    assert (await client.post(f"/v1/tickets/{held}/resolve", headers=wu["headers"])).status_code == 200
    answer = await client.post(f"/v1/shops/{shop['id']}/tickets/{held}/transfer", headers=admin_headers,
                               json={"agent_id": wu["id"]})
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "ticket_already_resolved")
    other = await new_shop()
    answer = await client.post(f"/v1/shops/{other['id']}/tickets/{queued}/transfer", headers=admin_headers,
                               json={"agent_id": wu["id"]})
    assert answer.status_code == 404
