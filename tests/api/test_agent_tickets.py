"""Ops read what an agent holds (the ops page's agents table), on both databases."""

from typing import Any

import httpx
import pytest

from tests.support.queues import claim, new_agent, new_ticket

pytestmark = pytest.mark.asyncio


async def test_ops_read_the_tickets_an_agent_holds(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                   new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    holder = await new_agent(client, admin_headers, shop["id"])
    idle = await new_agent(client, admin_headers, shop["id"])
    stranger = await new_agent(client, admin_headers, other["id"])
    ticket_id = await new_ticket(client, shop, "再不发货就给差评")
    assert (await claim(client, holder)).status_code == 200
    path = f"/v1/shops/{shop['id']}/agents/{{}}/tickets"
    answer = await client.get(path.format(holder["id"]), headers=admin_headers)
    assert answer.status_code == 200, answer.text
    held = answer.json()["tickets"]
    assert [(t["id"], t["assigned_agent_id"], t["unread"]) for t in held] == [(ticket_id, holder["id"], 1)]
    assert held[0]["messages"][0]["triage"]["primary"] == "bad_review_threat"
    assert (await client.get(path.format(idle["id"]), headers=admin_headers)).json() == {"tickets": []}
    # Another shop's agent, an unknown one, an unknown shop: 404; an agent's own token: 401.
    assert (await client.get(path.format(stranger["id"]), headers=admin_headers)).status_code == 404
    assert (await client.get(path.format("nobody"), headers=admin_headers)).status_code == 404
    assert (await client.get(f"/v1/shops/nope/agents/{holder['id']}/tickets", headers=admin_headers)).status_code == 404
    assert (await client.get(path.format(holder["id"]), headers=holder["headers"])).status_code == 401
