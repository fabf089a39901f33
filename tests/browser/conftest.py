"""Real headless Chromium over a real `triage serve`, per database (SPEC 11: /console and /ops).

The browser is the system's (Debian's `chromium`; TRIAGE_TEST_CHROMIUM names another), driven by Playwright for
Python, which downloads nothing at run time. Without a browser these tests skip, so `make test` works on a clone
with only Python; TRIAGE_TEST_REQUIRE_BROWSER=1 (set by .ci/run) makes a missing browser fail the run instead.
"""

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db.migrate import upgrade_async
from tests.support import ADMIN_TOKEN, BACKENDS, fresh_database
from tests.support.serving import ROOT, ServiceProcess
from tests.support.webhooks import encode, signed_headers

ARTIFACTS = Path(os.environ.get("TRIAGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
REQUIRED = os.environ.get("TRIAGE_TEST_REQUIRE_BROWSER") == "1"


def chromium_path() -> str | None:
    return os.environ.get("TRIAGE_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if REQUIRED and chromium_path() is None:
        raise pytest.UsageError("TRIAGE_TEST_REQUIRE_BROWSER=1 but no chromium was found (apt-get install chromium)")


# Per module, not per session: Playwright's sync API keeps an event loop running in the main thread while it is
# open, and the suite's async tests after these modules need that thread free.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests skipped: no chromium (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        instance = playwright.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class Site:
    """A running service with one shop, its secret, and agents of that shop."""

    base_url: str
    shop: dict[str, Any]
    agents: list[dict[str, Any]]
    backend: str

    def post_message(self, text: str, *, conversation: str | None = None, nick: str = "小王",
                     order_id: str | None = "o-2026-881") -> dict[str, Any]:
        msg: dict[str, Any] = {"message_id": f"m-{uuid.uuid4().hex[:12]}",
                               "conversation_id": conversation or f"c-{uuid.uuid4().hex[:8]}",
                               "sent_at": "2026-11-25T08:00:00Z",
                               "customer": {"id": f"buyer-{uuid.uuid4().hex[:6]}", "nick": nick, "vip_level": 1},
                               "text": text}
        if order_id:
            msg["order_id"] = order_id
        body = encode({"platform": "taobao", "messages": [msg]})
        answer = httpx.post(f"{self.base_url}/v1/shops/{self.shop['id']}/webhooks/messages", content=body,
                            headers=signed_headers(self.shop["webhook_secret"], body), timeout=30)
        assert answer.status_code == 202, answer.text
        return dict(answer.json()["results"][0])

    def agent_call(self, agent: dict[str, Any], method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base_url}{path}", timeout=30,
                             headers={"Authorization": f"Bearer {agent['token']}"}, **kwargs)

    def admin_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base_url}{path}", timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs)

    def new_shop(self) -> None:
        """A shop of its own for the next test, so queue depths and held tickets start from nothing."""
        shop = self.admin_call("POST", "/v1/shops", json={"id": f"web-{uuid.uuid4().hex[:8]}", "name": "Lucky Store"})
        assert shop.status_code == 201, shop.text
        self.shop = shop.json()
        self.agents = []
        for name in ("阿明", "Sam"):
            agent = self.admin_call("POST", f"/v1/shops/{self.shop['id']}/agents", json={
                "name": name, "queues": ["presale", "aftersale", "complaints"], "capacity": 5})
            assert agent.status_code == 201, agent.text
            self.agents.append(agent.json())


@pytest.fixture(scope="module", params=BACKENDS)
def site_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                browser: Any) -> Iterator[Site]:
    # Playwright's sync API runs an event loop in this thread: the database is made on a loop of its own thread.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    manager = fresh_database(request.param, tmp_path_factory.mktemp("web"))
    try:
        url = run(manager.__aenter__())
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        raise
    try:
        run(upgrade_async(url))
        log = tmp_path_factory.mktemp("web-log") / "service.log"
        # Private targets allowed: the ops page's failed deliveries are sent to a receiver on loopback.
        server = ServiceProcess(url, ADMIN_TOKEN, log_path=log, extra_env={"TRIAGE_DELIVERY_ALLOW_PRIVATE": "true"})
        try:
            server.wait_ready()
            yield Site(server.base_url, {}, [], request.param)
        finally:
            server.stop()
    finally:
        run(manager.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@pytest.fixture
def site(site_server: Site, browser: Any) -> Site:
    site_server.new_shop()
    return site_server


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
