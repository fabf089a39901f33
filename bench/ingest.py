"""Webhook ingestion over real HTTP: the service against its two baselines, on SQLite and PostgreSQL.

For each database and batch size (1 and 20 messages a request), wrk (1 thread, 32 connections)
replays pre-signed, never-repeated webhook requests against:
  * the service (uvicorn, one worker): verification, triage, idempotent storage, tickets, events;
  * bare: the same signature check and body parsing, answering 202 without storage;
  * durable: bare plus one INSERT per message on the bare driver, committed before answering.
Prints messages/s, p50/p99 latency, the ratios to both baselines, and the CPU each message cost the server
process and (PostgreSQL) the backends of the run's database, read from /proc. Needs wrk and a PostgreSQL
server (TRIAGE_TEST_POSTGRES_URL, default postgres@127.0.0.1:5432).

    .venv/bin/python bench/ingest.py [--seconds 10] [--backends sqlite postgres]
"""

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import httpx

from common import (ROOT, Uvicorn, cpu_seconds, database, database_cpu_seconds, unique,  # type: ignore[import-not-found]
                    wrk)
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade_async
from app.services.signing import sign

ADMIN_TOKEN = "adm_bench"
SCRIPT = ROOT / "bench" / "replay.lua"
TEXTS = ["亲，快递三天没动了，再不到就给差评", "请问这款有M码吗？", "我要退款，质量太差了", "物流怎么一直不更新",
         "收到的和图片完全不一样，虚假宣传", "刚买就降价了，能补差价吗", "謝謝親，已經收到了", "再不發貨我就給差評",
         "The zipper broke after one day, I want a refund", "Where is my parcel? Tracking hasn't moved in 5 days",
         "I will file a chargeback and report you to the consumer council", "Do you ship to Hong Kong?",
         "refund什么时候到账", "你们客服态度太差了，我要投诉", "在吗", "好的，谢谢"]


def write_requests(path: Path, *, url_path: str, secret: str, batch: int, count: int, tag: str) -> None:
    rng = random.Random(7)
    now = int(time.time())
    with path.open("w") as out:
        for r in range(count):
            messages = [{"message_id": f"{tag}-{r}-{i}", "conversation_id": f"c-{rng.randrange(5000)}",
                         "sent_at": "2026-11-25T08:00:00Z",
                         "customer": {"id": f"b-{rng.randrange(3000)}", "vip_level": rng.randrange(3)},
                         "text": rng.choice(TEXTS)} for i in range(batch)]
            body = json.dumps({"platform": "taobao", "messages": messages}, ensure_ascii=False).encode()
            webhook_id = f"{tag}-{r}"
            signature = sign(secret, msg_id=webhook_id, timestamp=now, body=body)
            out.write(f"{url_path}\t{webhook_id}\t{now}\t{signature}\t{body.decode()}\n")


def measure(target: str, server: Uvicorn, url_path: str, secret: str, batch: int, seconds: int, tmp: Path,
            expected_rate: int, database_name: str | None) -> dict[str, float]:
    """One wrk run over never-repeated requests; a run that wrapped around its file (and so replayed duplicates,
    cheap for the service and errors for the durable baseline) is measured again with a larger file.

    Besides the rates, the CPU each message cost the server process and the PostgreSQL backends of the run's
    database: steadier than the rates on a machine whose speed drifts, and they tell which side grew."""
    count = expected_rate * seconds
    for _ in range(4):
        data = tmp / f"{target}-{batch}.tsv"
        write_requests(data, url_path=url_path, secret=secret, batch=batch, count=count, tag=unique(target))
        cpu = cpu_seconds(server.process.pid)
        database_cpu = database_cpu_seconds(database_name) if database_name else 0.0
        result = wrk(server.url, SCRIPT, data, seconds=seconds)
        cpu = cpu_seconds(server.process.pid) - cpu
        database_cpu = database_cpu_seconds(database_name) - database_cpu if database_name else float("nan")
        data.unlink()
        if result.requests <= count:
            messages = max(result.requests * batch, 1)
            return {"req_s": result.requests_per_second, "msg_s": result.requests_per_second * batch,
                    "p50": result.p50_ms, "p99": result.p99_ms, "bad": result.errors + result.non_2xx,
                    "cpu_us": cpu * 1e6 / messages, "db_us": database_cpu * 1e6 / messages}
        count = int(result.requests * 1.5)
    raise SystemExit(f"{target}, batch {batch}: wrk kept outrunning its request file")


