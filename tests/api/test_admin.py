"""Ops API: shops, secrets, queues, agents, on both databases."""

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.asyncio

ADMIN_ROUTES = [
    ("POST", "/v1/shops", {"id": "x-shop", "name": "X"}),
    ("GET", "/v1/shops", None),
    ("GET", "/v1/shops/demo", None),
    ("PATCH", "/v1/shops/demo", {"name": "Y"}),
    ("POST", "/v1/shops/demo/webhook-secrets", None),
    ("GET", "/v1/shops/demo/queues", None),
    ("POST", "/v1/shops/demo/queues", {"name": "vip"}),
    ("PATCH", "/v1/shops/demo/queues/presale", {"description": "x"}),
    ("POST", "/v1/shops/demo/agents", {"name": "A", "queues": ["presale"]}),
    ("GET", "/v1/shops/demo/agents", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {ADMIN_TOKEN}", "Bearer "])
async def test_admin_routes_refuse_missing_or_wrong_token(client: httpx.AsyncClient, method: str, path: str,
                                                          body: Any, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_create_shop_answers_the_fixed_shape_with_default_queues(client: httpx.AsyncClient,
                                                                       admin_headers: dict[str, str]) -> None:
    shop_id = f"s-{uuid.uuid4().hex[:8]}"
    response = await client.post("/v1/shops", json={"id": shop_id, "name": "Demo shop"}, headers=admin_headers)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "webhook_secret"}
    assert body["id"] == shop_id and body["name"] == "Demo shop"
    assert body["webhook_secret"].startswith("whsec_")

    queues = (await client.get(f"/v1/shops/{shop_id}/queues", headers=admin_headers)).json()
    assert [q["name"] for q in queues] == ["aftersale", "complaints", "escalations", "presale"]
    assert queues[0]["sla_targets"] == {"P1": 20, "P2": 30, "P3": 40, "P4": 60}

    read = (await client.get(f"/v1/shops/{shop_id}", headers=admin_headers)).json()
    assert "webhook_secret" not in read and body["webhook_secret"] not in str(read)


async def test_duplicate_shop_is_409(client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    response = await client.post("/v1/shops", json={"id": shop["id"], "name": "again"}, headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "shop_exists"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "no id"}, "body.id"),                                  # missing
    ({"id": "Bad Id!", "name": "x"}, "body.id"),                      # pattern
    ({"id": "ok-id", "name": ""}, "body.name"),                       # empty name
    ({"id": "ok-id", "name": "x\u0000y"}, "body.name"),               # NUL cannot be stored
    ({"id": "ok-id", "name": "x", "status": "open"}, "body.status"),  # unknown fields are refused
    ({"id": "ok-id", "name": "x", "sla_targets": {"P1": 0}}, "body.sla_targets.P1"),
    ({"id": "Q", "name": "q"}, "body.id"),                            # short values are not echoed either
    ({"id": "ok-id", "name": "x", "sla_targets": {"P1": "z"}}, "body.sla_targets.P1"),  # nor nested ones
])
async def test_shop_validation_names_the_field_without_echoing_values(
        client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any], field: str) -> None:
    response = await client.post("/v1/shops", json=body, headers=admin_headers)
    assert_names_field_without_echo(response, body, field)


