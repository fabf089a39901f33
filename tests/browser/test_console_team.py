"""The console's presence and hand-over to a colleague (SPEC 10 and 11), in real headless Chromium on both databases:
the status an agent sets is the one the service keeps and shows ops; a ticket handed to a colleague reaches that
colleague's console; a refused hand-over is said in words and leaves the ticket held."""

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site
from tests.browser.test_console_states import claimed_console
from tests.browser.test_pages import TIMEOUT, english, sign_in


def presence(site: Site, agent: dict[str, Any]) -> str:
    """The agent's presence as ops read it."""
    listed = site.admin_call("GET", f"/v1/shops/{site.shop['id']}/agents").json()
    return str(next(a for a in listed if a["id"] == agent["id"])["presence"])


def console(site: Site, browser: Any, agent: dict[str, Any]) -> tuple[Any, Page]:
    context = browser.new_context()
    english(context)
    page = context.new_page()
    sign_in(page, site, "/console", agent["token"])
    expect(page.locator("#desk")).to_be_visible(timeout=TIMEOUT)
    return context, page


def choose(select: Any, name: str) -> None:
    """Pick the colleague whose option starts with `name` (its text also says presence and queues)."""
    select.select_option(select.locator("option", has_text=re.compile("^" + name)).get_attribute("value"))


def test_presence_is_set_in_the_console_kept_by_the_service_and_shown(site: Site, browser: Any) -> None:
    ming = site.agents[0]
    assert presence(site, ming) == "offline"  # as created
    context, page = console(site, browser, ming)
    status = page.get_by_label("My status")
    # Signing in is being at the console.
    expect(status).to_have_value("online", timeout=TIMEOUT)
    expect(page.locator("#presence")).to_have_text("Online · not claiming")
    assert presence(site, ming) == "online"

    status.select_option("away")
    expect(page.locator("#presence")).to_contain_text("Away", timeout=TIMEOUT)
    assert presence(site, ming) == "away"

    status.blur()  # out of the list: shortcuts apply again
    page.keyboard.press("c")  # a claim makes the agent online, and the console says so
    expect(page.locator("#notice")).to_have_text("Claiming makes you online.", timeout=TIMEOUT)
    expect(status).to_have_value("online")
    expect(page.locator("#presence")).to_have_text("Online · waiting for work")
    page.wait_for_timeout(300)  # the claim is on the wire
    assert presence(site, ming) == "online"

    status.select_option("offline")  # no new work: the waiting claim stops
    expect(page.locator("#claim-state")).to_contain_text("Not claiming", timeout=TIMEOUT)
    expect(page.locator("#presence")).to_contain_text("Offline")
    assert presence(site, ming) == "offline"

    status.select_option("online")
    expect(page.locator("#presence")).to_have_text("Online · not claiming", timeout=TIMEOUT)
    assert presence(site, ming) == "online"
    page.get_by_role("button", name="中文").click()
    expect(page.get_by_label("我的状态").locator("option[value=away]")).to_have_text("离开（暂不接待）")
    page.get_by_role("button", name="退出").click()  # signing out is leaving: offline at once
    expect(page.locator("#signin")).to_be_visible()
    page.wait_for_timeout(500)
    assert presence(site, ming) == "offline"
    context.close()


def test_a_ticket_handed_to_a_colleague_reaches_the_colleagues_console(site: Site, browser: Any) -> None:
    ming, sam = site.agents
    sam_context, sam_page = console(site, browser, sam)  # Sam at the console: online
    expect(sam_page.locator("#held li")).to_have_count(0)
    context, page, posted = claimed_console(site, browser, "我要退货，尺码不对", nick="阿珍")
    choice = page.get_by_label("or to an agent")
    expect(choice.locator("option", has_text="Sam")).to_contain_text("online", timeout=TIMEOUT)
    choose(choice, "Sam")
    page.get_by_label("Reason").fill("她昨天接待过这位买家")
    page.get_by_role("button", name=re.compile("^Transfer")).click()
    expect(page.locator("#notice")).to_have_text("Handed to Sam, who holds it now.", timeout=TIMEOUT)
    expect(page.locator("#held li")).to_have_count(0)

    ticket = site.admin_call("GET", f"/v1/tickets/{posted['ticket_id']}").json()
    assert (ticket["status"], ticket["assigned_agent_id"]) == ("assigned", sam["id"])
    events = site.admin_call("GET", f"/v1/tickets/{posted['ticket_id']}/events").json()["events"]
    handed = [e for e in events if e["kind"] == "transferred"]
    assert [(e["data"]["agent_id"], e["data"]["to_agent"], e["data"]["reason"]) for e in handed] == [
        (ming["id"], sam["id"], "她昨天接待过这位买家")]
    # Sam's console lists it at its next refresh, and Sam may answer it.
    expect(sam_page.locator("#held li")).to_contain_text("阿珍", timeout=TIMEOUT)
    sam_page.locator("#held li button").first.click()
    expect(sam_page.locator("#thread")).to_contain_text("我要退货，尺码不对")
    expect(sam_page.locator("#send")).to_be_enabled()
    context.close()
    sam_context.close()


def test_a_refused_hand_over_is_explained_and_the_ticket_stays_held(site: Site, browser: Any) -> None:
    ming, sam = site.agents
    lee = site.admin_call("POST", f"/v1/shops/{site.shop['id']}/agents", json={
        "name": "Lee", "queues": ["presale", "aftersale", "complaints"], "capacity": 5})
    assert lee.status_code == 201, lee.text  # never at a console: offline
    context, page, posted = claimed_console(site, browser, "我要退货，尺码不对")
    queue = site.admin_call("GET", f"/v1/tickets/{posted['ticket_id']}").json()["queue"]
    choice = page.get_by_label("or to an agent")
    transfer = page.get_by_role("button", name=re.compile("^Transfer"))

    def refused(name: str, words: str) -> None:
        choose(choice, name)
        transfer.click()
        expect(page.locator("#notice")).to_contain_text(f"{name} {words}", timeout=TIMEOUT)
        expect(page.locator("#notice")).to_contain_text("the ticket stays with you")
        expect(page.locator("#held li")).to_have_count(1)
        expect(page.locator("#send")).to_be_enabled()
        ticket = site.admin_call("GET", f"/v1/tickets/{posted['ticket_id']}").json()
        assert (ticket["status"], ticket["assigned_agent_id"]) == ("assigned", ming["id"])

    expect(choice.locator("option", has_text="Lee")).to_contain_text("offline", timeout=TIMEOUT)
    refused("Lee", "is offline")

    others = [q for q in ("presale", "aftersale", "complaints") if q != queue]
    changed = site.admin_call("PATCH", f"/v1/shops/{site.shop['id']}/agents/{sam['id']}", json={"queues": others})
    assert changed.status_code == 200, changed.text
    assert site.agent_call(sam, "PUT", "/v1/agents/me/presence", json={"status": "online"}).status_code == 200
    refused("Sam", "does not serve this ticket's queue")
    # The refusal re-read the colleagues: the list now says so.
    expect(choice.locator("option", has_text="Sam")).to_contain_text(f"does not serve {queue}", timeout=TIMEOUT)

    full = site.admin_call("PATCH", f"/v1/shops/{site.shop['id']}/agents/{sam['id']}", json={
        "queues": ["presale", "aftersale", "complaints"], "capacity": 1})
    assert full.status_code == 200, full.text
    site.post_message("请问有现货吗")
    assert site.agent_call(sam, "POST", "/v1/agents/me/claim").status_code == 200  # Sam now holds one of one
    refused("Sam", "already holds as many tickets as allowed")
    context.close()
