"""Delivery throughput and latency (issue 15): replies delivered to a local receiver, with 1 and 4 endpoints.

Per endpoint count, on a fresh PostgreSQL database with a `triage serve` process (its relay delivering):

- **bare**: a bare httpx POST loop to the same receiver paths, as many posts at once as the relay may send
  (TRIAGE_DELIVERY_CONCURRENCY per endpoint, one client per endpoint as the relay has one connection pool per
  endpoint): requests/s, p50/p99, and the CPU the loop's process spent per request.
- **steady**: replies committed at a steady rate (default 500/s for 10 s) over many held tickets; p50/p99 from a
  reply's commit (the `created_at` the reply statement stamps, taken before it runs) to the receiver's answer, and
  deliveries/s over the phase. The replies are written by this process with the reply statement of the ticket
  store, outbox included, on its own connections: the same transaction `POST /v1/tickets/{id}/replies` commits,
  without the HTTP API in front, whose own rate on a small machine is below 500/s and is measured elsewhere
  (bench/queues.py). The service process then runs the relay and nothing else.
- **drain**: the service stopped, a backlog of replies committed, the service started again: deliveries/s from
  the first answer to the last, the capacity of one relay, and the CPU per delivery of the service and of the
  PostgreSQL backends serving the bench's database, beside the bare loop's CPU per request.

The receiver is a minimal asyncio HTTP/1.1 server in its own process (uvloop, keep-alive, no framework): it answers
200 at once and notes, per path and webhook-id, the reply's commit time and when it answered. Its CPU per request is
printed, so one can see that it is not the bound. Ratio: the drain's deliveries/s over the bare loop's requests/s.

Wall-clock figures move with the machine's load (printed first): compare ratios of one run, and run it again on a
quiet machine before quoting absolute numbers. The CPU per delivery moves less. To compare two trees, run this file
from each checkout in turn (it imports the app, and starts the service, from the tree it is in; copy it into a
checkout that lacks it).

    .venv/bin/python bench/delivery.py [--rate 500] [--seconds 10] [--endpoints 1 4] [--backlog 3000]
"""

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.clock import utcnow  # noqa: E402
from app.db.claims import PostgresTicketStore  # noqa: E402
from app.db.driver import PostgresDriver  # noqa: E402
from app.db.listen import asyncpg_dsn  # noqa: E402
from app.db.migrate import upgrade_async  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.common import cpu_seconds, database, database_cpu_seconds, free_port  # noqa: E402
from tests.support import ADMIN_TOKEN  # noqa: E402
from tests.support.serving import ServiceProcess  # noqa: E402
from tests.support.webhooks import encode, signed_headers  # noqa: E402

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WINDOW = int(Settings.model_fields["delivery_concurrency"].default)  # the relay's sends to one endpoint at once
PRODUCERS = 8  # connections committing replies


# --- The receiver (run as `python bench/delivery.py --receiver PORT`) -------------------------------------------

_NOTES: dict[str, tuple[str, float]] = {}  # "path webhook-id" -> (the reply's created_at, when it was answered)
_COUNTS = {"requests": 0, "repeats": 0}
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def _answer(method: bytes, path: bytes, webhook_id: bytes, body: bytes) -> bytes:
    if method == b"GET":
        if path == b"/notes":
            payload = orjson.dumps({"notes": _NOTES, **_COUNTS})
        else:
            if path == b"/reset":
                _NOTES.clear()
                _COUNTS.update(requests=0, repeats=0)
            payload = orjson.dumps(_COUNTS)
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)
    _COUNTS["requests"] += 1
    if webhook_id:
        key = f"{path.decode()} {webhook_id.decode()}"
        if key in _NOTES:
            _COUNTS["repeats"] += 1
        else:
            _NOTES[key] = (orjson.loads(body)["data"].get("created_at", ""), time.time())
    return _OK


