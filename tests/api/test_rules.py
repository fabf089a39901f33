"""Rules admin on both databases: read, validate, activate, backtest and roll back a shop's ruleset."""

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.db.models import Message, Ruleset, Shop, Ticket, TicketEvent
from app.schemas.rules import EXAMPLE_MOVE_BAD_REVIEWS, EXAMPLE_RULESET
from app.triage import default_ruleset
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

DEFAULT_ID = default_ruleset().id


def rules_url(shop_id: str, suffix: str = "") -> str:
    return f"/v1/shops/{shop_id}/rules{suffix}"


def default_body() -> dict[str, Any]:
    return default_ruleset().to_mapping()


def bad_reviews_as_quality() -> dict[str, Any]:
    """The shipped rules with every bad-review rule moved to quality_issue: 差评 becomes P2 (aftersale).

    The learned model knows bad reviews whatever the phrases say, so a shop that re-maps intents by its phrases
    asks for the rules alone ("model": "none"); the backtest then also shows the model's removal."""
    body = default_body()
    body["model"] = "none"
    moved = body["intents"]["bad_review_threat"]["rules"]
    body["intents"]["bad_review_threat"]["rules"] = []
    body["intents"]["quality_issue"]["rules"].extend(moved)
    return body


async def row_counts(app: FastAPI, shop_id: str) -> dict[str, int]:
    async with app.state.sessionmaker() as session:
        counts = {}
        for model in (Message, Ticket, TicketEvent, Ruleset):
            counts[model.__tablename__] = int(await session.scalar(
                select(func.count()).select_from(model).where(model.shop_id == shop_id)))
        counts["active_version"] = await session.scalar(select(Shop.active_ruleset_version)
                                                        .where(Shop.id == shop_id)) or 0
        return counts


async def stored_ticket_ruleset(app: FastAPI, ticket_id: str) -> str:
    async with app.state.sessionmaker() as session:
        return str(await session.scalar(select(Ticket.ruleset).where(Ticket.id == ticket_id)))


