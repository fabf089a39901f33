"""Agent presence on both databases: set by the agent, made online by a claim, ended by silence; shown in the agent
list, the statistics and /metrics."""

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.clock import utcnow
from tests.support.clock import freeze
from tests.support.queues import claim, new_agent, new_ticket

pytestmark = pytest.mark.asyncio

TIMEOUT = 120  # TRIAGE_PRESENCE_TIMEOUT_SECONDS of the suite's app (the default)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def listed(client: httpx.AsyncClient, admin: dict[str, str], shop_id: str) -> dict[str, dict[str, Any]]:
    response = await client.get(f"/v1/shops/{shop_id}/agents", headers=admin)
    assert response.status_code == 200, response.text
    return {a["id"]: a for a in response.json()}


async def put_presence(client: httpx.AsyncClient, agent: dict[str, Any], status: Any) -> httpx.Response:
    return await client.put("/v1/agents/me/presence", headers=agent["headers"], json={"status": status})


async def in_stats(client: httpx.AsyncClient, admin: dict[str, str], shop_id: str) -> dict[str, str]:
    response = await client.get(f"/v1/shops/{shop_id}/stats", headers=admin)
    assert response.status_code == 200, response.text
    return {a["agent_id"]: a["presence"] for a in response.json()["agents"]}


async def gauge(client: httpx.AsyncClient, shop_id: str) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {s.labels["presence"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "triage_agents" for s in family.samples if s.labels["shop"] == shop_id}


async def test_an_agent_sets_its_presence_and_everyone_sees_it(client: httpx.AsyncClient,
                                                               admin_headers: dict[str, str], new_shop: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    lin, wu, ma = [await new_agent(client, admin_headers, shop["id"]) for _ in range(3)]
    assert {a["presence"] for a in (await listed(client, admin_headers, shop["id"])).values()} == {"offline"}
    assert lin["presence"] == "offline" and lin["seen_at"] is None  # as created
    assert await gauge(client, shop["id"]) == {"online": 0, "away": 0, "offline": 3}

    answer = await put_presence(client, lin, "online")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["agent_id"], body["presence"], body["set"]) == (lin["id"], "online", "online")
    assert (ts(body["seen_at"]), ts(body["offline_at"])) == (clock.now, clock.now + timedelta(seconds=TIMEOUT))
    assert (await put_presence(client, wu, "away")).json()["presence"] == "away"
    agents = await listed(client, admin_headers, shop["id"])
    assert (agents[lin["id"]]["presence"], agents[wu["id"]]["presence"], agents[ma["id"]]["presence"]) == (
        "online", "away", "offline")
    assert await in_stats(client, admin_headers, shop["id"]) == {lin["id"]: "online", wu["id"]: "away",
                                                                 ma["id"]: "offline"}
    assert await gauge(client, shop["id"]) == {"online": 1, "away": 1, "offline": 1}
    mine = await client.get("/v1/agents/me/presence", headers=wu["headers"])
    assert mine.status_code == 200 and mine.json()["presence"] == "away"

    # Going offline is immediate; the list, the statistics and the gauge agree.
    body = (await put_presence(client, lin, "offline")).json()
    assert (body["presence"], body["set"], ts(body["seen_at"]), body["offline_at"]) == (
        "offline", "offline", clock.now, None)
    assert (await listed(client, admin_headers, shop["id"]))[lin["id"]]["presence"] == "offline"
    assert await gauge(client, shop["id"]) == {"online": 0, "away": 1, "offline": 2}


async def test_a_claim_makes_an_agent_online_and_silence_makes_it_offline(client: httpx.AsyncClient,
                                                                          admin_headers: dict[str, str],
                                                                          new_shop: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, utcnow())
    shop = await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"])
    assert (await put_presence(client, lin, "away")).status_code == 200
    assert (await claim(client, lin)).status_code == 204  # nothing queued: the claim still counts
    assert (await listed(client, admin_headers, shop["id"]))[lin["id"]]["presence"] == "online"

    clock.advance(TIMEOUT - 1)
    assert (await listed(client, admin_headers, shop["id"]))[lin["id"]]["presence"] == "online"
    clock.advance(1)  # silent for the whole timeout
    assert (await listed(client, admin_headers, shop["id"]))[lin["id"]]["presence"] == "offline"
    assert await in_stats(client, admin_headers, shop["id"]) == {lin["id"]: "offline"}
    assert await gauge(client, shop["id"]) == {"online": 0, "away": 0, "offline": 1}

    # A heartbeat on a held ticket counts as being seen, and keeps what the agent set (here, away).
    await new_ticket(client, shop, "我要退货")
    ticket = (await claim(client, lin)).json()
    assert (await put_presence(client, lin, "away")).status_code == 200
    clock.advance(TIMEOUT - 5)
    assert (await client.post(f"/v1/tickets/{ticket['id']}/heartbeat", headers=lin["headers"])).status_code == 200
    clock.advance(10)
    agent = (await listed(client, admin_headers, shop["id"]))[lin["id"]]
    assert agent["presence"] == "away"

    # Deactivated, an agent is offline whatever it set.
    assert (await client.patch(f"/v1/shops/{shop['id']}/agents/{lin['id']}", headers=admin_headers,
                               json={"active": False})).json()["presence"] == "offline"


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "busy"}, "body.status"),            # not a presence
    ({"status": None}, "body.status"),              # null
    ({}, "body.status"),                            # missing
    ({"status": "online", "agent_id": "x"}, "body.agent_id"),  # an agent sets only its own
])
async def test_a_bad_presence_is_refused_naming_the_field(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                          new_shop: Any, body: dict[str, Any], field: str) -> None:
    shop = await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"])
    answer = await client.put("/v1/agents/me/presence", headers=lin["headers"], json=body)
    assert answer.status_code == 422, answer.text
    assert field in {d["field"] for d in answer.json()["error"]["details"]}
    assert (await listed(client, admin_headers, shop["id"]))[lin["id"]]["presence"] == "offline"


