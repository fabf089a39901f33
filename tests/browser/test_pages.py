"""/console and /ops in real headless Chromium against a real server, on both databases (issue 17, "Prove it")."""

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Site

THREAT = "亲，快递三天没动了，再不到就给差评"
TIMEOUT = 15_000  # ms: a loaded shared machine; the long poll itself answers in milliseconds


def sign_in(page: Page, site: Site, path: str, token: str) -> None:
    page.goto(f"{site.base_url}{path}")
    page.get_by_role("textbox", name=re.compile("token", re.I)).fill(token)
    page.get_by_role("button", name=re.compile("^Sign in$")).click()


def english(context: Any) -> None:
    # The interface language is remembered per browser; the tests read the English text.
    context.add_init_script("localStorage.setItem('triage.lang', 'en')")


def test_console_sign_in_long_poll_evidence_reply_resolve(site: Site, browser: Any, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    english(context)
    page = context.new_page()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    writes: list[dict[str, str]] = []
    page.on("request", lambda request: writes.append({"url": request.url, **request.headers})
            if request.method == "POST" and "/v1/tickets/" in request.url else None)

    sign_in(page, site, "/console", site.agents[0]["token"])
    expect(page.get_by_text("You hold no ticket")).to_be_visible()
    page.keyboard.press("c")  # claim: a long poll on an empty queue
    expect(page.locator("#claim-state")).to_contain_text("Waiting for work")
    page.wait_for_timeout(500)  # the claim is in flight before the message arrives

    posted = site.post_message(THREAT)
    # The long-polling console shows it without a reload.
    thread = page.locator("#thread")
    expect(thread).to_contain_text(THREAT, timeout=TIMEOUT)
    assert len(navigations) == 1, navigations
    expect(page.locator("#held li")).to_have_count(1)
    expect(page.locator("#ticket-title")).to_contain_text("P1")

    # Its evidence is highlighted: each <mark> is a span the API names as evidence, with its rule.
    ticket = site.agent_call(site.agents[0], "GET", f"/v1/tickets/{posted['ticket_id']}").json()
    evidence = {(e["text"], e["rule"]) for hit in ticket["messages"][0]["triage"]["intents"] for e in hit["evidence"]}
    marks = page.locator("#thread mark.ev")
    expect(marks.first).to_be_visible()
    shown = {(marks.nth(i).inner_text(), marks.nth(i).get_attribute("data-rule")) for i in range(marks.count())}
    assert shown and shown <= evidence, (shown, evidence)
    assert any("差评" in text for text, _ in shown)
    expect(page.locator(".triage .chip.primary")).to_have_text("bad_review_threat")

    # Suggestions: complaint handling, filled with the buyer's nick; one goes into the reply box with a key.
    expect(page.locator("#suggestions li").first).to_contain_text("小王", timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / f"console-{site.backend}.png"), full_page=True)
    page.locator("#reply").fill("小王您好，已经联系快递加急，今天给您答复。")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#thread li.msg.out")).to_have_count(1, timeout=TIMEOUT)
    expect(page.locator("#notice")).to_contain_text("Reply sent")

    page.locator("body").click(position={"x": 5, "y": 5})  # leave the text box: shortcuts apply again
    page.keyboard.press("e")  # resolve
    expect(page.locator("#notice")).to_contain_text("Resolved", timeout=TIMEOUT)
    expect(page.locator("#held li")).to_have_count(0)
    final = site.admin_call("GET", f"/v1/tickets/{posted['ticket_id']}").json()
    assert final["status"] == "resolved"
    assert [m["text"] for m in final["messages"] if m["direction"] == "outbound"] == ["小王您好，已经联系快递加急，今天给您答复。"]
    keyed = [w for w in writes if w["url"].endswith(("/replies", "/resolve"))]
    assert len(keyed) == 2 and all(w.get("idempotency-key") for w in keyed)
    assert keyed[0]["idempotency-key"] != keyed[1]["idempotency-key"]
    context.close()


