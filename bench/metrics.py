"""What /metrics scrapers cost the webhook: its p50 alone, then beside 20 concurrent scrapers, in one run.

One uvicorn worker on a fresh database with 30 shops and their backlog (so the answer is as large as the issue
measured, ~150 KiB). wrk replays pre-signed single-message webhooks over 4 connections; meanwhile a separate
process runs 20 scrapers, each scraping /metrics once a second (20 scrapes/s; Prometheus scrapes each target
every 15 s by default), or back to back ("flat out"). Printed: the webhook p50/p99 without scrapers (the
baseline), with them, and the ratio; for the flat-out scrapers and for TRIAGE_METRICS_CACHE_SECONDS=0 (every
scrape reads the database and renders, as before the cache) too.

    .venv/bin/python bench/metrics.py [--seconds 10] [--backend postgres]
"""

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import ROOT, Uvicorn, database, unique, wrk  # type: ignore[import-not-found]
from ingest import SCRIPT, write_requests  # type: ignore[import-not-found]

from app.db.migrate import upgrade_async
from tests.support.webhooks import encode, message, signed_headers

ADMIN_TOKEN = "adm_bench"
SHOPS = 30
SCRAPERS = 20
TEXTS = ["亲，快递三天没动了，再不到就给差评", "请问这款有M码吗？", "我要退款，质量太差了", "你们客服态度太差了，我要投诉"]

SCRAPER = """
import asyncio, sys, time
import httpx

async def scraper(http, pause, counts):
    while True:
        started = time.monotonic()
        response = await http.get("/metrics")
        counts.append(len(response.content))
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))

async def main(url, n, pause):
    counts = []
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=n)) as http:
        tasks = [asyncio.create_task(scraper(http, pause, counts)) for _ in range(n)]
        started = time.monotonic()
        try:
            await asyncio.sleep(float(sys.argv[4]))
        finally:
            for task in tasks:
                task.cancel()
    print(len(counts) / (time.monotonic() - started), sum(counts) / max(1, len(counts)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def seed(url: str) -> tuple[str, str]:
    """30 shops with tickets in every queue and tier; the shop the webhook load goes to and its secret."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    shops = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(SHOPS):
            shop = http.post("/v1/shops", json={"id": unique("m"), "name": "Metrics bench"}, headers=admin).json()
            body = encode({"platform": "taobao", "messages": [
                message(TEXTS[i % len(TEXTS)], conversation=f"c-{i}", customer=f"b-{i}") for i in range(40)]})
            response = http.post(f"/v1/shops/{shop['id']}/webhooks/messages", content=body,
                                 headers=signed_headers(shop["webhook_secret"], body))
            assert response.status_code == 202, response.text
            shops.append(shop)
        size = len(http.get("/metrics").content)
    print(f"{SHOPS} shops seeded; /metrics answers {size / 1024:.0f} KiB")
    return shops[0]["id"], shops[0]["webhook_secret"]


def webhook_p50(url: str, shop_id: str, secret: str, seconds: int, tmp: Path, scrapers: tuple[int, float] | None
                ) -> tuple[float, float, str]:
    """wrk over 4 connections for `seconds`, with `scrapers` (count, seconds between scrapes) running meanwhile."""
    data = tmp / "requests.tsv"
    write_requests(data, url_path=f"/v1/shops/{shop_id}/webhooks/messages", secret=secret, batch=1,
                   count=2500 * seconds, tag=unique("w"))
    scraping = None
    if scrapers is not None:
        scraping = subprocess.Popen([sys.executable, "-c", SCRAPER, url, str(scrapers[0]), str(scrapers[1]),
                                     str(seconds + 2)], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
    result = wrk(url, SCRIPT, data, connections=4, seconds=seconds)
    note = f"{result.requests_per_second:.0f} webhooks/s"
    if result.errors or result.non_2xx:
        note += f", {result.errors} socket errors and {result.non_2xx} non-2xx answers"
    if scraping is not None:
        rate, size = (float(x) for x in scraping.communicate(timeout=60)[0].split())
        note += f"; {rate:.0f} scrapes/s of {size / 1024:.0f} KiB"
    return result.p50_ms, result.p99_ms, note


def run(backend: str, seconds: int, cache_seconds: str) -> dict[str, tuple[float, float, str]]:
    results = {}
    with database(backend) as db_url, tempfile.TemporaryDirectory() as tmp_name:
        asyncio.run(upgrade_async(db_url))
        service = Uvicorn("app.main:app", {"TRIAGE_DATABASE_URL": db_url, "TRIAGE_ADMIN_TOKEN": ADMIN_TOKEN,
                                           "TRIAGE_LOG_LEVEL": "warning",
                                           "TRIAGE_METRICS_CACHE_SECONDS": cache_seconds})
        try:
            service.wait("/readyz")
            shop_id, secret = seed(service.url)
            tmp = Path(tmp_name)
            results["none"] = webhook_p50(service.url, shop_id, secret, seconds, tmp, None)
            results["paced"] = webhook_p50(service.url, shop_id, secret, seconds, tmp, (SCRAPERS, 1.0))
            results["flat"] = webhook_p50(service.url, shop_id, secret, seconds, tmp, (SCRAPERS, 0.0))
        finally:
            service.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    print(f"webhook: wrk -t1 -c4 -d{args.seconds}s, 1 message a request, one uvicorn worker, {args.backend}; "
          "latency in ms")
    for cache in ("5", "0"):
        results = run(args.backend, args.seconds, cache)
        base_p50, base_p99, _ = results["none"]
        print(f"TRIAGE_METRICS_CACHE_SECONDS={cache}: no scrapers (baseline) p50 {base_p50:.2f} p99 {base_p99:.2f}  "
              f"({results['none'][2]})")
        for key, label in (("paced", f"{SCRAPERS} scrapers, each once a second"),
                           ("flat", f"{SCRAPERS} scrapers, flat out")):
            p50, p99, note = results[key]
            print(f"  {label:36} p50 {p50:6.2f} p99 {p99:7.2f}  ({note})  p50 ratio {p50 / base_p50:.2f}x")


if __name__ == "__main__":
    main()
