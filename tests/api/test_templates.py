"""Reply templates and suggestions over the API, on both databases (SPEC 11)."""

from typing import Any

import httpx
import pytest

from tests.support.queues import claim, new_agent, new_ticket

pytestmark = pytest.mark.asyncio

OWN = [{"id": "sorry", "intent": "any", "emotion": "angry", "apology": True,
        "text": {"zh": "{buyer_nick}，实在抱歉！", "en": "{buyer_nick}, we are so sorry!"}},
       {"id": "where", "intent": "logistics", "text": {"zh": "{buyer_nick}您好，订单{order_id}已催促快递。",
                                                       "en": "Hi {buyer_nick}, order {order_id} is being chased."}}]


async def test_a_shop_reads_the_shipped_set_until_it_stores_its_own(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    path = f"/v1/shops/{shop['id']}/templates"
    shipped = (await client.get(path, headers=admin_headers)).json()
    assert (shipped["source"], shipped["version"], shipped["updated_at"]) == ("shipped", 0, None)
    assert "bad_review_threat" in {t["intent"] for t in shipped["templates"]}
    stored = await client.put(path, json={"templates": OWN}, headers=admin_headers)
    assert stored.status_code == 200, stored.text
    again = await client.put(path, json={"templates": OWN[1:]}, headers=admin_headers)
    read = (await client.get(path, headers=admin_headers)).json()
    assert (read["source"], read["version"], [t["id"] for t in read["templates"]]) == ("shop", 2, ["where"])
    assert read == again.json()
    assert read["templates"][0] == {**OWN[1], "emotion": "any", "apology": False}


@pytest.mark.parametrize(("text", "language"), [
    ("亲，删除差评我们就给您退款", "zh"),                  # Chinese: delete the bad review for a refund
    ("改成好评返现10元", "zh"),                          # Chinese: change to a good review for cash
    ("Delete your review and we will refund you in full", "en"),  # English
    ("Update your rating to 5 stars for a coupon", "en"),
])
async def test_a_template_buying_a_review_change_is_refused_naming_the_field(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, text: str, language: str) -> None:
    shop = await new_shop()
    path = f"/v1/shops/{shop['id']}/templates"
    body = {"templates": [OWN[1], {"id": "bribe", "intent": "bad_review_threat", "text": {language: text}}]}
    refused = await client.put(path, json=body, headers=admin_headers)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_template"
    assert error["details"][0]["field"] == f"body.templates[1].text.{language}"
    assert "review" in error["details"][0]["reason"]
    # Nothing of the refused set was stored.
    assert (await client.get(path, headers=admin_headers)).json()["source"] == "shipped"


@pytest.mark.parametrize(("body", "field"), [
    ({"templates": [{"id": "a", "text": {"zh": "您好{nick}"}}]}, "body.templates[0].text.zh"),
    ({"templates": [{"id": "a", "text": {"en": "x"}}, {"id": "a", "text": {"en": "y"}}]}, "body.templates[1].id"),
    ({"templates": [{"id": "a", "intent": "refunds", "text": {"en": "x"}}]}, "body.templates[0].intent"),
    ({"templates": [{"id": "a", "text": {"zh": "a\u0000b"}}]}, "body.templates[0].text.zh"),
    ({"templates": [{"id": "A b", "text": {"zh": "x"}}]}, "body.templates[0].id"),
])
async def test_invalid_sets_are_refused_naming_the_field(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, body: dict[str, Any],
        field: str) -> None:
    shop = await new_shop()
    refused = await client.put(f"/v1/shops/{shop['id']}/templates", json=body, headers=admin_headers)
    assert refused.status_code == 422
    assert field in [d["field"] for d in refused.json()["error"]["details"]]


async def test_unknown_shop_and_missing_token(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    assert (await client.get("/v1/shops/nope-shop/templates", headers=admin_headers)).status_code == 404
    assert (await client.put("/v1/shops/nope-shop/templates", json={"templates": []},
                             headers=admin_headers)).status_code == 404
    assert (await client.get("/v1/shops/nope-shop/templates")).status_code == 401


@pytest.mark.parametrize(("text", "primary", "best"), [
    # An angry buyer: the apology first, then the intent's angry template.
    ("快递一个星期都不动，气死我了！！！到底什么时候到？", "logistics", ["apology.angry", "logistics.delay"]),
    # A bad-review threat (read as angry): the apology, then complaint handling, never a bargain.
    ("再不发货我就给差评", "bad_review_threat",
     ["apology.angry", "review.complaint-handling.angry", "review.complaint-handling"]),
    ("请问这件衣服有M码吗", "presale", ["presale.answer"]),  # calm presale: the intent's own
])
async def test_suggestions_for_a_held_ticket(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                             new_shop: Any, text: str, primary: str, best: list[str]) -> None:
    shop = await new_shop(name="Lucky Store")
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket_id = await new_ticket(client, shop, text, order_id="o-123")
    assert (await claim(client, agent)).status_code == 200
    answer = await client.get(f"/v1/tickets/{ticket_id}/suggestions", headers=agent["headers"])
    assert answer.status_code == 200, answer.text
    found = answer.json()
    ids = [s["template_id"] for s in found["suggestions"]]
    assert (found["primary"], ids[:len(best)]) == (primary, best)
    assert all("{buyer_nick}" not in s["text"] and "{agent_name}" not in s["text"] for s in found["suggestions"])
    assert not any("删" in s["text"] or "返现" in s["text"] for s in found["suggestions"])
    if best == ["presale.answer"]:
        assert "Lucky Store" in found["suggestions"][0]["text"]


async def test_suggestions_use_the_shops_own_set_and_fill_its_variables(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    await client.put(f"/v1/shops/{shop['id']}/templates", json={"templates": OWN}, headers=admin_headers)
    ticket_id = await new_ticket(client, shop, "快递到哪了", order_id="o-77")
    found = (await client.get(f"/v1/tickets/{ticket_id}/suggestions", headers=agent["headers"])).json()
    assert found["suggestions"][0] == {"template_id": "where", "intent": "logistics", "emotion": "any",
                                       "apology": False, "language": "zh", "text": "小王您好，订单o-77已催促快递。",
                                       "missing": []}
    # An empty set: no suggestions at all.
    await client.put(f"/v1/shops/{shop['id']}/templates", json={"templates": []}, headers=admin_headers)
    found = (await client.get(f"/v1/tickets/{ticket_id}/suggestions", headers=agent["headers"])).json()
    assert found["suggestions"] == []


async def test_suggestions_are_read_as_the_ticket_is(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                     new_shop: Any) -> None:
    shop, other = await new_shop(), await new_shop()
    stranger = await new_agent(client, admin_headers, other["id"])
    ticket_id = await new_ticket(client, shop, "我要退货")
    assert (await client.get(f"/v1/tickets/{ticket_id}/suggestions", headers=stranger["headers"])).status_code == 404
    assert (await client.get(f"/v1/tickets/{ticket_id}/suggestions", headers=admin_headers)).status_code == 200
    assert (await client.get("/v1/tickets/nope/suggestions", headers=admin_headers)).status_code == 404
