"""Snooze from the console (SPEC 10, 11), in real headless Chromium on both databases: the ticket leaves the agent's
list until the time chosen or the buyer's next message; a time the service refuses is said and the ticket stays."""

from datetime import datetime, timedelta, timezone

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Site
from tests.browser.test_console_states import claimed_console
from tests.browser.test_pages import TIMEOUT


def ticket(site: Site, ticket_id: str) -> dict[str, Any]:
    return dict(site.admin_call("GET", f"/v1/tickets/{ticket_id}").json())


def test_a_snoozed_ticket_leaves_the_console_and_comes_back_when_the_buyer_writes(site: Site, browser: Any) -> None:
    context, page, posted = claimed_console(site, browser, "我把照片拍好再发给你", conversation="c-photos")
    page.get_by_label("Back in its queue").select_option("60")
    page.get_by_label("Waiting for").fill("等买家发照片")
    asked = datetime.now(timezone.utc)
    page.get_by_role("button", name="Snooze").click()
    expect(page.locator("#notice")).to_contain_text("Snoozed until", timeout=TIMEOUT)
    expect(page.locator("#held li")).to_have_count(0)

    snoozed = ticket(site, posted["ticket_id"])
    assert snoozed["status"] == "pending" and snoozed["assigned_agent_id"] is None
    until = datetime.fromisoformat(snoozed["snoozed_until"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < until - asked < timedelta(minutes=61)
    events = site.admin_call("GET", f"/v1/tickets/{posted['ticket_id']}/events").json()["events"]
    assert [e["data"].get("reason") for e in events if e["kind"] == "snoozed"] == ["等买家发照片"]

    # The buyer writes: the ticket is back in its queue at once, and the console claims it again.
    site.post_message("照片发你了", conversation="c-photos")
    assert ticket(site, posted["ticket_id"])["status"] == "queued"
    page.get_by_role("button", name="Claim next").click()
    expect(page.locator("#thread")).to_contain_text("照片发你了", timeout=TIMEOUT)
    context.close()


def test_a_time_the_service_refuses_is_explained_and_the_ticket_stays_held(site: Site, browser: Any) -> None:
    context, page, posted = claimed_console(site, browser, "我晚点再联系你")
    page.get_by_label("Back in its queue").select_option("at")
    too_late = (datetime.now() + timedelta(days=40)).strftime("%Y-%m-%dT%H:%M")  # the browser's local time
    page.get_by_label("Time", exact=True).fill(too_late)
    page.get_by_role("button", name="Snooze").click()
    expect(page.locator("#notice")).to_contain_text("at most 30 days ahead", timeout=TIMEOUT)
    expect(page.locator("#held li")).to_have_count(1)
    expect(page.locator("#send")).to_be_enabled()
    assert ticket(site, posted["ticket_id"])["status"] == "assigned"
    context.close()
