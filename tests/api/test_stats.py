"""Service-level statistics on both databases, against a fixture whose answers are worked out by hand."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from app.clock import utcnow
from app.db.models import Ticket, TicketEvent
from tests.support.queues import new_agent, new_ticket

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SINCE, UNTIL = T0 - timedelta(hours=1), T0 + timedelta(hours=2)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass
class Story:
    """One ticket: its current row and its event trail, in order."""

    shop_id: str
    queue: str
    tier: int
    opened: float
    status: str = "queued"
    agent: str | None = None
    due: float | None = None
    first_response: float | None = None
    resolved: float | None = None
    episodes: int = 1
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: str, seconds: float, actor: str = "system", **data: Any) -> "Story":
        self.events.append({"ticket_id": self.id, "shop_id": self.shop_id, "at": at(seconds), "kind": kind,
                            "actor": actor, "data": data})
        return self

    def start(self, kind: str, seconds: float, *, queue: str, tier: str, episode: int = 1) -> "Story":
        data = {"tier": tier, "priority": 100, "primary": "other", "queue": queue}
        if kind == "reopened":
            data["episode"] = episode
        self.event("message_received", seconds, "webhook", message_id=f"m-{seconds}", tier=tier)
        return self.event(kind, seconds, "webhook", **data)

    def reply(self, seconds: float, agent: str, *, first: bool = True, within: bool | None = None) -> "Story":
        data: dict[str, Any] = {"message_id": 1, "first_response": first}
        if within is not None:
            data["within_target"] = within
        return self.event("replied", seconds, f"agent:{agent}", **data)

    def resolve(self, seconds: float, agent: str) -> "Story":
        return self.event("resolved", seconds, f"agent:{agent}", agent_id=agent)

    def row(self) -> dict[str, Any]:
        opened = at(self.opened)
        return {
            "id": self.id, "shop_id": self.shop_id, "platform": "taobao", "conversation_id": f"c-{self.id}",
            "queue": self.queue, "status": self.status, "tier": self.tier, "priority": 100, "primary_intent": "other",
            "intents": ["other"], "escalated": False,
            "assigned_agent_id": self.agent if self.status == "assigned" else None,
            # A lease running long after the test: the app's reaper must not hand these tickets back meanwhile.
            "lease_expires_at": utcnow() + timedelta(days=1) if self.status == "assigned" else None,
            "deliveries": 0, "unread": 0,
            "ruleset": "default@1", "created_at": opened, "updated_at": opened, "opened_at": opened,
            "awaiting_since": None if self.first_response is not None else opened,
            "first_response_due_at": None if self.due is None else at(self.due),
            "first_response_at": None if self.first_response is None else at(self.first_response),
            "last_message_at": opened, "resolved_at": None if self.resolved is None else at(self.resolved),
            "episodes": self.episodes,
        }


async def store(app: FastAPI, stories: list[Story]) -> None:
    async with app.state.sessionmaker() as session:
        await session.execute(insert(Ticket), [s.row() for s in stories])
        # One by one: event ids must follow each ticket's story, as they do when the service writes them.
        for s in stories:
            for e in s.events:
                await session.execute(insert(TicketEvent), [e])
        await session.commit()


@pytest.fixture
async def fixture_shop(app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str],
                       new_shop: Any) -> dict[str, Any]:
    """Eight episodes in the range (E1-E8), one before it; the expected figures are worked out in the tests."""
    shop = await new_shop()
    sid = shop["id"]
    # complaints answers P2 within 200 s: E6 below is measured against it, not the shop's 30 s.
    response = await client.patch(f"/v1/shops/{sid}/queues/complaints", headers=admin_headers,
                                  json={"sla_targets": {"P1": 20, "P2": 200, "P3": 40, "P4": 60}})
    assert response.status_code == 200, response.text
    a = (await new_agent(client, admin_headers, sid))["id"]
    b = (await new_agent(client, admin_headers, sid))["id"]

    # t1: E1 aftersale P2, A answers in 10 s (due 30), resolves at 100; E2 reopens in presale P4 (due 60),
    # B answers in 90 s (late) and holds it now.
    t1 = (Story(sid, "presale", 4, opened=200, status="assigned", agent=b, due=260, first_response=290, episodes=2)
          .start("created", 0, queue="aftersale", tier="P2")
          .event("claimed", 5, f"agent:{a}", agent_id=a).reply(10, a, within=True).resolve(100, a)
          .start("reopened", 200, queue="presale", tier="P4", episode=2)
          .event("claimed", 210, f"agent:{b}", agent_id=b).reply(290, b, within=False).reply(300, b, first=False))
    # t2: E3 logistics P3 in aftersale, re-ranked to P1 and routed to complaints at 70 (due 60 + 20); unanswered.
    t2 = (Story(sid, "complaints", 1, opened=60, due=80)
          .start("created", 60, queue="aftersale", tier="P3")
          .event("reranked", 70, "webhook", **{"from": {"tier": "P3"}, "to": {"tier": "P1"}})
          .event("routed", 70, "webhook", **{"from": "aftersale", "to": "complaints"}))
    # t3: E4 presale P4, A transfers it to aftersale, answers in 30 s, resolves at 400 (280 s).
    t3 = (Story(sid, "aftersale", 4, opened=120, status="resolved", due=180, first_response=150, resolved=400)
          .start("created", 120, queue="presale", tier="P4")
          .event("claimed", 125, f"agent:{a}", agent_id=a)
          .event("transferred", 140, f"agent:{a}", **{"agent_id": a, "from": "presale", "to": "aftersale"})
          .event("claimed", 145, f"agent:{a}", agent_id=a).reply(150, a, within=True).resolve(400, a))
    # t4: E5 complaints P1 (due 320) resolved by A at 310 without a reply: in time, so no breach.
    t4 = (Story(sid, "complaints", 1, opened=300, status="resolved", due=320, resolved=310)
          .start("created", 300, queue="complaints", tier="P1")
          .event("claimed", 305, f"agent:{a}", agent_id=a).resolve(310, a))
    # t5: E6 aftersale P2, B moves it to complaints and resolves it unanswered after 100 s (complaints allows
    # P2 200 s: no breach); E7 reopens in presale P4 (due 760) and waits unanswered.
    t5 = (Story(sid, "presale", 4, opened=700, due=760, episodes=2)
          .start("created", 500, queue="aftersale", tier="P2")
          .event("claimed", 510, f"agent:{b}", agent_id=b)
          .event("transferred", 550, f"agent:{b}", **{"agent_id": b, "from": "aftersale", "to": "complaints"})
          .event("claimed", 560, f"agent:{b}", agent_id=b).resolve(600, b)
          .start("reopened", 700, queue="presale", tier="P4", episode=2))
    # t6: before the range altogether.
    t6 = (Story(sid, "presale", 4, opened=-7200, status="resolved", due=-7140, first_response=-7190,
                resolved=-7000)
          .start("created", -7200, queue="presale", tier="P4").reply(-7190, a, within=True).resolve(-7000, a))
    # t7: created before the range; E8 reopens it in aftersale P3 (due 840), B answers in 20 s and holds it.
    t7 = (Story(sid, "aftersale", 3, opened=800, status="assigned", agent=b, due=840, first_response=820,
                episodes=2)
          .start("created", -5000, queue="presale", tier="P4").reply(-4990, a, within=True).resolve(-4900, a)
          .start("reopened", 800, queue="aftersale", tier="P3", episode=2)
          .event("claimed", 810, f"agent:{b}", agent_id=b).reply(820, b, within=True))
    await store(app, [t1, t2, t3, t4, t5, t6, t7])
    return {**shop, "a": a, "b": b}


async def get_stats(client: httpx.AsyncClient, headers: dict[str, str], shop_id: str,
                    **params: datetime) -> dict[str, Any]:
    response = await client.get(f"/v1/shops/{shop_id}/stats", headers=headers,
                                params={k: iso(v) for k, v in params.items()})
    assert response.status_code == 200, response.text
    return dict(response.json())


def durations(count: int, mean: float | None, p50: float | None, p90: float | None) -> dict[str, Any]:
    return {"count": count, "mean": mean, "p50": p50, "p90": p90}


def levels(received: int, replied: int, rate: float | None, first: dict[str, Any], breaches: int,
           resolution: dict[str, Any]) -> dict[str, Any]:
    return {"conversations_received": received, "replied": replied, "reply_rate": rate, "first_response": first,
            "sla_breaches": breaches, "resolution": resolution}


NONE = durations(0, None, None, None)
LEVEL_KEYS = ("conversations_received", "replied", "reply_rate", "first_response", "sla_breaches", "resolution")


def only_levels(group: dict[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in LEVEL_KEYS}


async def test_overall_figures_match_the_hand_computed_answers(client: httpx.AsyncClient,
                                                               admin_headers: dict[str, str],
                                                               fixture_shop: dict[str, Any]) -> None:
    stats = await get_stats(client, admin_headers, fixture_shop["id"], since=SINCE, until=UNTIL)
    # First responses 10, 90, 30, 20 s; resolutions 100, 280, 10, 100 s; breaches E2 (late), E3 and E7 (unanswered).
    assert only_levels(stats["overall"]) == levels(
        8, 4, 0.5, durations(4, 37.5, 25.0, 72.0), 3, durations(4, 122.5, 100.0, 226.0))


@pytest.mark.parametrize(("queue", "expected"), [
    # E1, E4 (transferred in), E8: answered in 10, 30, 20 s; resolved in 100 and 280 s.
    ("aftersale", levels(3, 3, 1.0, durations(3, 20.0, 20.0, 28.0), 0, durations(2, 190.0, 190.0, 262.0))),
    # E2 (90 s, late) and E7 (unanswered, past due).
    ("presale", levels(2, 1, 0.5, durations(1, 90.0, 90.0, 90.0), 2, NONE)),
    # E3 (routed in, past due), E5 (resolved in time), E6 (moved in, resolved within the queue's own target).
    ("complaints", levels(3, 0, 0.0, NONE, 1, durations(2, 55.0, 55.0, 91.0))),
    ("escalations", levels(0, 0, None, NONE, 0, NONE)),  # no episode: zeros and nulls
])
async def test_per_queue(client: httpx.AsyncClient, admin_headers: dict[str, str], fixture_shop: dict[str, Any],
                         queue: str, expected: dict[str, Any]) -> None:
    stats = await get_stats(client, admin_headers, fixture_shop["id"], since=SINCE, until=UNTIL)
    by_queue = {q["queue"]: q for q in stats["queues"]}
    assert only_levels(by_queue[queue]) == expected


@pytest.mark.parametrize(("tier", "expected"), [
    ("P1", levels(2, 0, 0.0, NONE, 1, durations(1, 10.0, 10.0, 10.0))),  # E3 re-ranked to P1, E5
    ("P2", levels(2, 1, 0.5, durations(1, 10.0, 10.0, 10.0), 0, durations(2, 100.0, 100.0, 100.0))),  # E1, E6
    ("P3", levels(1, 1, 1.0, durations(1, 20.0, 20.0, 20.0), 0, NONE)),  # E8
    ("P4", levels(3, 2, 0.6667, durations(2, 60.0, 60.0, 84.0), 2, durations(1, 280.0, 280.0, 280.0))),  # E2 E4 E7
])
async def test_per_tier(client: httpx.AsyncClient, admin_headers: dict[str, str], fixture_shop: dict[str, Any],
                        tier: str, expected: dict[str, Any]) -> None:
    stats = await get_stats(client, admin_headers, fixture_shop["id"], since=SINCE, until=UNTIL)
    by_tier = {t["tier"]: t for t in stats["tiers"]}
    assert only_levels(by_tier[tier]) == expected
    assert [t["first_response_target_seconds"] for t in stats["tiers"]] == [20, 30, 40, 60]


@pytest.mark.parametrize(("agent", "expected", "holding"), [
    # E1 and E4 answered by A; E5 resolved by A without a reply.
    ("a", levels(3, 2, 0.6667, durations(2, 20.0, 20.0, 28.0), 0, durations(3, 130.0, 100.0, 244.0)), 0),
    # E2 (late) and E8 answered by B; E6 resolved by B without a reply.
    ("b", levels(3, 2, 0.6667, durations(2, 55.0, 55.0, 83.0), 1, durations(1, 100.0, 100.0, 100.0)), 2),
])
async def test_per_agent(client: httpx.AsyncClient, admin_headers: dict[str, str], fixture_shop: dict[str, Any],
                         agent: str, expected: dict[str, Any], holding: int) -> None:
    stats = await get_stats(client, admin_headers, fixture_shop["id"], since=SINCE, until=UNTIL)
    by_agent = {a["agent_id"]: a for a in stats["agents"]}
    assert only_levels(by_agent[fixture_shop[agent]]) == expected
    assert by_agent[fixture_shop[agent]]["holding"] == holding


async def test_backlog_is_the_queued_tickets_now(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                 fixture_shop: dict[str, Any]) -> None:
    stats = await get_stats(client, admin_headers, fixture_shop["id"], since=SINCE, until=UNTIL)
    now = datetime.fromisoformat(stats["generated_at"])
    # Queued: t2 in complaints (P1, since 60 s) and t5 in presale (P4, since 700 s); t1 and t7 are held.
    overall = stats["overall"]["backlog"]
    assert overall["depth"] == {"P1": 1, "P2": 0, "P3": 0, "P4": 1} and overall["total"] == 2
    assert overall["oldest_wait_seconds"] == pytest.approx((now - at(60)).total_seconds(), abs=0.01)
    by_queue = {q["queue"]: q["backlog"] for q in stats["queues"]}
    assert by_queue["presale"]["depth"]["P4"] == 1
    assert by_queue["presale"]["oldest_wait_seconds"] == pytest.approx((now - at(700)).total_seconds(), abs=0.01)
    assert by_queue["aftersale"] == {"depth": {"P1": 0, "P2": 0, "P3": 0, "P4": 0}, "total": 0,
                                     "oldest_wait_seconds": None}
    by_tier = {t["tier"]: t for t in stats["tiers"]}
    assert (by_tier["P1"]["depth"], by_tier["P2"]["depth"], by_tier["P2"]["oldest_wait_seconds"]) == (1, 0, None)


@pytest.mark.parametrize(("since", "until", "received", "breaches"), [
    (100, 250, 2, 1),  # E4 and E2; E1 began before `since`, and t1's later episode still counts alone
    (60, 70, 1, 0),    # E3 alone, not yet past its due time (80) at `until`
    (60, 81, 1, 1),    # E3 alone, past due at `until`
    (801, 900, 0, 0),  # nothing opened in the range: zeros, not errors
])
async def test_the_range_selects_episodes_by_their_start(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                         fixture_shop: dict[str, Any], since: float, until: float,
                                                         received: int, breaches: int) -> None:
    stats = await get_stats(client, admin_headers, fixture_shop["id"], since=at(since), until=at(until))
    assert (stats["overall"]["conversations_received"], stats["overall"]["sla_breaches"]) == (received, breaches)


async def test_a_shop_without_data_answers_zeros_and_nulls(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                           new_shop: Any) -> None:
    shop = await new_shop()
    stats = await get_stats(client, admin_headers, shop["id"])
    assert only_levels(stats["overall"]) == levels(0, 0, None, NONE, 0, NONE)
    assert stats["overall"]["backlog"] == {"depth": {"P1": 0, "P2": 0, "P3": 0, "P4": 0}, "total": 0,
                                           "oldest_wait_seconds": None}
    assert [q["queue"] for q in stats["queues"]] == ["aftersale", "complaints", "escalations", "presale"]
    assert [t["tier"] for t in stats["tiers"]] == ["P1", "P2", "P3", "P4"] and stats["agents"] == []
    until = datetime.fromisoformat(stats["until"])
    assert until - datetime.fromisoformat(stats["since"]) == timedelta(hours=24)


async def test_live_traffic_is_counted(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                       new_shop: Any) -> None:
    shop = await new_shop()
    agent = await new_agent(client, admin_headers, shop["id"])
    await new_ticket(client, shop, "我要退货")
    await new_ticket(client, shop, "请问这款还有货吗")
    claimed = await client.post("/v1/agents/me/claim", headers=agent["headers"])
    assert claimed.status_code == 200, claimed.text
    ticket_id = claimed.json()["id"]
    replied = await client.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "您好"}, headers=agent["headers"])
    assert replied.status_code == 201, replied.text
    stats = await get_stats(client, admin_headers, shop["id"])
    overall = stats["overall"]
    assert (overall["conversations_received"], overall["replied"], overall["first_response"]["count"]) == (2, 1, 1)
    assert overall["backlog"]["total"] == 1
    [mine] = [a for a in stats["agents"] if a["agent_id"] == agent["id"]]
    assert (mine["conversations_received"], mine["holding"]) == (1, 1)


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "2026-11-20T10:00:00Z", "until": "2026-11-20T10:00:00Z"}, "query.since"),  # empty range
    ({"since": "2026-11-20T10:00:00Z", "until": "2026-11-19T10:00:00Z"}, "query.since"),  # reversed
    ({"since": "2026-01-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"}, "query.since"),  # over 92 days
    ({"since": "2026-11-20T10:00:00"}, "query.since"),                                     # no zone
    ({"until": "yesterday"}, "query.until"),                                               # not a time
])
async def test_bad_ranges_are_422(client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
                                  params: dict[str, str], field: str) -> None:
    shop = await new_shop()
    response = await client.get(f"/v1/shops/{shop['id']}/stats", headers=admin_headers, params=params)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_92_days_is_allowed(client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    stats = await get_stats(client, admin_headers, shop["id"], since=T0 - timedelta(days=92), until=T0)
    assert stats["overall"]["conversations_received"] == 0


async def test_unknown_shop_is_404(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.get("/v1/shops/no-such-shop/stats", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "shop_not_found"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_without_the_admin_token_is_401(client: httpx.AsyncClient, new_shop: Any,
                                              headers: dict[str, str]) -> None:
    shop = await new_shop()
    response = await client.get(f"/v1/shops/{shop['id']}/stats", headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(("until", "received", "breaches"), [
    (7200, 2, 1),  # the first episode was resolved unanswered after 50 s, past the shop's P3 target of 40 s
    (30, 1, 0),    # at `until` its target had not passed yet
    (45, 1, 1),    # at `until` it had, and it was still open
])
async def test_a_finished_episode_without_reply_is_measured_against_the_target(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, until: float,
        received: int, breaches: int) -> None:
    shop = await new_shop()
    a = (await new_agent(client, admin_headers, shop["id"]))["id"]
    ticket = (Story(shop["id"], "presale", 4, opened=100, status="resolved", due=160, first_response=110,
                    resolved=120, episodes=2)
              .start("created", 0, queue="presale", tier="P3").resolve(50, a)
              .start("reopened", 100, queue="presale", tier="P4", episode=2).reply(110, a, within=True)
              .resolve(120, a))
    await store(app, [ticket])
    stats = await get_stats(client, admin_headers, shop["id"], since=at(0), until=at(until))
    assert (stats["overall"]["conversations_received"], stats["overall"]["sla_breaches"]) == (received, breaches)