def bench_backend(backend: str, seconds: int, *, rules_only: bool = False, service_only: bool = False,
                  batches: tuple[int, ...] = (1, 20)) -> dict[tuple[str, int], dict[str, float]]:
    results: dict[tuple[str, int], dict[str, float]] = {}
    with database(backend) as url, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        asyncio.run(upgrade_async(url))
        # SQLite runs inside the server process: its CPU is the server's.
        database_name = make_url(url).database if backend == "postgres" else None
        service = Uvicorn("app.main:app", {"TRIAGE_DATABASE_URL": url, "TRIAGE_ADMIN_TOKEN": ADMIN_TOKEN,
                                           "TRIAGE_LOG_LEVEL": "warning"})
        try:
            service.wait("/readyz")
            shop_id = unique("bench")
            shop = httpx.post(f"{service.url}/v1/shops", json={"id": shop_id, "name": "Bench"},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
            secret = shop["webhook_secret"]
            if rules_only:
                # The shipped rules without the learned model: what the service costs beside its triage model.
                ruleset = httpx.get(f"{service.url}/v1/shops/{shop_id}/rules",
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["body"]
                activated = httpx.post(f"{service.url}/v1/shops/{shop_id}/rules",
                                       json={"ruleset": {**ruleset, "model": "none"}, "name": "rules-only"},
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                activated.raise_for_status()
            for batch in batches:
                results[("service", batch)] = measure("service", service, f"/v1/shops/{shop_id}/webhooks/messages",
                                                      secret, batch, seconds, tmp, 3000 if batch == 1 else 600,
                                                      database_name)
        finally:
            service.stop()
        if service_only:
            return results
        baseline = Uvicorn("bench.baseline_app:app", {"BENCH_SECRET": secret, "BENCH_DATABASE_URL": url})
        try:
            baseline.wait()
            for batch in batches:
                for target, rate in (("bare", 12000 if batch == 1 else 1500), ("durable", 4500 if batch == 1 else 3000)):
                    results[(target, batch)] = measure(target, baseline, f"/{target}/{shop_id}/webhooks/messages",
                                                       secret, batch, seconds, tmp, rate, database_name)
        finally:
            baseline.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--rules-only", action="store_true",
                        help="the bench shop triages with the shipped rules alone (its ruleset's model: none)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 20], help="messages a request")
    parser.add_argument("--service-only", action="store_true",
                        help="the service alone, without the bare and durable baselines (bench/ab_ingest.py)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file, as JSON")
    args = parser.parse_args()
    batches = tuple(args.batches)
    print(f"wrk -t1 -c32 -d{args.seconds}s, one uvicorn worker (uvloop, httptools); messages/s, latency in ms, "
          "CPU per message in µs (the server process; PostgreSQL's backends of the run's database)")
    print(f"{'database':9} {'batch':>5} {'target':8} {'req/s':>9} {'msg/s':>9} {'p50':>7} {'p99':>7} {'errors':>6}"
          f"  {'vs durable':>10} {'vs bare':>8} {'cpu µs':>7} {'db µs':>6}")
    figures = []
    for backend in args.backends:
        results = bench_backend(backend, args.seconds, rules_only=args.rules_only, service_only=args.service_only,
                                batches=batches)
        for batch in batches:
            for target in ("service",) if args.service_only else ("service", "durable", "bare"):
                r = results[(target, batch)]
                figures.append({"backend": backend, "batch": batch, "target": target, **r})
                if args.service_only:
                    versus = f"{'-':>10} {'-':>8}"
                else:
                    durable, bare = results[("durable", batch)], results[("bare", batch)]
                    versus = f"{r['msg_s'] / durable['msg_s']:10.2f} {r['msg_s'] / bare['msg_s']:8.2f}"
                print(f"{backend:9} {batch:5} {target:8} {r['req_s']:9.0f} {r['msg_s']:9.0f} {r['p50']:7.1f} "
                      f"{r['p99']:7.1f} {r['bad']:6.0f}  {versus} {r['cpu_us']:7.0f} "
                      f"{'-' if backend == 'sqlite' else format(r['db_us'], '.0f'):>6}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
