"""Per-round response time and reply rate per buyer (GET /v1/shops/{id}/stats), on both databases, against a
conversation scripted with a frozen clock whose figures are worked out by hand below."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.clock import freeze
from tests.support.queues import claim, new_agent
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def test_rounds_caps_unanswered_rounds_and_buyers_equal_a_hand_count(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, T0)
    shop = await new_shop()   # open around the clock: rounds count the wall clock either way
    sid, secret = shop["id"], shop["webhook_secret"]
    a = await new_agent(client, admin_headers, sid, queues=("presale", "complaints"))
    b = await new_agent(client, admin_headers, sid, queues=("aftersale",))

    async def buyer(seconds: float, conversation: str, customer: str, text: str) -> str:
        clock.set(at(seconds))
        answer = await post_signed(client, sid, secret, [message(text, conversation=conversation, customer=customer)])
        assert answer.status_code == 202, answer.text
        return str(answer.json()["results"][0]["ticket_id"])

    async def seller(seconds: float, conversation: str, customer: str, sent: float) -> None:
        clock.set(at(seconds))
        answer = await post_signed(client, sid, secret, [message(
            "亲，在的", conversation=conversation, customer=customer, sender="seller", sent_at=iso(at(sent)))])
        assert answer.status_code == 202, answer.text

    async def agent_reply(seconds: float, agent: dict[str, Any], ticket_id: str) -> None:
        clock.set(at(seconds))
        response = await client.post(f"/v1/tickets/{ticket_id}/replies", headers=agent["headers"],
                                     json={"text": "您好"})
        assert response.status_code == 201, response.text

    async def claimed(seconds: float, agent: dict[str, Any]) -> str:
        clock.set(at(seconds))
        response = await claim(client, agent)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    # c1, buyer b1, presale: four rounds.
    c1 = await buyer(0, "c1", "b1", "在吗")
    await buyer(5, "c1", "b1", "这款有现货吗")
    assert await claimed(30, a) == c1
    await agent_reply(30, a, c1)                       # round 1: 0 -> 30, 30 s (A)
    await buyer(40, "c1", "b1", "有现货吗")
    # c2, buyer b2: never answered, still open at the end (waited past the cap): 600 s, nobody's.
    await buyer(100, "c2", "b2", "请问这款有货吗")
    # c4, buyer b1 again, aftersale: two rounds answered by B.
    c4 = await buyer(200, "c4", "b1", "我要退货")
    assert await claimed(200, b) == c4
    await agent_reply(210, b, c4)                      # 200 -> 210, 10 s (B)
    await buyer(215, "c4", "b1", "怎么退")
    await agent_reply(260, b, c4)                      # 215 -> 260, 45 s (B)
    # c5, buyer b4, a threat: A takes it and resolves it without a word: 600 s, A's.
    c5 = await buyer(290, "c5", "b4", "再不发货就给差评")
    assert await claimed(300, a) == c5
    clock.set(at(320))
    assert (await client.post(f"/v1/tickets/{c5}/resolve", headers=a["headers"])).status_code == 200
    # c1 goes on: the seller answers on the platform.
    await seller(700, "c1", "b1", sent=700)            # round 2: 40 -> 700, capped at 600 s (A's episode)
    await buyer(710, "c1", "b1", "好的")
    await buyer(720, "c1", "b1", "有现货吗")
    await seller(760, "c1", "b1", sent=750)            # round 3: 710 -> 750 (when it was sent), 40 s
    await buyer(800, "c1", "b1", "在吗")
    clock.set(at(850))                                 # round 4: resolved unanswered, 600 s
    assert (await client.post(f"/v1/shops/{sid}/tickets/{c1}/resolve", headers=admin_headers)).status_code == 200
    # c3, buyer b3: 20 s old at the end, under the cap: not counted yet.
    await buyer(880, "c3", "b3", "在吗")

    clock.set(at(900))
    response = await client.get(f"/v1/shops/{sid}/stats", headers=admin_headers,
                                params={"since": iso(at(-3600)), "until": iso(at(3600))})
    assert response.status_code == 200, response.text
    stats = response.json()

    def rounds(levels: dict[str, Any]) -> tuple[Any, ...]:
        r = levels["round_response"]
        return r["count"], r["mean"], r["p50"], r["p90"], r["unanswered"]

    def buyers(levels: dict[str, Any]) -> tuple[Any, ...]:
        return levels["buyers_received"], levels["buyers_replied"], levels["buyer_reply_rate"]

    # Overall: 30, 600, 40, 600 (c1), 600 (c2), 10, 45 (c4), 600 (c5); sorted 10 30 40 45 600 600 600 600.
    # Mean 2525 / 8; p50 halfway between 45 and 600; p90 at 6.3 of 7 steps: 600.
    assert rounds(stats["overall"]) == (8, 315.625, 322.5, 600.0, 3)
    # Buyers b1, b2, b3, b4; only b1 got a reply.
    assert buyers(stats["overall"]) == (4, 1, 0.25)
    agents = {row["agent_id"]: row for row in stats["agents"]}
    # A: c1's four rounds (the seller's answers count for the episode's agent) and c5's: 30 40 600 600 600.
    assert rounds(agents[a["id"]]) == (5, 374.0, 600.0, 600.0, 2)
    assert buyers(agents[a["id"]]) == (2, 1, 0.5)       # b1 (answered), b4 (not)
    # B: 10 and 45: p50 27.5, p90 10 + 0.9 x 35.
    assert rounds(agents[b["id"]]) == (2, 27.5, 27.5, 41.5, 0)
    assert buyers(agents[b["id"]]) == (1, 1, 1.0)
    queues = {row["queue"]: row for row in stats["queues"]}
    assert rounds(queues["presale"]) == (5, 374.0, 600.0, 600.0, 2)     # c1 and c2
    assert rounds(queues["complaints"]) == (1, 600.0, 600.0, 600.0, 1)  # c5
    assert rounds(queues["aftersale"]) == (2, 27.5, 27.5, 41.5, 0)      # c4
    tiers = {row["tier"]: row for row in stats["tiers"]}
    assert rounds(tiers["P1"]) == (1, 600.0, 600.0, 600.0, 1)
    assert rounds(tiers["P4"])[0] == 5 and rounds(tiers["P3"])[0] + rounds(tiers["P2"])[0] == 2