async def test_a_new_shop_uses_the_shipped_ruleset(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                   new_shop: Any) -> None:
    shop = await new_shop()
    response = await client.get(rules_url(shop["id"]), headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == DEFAULT_ID and body["source"] == "shipped"
    assert body["activated_at"] is None and body["created_at"] is None
    assert body["body"] == default_body()

    versions = (await client.get(rules_url(shop["id"], "/versions"), headers=admin_headers)).json()
    assert versions == {"active": DEFAULT_ID, "active_version": None, "versions": []}


async def test_validate_summarises_a_good_ruleset(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                  new_shop: Any) -> None:
    shop = await new_shop()
    response = await client.post(rules_url(shop["id"], "/validate"), json={"ruleset": default_body()},
                                 headers=admin_headers)
    assert response.status_code == 200, response.text
    summary = response.json()
    bad_review = default_body()["intents"]["bad_review_threat"]
    assert summary["valid"] is True
    assert summary["id"] == f"{shop['id']}@1"  # the shipped name is reserved: the shop's copy is named after it
    assert summary["intents"]["bad_review_threat"] == {
        "tier": "P1", "base": bad_review["base"], "rules": len(bad_review["rules"]),
        "phrases": sum(len(rule["phrases"]) for rule in bad_review["rules"])}
    assert summary["phrases"] == sum(entry["phrases"] for entry in summary["intents"].values())
    assert summary["routes"]["bad_review_threat"] == "complaints"

    # The documented examples are valid candidates themselves.
    for example in (EXAMPLE_RULESET, EXAMPLE_MOVE_BAD_REVIEWS):
        response = await client.post(rules_url(shop["id"], "/validate"), json={"ruleset": example},
                                     headers=admin_headers)
        assert response.status_code == 200, response.text
    assert response.json()["id"] == "reviews-as-quality@1"
    # Validating stores nothing.
    assert (await client.get(rules_url(shop["id"], "/versions"), headers=admin_headers)).json()["versions"] == []


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


def _duplicate_rule_id(body: dict[str, Any]) -> None:
    rules = body["intents"]["logistics"]["rules"]
    rules[1]["id"] = rules[0]["id"]


BAD_RULESETS = [
    # base outside the P1 band
    (_set(("intents", "bad_review_threat", "base"), 500), "body.ruleset.intents.bad_review_threat.base", "band"),
    # an intent the service does not know
    (_set(("intents", "refunds"), {"rules": []}), "body.ruleset.intents.refunds", "unknown key"),
    # a phrase that is not a string
    (_set(("intents", "logistics", "rules", 0, "phrases", 1), 12315),
     "body.ruleset.intents.logistics.rules[0].phrases[1]", "expected a string"),
    # an empty phrase
    (_set(("intents", "presale", "rules", 0, "phrases", 0), "   "),
     "body.ruleset.intents.presale.rules[0].phrases[0]", "empty phrase"),
    # two rules with one id
    (_duplicate_rule_id, "body.ruleset.intents.logistics.rules[1].id", "duplicate rule id"),
    # a rule weight of zero
    (_set(("intents", "complaint", "rules", 0, "weight"), 0), "body.ruleset.intents.complaint.rules[0].weight",
     "greater than 0"),
    # a route to a queue the shop does not have
    (_set(("routes", "logistics"), "vip-logistics"), "body.ruleset.routes.logistics", "does not exist in this shop"),
    # a route that is not a queue name
    (_set(("routes", "presale"), "Pre Sale"), "body.ruleset.routes.presale", "expected a queue name"),
    # a NUL byte, which PostgreSQL cannot store
    (_set(("intents", "logistics", "rules", 0, "phrases", 0), "物流\x00不动"),
     "body.ruleset.intents.logistics.rules[0].phrases[0]", "NUL"),
    # an unknown top-level key
    (_set(("colour",), "red"), "body.ruleset.colour", "unknown key"),
    # no intents at all
    (_delete("intents"), "body.ruleset.intents", "required"),
    # a name that is not a name
    (_set(("name",), "夏季 促销"), "body.ruleset.name", "expected 1-64 letters"),
    # an unknown emotion
    (_set(("emotion_baseline", "logistics"), "furious"), "body.ruleset.emotion_baseline.logistics", "expected one of"),
]


@pytest.mark.parametrize(("change", "field", "reason"), BAD_RULESETS)
async def test_validate_names_the_faulty_entry(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                               new_shop: Any, change: Callable[[dict[str, Any]], None], field: str,
                                               reason: str) -> None:
    shop = await new_shop()
    body = default_body()
    change(body)
    for suffix in ("/validate", "", "/backtest"):
        response = await client.post(rules_url(shop["id"], suffix), json={"ruleset": body}, headers=admin_headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_ruleset"
        assert error["details"][0]["field"] == field
        assert reason in error["details"][0]["reason"]
        assert field in error["message"]
    assert (await client.get(rules_url(shop["id"]), headers=admin_headers)).json()["id"] == DEFAULT_ID


async def test_request_shape_errors_are_422(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                            new_shop: Any) -> None:
    shop = await new_shop()
    cases = [
        ("/validate", {"ruleset": ["not", "a", "mapping"]}, "body.ruleset"),
        ("/validate", {}, "body.ruleset"),
        ("/backtest", {"ruleset": default_body(), "limit": 0}, "body.limit"),
        ("/backtest", {"ruleset": default_body(), "limit": 10_001}, "body.limit"),
        ("", {"ruleset": default_body(), "name": "has space"}, "body.name"),
        ("", {"ruleset": default_body(), "extra": 1}, "body.extra"),
    ]
    for suffix, payload, field in cases:
        response = await client.post(rules_url(shop["id"], suffix), json=payload, headers=admin_headers)
        assert response.status_code == 422, (suffix, payload)
        assert field in {d["field"] for d in response.json()["error"]["details"]}
    # The shipped ruleset's name cannot be taken by a shop's version.
    response = await client.post(rules_url(shop["id"]), json={"ruleset": default_body(), "name": "default"},
                                 headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.name"


async def test_activation_stores_versions_one_and_two(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                      new_shop: Any) -> None:
    shop = await new_shop()
    first = await client.post(rules_url(shop["id"]), json={"ruleset": {**default_body(), "version": 41}},
                              headers=admin_headers)
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert (v1["version"], v1["name"], v1["id"], v1["source"]) == (1, shop["id"], f"{shop['id']}@1", "shop")
    assert v1["activated_at"] is not None and v1["body"]["version"] == 1  # the mapping's own version is ignored

    second = await client.post(rules_url(shop["id"]), json={"ruleset": EXAMPLE_RULESET, "name": "summer-2026"},
                               headers=admin_headers)
    assert second.status_code == 201, second.text
    assert (second.json()["version"], second.json()["id"]) == (2, "summer-2026@2")

    active = (await client.get(rules_url(shop["id"]), headers=admin_headers)).json()
    assert active["id"] == "summer-2026@2" and active["body"]["name"] == "summer-2026"
    assert active["body"]["intents"]["logistics"]["rules"] == [
        {**rule, "weight": 1.0, "negatable": False} for rule in EXAMPLE_RULESET["intents"]["logistics"]["rules"]]

    versions = (await client.get(rules_url(shop["id"], "/versions"), headers=admin_headers)).json()
    assert versions["active"] == "summer-2026@2" and versions["active_version"] == 2
    assert [(v["version"], v["id"], v["active"]) for v in versions["versions"]] == [
        (2, "summer-2026@2", True), (1, f"{shop['id']}@1", False)]
    assert all("body" not in v for v in versions["versions"])

    shop_read = (await client.get(f"/v1/shops/{shop['id']}", headers=admin_headers)).json()
    assert shop_read["active_ruleset_version"] == 2


async def test_a_route_to_a_queue_the_shop_created_is_accepted(client: httpx.AsyncClient,
                                                               admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    body = default_body()
    body["routes"]["rights_protection"] = "legal"
    response = await client.post(rules_url(shop["id"], "/validate"), json={"ruleset": body}, headers=admin_headers)
    assert response.status_code == 422
    created = await client.post(f"/v1/shops/{shop['id']}/queues", json={"name": "legal"}, headers=admin_headers)
    assert created.status_code == 201
    response = await client.post(rules_url(shop["id"]), json={"ruleset": body}, headers=admin_headers)
    assert response.status_code == 201, response.text
    triage = await client.post("/v1/triage/classify", json={"text": "我要去12315投诉你们", "shop_id": shop["id"]},
                               headers=admin_headers)
    assert triage.json()["queue"] == "legal"


async def test_concurrent_activations_get_distinct_versions(client: httpx.AsyncClient,
                                                            admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    answers = await asyncio.gather(*(
        client.post(rules_url(shop["id"]), json={"ruleset": default_body(), "name": f"race-{n}"},
                    headers=admin_headers) for n in range(6)))
    assert [a.status_code for a in answers] == [201] * 6
    assert sorted(a.json()["version"] for a in answers) == [1, 2, 3, 4, 5, 6]
    versions = (await client.get(rules_url(shop["id"], "/versions"), headers=admin_headers)).json()
    assert [v["version"] for v in versions["versions"]] == [6, 5, 4, 3, 2, 1]
    assert versions["active_version"] in range(1, 7)


async def test_backtest_and_activation_move_bad_reviews_to_p2(app: FastAPI, client: httpx.AsyncClient,
                                                              admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    rambling = "亲，我上周买的那件外套，" + "颜色和款式其实都还可以，" * 12 + "就是到现在还没收到，再不到就给差评"
    texts = {
        "threat": "亲，快递三天没动了，再不到就给差评",              # P1 under the shipped rules
        "stars": "再这样我就给一星",                                # P1: star rating
        "english": "If it does not arrive by Friday I will leave a 1-star review",  # P1, English
        "rambling": rambling,                                      # P1: the threat is at the very end
        "size": "请问这件有M码吗？",                               # P4: unchanged
        "parcel": "物流三天没动了",                                # P3: unchanged
        "refund": "refund什么时候到账",                            # P2: unchanged
    }
    sent = {key: message(text, conversation=f"c-{key}") for key, text in texts.items()}
    response = await post_signed(client, shop["id"], shop["webhook_secret"], list(sent.values()))
    assert response.status_code == 202, response.text
    before = {key: result for key, result in zip(texts, response.json()["results"], strict=True)}
    moved = {"threat", "stars", "english", "rambling"}
    assert {key for key, r in before.items() if r["tier"] == "P1"} == moved
    assert all(before[key]["primary"] == "bad_review_threat" and before[key]["queue"] == "complaints"
               for key in moved)

    candidate = bad_reviews_as_quality()
    counts = await row_counts(app, shop["id"])
    response = await client.post(rules_url(shop["id"], "/backtest"), json={"ruleset": candidate},
                                 headers=admin_headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert await row_counts(app, shop["id"]) == counts  # a backtest writes nothing

    assert report["active"] == DEFAULT_ID and report["candidate"] == f"{shop['id']}@1"
    assert report["messages"] == len(texts)
    assert report["changed"] == {"primary": 4, "tier": 4, "queue": 4, "any": 4}
    assert report["tickets"] == {"primary": 4, "tier": 4, "queue": 4, "any": 4}
    assert report["tier_moves"]["P1"] == {"P1": 0, "P2": 4, "P3": 0, "P4": 0}
    assert report["tier_moves"]["P4"]["P4"] == 1 and report["tier_moves"]["P3"]["P3"] == 1
    assert sum(sum(row.values()) for row in report["tier_moves"].values()) == len(texts)
    examples = report["examples"]["tier"]
    assert {e["external_id"] for e in examples} == {sent[key]["message_id"] for key in moved}
    assert {e["ticket_id"] for e in examples} == {before[key]["ticket_id"] for key in moved}
    for example in examples:
        assert example["before"] == {"primary": "bad_review_threat", "tier": "P1", "queue": "complaints"}
        assert example["after"] == {"primary": "quality_issue", "tier": "P2", "queue": "aftersale"}
        assert len(example["excerpt"]) <= 80
    rambling_example = next(e for e in examples if e["external_id"] == sent["rambling"]["message_id"])
    assert rambling_example["excerpt"].startswith("…") and rambling_example["excerpt"].endswith("给差评")
    assert report["examples"]["primary"] == examples and report["examples"]["queue"] == examples

    activated = await client.post(rules_url(shop["id"]), json={"ruleset": candidate, "name": "reviews-p2"},
                                  headers=admin_headers)
    assert activated.status_code == 201, activated.text
    new_id = activated.json()["id"]
    assert new_id == "reviews-p2@1"

    # Later messages are triaged by the new version, at once in this process.
    later = message("明天再不到就给差评", conversation="c-later")
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [later])
    result = response.json()["results"][0]
    assert (result["primary"], result["tier"], result["queue"]) == ("quality_issue", "P2", "aftersale")
    ticket = (await client.get(f"/v1/tickets/{result['ticket_id']}", headers=admin_headers)).json()
    assert ticket["tier"] == "P2" and ticket["queue"] == "aftersale"
    assert ticket["messages"][0]["triage"]["ruleset"] == new_id
    assert await stored_ticket_ruleset(app, result["ticket_id"]) == new_id

    # Earlier messages and tickets keep the decision and the ruleset id they were triaged with.
    for key in moved:
        earlier = (await client.get(f"/v1/tickets/{before[key]['ticket_id']}", headers=admin_headers)).json()
        assert (earlier["tier"], earlier["primary"], earlier["queue"]) == ("P1", "bad_review_threat", "complaints")
        assert earlier["messages"][0]["triage"]["ruleset"] == DEFAULT_ID
        assert await stored_ticket_ruleset(app, before[key]["ticket_id"]) == DEFAULT_ID

    # Replaying the active version against itself changes nothing.
    report = (await client.post(rules_url(shop["id"], "/backtest"), json={"ruleset": candidate},
                                headers=admin_headers)).json()
    assert report["active"] == new_id and report["messages"] == len(texts) + 1
    assert report["changed"] == {"primary": 0, "tier": 0, "queue": 0, "any": 0}
    assert report["examples"] == {"primary": [], "tier": [], "queue": []}


async def test_backtest_replays_the_latest_messages_up_to_the_limit(client: httpx.AsyncClient,
                                                                    admin_headers: dict[str, str],
                                                                    new_shop: Any) -> None:
    shop = await new_shop()
    empty = await client.post(rules_url(shop["id"], "/backtest"), json={"ruleset": bad_reviews_as_quality()},
                              headers=admin_headers)
    assert empty.status_code == 200
    assert empty.json()["messages"] == 0 and empty.json()["since"] is None

    sent = [message(text, conversation=f"c-{n}") for n, text in enumerate(["给差评", "有货吗", "打一星"])]
    for item in sent:  # one request each: three receipt times
        assert (await post_signed(client, shop["id"], shop["webhook_secret"], [item])).status_code == 202
    report = (await client.post(rules_url(shop["id"], "/backtest"),
                                json={"ruleset": bad_reviews_as_quality(), "limit": 2},
                                headers=admin_headers)).json()
    assert report["messages"] == 2
    assert report["changed"]["tier"] == 1  # the oldest (给差评) is outside the window
    assert [e["external_id"] for e in report["examples"]["tier"]] == [sent[2]["message_id"]]
    assert report["since"] <= report["until"]


async def test_rollback_to_a_version_and_to_the_shipped_rules(client: httpx.AsyncClient,
                                                              admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    for name in ("first", "second"):
        assert (await client.post(rules_url(shop["id"]), json={"ruleset": bad_reviews_as_quality(), "name": name},
                                  headers=admin_headers)).status_code == 201
    classify = {"text": "再不发货就给差评", "shop_id": shop["id"]}
    assert (await client.post("/v1/triage/classify", json=classify, headers=admin_headers)).json()["tier"] == "P2"

    response = await client.post(rules_url(shop["id"], "/rollback"), json={"version": 1}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["version"]) == ("first@1", 1)
    versions = (await client.get(rules_url(shop["id"], "/versions"), headers=admin_headers)).json()
    assert [(v["version"], v["active"]) for v in versions["versions"]] == [(2, False), (1, True)]
    assert (await client.post("/v1/triage/classify", json=classify, headers=admin_headers)).json()["ruleset"] == \
        "first@1"

    response = await client.post(rules_url(shop["id"], "/rollback"), json={"version": None}, headers=admin_headers)
    assert response.status_code == 200
    assert response.json()["source"] == "shipped" and response.json()["id"] == DEFAULT_ID
    triage = (await client.post("/v1/triage/classify", json=classify, headers=admin_headers)).json()
    assert (triage["tier"], triage["ruleset"]) == ("P1", DEFAULT_ID)

    missing = await client.post(rules_url(shop["id"], "/rollback"), json={"version": 3}, headers=admin_headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ruleset_version_not_found"
    assert (await client.post(rules_url(shop["id"], "/rollback"), json={}, headers=admin_headers)).status_code == 422


def _rules_routes(shop_id: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET", rules_url(shop_id), None),
        ("GET", rules_url(shop_id, "/versions"), None),
        ("POST", rules_url(shop_id, "/validate"), {"ruleset": EXAMPLE_RULESET}),
        ("POST", rules_url(shop_id), {"ruleset": EXAMPLE_RULESET}),
        ("POST", rules_url(shop_id, "/backtest"), {"ruleset": EXAMPLE_RULESET}),
        ("POST", rules_url(shop_id, "/rollback"), {"version": None}),
    ]


async def test_unknown_shop_is_404(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for method, path, body in _rules_routes("no-such-shop"):
        response = await client.request(method, path, json=body, headers=admin_headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "shop_not_found"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Bearer "])
async def test_rules_need_the_admin_token(app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str],
                                          new_shop: Any, authorization: str | None) -> None:
    shop = await new_shop()
    agent = await client.post(f"/v1/shops/{shop['id']}/agents", json={"name": "Lin", "queues": ["complaints"]},
                              headers=admin_headers)
    counts = await row_counts(app, shop["id"])
    for headers in ({"Authorization": authorization} if authorization else {},
                    {"Authorization": f"Bearer {agent.json()['token']}"}):  # an agent is not ops
        for method, path, body in _rules_routes(shop["id"]):
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthorized"
    assert await row_counts(app, shop["id"]) == counts


async def test_openapi_documents_the_rules_operations(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [(path, method, op) for path, item in spec["paths"].items() if "/rules" in path
                  for method, op in item.items()]
    assert len(operations) == 6
    for path, method, op in operations:
        assert op["tags"] == ["ops: rules"] and op["summary"] and op["description"], (path, method)
        assert {"401", "404", "422"} <= set(op["responses"]) or method == "get", (path, method)
        assert {"401", "404"} <= set(op["responses"])
        if method == "post" and not path.endswith("/rollback"):
            examples = op["requestBody"]["content"]["application/json"]["examples"]
            assert any("差评" in str(e["value"]) for e in examples.values())
            assert any("bad review" in str(e["value"]) for e in examples.values())
