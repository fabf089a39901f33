"""POST /v1/triage/classify: the triage with evidence, nothing stored."""

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.asyncio


async def test_classify_with_admin_token_explains_itself(client: httpx.AsyncClient,
                                                         admin_headers: dict[str, str]) -> None:
    text = "亲，快递三天没动了，再不到就给差评"
    response = await client.post("/v1/triage/classify", json={"text": text}, headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["primary"], body["tier"], body["queue"]) == ("bad_review_threat", "P1", "complaints")
    assert [hit["intent"] for hit in body["intents"]][:2] == ["bad_review_threat", "logistics"]
    for hit in body["intents"]:
        for evidence in hit["evidence"]:
            assert text[evidence["start"]:evidence["end"]] == evidence["text"]


async def test_classify_with_agent_token_and_shop_scoping(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                          new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    agent = (await client.post(f"/v1/shops/{shop['id']}/agents", json={"name": "A", "queues": ["presale"]},
                               headers=admin_headers)).json()
    headers = {"Authorization": f"Bearer {agent['token']}"}
    own = await client.post("/v1/triage/classify", json={"text": "退款", "shop_id": shop["id"]}, headers=headers)
    assert own.status_code == 200 and own.json()["primary"] == "return_refund"
    foreign = await client.post("/v1/triage/classify", json={"text": "退款", "shop_id": other["id"]},
                                headers=headers)
    assert foreign.status_code == 404


@pytest.mark.parametrize(("body", "field"), [({"text": ""}, "body.text"), ({"text": "a\u0000"}, "body.text"),
                                             ({"text": "x", "extra": 1}, "body.extra"), ({}, "body.text")])
async def test_classify_validation(client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any],
                                   field: str) -> None:
    response = await client.post("/v1/triage/classify", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_classify_requires_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/triage/classify", json={"text": "x"})).status_code == 401
    wrong = await client.post("/v1/triage/classify", json={"text": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
