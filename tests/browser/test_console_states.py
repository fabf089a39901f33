"""The console's states an agent must understand: escalation while held, a lost lease, capacity, Chinese text."""

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Site
from tests.browser.test_pages import TIMEOUT, english, sign_in


def claimed_console(site: Site, browser: Any, text: str, **kwargs: Any) -> tuple[Any, Page, dict[str, Any]]:
    context = browser.new_context()
    english(context)
    page = context.new_page()
    sign_in(page, site, "/console", site.agents[0]["token"])
    posted = site.post_message(text, **kwargs)
    page.get_by_role("button", name=re.compile("Claim next")).click()
    expect(page.locator("#thread")).to_contain_text(text, timeout=TIMEOUT)
    return context, page, posted


def test_a_held_ticket_that_rises_is_flagged_escalated(site: Site, browser: Any) -> None:
    context, page, _ = claimed_console(site, browser, "请问什么时候发货", conversation="c-rise")
    expect(page.locator("#held li")).not_to_contain_text("Escalated")
    site.post_message("再不发货我就去12315投诉你们", conversation="c-rise")
    # The next refresh of the held list shows the new message, the flag and the unread count.
    expect(page.locator("#held li").first).to_contain_text("Escalated", timeout=TIMEOUT)
    expect(page.locator("#held li").first).to_contain_text("2 unread")
    expect(page.locator("#ticket-title")).to_contain_text("P1")
    expect(page.locator("#thread li.msg.in")).to_have_count(2)
    expect(page.locator("#notice")).to_contain_text("more urgent")
    context.close()


def test_a_lost_lease_is_explained_and_the_ticket_turns_read_only(site: Site, browser: Any) -> None:
    context, page, posted = claimed_console(site, browser, "我要退货，尺码不对")
    taken = site.admin_call("POST", f"/v1/shops/{site.shop['id']}/tickets/{posted['ticket_id']}/release",
                            json={"reason": "supervisor took it back"})
    assert taken.status_code == 200, taken.text
    page.locator("#reply").fill("您好，马上为您处理")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_role("alert").filter(has_text="Lease lost")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#held li")).to_have_count(0)
    context.close()


def test_at_capacity_is_said_in_words(site: Site, browser: Any) -> None:
    agent = site.admin_call("PATCH", f"/v1/shops/{site.shop['id']}/agents/{site.agents[0]['id']}",
                            json={"capacity": 1})
    assert agent.status_code == 200, agent.text
    context, page, _ = claimed_console(site, browser, "这个有货吗")
    site.post_message("这个颜色还有吗")
    page.keyboard.press("c")
    expect(page.locator("#notice")).to_contain_text("At capacity", timeout=TIMEOUT)
    expect(page.locator("#claim-state")).to_contain_text("Not claiming")
    context.close()


def test_the_interface_speaks_chinese(site: Site, browser: Any) -> None:
    context = browser.new_context(locale="en-GB")  # English first; the switch is remembered by the browser
    page = context.new_page()
    page.goto(f"{site.base_url}/console")
    page.get_by_role("button", name="中文").click()
    expect(page.get_by_role("heading", name="客服工作台")).to_be_visible()
    page.get_by_label("客服令牌").fill("wrong")
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("alert")).to_contain_text("客服令牌无效")
    page.goto(f"{site.base_url}/ops")  # the choice is remembered
    expect(page.get_by_role("heading", name="运营看板")).to_be_visible()
    context.close()