class _Receiving(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length, webhook_id = 0, b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    webhook_id = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(_answer(method, path, webhook_id, body))


def serve_receiver(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Receiving, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


# --- Measuring ---------------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, __file__, "--receiver", str(self.port)])
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/reset", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    async def reset(self, http: httpx.AsyncClient) -> None:
        (await http.get(f"{self.url}/reset")).raise_for_status()

    async def notes(self, http: httpx.AsyncClient) -> dict[str, Any]:
        return (await http.get(f"{self.url}/notes")).json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def bare_loop(receiver: Receiver, paths: list[str], *, concurrency: int, seconds: float) -> dict[str, float]:
    """A bare httpx POST loop, `concurrency` posts at once to each of `paths`, one client (and pool) per path as the
    relay has one per endpoint: requests/s, p50/p99 in ms, and the CPU this process and the receiver spent per
    request in µs."""
    latencies: list[float] = []
    body = orjson.dumps({"type": "reply.created", "timestamp": "2026-12-02T08:00:00.000000Z", "data": {
        "shop_id": "bench", "text": "亲，已经帮您催快递了", "created_at": "2026-12-02T08:00:00.000000Z"}})
    headers = {"content-type": "application/json", "webhook-timestamp": "1764662400",
               "webhook-signature": "v1," + "A" * 44}
    stop = time.monotonic() + seconds

    async def poster(url: str, http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            (await http.post(url, content=body, headers=headers)).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [httpx.AsyncClient(timeout=10, limits=limits) for _ in paths]
    try:
        await receiver.reset(clients[0])
        cpu, receiver_cpu, began = time.process_time(), cpu_seconds(receiver.process.pid), time.monotonic()
        await asyncio.gather(*[poster(f"{receiver.url}{path}", http) for path, http in zip(paths, clients, strict=True)
                               for _ in range(concurrency)])
        took = time.monotonic() - began
        cpu, receiver_cpu = time.process_time() - cpu, cpu_seconds(receiver.process.pid) - receiver_cpu
    finally:
        for http in clients:
            await http.aclose()
    n = len(latencies)
    return {"per_second": n / took, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "cpu_us": cpu / n * 1e6, "receiver_cpu_us": receiver_cpu / n * 1e6}


async def setup(service: str, receiver_url: str, endpoints: int, conversations: int) -> list[tuple[str, str]]:
    """A shop with `endpoints` endpoints at the receiver taking reply.created, and `conversations` tickets held by
    agents (ten each); (agent id, ticket id) of each."""
    async with httpx.AsyncClient(base_url=service, timeout=60) as http:
        shop_id = f"bench-{uuid.uuid4().hex[:8]}"
        shop = (await http.post("/v1/shops", headers=ADMIN, json={"id": shop_id, "name": "Bench"})).json()
        for n in range(endpoints):
            (await http.post(f"/v1/shops/{shop_id}/endpoints", headers=ADMIN, json={
                "url": f"{receiver_url}/e{n}", "events": ["reply.created"]})).raise_for_status()
        messages = [{"message_id": f"m-{i}", "conversation_id": f"c-{i}", "sent_at": "2026-11-25T08:00:00Z",
                     "customer": {"id": f"b-{i}"}, "text": "快递怎么还没到"} for i in range(conversations)]
        for start in range(0, conversations, 100):
            body = encode({"platform": "taobao", "messages": messages[start:start + 100]})
            (await http.post(f"/v1/shops/{shop_id}/webhooks/messages", content=body,
                             headers=signed_headers(shop["webhook_secret"], body))).raise_for_status()
        held = []
        for _ in range(0, conversations, 10):
            agent = (await http.post(f"/v1/shops/{shop_id}/agents", headers=ADMIN, json={
                "name": "A", "queues": ["presale", "aftersale", "complaints"], "capacity": 10})).json()
            for _ in range(10):
                claimed = await http.post("/v1/agents/me/claim", headers={"Authorization": f"Bearer {agent['token']}"})
                if claimed.status_code == 200:
                    held.append((agent["id"], claimed.json()["id"]))
    return held


async def produce(url: str, held: list[tuple[str, str]], *, rate: float | None, count: int) -> dict[str, float]:
    """`count` replies over the held tickets in turn, committed at a steady `rate` (None: as fast as they go) by
    PRODUCERS connections, with the reply statement of the ticket store (outbox included); the rate achieved and
    how late the latest reply started against its schedule."""
    connections = [await asyncpg.connect(asyncpg_dsn(url)) for _ in range(PRODUCERS)]
    next_reply = 0
    lag = 0.0
    began = time.monotonic()

    async def producer(connection: Any) -> None:
        nonlocal next_reply, lag
        store = PostgresTicketStore(PostgresDriver(connection), thread_page=Settings.model_fields["thread_page"].default)
        while next_reply < count:
            n = next_reply
            next_reply += 1
            if rate is not None:
                due = began + n / rate
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    lag = max(lag, -wait)
            agent_id, ticket_id = held[n % len(held)]
            now = utcnow()
            stored = await store.reply(ticket_id=ticket_id, agent_id=agent_id, now=now,
                                       lease_until=now + timedelta(hours=2), text=f"reply {n}")
            assert stored is not None, "the ticket is no longer held"

    try:
        await asyncio.gather(*[producer(c) for c in connections])
    finally:
        for connection in connections:
            await connection.close()
    return {"rate": count / (time.monotonic() - began), "lag_ms": lag * 1000}


async def arrivals(receiver: Receiver, wanted: int, *, timeout: float) -> dict[str, Any]:
    """The receiver's notes once `wanted` deliveries arrived (or at the timeout)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=60) as http:
        while True:
            notes = await receiver.notes(http)
            if len(notes["notes"]) >= wanted or time.monotonic() > deadline:
                return notes
            await asyncio.sleep(0.25)


def _committed(created_at: str) -> float:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()


def sampling(service: ServiceProcess, path: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy (pip install py-spy; not a dependency of the project) sampling the service into `path`, if given."""
    if not path:
        return None
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(service.process.pid),
                             "--format", "raw", "--output", path, "--nonblocking"], stdout=subprocess.DEVNULL)


def stop_sampling(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


async def run(url: str, receiver: Receiver, *, endpoints: int, rate: float, seconds: float, backlog: int,
              conversations: int, profile: str | None) -> dict[str, Any]:
    env = {"TRIAGE_DELIVERY_ALLOW_PRIVATE": "1", "TRIAGE_LEASE_SECONDS": "3600", "TRIAGE_LOG_LEVEL": "warning"}
    await upgrade_async(url)
    paths = [f"/e{n}" for n in range(endpoints)]
    database_name = make_url(url).database or ""
    figures: dict[str, Any] = {}
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    service = ServiceProcess(url, ADMIN_TOKEN, extra_env=env, log_path=logs / f"bench-delivery-{os.getpid()}-1.log")
    async with httpx.AsyncClient(timeout=60) as http:
        try:
            await service.ready()
            held = await setup(service.base_url, receiver.url, endpoints, conversations)
            figures["bare"] = await bare_loop(receiver, paths, concurrency=WINDOW, seconds=5)

            # Steady: replies at `rate`, delivered as they come.
            await receiver.reset(http)
            count = int(rate * seconds)
            spy = sampling(service, profile and f"{profile}-{endpoints}-steady.txt")
            cpu, database_cpu, producer_cpu = (cpu_seconds(service.process.pid), database_cpu_seconds(database_name),
                                               time.process_time())
            produced = await produce(url, held, rate=rate, count=count)
            producer_cpu = time.process_time() - producer_cpu
            notes = await arrivals(receiver, count * endpoints, timeout=120)
            stop_sampling(spy)
            service_cpu = cpu_seconds(service.process.pid) - cpu
            database_cpu = database_cpu_seconds(database_name) - database_cpu
            answered = notes["notes"].values()
            latencies = [(at - _committed(created)) * 1000 for created, at in answered]
            first = min(_committed(created) for created, _ in answered)
            last = max(at for _, at in answered)
            figures["steady"] = {"offered": count * endpoints, "delivered": len(answered), "repeats": notes["repeats"],
                                 "per_second": len(answered) / (last - first), "p50": percentile(latencies, 0.5),
                                 "p99": percentile(latencies, 0.99), "max": max(latencies), **produced,
                                 "cpu_us": service_cpu / max(1, len(answered)) * 1e6,
                                 "database_cpu_us": database_cpu / max(1, len(answered)) * 1e6,
                                 "producer_cpu_us": producer_cpu / count * 1e6}
        finally:
            service.stop()

        # Drain: a backlog committed while no relay runs, then one service delivering it (with what the steady phase
        # left undelivered, if anything).
        wanted = backlog * endpoints + figures["steady"]["offered"] - figures["steady"]["delivered"]
        await receiver.reset(http)
        produced = await produce(url, held, rate=None, count=backlog)
        service = ServiceProcess(url, ADMIN_TOKEN, extra_env=env, log_path=logs / f"bench-delivery-{os.getpid()}-2.log")
        try:
            await service.ready()
            spy = sampling(service, profile and f"{profile}-{endpoints}-drain.txt")
            cpu, receiver_cpu = cpu_seconds(service.process.pid), cpu_seconds(receiver.process.pid)
            database_cpu = database_cpu_seconds(database_name)
            notes = await arrivals(receiver, wanted, timeout=600)
            stop_sampling(spy)
            service_cpu = cpu_seconds(service.process.pid) - cpu
            receiver_cpu = cpu_seconds(receiver.process.pid) - receiver_cpu
            database_cpu = database_cpu_seconds(database_name) - database_cpu
        finally:
            service.stop()
        answered_at = sorted(at for _, at in notes["notes"].values())
        delivered = len(answered_at)
        figures["drain"] = {"offered": wanted, "delivered": delivered, "repeats": notes["repeats"],
                            "per_second": (delivered - 1) / (answered_at[-1] - answered_at[0]),
                            "cpu_us": service_cpu / delivered * 1e6, "receiver_cpu_us": receiver_cpu / delivered * 1e6,
                            "database_cpu_us": database_cpu / delivered * 1e6, "produced_per_second": produced["rate"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500, help="replies a second in the steady phase")
    parser.add_argument("--seconds", type=float, default=10, help="length of the steady phase")
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--backlog", type=int, default=3000, help="replies committed before the drain")
    parser.add_argument("--conversations", type=int, default=200, help="held tickets the replies go to, in turn")
    parser.add_argument("--profile", help="py-spy samples of the service (collapsed stacks) to PROFILE-N-steady.txt "
                        "and PROFILE-N-drain.txt")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (compare ratios; absolute figures only "
          f"on a quiet machine); window {WINDOW} sends per endpoint")
    receiver = Receiver()
    try:
        for endpoints in args.endpoints:
            with database("postgres") as url:
                f = asyncio.run(run(url, receiver, endpoints=endpoints, rate=args.rate, seconds=args.seconds,
                                    backlog=args.backlog, conversations=args.conversations, profile=args.profile))
            bare, steady, drain = f["bare"], f["steady"], f["drain"]
            print(f"{endpoints} endpoint(s), {args.conversations} conversations, load {os.getloadavg()[0]:.1f}")
            print(f"  bare httpx loop ({WINDOW} at once to each endpoint): {bare['per_second']:,.0f} requests/s, p50 "
                  f"{bare['p50']:.1f} ms, p99 {bare['p99']:.1f} ms; CPU per request {bare['cpu_us']:.0f} µs "
                  f"(receiver {bare['receiver_cpu_us']:.0f} µs)")
            print(f"  steady: replies offered at {args.rate:.0f}/s, committed at {steady['rate']:.0f}/s (latest start "
                  f"{steady['lag_ms']:.0f} ms behind); {steady['delivered']:,} of {steady['offered']:,} delivered "
                  f"({steady['repeats']} repeats), {steady['per_second']:,.0f} deliveries/s; commit to answer p50 "
                  f"{steady['p50']:.1f} ms, p99 {steady['p99']:.1f} ms, max {steady['max']:.0f} ms; CPU per delivery: "
                  f"service {steady['cpu_us']:.0f} µs, PostgreSQL (replies included) {steady['database_cpu_us']:.0f} µs; "
                  f"producer {steady['producer_cpu_us']:.0f} µs per reply")
            print(f"  drain: {drain['delivered']:,} of {drain['offered']:,} delivered ({drain['repeats']} repeats), "
                  f"{drain['per_second']:,.0f} deliveries/s; CPU per delivery: service {drain['cpu_us']:.0f} µs, "
                  f"PostgreSQL {drain['database_cpu_us']:.0f} µs, receiver {drain['receiver_cpu_us']:.0f} µs; "
                  "ratio to the bare loop "
                  f"{drain['per_second'] / bare['per_second']:.2f}")
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
