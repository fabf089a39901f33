"""Who may do what: every operation that takes an id, against every kind of caller, on both databases.

Two shops with two agents each, the admin, no token and a wrong token. Shop A's ticket is held by agent A1;
A2 serves the same queues. Each cell names the status it must answer; a refused cell must change nothing, which
is checked by reading the shop's whole visible state (as the admin) before and after the refused calls.
"""

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import utcnow
from tests.support.queues import bearer, claim, eventually, new_agent, new_ticket
from tests.support.receiver import Receiver, Reply

pytestmark = pytest.mark.asyncio

CALLERS = ("admin", "none", "wrong", "agent_a1", "agent_a2", "agent_b1")
RULESET = {"intents": {"presale": {"base": 150, "rules": [{"id": "zh.presale.stock", "phrases": ["有货吗"]}]}}}

# (method, path template, body, expected status per caller). {shop} is shop A, {ticket} A's ticket held by A1.
ADMIN_ONLY = {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": 401, "agent_a2": 401, "agent_b1": 401}
HOLDER_ONLY = {"admin": 401, "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": 409, "agent_b1": 404}
AGENT_SELF = {"admin": 401, "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": "2xx"}
MATRIX: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("GET", "/v1/shops/{shop}", None, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}", {"name": "Renamed"}, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}", {"timezone": "Asia/Shanghai", "holidays": None, "closed_dates": ["2026-12-31"],
                                   "shifts": [{"name": "all", "start": "00:00", "end": "24:00"}],
                                   "off_hours_reply": "休息中"}, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}", {"sticky_hours": 48}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/webhook-secrets", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/queues", None, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/queues", {"name": "vip-{n}"}, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}/queues/presale", {"description": "changed"}, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/agents", None, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/agents", {"name": "New", "queues": ["presale"]}, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}/agents/{agent_a2}", {"capacity": 7}, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}/agents/{agent_a2}", {"shifts": ["all"]}, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/agents/{agent_a2}/tickets", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/stats", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/coverage?date=2026-11-19", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/rules", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/rules/versions", None, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/rules/validate", {"ruleset": RULESET}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/rules/backtest", {"ruleset": RULESET, "limit": 10}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/rules", {"ruleset": RULESET}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/rules/rollback", {"version": None}, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/templates", None, ADMIN_ONLY),
    ("PUT", "/v1/shops/{shop}/templates", {"templates": [{"id": "hi", "text": {"zh": "您好{buyer_nick}"}}]}, ADMIN_ONLY),
    ("GET", "/v1/tickets/{ticket}/suggestions", None,
     {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": 404}),
    ("GET", "/v1/queues?shop_id={shop}", None,
     {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": 404}),
    ("POST", "/v1/triage/classify", {"text": "差评", "shop_id": "{shop}"},
     {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": 404}),
    ("GET", "/v1/tickets/{ticket}", None,
     {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": 404}),
    ("GET", "/v1/tickets/{ticket}/messages", None,
     {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": 404}),
    ("GET", "/v1/tickets/{ticket}/events", None,
     {"admin": "2xx", "none": 401, "wrong": 401, "agent_a1": "2xx", "agent_a2": "2xx", "agent_b1": 404}),
    ("POST", "/v1/tickets/{ticket}/heartbeat", None, HOLDER_ONLY),
    ("POST", "/v1/tickets/{ticket}/replies", {"text": "亲，马上处理"}, {**HOLDER_ONLY, "agent_a1": 201}),
    ("POST", "/v1/tickets/{ticket}/transfer", {"queue": "complaints", "reason": "senior"}, HOLDER_ONLY),
    ("GET", "/v1/agents/me/presence", None, AGENT_SELF),
    ("GET", "/v1/agents/me/colleagues", None, AGENT_SELF),
    # A2 online (the cell after hands it a ticket, which only an agent at its console may take).
    ("PUT", "/v1/agents/me/presence", {"status": "online"}, AGENT_SELF),
    ("POST", "/v1/tickets/{ticket}/transfer", {"agent_id": "{agent_a2}", "reason": "her buyer"}, HOLDER_ONLY),
    ("POST", "/v1/shops/{shop}/tickets/{ticket}/transfer", {"agent_id": "{agent_a2}"}, ADMIN_ONLY),
    ("POST", "/v1/tickets/{ticket}/release", {"reason": "shift end"}, HOLDER_ONLY),
    ("POST", "/v1/tickets/{ticket}/snooze", {"until": "{until}", "reason": "waiting for photos"}, HOLDER_ONLY),
    ("POST", "/v1/shops/{shop}/tickets/{ticket}/snooze", {"until": "{until}"}, ADMIN_ONLY),
    ("POST", "/v1/tickets/{ticket}/resolve", None, HOLDER_ONLY),
    ("GET", "/v1/shops/{shop}/tickets?platform=taobao&conversation_id=c-{n}", None, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/tickets/{ticket}/release", {"reason": "stuck"}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/tickets/{ticket}/resolve", {"reason": "spam"}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/endpoints", {"url": "{receiver}/new-{n}", "events": ["sla.breached"]}, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/endpoints", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/endpoints/{endpoint}", None, ADMIN_ONLY),
    ("PATCH", "/v1/shops/{shop}/endpoints/{endpoint}", {"description": "changed"}, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/endpoints/{endpoint}/secret", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/deliveries", None, ADMIN_ONLY),
    ("GET", "/v1/shops/{shop}/deliveries/{delivery}", None, ADMIN_ONLY),
    ("POST", "/v1/shops/{shop}/deliveries/{delivery}/retry", None, ADMIN_ONLY),
    ("DELETE", "/v1/shops/{shop}/endpoints/{spare_endpoint}", None, ADMIN_ONLY),
    # Last: the admin's call replaces agent A2's token, which the cells above use.
    ("POST", "/v1/shops/{shop}/agents/{agent_a2}/token", None, ADMIN_ONLY),
]


def _fill(template: Any, ids: dict[str, str], n: int) -> Any:
    if isinstance(template, str):
        return template.format(n=n, **ids)
    if isinstance(template, dict):
        return {k: _fill(v, ids, n) for k, v in template.items()}
    return template


def _matches(expected: Any, status: int) -> bool:
    return 200 <= status < 300 if expected == "2xx" else status == expected


async def _visible_state(client: httpx.AsyncClient, admin: dict[str, str], shop_id: str, ticket_id: str) -> Any:
    """Everything an ops user can read of the shop and the held ticket, minus clocks that tick on their own (an
    agent's presence turns offline with time alone; its `seen_at` changes only when it acts)."""
    reads = {}
    for path in (f"/v1/shops/{shop_id}", f"/v1/shops/{shop_id}/queues", f"/v1/shops/{shop_id}/agents",
                 f"/v1/shops/{shop_id}/rules/versions", f"/v1/shops/{shop_id}/templates", f"/v1/tickets/{ticket_id}",
                 f"/v1/shops/{shop_id}/endpoints", f"/v1/shops/{shop_id}/deliveries?status=failed"):
        response = await client.get(path, headers=admin)
        assert response.status_code == 200, response.text
        reads[path] = response.json()
    reads[f"/v1/shops/{shop_id}/agents"] = [{k: v for k, v in agent.items() if k != "presence"}
                                            for agent in reads[f"/v1/shops/{shop_id}/agents"]]
    rules = (await client.get(f"/v1/shops/{shop_id}/rules", headers=admin)).json()
    reads["active"] = (rules["name"], rules["version"])
    return reads


async def failed_delivery(client: httpx.AsyncClient, admin: dict[str, str], shop_id: str, receiver: Receiver,
                          holder: dict[str, Any], ticket_id: str) -> dict[str, str]:
    """An endpoint whose receiver answered 410 (so it is disabled, its delivery failed), and a spare endpoint."""
    receiver.script("/gone", Reply(410))
    endpoint = (await client.post(f"/v1/shops/{shop_id}/endpoints", headers=admin, json={
        "url": receiver.url("/gone"), "events": ["reply.created"]})).json()
    reply = await client.post(f"/v1/tickets/{ticket_id}/replies", headers=holder["headers"], json={"text": "好的"})
    assert reply.status_code == 201, reply.text
    found: list[Any] = []

    async def failed() -> bool:
        found[:] = (await client.get(f"/v1/shops/{shop_id}/deliveries?status=failed", headers=admin)).json()[
            "deliveries"]
        return bool(found)
    await eventually(failed, timeout=15)
    spare = (await client.post(f"/v1/shops/{shop_id}/endpoints", headers=admin, json={
        "url": receiver.url("/spare"), "events": ["ticket.escalated"]})).json()
    return {"endpoint": endpoint["id"], "delivery": str(found[0]["id"]), "spare_endpoint": spare["id"],
            "receiver": receiver.url("")}


async def test_every_cell_answers_as_it_should_and_refusals_change_nothing(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    with Receiver() as receiver:
        await _every_cell(client, admin_headers, new_shop, receiver)


async def _every_cell(client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
                      receiver: Receiver) -> None:
    shop_a, shop_b = await new_shop(), await new_shop()
    a1 = await new_agent(client, admin_headers, shop_a["id"], capacity=20)
    a2 = await new_agent(client, admin_headers, shop_a["id"])
    b1 = await new_agent(client, admin_headers, shop_b["id"])
    await new_agent(client, admin_headers, shop_b["id"])  # the second agent of shop B, holding nothing
    headers = {"admin": admin_headers, "none": {}, "wrong": bearer(f"wrong-{uuid.uuid4().hex}"),
               "agent_a1": a1["headers"], "agent_a2": a2["headers"], "agent_b1": b1["headers"]}
    # Shop B has work of its own, so an agent of B is refused for scope, not for an empty queue.
    await new_ticket(client, shop_b, "我要退货")

    async def held_ticket() -> str:
        await new_ticket(client, shop_a, "再不发货就给差评")
        claimed = await claim(client, a1)  # the new ticket, or an older one a previous cell handed back
        assert claimed.status_code == 200, claimed.text
        return str(claimed.json()["id"])

    standing = await held_ticket()  # watched by every cell that does not act on a ticket of its own
    outbound = await failed_delivery(client, admin_headers, shop_a["id"], receiver, a1, standing)
    wrong_cells = []
    for n, (method, template, body, expected) in enumerate(MATRIX):
        ticket_id = await held_ticket() if "{ticket}" in template else standing
        ids = {"shop": shop_a["id"], "ticket": ticket_id, "agent_a2": a2["id"],
               "until": (utcnow() + timedelta(hours=1)).isoformat(), **outbound}
        path, payload = _fill(template, ids, n), _fill(body, ids, n)
        refused = [caller for caller in CALLERS if expected[caller] != "2xx" and expected[caller] != 201]
        allowed = [caller for caller in CALLERS if caller not in refused]
        before = await _visible_state(client, admin_headers, shop_a["id"], ticket_id)
        for caller in refused:
            response = await client.request(method, path, json=payload, headers=headers[caller])
            if not _matches(expected[caller], response.status_code):
                wrong_cells.append((method, template, caller, expected[caller], response.status_code))
        after = await _visible_state(client, admin_headers, shop_a["id"], ticket_id)
        assert after == before, f"{method} {template}: a refused caller changed something"
        for caller in allowed:  # last, since they may change state
            response = await client.request(method, path, json=payload, headers=headers[caller])
            if not _matches(expected[caller], response.status_code):
                wrong_cells.append((method, template, caller, expected[caller], response.status_code))
    assert wrong_cells == []
