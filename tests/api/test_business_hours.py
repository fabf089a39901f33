"""Business-time SLA and the off-hours reply, with a frozen clock, on both databases: due times count open hours
only, so a night message is due after the next opening; holidays close the shop, adjusted working days open it; the
watch, the statistics, /metrics and the ticket agree; the off-hours reply goes out once per episode through
reply.created."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.services.sla import record_breaches
from tests.api.test_delivery import Endpoint, arrived, endpoint, receiver  # noqa: F401  (fixtures)
from tests.support.clock import FrozenClock, freeze
from tests.support.queues import claim, new_agent, new_ticket
from tests.support.receiver import Receiver, verify
from tests.support.webhooks import message, post_signed

pytestmark = pytest.mark.asyncio

SHANGHAI = ZoneInfo("Asia/Shanghai")
TARGETS = {"P1": 20, "P2": 30, "P3": 40, "P4": 60}
REPLY = "亲，现在是下班时间，上班后第一时间回复您"
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def shanghai(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI).astimezone(UTC)  # type: ignore[misc]


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parsed(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def ticket(client: httpx.AsyncClient, admin_headers: dict[str, str], ticket_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tickets/{ticket_id}", headers=admin_headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def breaches(client: httpx.AsyncClient, admin_headers: dict[str, str], shop_id: str, since: datetime) -> int:
    response = await client.get(f"/v1/shops/{shop_id}/stats", headers=admin_headers,
                                params={"since": iso(since), "until": iso(since + timedelta(days=30))})
    assert response.status_code == 200, response.text
    return int(response.json()["overall"]["sla_breaches"])


async def overdue_gauge(client: httpx.AsyncClient, shop_id: str) -> float:
    text = (await client.get("/metrics")).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "triage_first_response_overdue" and s.labels.get("shop") == shop_id)


async def test_a_night_message_is_due_after_the_opening_and_breaches_only_then(
        app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch, quiet_workers: None) -> None:
    # The app's own SLA watch is stopped: run on the frozen clock, it could record the breach between the clock's
    # move and this test's pass, which would then find nothing to record (CI saw it so).
    night = shanghai(2026, 11, 19, 2, 0)   # a Thursday, 02:00 in Shanghai
    clock = freeze(monkeypatch, night)
    shop = await new_shop(always_open=False, sla_targets=TARGETS)
    hook = await endpoint(shop["id"], receiver.url("/sla"), events=("sla.breached",))
    ticket_id = await new_ticket(client, shop, "请问这款还有货吗")   # presale, P4: 60 s
    view = await ticket(client, admin_headers, ticket_id)
    due = shanghai(2026, 11, 19, 9, 1, 0)
    assert (view["tier"], parsed(view["first_response_due_at"])) == ("P4", due)

    async def breached_at(now: datetime) -> int:
        clock.set(now)
        recorded, _ = await record_breaches(app.state.drivers, now=now)
        return recorded

    # 02:01, and a second before the due time: no breach anywhere.
    for now in (night + timedelta(minutes=1), due - timedelta(seconds=1)):
        assert await breached_at(now) == 0
        assert await breaches(client, admin_headers, shop["id"], night - timedelta(hours=1)) == 0
        assert await overdue_gauge(client, shop["id"]) == 0
    # A second after it: one breach, the same in the watch, the statistics and /metrics, and its event.
    assert await breached_at(due + timedelta(seconds=1)) == 1
    assert await breaches(client, admin_headers, shop["id"], night - timedelta(hours=1)) == 1
    assert await overdue_gauge(client, shop["id"]) == 1
    [received] = await arrived(receiver, "/sla", 1)
    verify(received, hook["secret"])
    event = json.loads(received.body)
    assert event["type"] == "sla.breached"
    assert (event["data"]["ticket_id"], parsed(event["data"]["due_at"])) == (ticket_id, due)


@pytest.mark.parametrize(("arrives", "shifts", "due"), [
    # National Day (1-7 October 2026): closed, so due on the 8th at the opening plus 60 s.
    (shanghai(2026, 10, 1, 12, 0), None, shanghai(2026, 10, 8, 9, 1, 0)),
    # Saturday 10 October is worked for the holiday: a weekday-only shop is open.
    (shanghai(2026, 10, 10, 12, 0), [{"name": "office", "start": "09:00", "end": "18:00", "days": WEEKDAYS}],
     shanghai(2026, 10, 10, 12, 1, 0)),
    # An ordinary Saturday: the same shop waits for Monday.
    (shanghai(2026, 10, 17, 12, 0), [{"name": "office", "start": "09:00", "end": "18:00", "days": WEEKDAYS}],
     shanghai(2026, 10, 19, 9, 1, 0)),
    # 23:59:30 on a Thursday: 30 s tonight, 30 s tomorrow morning.
    (shanghai(2026, 11, 19, 23, 59, 30), None, shanghai(2026, 11, 20, 9, 0, 30)),
])
async def test_holidays_and_adjusted_working_days_set_the_due_time(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, monkeypatch: pytest.MonkeyPatch,
        arrives: datetime, shifts: list[dict[str, Any]] | None, due: datetime) -> None:
    freeze(monkeypatch, arrives)
    hours = {} if shifts is None else {"shifts": shifts}
    shop = await new_shop(always_open=False, sla_targets=TARGETS, **hours)
    view = await ticket(client, admin_headers, await new_ticket(client, shop, "请问这款还有货吗"))
    assert parsed(view["first_response_due_at"]) == due


async def test_a_raised_tier_tightens_the_due_time_in_open_hours(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, shanghai(2026, 11, 19, 2, 0))
    shop = await new_shop(always_open=False, sla_targets=TARGETS)
    first = message("快递三天了还没到", conversation="c-rise", customer="b-rise")     # P3: 40 s
    answer = await post_signed(client, shop["id"], shop["webhook_secret"], [first])
    ticket_id = answer.json()["results"][0]["ticket_id"]
    assert parsed((await ticket(client, admin_headers, ticket_id))["first_response_due_at"]) == shanghai(
        2026, 11, 19, 9, 0, 40)
    clock.advance(3600)
    threat = message("再不到就给差评", conversation="c-rise", customer="b-rise")     # P1: 20 s from the start
    assert (await post_signed(client, shop["id"], shop["webhook_secret"], [threat])).json()["results"][0]["tier"] == "P1"
    assert parsed((await ticket(client, admin_headers, ticket_id))["first_response_due_at"]) == shanghai(
        2026, 11, 19, 9, 0, 20)


async def test_a_finished_unanswered_episode_is_judged_in_open_hours(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    night = shanghai(2026, 11, 19, 2, 0)
    clock = freeze(monkeypatch, night)
    shop = await new_shop(always_open=False, sla_targets=TARGETS)
    # Resolved unanswered at 08:00 (six hours of wall clock, no open second): no breach. Reopened at 08:30 and
    # resolved unanswered at 09:05 (four open minutes after a 60 s target): a breach.
    ticket_id = await new_ticket(client, shop, "请问这款还有货吗", conversation="c-fin", customer="b-fin")
    for resolve_at, reopen_at in ((shanghai(2026, 11, 19, 8, 0), shanghai(2026, 11, 19, 8, 30)),
                                  (shanghai(2026, 11, 19, 9, 5), None)):
        clock.set(resolve_at)
        done = await client.post(f"/v1/shops/{shop['id']}/tickets/{ticket_id}/resolve", headers=admin_headers)
        assert done.status_code == 200, done.text
        if reopen_at is not None:
            clock.set(reopen_at)
            await new_ticket(client, shop, "在吗", conversation="c-fin", customer="b-fin")
    clock.set(shanghai(2026, 11, 19, 12, 0))
    response = await client.get(f"/v1/shops/{shop['id']}/stats", headers=admin_headers,
                                params={"since": iso(night - timedelta(hours=1)), "until": iso(night + timedelta(hours=9))})
    overall = response.json()["overall"]
    assert (overall["conversations_received"], overall["sla_breaches"]) == (2, 1)


async def test_the_off_hours_reply_goes_out_once_per_episode(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, receiver: Receiver,
        endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = freeze(monkeypatch, shanghai(2026, 11, 19, 2, 0))
    shop = await new_shop(always_open=False, sla_targets=TARGETS, off_hours_reply=REPLY)
    hook = await endpoint(shop["id"], receiver.url("/replies"))
    sid, secret = shop["id"], shop["webhook_secret"]
    # Two buyer messages of one night episode, in two requests: one off-hours reply.
    first = await post_signed(client, sid, secret, [message("在吗", conversation="c-night", customer="b-night")])
    ticket_id = first.json()["results"][0]["ticket_id"]
    clock.advance(60)
    await post_signed(client, sid, secret, [message("有人吗", conversation="c-night", customer="b-night")])
    # A conversation opened during the day gets none.
    clock.set(shanghai(2026, 11, 19, 10, 0))
    await new_ticket(client, shop, "请问有货吗", conversation="c-day")
    # The night episode is answered and resolved by an agent; the buyer writes again the next night: a new
    # episode, so a second reply.
    agent = await new_agent(client, admin_headers, sid)
    held = {(await claim(client, agent)).json()["id"] for _ in range(2)}
    assert ticket_id in held
    answered = await client.post(f"/v1/tickets/{ticket_id}/replies", headers=agent["headers"], json={"text": "有的"})
    assert answered.status_code == 201
    assert (await client.post(f"/v1/tickets/{ticket_id}/resolve", headers=agent["headers"])).status_code == 200
    clock.set(shanghai(2026, 11, 20, 1, 0))
    await post_signed(client, sid, secret, [message("还在吗", conversation="c-night", customer="b-night")])

    received = await arrived(receiver, "/replies", 3)
    await asyncio.sleep(0.5)
    events = []
    for item in receiver.at("/replies"):
        verify(item, hook["secret"])
        events.append(json.loads(item.body)["data"])
    automatic = [e for e in events if e.get("auto_reply") == "off_hours"]
    assert len(received) == 3 and len(automatic) == 2
    assert all(e["text"] == REPLY and e["agent_id"] is None and e["ticket_id"] == ticket_id for e in automatic)
    [by_agent] = [e for e in events if e.get("auto_reply") is None]
    assert by_agent["text"] == "有的"

    view = await ticket(client, admin_headers, ticket_id)
    outbound = [(m["text"], m["agent_id"], m["content"]) for m in view["messages"] if m["direction"] == "outbound"]
    assert outbound == [(REPLY, None, {"auto_reply": "off_hours"}), ("有的", agent["id"], None),
                        (REPLY, None, {"auto_reply": "off_hours"})]
    # The automatic reply stops no clock: the new episode still waits for its first response.
    assert view["first_response_at"] is None and view["awaiting_since"] is not None
    trail = (await client.get(f"/v1/tickets/{ticket_id}/events", headers=admin_headers)).json()["events"]
    replied = [e for e in trail if e["kind"] == "auto_replied"]
    assert len(replied) == 2 and replied[0]["actor"] == "system"
    assert parsed(replied[0]["data"]["opens_at"]) == shanghai(2026, 11, 19, 9, 0)
