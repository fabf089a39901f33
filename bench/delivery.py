"""Delivery throughput and latency (issue 15): replies delivered to a local receiver, with 1 and 4 endpoints.

A `triage serve` process on a fresh PostgreSQL database; agents holding tickets reply at a steady rate (default
500 replies a second for 10 s) through the HTTP API; every endpoint of the shop takes reply.created and points at
one receiver (uvicorn, its own process) that answers 200 and notes when it answered each webhook-id. Reported:
deliveries a second (from the first reply's commit to the last delivery's answer) and p50/p99 from a reply's
commit (its 201 answer: the service answers only after the commit) to the receiver's answer. Baseline, in the same
run: a bare httpx POST loop to the same receiver (as many concurrent posts as the relay may send to one
endpoint), its requests a second and p50/p99. Ratio: deliveries/s over the bare loop's requests/s.

Wall-clock figures: do not trust them while the machine is loaded (other test suites, benchmarks); compare the
ratio, and run it again on a quiet machine before quoting absolute numbers.

    .venv/bin/python bench/delivery.py [--rate 500] [--seconds 10] [--endpoints 1 4]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.db.migrate import upgrade_async  # noqa: E402
from bench.common import ROOT, database, free_port  # noqa: E402
from tests.support import ADMIN_TOKEN  # noqa: E402
from tests.support.serving import ServiceProcess  # noqa: E402
from tests.support.webhooks import encode, signed_headers  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CONCURRENCY = 8  # the relay's default sends to one endpoint at once (TRIAGE_DELIVERY_CONCURRENCY)

# The receiver (run as `uvicorn delivery:receiver --app-dir bench`): answers 200 at once and notes, per endpoint
# and webhook-id, when the reply was committed (its event's created_at, the service's clock on this same host) and
# when it answered; GET returns the notes.
_ANSWERED: dict[str, tuple[float, float]] = {}


async def receiver(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] == "GET":
        payload = json.dumps(_ANSWERED).encode()
    else:
        payload = b"ok"
        if body.startswith(b"{\"type\""):
            headers = dict(scope["headers"])
            event = json.loads(body)
            created = event["data"].get("created_at")
            if created:
                key = f"{scope['path']} {headers.get(b'webhook-id', b'').decode()}"
                committed = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
                _ANSWERED.setdefault(key, (committed, time.time()))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "delivery:receiver", "--app-dir", str(ROOT / "bench"),
                                "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                                "--log-level", "warning"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError("the receiver did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def bare_loop(url: str, *, seconds: float) -> tuple[float, float, float]:
    """A bare httpx POST loop to the receiver: requests/s, p50 and p99 in ms."""
    latencies: list[float] = []
    body = encode({"type": "bare", "data": {}})
    stop = time.monotonic() + seconds

    async def poster(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            (await http.post(f"{url}/bare", content=body)).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        await asyncio.gather(*[poster(http) for _ in range(CONCURRENCY)])
    return len(latencies) / (time.monotonic() - began), percentile(latencies, 0.5), percentile(latencies, 0.99)


async def setup(service: str, receiver_url: str, endpoints: int) -> tuple[str, list[dict[str, Any]]]:
    """A shop with `endpoints` endpoints at the receiver, and 50 tickets held by 10 agents."""
    async with httpx.AsyncClient(base_url=service, timeout=30) as http:
        shop_id = f"bench-{uuid.uuid4().hex[:8]}"
        shop = (await http.post("/v1/shops", headers=ADMIN, json={"id": shop_id, "name": "Bench"})).json()
        for n in range(endpoints):
            created = await http.post(f"/v1/shops/{shop_id}/endpoints", headers=ADMIN, json={
                "url": f"{receiver_url}/e{n}", "events": ["reply.created"]})
            created.raise_for_status()
        messages = [{"message_id": f"m-{i}", "conversation_id": f"c-{i}", "sent_at": "2026-11-25T08:00:00Z",
                     "customer": {"id": f"b-{i}"}, "text": "快递怎么还没到"} for i in range(50)]
        body = encode({"platform": "taobao", "messages": messages})
        (await http.post(f"/v1/shops/{shop_id}/webhooks/messages", content=body,
                         headers=signed_headers(shop["webhook_secret"], body))).raise_for_status()
        holders = []
        for _ in range(10):
            agent = (await http.post(f"/v1/shops/{shop_id}/agents", headers=ADMIN, json={
                "name": "A", "queues": ["presale", "aftersale", "complaints"], "capacity": 5})).json()
            headers = {"Authorization": f"Bearer {agent['token']}"}
            for _ in range(5):
                claimed = await http.post("/v1/agents/me/claim", headers=headers)
                claimed.raise_for_status()
                holders.append({"ticket_id": claimed.json()["id"], "headers": headers})
    return shop_id, holders


async def replies(service: str, holders: list[dict[str, Any]], *, rate: float, seconds: float) -> tuple[int, float]:
    """Replies offered at a steady `rate` for `seconds`, spread over the held tickets; how many were stored, and
    how long that took."""
    committed: set[int] = set()
    total = int(rate * seconds)
    began = time.monotonic()

    async def one(n: int, http: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        holder = holders[n % len(holders)]
        # A kept-alive connection the server closed meanwhile fails the request: sent again under its key, it is
        # stored once.
        for _ in range(3):
            try:
                response = await http.post(f"/v1/tickets/{holder['ticket_id']}/replies", json={"text": f"reply {n}"},
                                           headers={**holder["headers"], "Idempotency-Key": f"r-{n}"})
            except httpx.TransportError:
                continue
            if response.status_code == 201:
                committed.add(response.json()["message"]["id"])
            return

    # Offered at the rate whatever the service manages: a request waits for a connection as long as it takes.
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=service, timeout=httpx.Timeout(60, pool=None), limits=limits) as http:
        await asyncio.gather(*[one(n, http) for n in range(total)])
    return len(committed), time.monotonic() - began


async def run(url: str, receiver_url: str, *, endpoints: int, rate: float, seconds: float) -> dict[str, float]:
    env = {"TRIAGE_DELIVERY_ALLOW_PRIVATE": "1", "TRIAGE_LEASE_SECONDS": "3600", "TRIAGE_LOG_LEVEL": "warning"}
    await upgrade_async(url)
    service = ServiceProcess(url, ADMIN_TOKEN, extra_env=env)
    try:
        await service.ready()
        _, holders = await setup(service.base_url, receiver_url, endpoints)
        stored, took = await replies(service.base_url, holders, rate=rate, seconds=seconds)
        wanted = stored * endpoints
        deadline = time.monotonic() + 120
        answered: dict[str, list[float]] = {}
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < deadline:
                answered = {k: v for k, v in (await http.get(receiver_url)).json().items() if k.startswith("/e")}
                if len(answered) >= wanted:
                    break
                await asyncio.sleep(0.5)
    finally:
        service.stop()
    latencies = [(at - committed) * 1000 for committed, at in answered.values()]
    first, last = min(c for c, _ in answered.values()), max(a for _, a in answered.values())
    return {"replies": stored, "deliveries": len(answered), "missing": wanted - len(answered),
            "per_second": len(answered) / (last - first), "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "reply_rate": stored / took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores" + (": the machine is busy, do not trust the absolute "
                                                                   "figures" if load > 1 else ""))
    process, receiver_url = start_receiver()
    try:
        base_rate, base_p50, base_p99 = asyncio.run(bare_loop(receiver_url, seconds=5))
        print(f"baseline: bare httpx POST loop to the receiver ({CONCURRENCY} at once): {base_rate:,.0f} requests/s, "
              f"p50 {base_p50:.1f} ms, p99 {base_p99:.1f} ms")
        for endpoints in args.endpoints:
            with database("postgres") as url:
                figures = asyncio.run(run(url, receiver_url, endpoints=endpoints, rate=args.rate,
                                          seconds=args.seconds))
            print(f"{endpoints} endpoint(s), replies offered at {args.rate:.0f}/s, committed "
                  f"{figures['reply_rate']:.0f}/s: {figures['deliveries']:,} deliveries "
                  f"({figures['missing']} missing), {figures['per_second']:,.0f} deliveries/s, commit to answer "
                  f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms; ratio to the bare loop "
                  f"{figures['per_second'] / base_rate:.2f}")
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