async def test_an_agent_lists_its_active_colleagues_with_their_queues_and_presence(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, utcnow())
    shop, elsewhere = await new_shop(), await new_shop()
    lin = await new_agent(client, admin_headers, shop["id"])
    wu = await new_agent(client, admin_headers, shop["id"], queues=("aftersale",))
    ma = await new_agent(client, admin_headers, shop["id"], queues=("presale", "complaints"))
    gone = await new_agent(client, admin_headers, shop["id"])
    await new_agent(client, admin_headers, elsewhere["id"])
    deactivated = await client.patch(f"/v1/shops/{shop['id']}/agents/{gone['id']}", headers=admin_headers,
                                     json={"active": False})
    assert deactivated.status_code == 200, deactivated.text
    assert (await put_presence(client, wu, "online")).status_code == 200
    assert (await put_presence(client, ma, "away")).status_code == 200

    async def colleagues(agent: dict[str, Any]) -> list[tuple[str, list[str], str]]:
        answer = await client.get("/v1/agents/me/colleagues", headers=agent["headers"])
        assert answer.status_code == 200, answer.text
        # Sorted here: made at one frozen instant, the agents' order of creation is their ids'.
        return sorted((a["id"], a["queues"], a["presence"]) for a in answer.json()["agents"])

    # Itself, the deactivated agent and the other shop's are not listed.
    assert await colleagues(lin) == sorted([(wu["id"], ["aftersale"], "online"),
                                            (ma["id"], ["complaints", "presale"], "away")])
    assert [entry[0] for entry in await colleagues(wu)] == sorted([lin["id"], ma["id"]])
    clock.advance(TIMEOUT + 1)  # silence makes them offline, as the admin's list says
    assert await colleagues(lin) == sorted([(wu["id"], ["aftersale"], "offline"),
                                            (ma["id"], ["complaints", "presale"], "offline")])
    # A deactivated agent's token is refused.
    assert (await client.get("/v1/agents/me/colleagues", headers=gone["headers"])).status_code == 401
