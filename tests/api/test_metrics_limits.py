"""/metrics under many scrapers and behind a token: one database read per window per process, on both databases."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import make_settings
from tests.support.queues import new_ticket

METRICS_TOKEN = "mt_test-metrics-token"


@asynccontextmanager
async def served(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(database_url, **settings))
    async with (application.router.lifespan_context(application),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://m") as http):
        yield http


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def test_twenty_concurrent_scrapes_read_the_database_once_per_window(
        database_url: str, client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    await new_ticket(client, shop, "请问这款有M码吗？")
    async with served(database_url, metrics_cache_seconds=60) as http:
        first = (await http.get("/metrics")).text
        reads = sample(first, "triage_metrics_gauge_refreshes_total")
        assert reads is not None and sample(first, "triage_queue_depth", shop=shop["id"], queue="presale",
                                            tier="P4") == 1

        await new_ticket(client, shop, "还有L码吗？", conversation=f"c-{uuid.uuid4().hex[:8]}")
        answers = await asyncio.gather(*(http.get("/metrics") for _ in range(20)))
        assert {a.status_code for a in answers} == {200}
        last = answers[-1].text
        # Within the window nothing was read again: the second ticket is not counted yet, by any of the twenty.
        assert sample(last, "triage_metrics_gauge_refreshes_total") == reads
        assert {sample(a.text, "triage_queue_depth", shop=shop["id"], queue="presale", tier="P4")
                for a in answers} == {1}

    # With no window (the suite's default), concurrent scrapes still share one read between them.
    async with served(database_url, metrics_cache_seconds=0) as http:
        before = sample((await http.get("/metrics")).text, "triage_metrics_gauge_refreshes_total") or 0
        answers = await asyncio.gather(*(http.get("/metrics") for _ in range(20)))
        after = max(sample(a.text, "triage_metrics_gauge_refreshes_total") or 0 for a in answers)
        assert 1 <= after - before <= 5, after - before
        assert sample(answers[-1].text, "triage_queue_depth", shop=shop["id"], queue="presale", tier="P4") == 2


async def test_metrics_token_when_set(database_url: str) -> None:
    async with served(database_url, metrics_token=METRICS_TOKEN) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
            response = await http.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert response.status_code == 200 and "triage_http_request_duration_seconds" in response.text


async def test_metrics_stay_open_without_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 200