def test_another_agent_never_sees_the_first_agents_held_ticket(site: Site, browser: Any) -> None:
    first, second = browser.new_context(), browser.new_context()
    english(first)
    english(second)
    page_a, page_b = first.new_page(), second.new_page()
    sign_in(page_a, site, "/console", site.agents[0]["token"])
    sign_in(page_b, site, "/console", site.agents[1]["token"])
    held = site.post_message("我要投诉你们客服态度", conversation="c-held", nick="阿珍")
    page_a.get_by_role("button", name=re.compile("Claim next")).click()
    expect(page_a.locator("#thread")).to_contain_text("我要投诉你们客服态度", timeout=TIMEOUT)

    # B waits for work; a new conversation reaches B, the held one never does.
    page_b.get_by_role("button", name=re.compile("Claim next")).click()
    page_b.wait_for_timeout(500)
    site.post_message("请问这款有M码吗", conversation="c-other", nick="阿强")
    expect(page_b.locator("#thread")).to_contain_text("请问这款有M码吗", timeout=TIMEOUT)
    page_b.wait_for_timeout(4500)  # one refresh of B's list, which re-reads the held tickets
    assert "我要投诉你们客服态度" not in page_b.content() and held["ticket_id"] not in page_b.content()
    expect(page_b.locator("#held li")).to_have_count(1)
    expect(page_a.locator("#held li")).to_have_count(1)
    first.close()
    second.close()


@pytest.mark.parametrize("path", ["/console", "/ops"])
def test_a_wrong_token_shows_a_clear_message(site: Site, browser: Any, path: str) -> None:
    context = browser.new_context()
    english(context)
    page = context.new_page()
    sign_in(page, site, path, "not-a-real-token")
    expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    expect(page.locator("#signin")).to_be_visible()
    # An agent token does not open /ops, and the admin token is not an agent's.
    other = site.agents[0]["token"] if path == "/ops" else "adm_test-admin-token-for-the-suite"
    sign_in(page, site, path, other)
    expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    context.close()


def test_ops_shows_the_depth_change_after_a_claim(site: Site, browser: Any, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    english(context)
    page = context.new_page()
    site.post_message("东西坏了，屏幕有裂痕", nick="阿华")  # a P2 for aftersale, before the page opens
    sign_in(page, site, "/ops", "adm_test-admin-token-for-the-suite")
    page.get_by_label("Shop").select_option(site.shop["id"])
    aftersale = page.locator("#queues tbody tr", has_text="aftersale")
    total = aftersale.locator("td").nth(5)
    expect(total).to_have_text("1", timeout=TIMEOUT)
    site.post_message("I want to return this, it does not fit", nick="Amy")
    expect(total).to_have_text("2", timeout=TIMEOUT)
    claimed = site.agent_call(site.agents[0], "POST", "/v1/agents/me/claim")
    assert claimed.status_code == 200, claimed.text
    expect(total).to_have_text("1", timeout=TIMEOUT)  # the live view follows the claim
    holder = page.locator("#agents tbody tr", has_text="阿明")
    expect(holder.locator("td").nth(4)).to_have_text("1 / 5", timeout=TIMEOUT)
    expect(holder.locator("td").nth(3)).to_contain_text(claimed.json()["customer"]["nick"])
    expect(holder.locator("td").nth(1)).to_have_text("online")  # the claim made it so
    expect(page.locator("#chart-fr svg.chart")).to_be_visible()
    expect(page.locator("#chart-breaches svg.chart")).to_be_visible()
    # The rules backtest view replays the shop's messages under the candidate (here the active rules).
    expect(page.locator("#candidate")).not_to_have_value("", timeout=TIMEOUT)
    page.get_by_role("button", name="Run backtest").click()
    expect(page.locator("#backtest")).to_contain_text("messages replayed", timeout=TIMEOUT)
    page.screenshot(path=str(artifacts / f"ops-{site.backend}.png"), full_page=True)
    context.close()


@pytest.mark.parametrize("path", ["/console", "/ops"])
def test_first_load_is_small_and_stays_on_the_origin(site: Site, browser: Any, path: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    client = context.new_cdp_session(page)
    client.send("Network.enable")
    transferred: dict[str, float] = {}
    client.on("Network.loadingFinished", lambda event: transferred.__setitem__(event["requestId"],
                                                                               event["encodedDataLength"]))
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{site.base_url}{path}", wait_until="networkidle")
    total = sum(transferred.values())
    assert 0 < total < 200 * 1024, f"{path} first load transferred {total} bytes"
    assert urls and all(url.startswith(site.base_url + "/") or url.startswith("data:") for url in urls), urls
    assert violations == []
    context.close()
