"""The statistics from the summaries (episode_facts, round_facts; migration 0019) equal the statistics rebuilt from
the event trail and the messages, on both databases, over a scripted history: new conversations, follow-ups and
rounds, a re-rank that re-routes, a seller's reply, replies early and late, a transfer, a hand-over, a release, a
lease that runs out, ops' resolve, snoozes woken by a message and by their time, ops' snooze, auto-close (of a
snoozed ticket too), reopenings (one with the seller answering in the same request), the
off-hours reply; for windows that cut it at several places. And a month dropped by retention leaves them."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.claims import claim_store
from app.db.retention import Month, retention_store
from app.services import stats
from app.services.autoclose import close_quiet
from app.services.queues import expire_leases
from app.services.retention import RetentionWorker
from tests.support.clock import FrozenClock, freeze
from tests.support.queues import claim, new_agent
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def both(app: FastAPI, shop_id: str, since: datetime, until: datetime, now: datetime) -> tuple[Any, Any]:
    async with app.state.sessionmaker() as session:
        summarised = await stats.shop_stats(session, shop_id=shop_id, since=since, until=until, now=now)
    async with app.state.sessionmaker() as session:
        rebuilt = await stats.shop_stats(session, shop_id=shop_id, since=since, until=until, now=now, from_trail=True)
    return summarised.model_dump(), rebuilt.model_dump()


class Script:
    def __init__(self, client: httpx.AsyncClient, clock: FrozenClock, shop: dict[str, Any]) -> None:
        self.client, self.clock, self.shop = client, clock, shop

    async def buyer(self, conversation: str, text: str, *, customer: str | None = None,
                    seller_after: bool = False) -> str:
        messages = [message(text, conversation=conversation, customer=customer or f"b-{conversation}")]
        if seller_after:  # the shop's staff answer on the platform, in the same request
            messages.append(message("亲，马上处理", conversation=conversation, customer=customer or f"b-{conversation}",
                                    sender="seller", sent_at=iso(self.clock.now)))
        answer = await post_signed(self.client, self.shop["id"], self.shop["webhook_secret"], messages)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["results"][0]["ticket_id"])

    async def seller(self, conversation: str, *, sent_ago: float = 0) -> None:
        answer = await post_signed(self.client, self.shop["id"], self.shop["webhook_secret"], [message(
            "亲，在的", conversation=conversation, customer=f"b-{conversation}", sender="seller",
            sent_at=iso(self.clock.now - timedelta(seconds=sent_ago)))])
        assert answer.status_code == 202, answer.text

    async def act(self, agent: dict[str, Any], ticket_id: str, what: str, **body: Any) -> None:
        response = await self.client.post(f"/v1/tickets/{ticket_id}/{what}", headers=agent["headers"], json=body)
        assert response.status_code in (200, 201), response.text

    async def claim(self, agent: dict[str, Any]) -> str:
        response = await claim(self.client, agent)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


async def test_statistics_from_summaries_equal_the_trails(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    t0 = utcnow().replace(microsecond=0) - timedelta(days=3)
    clock = freeze(monkeypatch, t0)
    shop = await new_shop(auto_close_after_hours=24)
    s = Script(client, clock, shop)
    lin = await new_agent(client, admin_headers, shop["id"], capacity=10)
    wu = await new_agent(client, admin_headers, shop["id"], queues=("presale", "aftersale", "complaints"))

    c1 = await s.buyer("c1", "请问这款有M码吗？")
    clock.advance(5)
    await s.buyer("c1", "在吗")                                    # the same round
    c2 = await s.buyer("c2", "快递三天没动了")
    c3 = await s.buyer("c3", "你们客服态度太差了，我要投诉")
    clock.advance(40)
    assert await s.claim(lin) == c3
    await s.act(lin, c3, "replies", text="非常抱歉")                  # late for P1
    await s.act(lin, c3, "resolve")
    clock.advance(10)
    await s.buyer("c2", "再不发货就给差评")                           # re-ranked to P1, re-routed to complaints
    clock.advance(5)
    await s.seller("c1", sent_ago=3)                                # the seller answers c1 on the platform
    clock.advance(5)
    await s.buyer("c1", "好的，谢谢")                                 # a new round
    assert await s.claim(lin) == c2
    clock.advance(8)
    await s.act(lin, c2, "replies", text="马上给您加急")
    await s.act(lin, c2, "transfer", queue="aftersale", reason="物流问题")
    assert await s.claim(wu) == c2
    await s.act(wu, c2, "transfer", agent_id=lin["id"], reason="交回")  # a hand-over to a named agent
    clock.advance(4)
    await s.act(lin, c2, "replies", text="已催快递")
    await s.act(lin, c2, "release")
    assert await s.claim(lin) == c2
    clock.advance(300)                                              # the lease runs out
    async with claim_store(app.state.drivers) as store:
        await expire_leases(store, now=clock.now, max_deliveries=3)
    clock.advance(20)
    await s.buyer("c3", "还是没有解决", seller_after=True)            # reopened, answered in the same request
    response = await client.post(f"/v1/shops/{shop['id']}/tickets/{c2}/resolve", headers=admin_headers,
                                 json={"reason": "done"})
    assert response.status_code == 200, response.text
    c4 = await s.buyer("c4", "这个有现货吗")
    zhao = await new_agent(client, admin_headers, shop["id"], queues=("aftersale",))
    c5 = await s.buyer("c5", "我要退货")
    assert await s.claim(zhao) == c5
    clock.advance(12)
    await s.act(zhao, c5, "replies", text="发一下照片")
    await s.act(zhao, c5, "snooze", until=iso(clock.now + timedelta(hours=2)), reason="等买家回复")
    clock.advance(60)
    await s.buyer("c5", "照片发了")                                   # wakes it: a new round of the same episode
    assert await s.claim(zhao) == c5
    clock.advance(20)
    await s.act(zhao, c5, "replies", text="可以退")
    await s.act(zhao, c5, "snooze", until=iso(clock.now + timedelta(minutes=5)))
    clock.advance(300)
    await app.state.reaper.run_once()                              # woken by its time, claimed and resolved
    assert await s.claim(zhao) == c5
    await s.act(zhao, c5, "resolve")
    c6 = await s.buyer("c6", "能便宜点吗")
    response = await client.post(f"/v1/shops/{shop['id']}/tickets/{c6}/snooze", headers=admin_headers,
                                 json={"until": iso(clock.now + timedelta(days=3))})
    assert response.status_code == 200, response.text               # snoozed unanswered by ops
    clock.advance(700)                                              # c4's round goes past the cap unanswered
    clock.advance(24 * 3600)
    await close_quiet(app.state.drivers, now=clock.now)             # c1, c3, c4 and the snoozed c6 closed
    clock.advance(60)
    await s.buyer("c1", "怎么关了")                                   # reopened after auto-close
    assert await s.claim(lin) == c1
    clock.advance(15)
    await s.act(lin, c1, "replies", text="您好")
    now = clock.now

    windows = [(t0 - timedelta(hours=1), now + timedelta(seconds=1)),   # everything
               (t0 + timedelta(seconds=30), now + timedelta(seconds=1)),  # after the first conversations opened
               (t0 - timedelta(hours=1), t0 + timedelta(seconds=400)),    # the first minutes, judged then
               (now - timedelta(hours=1), now + timedelta(seconds=1))]    # the last reopening only
    for since, until in windows:
        summarised, rebuilt = await both(app, shop["id"], since, until, now)
        assert summarised == rebuilt, (since, until)
    everything, _ = await both(app, shop["id"], *windows[0], now)
    overall = everything["overall"]
    assert (overall["conversations_received"], overall["auto_closed"]) == (8, 4)  # the scripted history happened
    assert overall["round_response"]["unanswered"] >= 1 and overall["replied"] >= 4


async def test_the_off_hours_reply_answers_no_round_in_either(
        app: FastAPI, client: httpx.AsyncClient, new_shop: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    night = datetime(2026, 11, 18, 18, 0, tzinfo=UTC)  # 02:00 in Shanghai: closed
    clock = freeze(monkeypatch, night)
    shop = await new_shop(always_open=False, off_hours_reply="您好，客服上班后马上回复您", holidays=None)
    s = Script(client, clock, shop)
    await s.buyer("n1", "请问这款有M码吗？")
    clock.advance(30)
    await s.buyer("n1", "在吗")
    summarised, rebuilt = await both(app, shop["id"], night - timedelta(hours=1), night + timedelta(hours=1),
                                     night + timedelta(hours=1))
    assert summarised == rebuilt
    assert summarised["overall"]["round_response"]["count"] == 1  # one round, unanswered past the cap


async def test_a_month_dropped_by_retention_leaves_its_summaries(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = utcnow()
    old = Month.of(now - timedelta(days=470))
    async with retention_store(app.state.drivers) as store:
        await store.ensure_months(old, old)
    clock = freeze(monkeypatch, old.start + timedelta(days=2))
    shop = await new_shop()
    s = Script(client, clock, shop)
    agent = await new_agent(client, admin_headers, shop["id"])
    ticket = await s.buyer("o1", "我要退货")
    clock.advance(12)
    assert await s.claim(agent) == ticket
    await s.act(agent, ticket, "replies", text="好的")
    await s.act(agent, ticket, "resolve")
    window = (old.start, old.start + timedelta(days=30))
    before, _ = await both(app, shop["id"], *window, now)
    await RetentionWorker(app.state.drivers, retention_days=400).run_once(now=now)
    after, rebuilt = await both(app, shop["id"], *window, now)
    assert after == before  # the summaries still say what happened
    assert after["overall"]["conversations_received"] == 1 and after["overall"]["first_response"]["count"] == 1
    assert rebuilt["overall"]["conversations_received"] == 0  # the trail itself is gone