def leaves(value: Any) -> list[str]:
    """Every submitted scalar, however deeply nested, as text."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [] if value is None or isinstance(value, bool) or value == "" else [str(value)]


def assert_names_field_without_echo(response: httpx.Response, body: dict[str, Any], field: str) -> None:
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = [d["field"] for d in error["details"]]
    assert field in fields and field in error["message"]
    assert all(set(d) == {"field", "reason", "type"} for d in error["details"])  # no pydantic "input"
    # Field paths may hold keys and indexes; everything else is searched for each value as a whole
    # token, so a one-letter name or a nested list item cannot hide in a longer word.
    text = response.text
    for path in fields:
        text = text.replace(path, "")
    for value in leaves(body):
        assert not re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w.-])", text), (value, text)


@pytest.mark.parametrize("queues", [
    ["presale", "q"],             # a one-letter name
    ["presale", "no-such-queue"],
])
async def test_unknown_queue_names_the_field_without_echoing_it(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, queues: list[str]) -> None:
    shop = await new_shop()
    base = f"/v1/shops/{shop['id']}/agents"
    body = {"name": "Wu", "queues": queues}
    assert_names_field_without_echo(await client.post(base, json=body, headers=admin_headers), body, "body.queues[1]")
    agent = (await client.post(base, json={"name": "Wu", "queues": ["presale"]}, headers=admin_headers)).json()
    update = {"queues": queues}
    assert_names_field_without_echo(await client.patch(f"{base}/{agent['id']}", json=update, headers=admin_headers),
                                    update, "body.queues[1]")


async def test_validation_error_does_not_echo_a_phone_number(client: httpx.AsyncClient,
                                                             admin_headers: dict[str, str]) -> None:
    response = await client.post("/v1/shops", json={"id": "13812345678 phone", "name": "x"}, headers=admin_headers)
    assert response.status_code == 422
    assert "13812345678" not in response.text


async def test_unknown_shop_is_404_everywhere(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for method, path, body in ADMIN_ROUTES[2:]:
        path = path.replace("/demo", "/no-such-shop")
        response = await client.request(method, path, json=body, headers=admin_headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "shop_not_found"


async def test_rotation_answers_a_new_secret_and_an_overlap_end(client: httpx.AsyncClient,
                                                                admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    response = await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", headers=admin_headers)
    assert response.status_code == 201
    body = response.json()
    assert body["webhook_secret"].startswith("whsec_") and body["webhook_secret"] != shop["webhook_secret"]
    assert body["previous_valid_until"] is not None


async def test_rotation_keeps_old_secrets_valid_for_the_overlap(app: Any, client: httpx.AsyncClient,
                                                                admin_headers: dict[str, str], new_shop: Any) -> None:
    from datetime import timedelta

    from app.clock import utcnow
    from app.db.shops import SessionShopStore

    shop = await new_shop()
    first = shop["webhook_secret"]
    second = (await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", headers=admin_headers)).json()
    third = (await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", headers=admin_headers)).json()
    async with app.state.sessionmaker() as session:
        now = await SessionShopStore(session).valid_secrets(shop_id=shop["id"], now=utcnow())
        later = await SessionShopStore(session).valid_secrets(shop_id=shop["id"], now=utcnow() + timedelta(hours=25))
    assert set(now) == {first, second["webhook_secret"], third["webhook_secret"]}
    assert later == [third["webhook_secret"]]


async def test_a_leaked_secret_is_revoked_by_a_rotation_with_no_overlap(client: httpx.AsyncClient,
                                                                         admin_headers: dict[str, str],
                                                                         new_shop: Any) -> None:
    from tests.support.webhooks import message, post_signed

    shop = await new_shop()
    leaked = shop["webhook_secret"]
    assert (await post_signed(client, shop["id"], leaked, [message("在吗")])).status_code == 202
    rotated = await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", json={"previous_valid_seconds": 0},
                                headers=admin_headers)
    assert rotated.status_code == 201
    refused = await post_signed(client, shop["id"], leaked, [message("伪造的消息")])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_signature"
    fresh = rotated.json()["webhook_secret"]
    assert (await post_signed(client, shop["id"], fresh, [message("在吗")])).status_code == 202
    # A window of its own, or none given (the setting's 24 h).
    hour = (await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", json={"previous_valid_seconds": 3600},
                              headers=admin_headers)).json()
    day = (await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", headers=admin_headers)).json()
    window = (datetime.fromisoformat(day["previous_valid_until"]) - datetime.fromisoformat(hour["previous_valid_until"]))
    assert timedelta(hours=22) < window < timedelta(hours=24)
    assert (await post_signed(client, shop["id"], fresh, [message("在吗")])).status_code == 202  # inside its window
    too_long = await client.post(f"/v1/shops/{shop['id']}/webhook-secrets", json={"previous_valid_seconds": -1},
                                 headers=admin_headers)
    assert too_long.status_code == 422 and "body.previous_valid_seconds" in too_long.text


async def test_queues_create_update_and_conflict(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                 new_shop: Any) -> None:
    shop = await new_shop()
    base = f"/v1/shops/{shop['id']}/queues"
    created = await client.post(base, json={"name": "vip", "description": "VIP buyers",
                                            "sla_targets": {"P1": 10, "P2": 15, "P3": 20, "P4": 30}},
                                headers=admin_headers)
    assert created.status_code == 201
    assert created.json()["sla_override"] is True and created.json()["sla_targets"]["P1"] == 10
    assert (await client.post(base, json={"name": "vip"}, headers=admin_headers)).status_code == 409
    assert (await client.post(base, json={"name": "presale"}, headers=admin_headers)).status_code == 409

    cleared = await client.patch(f"{base}/vip", json={"sla_targets": None}, headers=admin_headers)
    assert cleared.status_code == 200
    assert cleared.json()["sla_override"] is False and cleared.json()["sla_targets"]["P1"] == 20
    missing = await client.patch(f"{base}/nope", json={"description": "x"}, headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "queue_not_found"


async def test_agent_token_is_shown_once_and_stored_as_hash(app: Any, client: httpx.AsyncClient,
                                                            admin_headers: dict[str, str], new_shop: Any) -> None:
    from sqlalchemy import select

    from app.db.models import Agent
    from app.security import hash_token

    shop = await new_shop()
    base = f"/v1/shops/{shop['id']}/agents"
    response = await client.post(base, json={"name": "Lin", "queues": ["presale", "aftersale"], "level": "mid",
                                             "capacity": 7}, headers=admin_headers)
    assert response.status_code == 201
    agent = response.json()
    assert agent["token"].startswith("agt_")
    assert agent["queues"] == ["aftersale", "presale"] and agent["capacity"] == 7 and agent["level"] == "mid"

    listed = await client.get(base, headers=admin_headers)
    assert listed.status_code == 200 and agent["token"] not in listed.text
    assert [a["id"] for a in listed.json()] == [agent["id"]]
    async with app.state.sessionmaker() as session:
        stored = await session.scalar(select(Agent).where(Agent.id == agent["id"]))
    assert stored is not None and stored.token_hash == hash_token(agent["token"])
    assert agent["token"] not in stored.token_hash


async def test_agent_defaults_and_errors(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                         new_shop: Any) -> None:
    shop = await new_shop()
    base = f"/v1/shops/{shop['id']}/agents"
    default = await client.post(base, json={"name": "Wu", "queues": ["complaints"]}, headers=admin_headers)
    assert default.status_code == 201
    assert default.json()["capacity"] == 5 and default.json()["level"] == "junior"

    unknown = await client.post(base, json={"name": "Wu", "queues": ["presale", "nope"]}, headers=admin_headers)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"][0]["field"] == "body.queues[1]"
    for body, field in [({"name": "x", "queues": []}, "body.queues"),
                        ({"name": "x", "queues": ["presale"], "capacity": 51}, "body.capacity"),
                        ({"name": "x", "queues": ["presale"], "level": "boss"}, "body.level"),
                        ({"name": "x", "queues": ["presale"], "token": "mine"}, "body.token")]:
        response = await client.post(base, json=body, headers=admin_headers)
        assert response.status_code == 422, body
        assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_agent_update_changes_queues_and_deactivates(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                           new_shop: Any) -> None:
    shop = await new_shop()
    base = f"/v1/shops/{shop['id']}/agents"
    agent = (await client.post(base, json={"name": "Wu", "queues": ["presale"]}, headers=admin_headers)).json()
    updated = await client.patch(f"{base}/{agent['id']}", json={"queues": ["complaints", "escalations"],
                                                                 "active": False}, headers=admin_headers)
    assert updated.status_code == 200
    assert updated.json()["queues"] == ["complaints", "escalations"] and updated.json()["active"] is False
    other = await new_shop()
    foreign = await client.patch(f"/v1/shops/{other['id']}/agents/{agent['id']}", json={"active": True},
                                 headers=admin_headers)
    assert foreign.status_code == 404
