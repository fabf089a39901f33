"""Messages beyond text (SPEC 9.2) through the signed webhook, on both databases: kinds, attachments, cards and
system events are stored whole with their triage; a bad one refuses the whole batch, naming its field."""

from typing import Any

import httpx
import pytest

from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio


def without_text(**fields: Any) -> dict[str, Any]:
    found = message("unused", conversation="c-mixed", customer="b-mixed", **fields)
    del found["text"]
    return found


async def test_a_mixed_batch_is_stored_whole_and_the_review_ranks_p1_with_event_evidence(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    batch = [
        message("这款有现货吗", conversation="c-mixed", customer="b-mixed"),
        without_text(kind="image", attachments=[{"url": "https://img.example.com/a.jpg", "mime": "image/jpeg",
                                                  "name": "a.jpg"}]),
        without_text(kind="order", order={"id": "o-9", "status": "shipped"}),
        without_text(kind="system", event="review_posted", rating=1),
    ]
    response = await post_signed(client, shop["id"], shop["webhook_secret"], batch)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["primary"] for r in results] == ["presale", "other", "other", "bad_review_threat"]
    assert results[3]["tier"] == "P1" and len({r["ticket_id"] for r in results}) == 1
    ticket = (await client.get(f"/v1/tickets/{results[0]['ticket_id']}", headers=admin_headers)).json()
    assert ticket["tier"] == "P1" and ticket["primary"] == "bad_review_threat"
    messages = ticket["messages"]
    assert [m["kind"] for m in messages] == ["text", "image", "order", "system"]
    assert messages[1]["content"] == {"attachments": [{"url": "https://img.example.com/a.jpg", "mime": "image/jpeg",
                                                       "name": "a.jpg"}]}
    assert messages[1]["text"] == "" and messages[1]["triage"]["intents"][0]["evidence"][0]["rule"] == "media.image"
    assert messages[2]["content"] == {"order": {"id": "o-9", "status": "shipped"}}
    assert messages[3]["content"] == {"event": "review_posted", "rating": 1}
    [hit] = messages[3]["triage"]["intents"]
    assert hit["intent"] == "bad_review_threat"
    assert hit["evidence"] == [{"rule": "event.review_posted", "start": 0, "end": 0, "text": "rating=1"}]


@pytest.mark.parametrize(("fields", "primary"), [
    ({"kind": "system", "event": "refund_requested"}, "return_refund"),
    ({"kind": "system", "event": "dispute_opened"}, "complaint"),
    ({"kind": "system", "event": "review_posted", "rating": 5}, "other"),       # a good review asks for nothing
    ({"kind": "system", "event": "order_shipped"}, "other"),                    # news, not a request
    ({"kind": "system", "event": "something_new"}, "other"),                    # an event this service does not know
    ({"kind": "system", "event": "refund_requested", "text": "再不退款我就投诉"}, "complaint"),  # the caption leads
    ({"kind": "image", "text": "收到的杯子是碎的", "attachments": [{"url": "https://i.example.com/x.png"}]},
     "quality_issue"),                                                          # a caption is read like text
    ({"kind": "product", "product": {"id": "p-1", "title": "保温杯"}}, "other"),
    ({"kind": "sticker"}, "other"),
])
async def test_what_a_message_carries_decides_its_triage(client: httpx.AsyncClient, new_shop: Any,
                                                          fields: dict[str, Any], primary: str) -> None:
    shop = await new_shop()
    body = without_text(**{k: v for k, v in fields.items() if k != "text"})
    if "text" in fields:
        body["text"] = fields["text"]
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [body])
    assert response.status_code == 202, response.text
    assert response.json()["results"][0]["primary"] == primary


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": "text"}, "body.messages[1].text"),                                  # text needs its text
    ({"kind": "system"}, "body.messages[1].event"),                               # a system message needs its event
    ({"kind": "image", "event": "review_posted"}, "body.messages[1].event"),      # an event only on system messages
    ({"kind": "system", "event": "order_paid", "rating": 2}, "body.messages[1].rating"),  # a rating only on reviews
    ({"kind": "system", "event": "review_posted", "rating": 6}, "body.messages[1].rating"),
    ({"kind": "image", "attachments": [{"url": "file:///etc/passwd"}]}, "body.messages[1].attachments[0].url"),
    ({"kind": "gif"}, "body.messages[1].kind"),
])
async def test_a_bad_message_refuses_the_whole_batch_naming_its_field(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, fields: dict[str, Any],
        field: str) -> None:
    shop = await new_shop()
    good = message("这款有现货吗", conversation="c-bad", customer="b-bad")
    response = await post_signed(client, shop["id"], shop["webhook_secret"], [good, without_text(**fields)])
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]
    found = await client.get(f"/v1/shops/{shop['id']}/tickets?platform=taobao&conversation_id=c-bad",
                             headers=admin_headers)
    assert found.json()["tickets"] == []  # nothing of the batch stored
