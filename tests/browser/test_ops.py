"""/ops beyond the queues: response per round, reply rate per buyer, presence, shift coverage and failed deliveries
(SPEC 10 and 11), each shown as the API answers it, in real headless Chromium on both databases."""

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site
from tests.browser.test_pages import TIMEOUT, english, sign_in
from tests.support.receiver import Receiver, Reply

ADMIN = "adm_test-admin-token-for-the-suite"
ORDINARY_DAY = "2026-11-26"  # a Thursday, no public holiday in mainland China


def eventually_sync(check: Callable[[], Any], *, timeout: float) -> Any:
    """What check() answers once it is truthy (the service works in the background: relay, refreshes)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def seconds(value: float | None) -> str:
    """The page's way of writing a duration (Triage.seconds in app/web/common.js)."""
    if value is None:
        return "–"
    whole = round(value)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {(whole % 3600) // 60} min"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{round(value * 100)} %"


def cells(row: Any) -> list[str]:
    return [cell.strip() for cell in row.locator("td").all_inner_texts()]


def history(site: Site, receiver: Receiver) -> dict[str, Any]:
    """One buyer answered by 阿明, one resolved by ops unanswered (a round counted at the cap), Sam away, both agents
    on the day shift only, and a reply.created delivery its receiver refused with 410 (failed, endpoint disabled)."""
    receiver.script("/gone", Reply(410))
    endpoint = site.admin_call("POST", f"/v1/shops/{site.shop['id']}/endpoints", json={
        "url": receiver.url("/gone"), "events": ["reply.created"]})
    assert endpoint.status_code == 201, endpoint.text
    site.post_message("请问这款有M码吗", nick="阿强")
    ming, sam = site.agents
    claimed = site.agent_call(ming, "POST", "/v1/agents/me/claim")
    assert claimed.status_code == 200, claimed.text
    replied = site.agent_call(ming, "POST", f"/v1/tickets/{claimed.json()['id']}/replies", json={"text": "有的亲"})
    assert replied.status_code == 201, replied.text
    silent = site.post_message("东西坏了，屏幕有裂痕", nick="阿华")
    closed = site.admin_call("POST", f"/v1/shops/{site.shop['id']}/tickets/{silent['ticket_id']}/resolve",
                             json={"reason": "spam"})
    assert closed.status_code == 200, closed.text
    away = site.agent_call(sam, "PUT", "/v1/agents/me/presence", json={"status": "away"})
    assert away.status_code == 200, away.text
    for agent in site.agents:
        changed = site.admin_call("PATCH", f"/v1/shops/{site.shop['id']}/agents/{agent['id']}", json={"shifts": ["day"]})
        assert changed.status_code == 200, changed.text

    def failed() -> list[Any]:
        found = site.admin_call("GET", f"/v1/shops/{site.shop['id']}/deliveries?status=failed").json()["deliveries"]
        return list(found)
    [delivery] = eventually_sync(failed, timeout=TIMEOUT / 1000)
    return {"endpoint": endpoint.json(), "delivery": delivery}


def ops_page(site: Site, browser: Any, route: tuple[str, Any] | None = None, **options: Any) -> tuple[Any, Page]:
    context = browser.new_context(**options)
    english(context)
    if route is not None:
        context.route(*route)
    page = context.new_page()
    sign_in(page, site, "/ops", ADMIN)
    page.get_by_label("Shop").select_option(site.shop["id"])
    return context, page


def test_ops_shows_rounds_buyers_presence_coverage_and_failed_deliveries(site: Site, browser: Any,
                                                                       artifacts: Path) -> None:
    with Receiver() as receiver:
        made = history(site, receiver)
        context, page = ops_page(site, browser, viewport={"width": 1400, "height": 1200})

        # Service levels: the whole shop's row holds what the statistics answer, per round and per buyer.
        stats = site.admin_call("GET", f"/v1/shops/{site.shop['id']}/stats").json()
        overall = stats["overall"]
        assert (overall["buyers_received"], overall["buyers_replied"], overall["round_response"]["unanswered"]) == (2, 1, 1)
        rounds = overall["round_response"]
        whole = page.locator("#levels tbody tr", has_text="Whole shop")
        expect(whole.locator("td").nth(1)).to_have_text("2", timeout=TIMEOUT)
        assert cells(whole)[1:11] == [
            "2", percent(overall["reply_rate"]), "2", percent(overall["buyer_reply_rate"]),
            seconds(overall["first_response"]["p50"]), seconds(overall["first_response"]["p90"]),
            seconds(rounds["mean"]), seconds(rounds["p50"]), seconds(rounds["p90"]), "1"]
        assert cells(whole)[4] == "50 %" and rounds["p90"] > 500  # the unanswered round counted at the cap
        expect(page.locator("#levels thead")).to_contain_text("Response per round")
        expect(page.locator("#chart-round svg.chart")).to_be_visible()
        expect(page.locator("#chart-rate .legend")).to_contain_text("Buyers replied")

        # Agents: presence now, and each one's response per round and buyer reply rate over the window.
        ming = next(a for a in stats["agents"] if a["agent_id"] == site.agents[0]["id"])
        ming_row = page.locator("#agents tbody tr", has_text="阿明")
        expect(ming_row.locator("td").nth(1)).to_have_text("online", timeout=TIMEOUT)
        expect(ming_row.locator("td").nth(5)).to_have_text(seconds(ming["round_response"]["p50"]), timeout=TIMEOUT)
        expect(ming_row.locator("td").nth(6)).to_have_text(percent(ming["buyer_reply_rate"]))
        expect(page.locator("#agents tbody tr", has_text="Sam").locator("td").nth(1)).to_have_text("away")

        # Coverage of a chosen date: each shift's gaps as the API lists them; nobody works the evening.
        page.get_by_label("Coverage date").fill(ORDINARY_DAY)
        coverage = site.admin_call("GET", f"/v1/shops/{site.shop['id']}/coverage?date={ORDINARY_DAY}").json()
        evening = page.locator("#coverage tbody tr", has_text="evening")
        expect(evening.locator(".gap")).to_have_count(len(coverage["shifts"][1]["gaps"]), timeout=TIMEOUT)
        for shift in coverage["shifts"]:
            row = page.locator("#coverage tbody tr", has=page.locator("td", has_text=re.compile("^" + shift["name"] + "$")))
            assert row.locator(".gap").all_inner_texts() == shift["gaps"]
        assert "presale" in coverage["shifts"][1]["gaps"] and "presale" not in coverage["shifts"][0]["gaps"]
        expect(page.locator("#coverage-note")).to_contain_text("gaps")

        # Failed deliveries: the refused one, its endpoint disabled by the 410; enabled again, a retry delivers it.
        delivery = made["delivery"]
        failed = page.locator("#deliveries tbody tr")
        expect(failed).to_have_count(1, timeout=TIMEOUT)
        expect(failed).to_contain_text("reply.created")
        endpoint_cell = failed.locator("td").nth(2)
        expect(endpoint_cell).to_contain_text("(disabled: the receiver answered 410")
        expect(failed.locator("td").nth(4)).to_contain_text("410")
        enabled = site.admin_call("PATCH", f"/v1/shops/{site.shop['id']}/endpoints/{made['endpoint']['id']}",
                                  json={"enabled": True})
        assert enabled.status_code == 200, enabled.text
        expect(endpoint_cell).to_have_text(receiver.url("/gone"), timeout=TIMEOUT)  # the next refresh reads the endpoint again
        page.get_by_role("button", name=f"Send delivery {delivery['id']} again").click()
        expect(page.locator("#deliveries-notice")).to_contain_text("goes again now", timeout=TIMEOUT)
        expect(page.get_by_text("No failed delivery.")).to_be_visible(timeout=TIMEOUT)

        def delivered() -> bool:
            found = site.admin_call("GET", f"/v1/shops/{site.shop['id']}/deliveries/{delivery['id']}").json()
            return bool(found["status"] == "delivered")
        eventually_sync(delivered, timeout=TIMEOUT / 1000)
        ids = {r.headers["webhook-id"] for r in receiver.at("/gone")}
        assert ids == {delivery["webhook_id"]} and len(receiver.at("/gone")) == 2

        page.screenshot(path=str(artifacts / f"ops-levels-{site.backend}.png"), full_page=True)

        # And in Chinese.
        page.get_by_role("button", name="中文").click()
        expect(page.get_by_role("heading", name="推送失败")).to_be_visible()
        expect(page.locator("#levels thead")).to_contain_text("平均响应时间", timeout=TIMEOUT)
        expect(page.locator("#agents tbody tr", has_text="Sam").locator("td").nth(1)).to_have_text("离开",
                                                                                                   timeout=TIMEOUT)
        context.close()


def test_a_retry_of_a_delivery_no_longer_failed_is_explained(site: Site, browser: Any) -> None:
    with Receiver() as receiver:
        made = history(site, receiver)
        # The page's list is held as it first showed the failed delivery: a refresh (every 10 s, or one already in
        # flight when the other retry lands) would drop the row the other retry takes out of it.
        held: dict[str, bytes] = {}

        def hold(route: Any) -> None:
            if "body" in held:
                route.fulfill(status=200, content_type="application/json", body=held["body"])
                return
            response = route.fetch()
            if any(d["id"] == made["delivery"]["id"] for d in json.loads(response.body())["deliveries"]):
                held["body"] = response.body()
            route.fulfill(response=response)

        context, page = ops_page(site, browser, route=("**/deliveries?status=failed*", hold))
        button = page.get_by_role("button", name=f"Send delivery {made['delivery']['id']} again")
        expect(button).to_be_visible(timeout=TIMEOUT)
        # Someone else retries it first (the endpoint still disabled: it waits as pending).
        again = site.admin_call("POST", f"/v1/shops/{site.shop['id']}/deliveries/{made['delivery']['id']}/retry")
        assert again.status_code == 200, again.text
        button.click()
        expect(page.locator("#deliveries-notice")).to_contain_text("no longer failed", timeout=TIMEOUT)
        context.unroute("**/deliveries?status=failed*")
        expect(page.locator("#deliveries tbody tr")).to_have_count(0, timeout=TIMEOUT)  # pending now: not listed
        context.close()
