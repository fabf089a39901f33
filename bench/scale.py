"""What grows with the data: the ops and agent operations on a small database and on a big one, in one run.

Two fresh databases are loaded through the real service, in process: signed webhooks of buyer conversations
spread over `--days` simulated days (the service's clock is the simulated one; webhook signatures keep the real
clock, as a platform's do), and agents who claim, reply and resolve a share of the episodes through the API as the
simulated time passes, leaving the rest queued. On PostgreSQL the loader vacuums and analyses as the database grows,
as autovacuum would (VACUUM_GROWTH). The simulated clock ends at the real time; the breaches that came due since are
recorded and the settled days rolled, and the databases are then served by one real `uvicorn` process each, and
every operation is timed on both, alternating, over real HTTP:

  * statistics of a shop over 24 hours, 7, 30 and 92 days (scale-1: scale-0 gets the `--queued` top-up in its
    last day, which every window would count), with the settled days rolled first (the daily rollup);
  * `GET /v1/queues` (admin, one shop) and `GET /metrics` (no cache);
  * a claim by an agent serving only `presale` while `--queued` tickets wait in the shop's other queues, and a
    claim by an agent serving every queue (each followed by an untimed resolve);
  * ingest: wrk replaying pre-signed webhooks of 20 messages for `--ingest-seconds` (bench/ingest.py's requests).

Printed: each operation's median (and range) on both sizes and the big/small ratio, the databases' sizes, and the
load average before and after. Needs wrk and a PostgreSQL server (TRIAGE_TEST_POSTGRES_URL, default
postgres@127.0.0.1:5432) for the default backend.

    .venv/bin/python bench/scale.py [--messages 100000] [--small 5000] [--days 60] [--queued N]
        [--backend postgres|sqlite] [--rounds 5] [--keep] [--small-url URL --big-url URL]

`--messages 1000000` is the size the figures of issue 19 were taken at; the default loads a tenth of it.
`--keep` leaves the databases (their URLs are printed) and `--small-url/--big-url` measure such databases again
without loading them.
"""

import argparse
import asyncio
import bisect
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from common import ROOT, Uvicorn, database, settle, vacuum_analyze, wrk  # type: ignore[import-not-found]
from ingest import SCRIPT, write_requests  # type: ignore[import-not-found]

from app.db.migrate import upgrade_async
from app.db.session import DriverConnections, create_engine, create_sessionmaker
from app.domain import rfc3339
from app.main import create_app
from app.services.rollups import roll
from app.services.sla import BATCH as SLA_BATCH, record_breaches
from app.settings import Settings
from tests.support.clock import FROZEN_MODULES, FrozenClock
from tests.support.webhooks import encode, signed_headers

ADMIN_TOKEN = "adm_bench"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAY = 86_400.0
# This machine's PostgreSQL runs without autovacuum. Without it, nothing analyzes the tables as they grow, so the
# plans each pooled connection cached while they were nearly empty stay: at 85k messages a claim read 28,000 pages
# and took 64 ms instead of 1.3 ms, and the load had slowed from 345 to 175 messages a second. The loader does
# what autovacuum would, whenever the database has grown by this share since the last time (and at least
# VACUUM_AT_LEAST messages).
VACUUM_GROWTH = 0.25
VACUUM_AT_LEAST = 10_000

# Conversation topics: the first message's texts, the later ones', and the share of conversations.
TOPICS: dict[str, tuple[list[str], list[str], float]] = {
    "presale": (["请问这款有M码吗？", "这个有现货吗，什么时候发货", "Do you ship to Hong Kong?", "能开发票吗",
                 "这款和那款有什么区别", "优惠券怎么用不了", "在吗？想问下尺码", "What sizes do you have in stock?"],
                ["好的，谢谢", "那我拍了", "还有别的颜色吗", "在吗", "？？", "Thanks!"], 0.45),
    "aftersale": (["快递三天没动了", "我要退款，质量太差了", "物流怎么一直不更新", "收到的和图片完全不一样，虚假宣传",
                   "刚买就降价了，能补差价吗", "The zipper broke after one day, I want a refund",
                   "Where is my parcel? Tracking hasn't moved in 5 days", "refund什么时候到账"],
                  ["怎么还没处理", "在吗", "快点", "再不到就给差评", "好的", "单号是多少"], 0.40),
    "complaints": (["亲，快递三天没动了，再不到就给差评", "你们客服态度太差了，我要投诉", "再不發貨我就給差評",
                    "I will file a chargeback and report you to the consumer council", "我要打12315投诉你们"],
                   ["还不处理？", "我已经截图了", "在吗", "律师函见"], 0.15),
}
REPLY = "亲，已经为您处理，请留意物流信息"


@dataclass(order=True, slots=True)
class Planned:
    """One buyer message of the plan, at `offset` seconds into the simulated span."""

    offset: float
    shop: int
    conversation: int
    index: int = field(compare=False)
    topic: str = field(compare=False)
    customer: int = field(compare=False)
    # Whether it starts an episode (a conversation's first message, or one after a long silence): the agents'
    # share of work is counted in episodes.
    starts: bool = field(compare=False)


def plan(messages: int, *, days: float, shops: int, rng: random.Random) -> list[Planned]:
    """`messages` buyer messages in conversations of 1-7 (4 on average), most follow-ups within minutes, some
    days later (a reopening once the first episode was resolved), sorted by time."""
    span = days * DAY
    topics = list(TOPICS)
    weights = [TOPICS[t][2] for t in topics]
    buyers = max(10, messages // 6)
    out: list[Planned] = []
    conversation = 0
    while len(out) < messages:
        conversation += 1
        shop = rng.randrange(shops)
        topic = rng.choices(topics, weights)[0]
        customer = rng.randrange(buyers)
        at = rng.uniform(0, span)
        for index in range(rng.randint(1, 7)):
            if index:
                long = rng.random() < 0.12
                at += rng.uniform(2 * 3600, 3 * DAY) if long else rng.expovariate(1 / 240)
            else:
                long = True
            if at >= span or len(out) >= messages:
                break
            out.append(Planned(at, shop, conversation, index, topic, customer, long))
    out.sort()
    return out


def text_of(p: Planned, rng: random.Random) -> str:
    first, later, _ = TOPICS[p.topic]
    return rng.choice(first if p.index == 0 or rng.random() < 0.5 else later)


@dataclass
class Shop:
    id: str
    secret: str
    # Per topic, the agents' tokens and how many claims they still owe (fractional, carried over).
    agents: dict[str, list[str]] = field(default_factory=dict)
    owed: dict[str, float] = field(default_factory=dict)


GROUPS = {"presale": ["presale"], "aftersale": ["aftersale"], "complaints": ["complaints", "escalations"]}


@dataclass
class LoadReport:
    messages: int = 0
    topped_up: int = 0
    claims: int = 0
    seconds: float = 0.0


class Loader:
    """The service in process with a simulated clock, fed the plan tick by tick."""

    def __init__(self, url: str, *, days: float, shops: int, handled: float, seed: int) -> None:
        self.url = url
        self.span = days * DAY
        self.shops_count = shops
        self.handled = handled
        self.rng = random.Random(seed)
        self.clock = FrozenClock(datetime.now(UTC) - timedelta(seconds=self.span))
        self.shops: list[Shop] = []
        self.report = LoadReport()
        self.postgres = url.startswith("postgresql")

    def sim(self, offset: float) -> datetime:
        # The simulated time ends at the real time: what is left of the span, before now.
        return datetime.now(UTC) - timedelta(seconds=self.span - offset)

    async def run(self, planned: list[Planned], *, queued: int | None) -> LoadReport:
        started = time.monotonic()
        for module in FROZEN_MODULES:
            __import__(module)
            setattr(sys.modules[module], "utcnow", self.clock)
        settings = Settings(_env_file=None, database_url=self.url, admin_token=ADMIN_TOKEN, metrics_cache_seconds=60,
                            log_level="warning")
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://load", timeout=120) as http:
            self.http = http
            await self._setup()
            tick = max(20, min(250, len(planned) // 2000))
            vacuumed = 0
            top_up_at = bisect.bisect_left([p.offset for p in planned], self.span - DAY) if queued else None
            i = 0
            while i < len(planned):
                if top_up_at is not None and i >= top_up_at:
                    planned = planned[:i] + sorted(planned[i:] + await self._top_up(queued or 0, planned[-1]))
                    top_up_at = None
                await self._tick(planned[i:i + tick])
                i += tick
                if self.postgres and i - vacuumed >= max(VACUUM_AT_LEAST, VACUUM_GROWTH * vacuumed):
                    await vacuum_analyze(self.url)
                    vacuumed = i
                if i // tick % 200 == 0:
                    print(f"  {i:,} of {len(planned):,} messages, {time.monotonic() - started:.0f} s", flush=True)
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _setup(self) -> None:
        for n in range(self.shops_count):
            shop = await self._ok(self.http.post("/v1/shops", json={"id": f"scale-{n}", "name": f"Scale {n}"},
                                                 headers=ADMIN), 201)
            record = Shop(shop["id"], shop["webhook_secret"])
            for topic, queues in GROUPS.items():
                record.agents[topic] = []
                record.owed[topic] = 0.0
                for _ in range(3 if topic != "complaints" else 2):
                    agent = await self._ok(self.http.post(f"/v1/shops/{record.id}/agents", headers=ADMIN, json={
                        "name": f"{topic} agent", "queues": queues, "capacity": 10, "level": "senior"}), 201)
                    record.agents[topic].append(agent["token"])
            self.shops.append(record)

    async def _ok(self, request: Any, status: int) -> Any:
        response = await request
        if response.status_code != status:
            raise SystemExit(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                             f"{response.text[:300]}")
        return response.json() if response.content else None

    async def _top_up(self, wanted: int, last: Planned) -> list[Planned]:
        """Single-message conversations of the first shop's aftersale and complaints queues over the last day,
        enough for `wanted` queued tickets outside presale (no agent is owed work for them)."""
        depths = await self._ok(self.http.get("/v1/queues", params={"shop_id": self.shops[0].id}, headers=ADMIN), 200)
        have = sum(q["total"] for q in depths["queues"] if q["name"] != "presale")
        extra = max(0, wanted - have)
        self.report.topped_up = extra
        base = 10**8  # above every planned conversation number
        return [Planned(self.rng.uniform(self.span - DAY, self.span), 0, base + k, 0,
                        "complaints" if k % 4 == 0 else "aftersale", 10**7 + k, False) for k in range(extra)]

    async def _tick(self, batch: list[Planned]) -> None:
        now = self.sim(batch[-1].offset)
        self.clock.set(now)
        sent_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        requests: list[tuple[Shop, list[dict[str, Any]]]] = []
        by_shop: dict[int, list[dict[str, Any]]] = {}
        for p in batch:
            shop = self.shops[p.shop]
            by_shop.setdefault(p.shop, []).append({
                "message_id": f"m{p.conversation}-{p.index}", "conversation_id": f"c{p.conversation}",
                "sent_at": sent_at, "customer": {"id": f"b{p.customer}", "vip_level": p.customer % 3},
                "text": text_of(p, self.rng)})
            if p.starts:
                shop.owed[p.topic] += self.handled
        for n, messages in by_shop.items():
            for k in range(0, len(messages), 50):
                requests.append((self.shops[n], messages[k:k + 50]))
        await asyncio.gather(*(self._post(shop, messages) for shop, messages in requests))
        self.report.messages += len(batch)
        # The agents work a little later than the messages arrived.
        self.clock.set(now + timedelta(seconds=self.rng.uniform(5, 40)))
        await asyncio.gather(*(self._agent(shop, topic, token) for shop in self.shops
                               for topic, tokens in shop.agents.items() for token in tokens))

    async def _post(self, shop: Shop, messages: list[dict[str, Any]]) -> None:
        body = encode({"platform": "taobao", "messages": messages})
        await self._ok(self.http.post(f"/v1/shops/{shop.id}/webhooks/messages", content=body,
                                      headers=signed_headers(shop.secret, body)), 202)

    async def _agent(self, shop: Shop, topic: str, token: str) -> None:
        """Claim, reply and resolve while the agent's group owes work; one claim in ten is left to its lease."""
        headers = {"Authorization": f"Bearer {token}"}
        share = 1 / len(shop.agents[topic])
        budget = shop.owed[topic] * share
        done = 0
        while done + 1 <= budget:
            response = await self.http.post("/v1/agents/me/claim?wait=0", headers=headers)
            if response.status_code != 200:
                break
            done += 1
            ticket = response.json()["id"]
            if self.rng.random() < 0.1:
                continue
            await self._ok(self.http.post(f"/v1/tickets/{ticket}/replies", json={"text": REPLY}, headers=headers), 201)
            await self._ok(self.http.post(f"/v1/tickets/{ticket}/resolve", headers=headers), 200)
        shop.owed[topic] -= done
        # Work nobody could take (an empty queue) is not owed later: a backlog is work that waited.
        shop.owed[topic] = min(shop.owed[topic], 1.0 * len(shop.agents[topic]))
        self.report.claims += done


# --- measuring ---------------------------------------------------------------------------------------------------


@dataclass
class Served:
    """One database served by a real process, with the shop and agents the measurements use."""

    label: str
    url: str
    service: Uvicorn | None = None
    shop: str = "scale-0"
    # The statistics are read on another shop when there is one: the top-up that fills scale-0's other queues for
    # the claim puts `--queued` conversations in its last day, which every window would count.
    stats_shop: str = "scale-0"
    secret: str = ""
    presale: dict[str, str] = field(default_factory=dict)
    every: dict[str, str] = field(default_factory=dict)
    http: httpx.Client | None = None


def start(served: Served) -> None:
    served.service = Uvicorn("app.main:app", {"TRIAGE_DATABASE_URL": served.url, "TRIAGE_ADMIN_TOKEN": ADMIN_TOKEN,
                                              "TRIAGE_LOG_LEVEL": "warning", "TRIAGE_METRICS_CACHE_SECONDS": "0"})
    served.service.wait("/readyz", timeout=180)  # a loaded machine starts it slowly
    served.http = httpx.Client(base_url=served.service.url, timeout=600)
    served.secret = served.http.post(f"/v1/shops/{served.shop}/webhook-secrets", headers=ADMIN).json()["webhook_secret"]
    for name, queues in (("presale", ["presale"]), ("every", ["presale", "aftersale", "complaints", "escalations"])):
        agent = served.http.post(f"/v1/shops/{served.shop}/agents", headers=ADMIN, json={
            "name": f"bench {name}", "queues": queues, "capacity": 50, "level": "senior"}).json()
        setattr(served, name, {"Authorization": f"Bearer {agent['token']}"})


def timed(call: Callable[[], httpx.Response], status: int = 200) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != status:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {response.text[:300]}")
    return elapsed


def stats_call(served: Served, days: float | None) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        params = {}
        if days is not None:
            until = datetime.now(UTC)
            params = {"since": rfc3339(until - timedelta(days=days)), "until": rfc3339(until)}
        assert served.http is not None
        return served.http.get(f"/v1/shops/{served.stats_shop}/stats", params=params, headers=ADMIN)
    return call


def claim_and_resolve(served: Served, headers: dict[str, str]) -> float:
    """A claim's time; the ticket is resolved after, untimed, so the agent never reaches its capacity."""
    assert served.http is not None
    started = time.perf_counter()
    response = served.http.post("/v1/agents/me/claim?wait=0", headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"claim: {response.status_code} {response.text[:300]}")
    served.http.post(f"/v1/tickets/{response.json()['id']}/resolve", headers=headers)
    return elapsed


def presale_work(served: Served, count: int) -> None:
    """`count` fresh presale conversations, so the claims measured find work in presale on both sizes."""
    assert served.http is not None
    texts = TOPICS["presale"][0]
    for k in range(0, count, 50):
        messages = [{"message_id": f"bench-{time.time_ns()}-{j}", "conversation_id": f"bench-{time.time_ns()}-{j}",
                     "sent_at": "2026-11-25T08:00:00Z", "customer": {"id": f"bench-{j}"}, "text": texts[j % len(texts)]}
                    for j in range(k, min(count, k + 50))]
        body = encode({"platform": "taobao", "messages": messages})
        response = served.http.post(f"/v1/shops/{served.shop}/webhooks/messages", content=body,
                                    headers=signed_headers(served.secret, body))
        assert response.status_code == 202, response.text


def ingest_rate(served: Served, seconds: int, tmp: Path) -> float | None:
    """Messages a second of wrk's webhooks of 20 messages, 32 connections; None when wrk saw no answer at all. Into
    a shop of its own, so a later run's statistics and queues of the measured shop are as loaded."""
    assert served.service is not None and served.http is not None
    shop = served.http.post("/v1/shops", headers=ADMIN, json={"id": f"ingest-{time.time_ns()}", "name": "Ingest"}).json()
    data = tmp / f"ingest-{served.label}.tsv"
    write_requests(data, url_path=f"/v1/shops/{shop['id']}/webhooks/messages", secret=shop["webhook_secret"],
                   batch=20, count=700 * seconds, tag=f"{served.label}-{time.time_ns()}")
    try:
        result = wrk(served.service.url, SCRIPT, data, seconds=seconds, timeout=30)
    except SystemExit as refusal:  # wrk saw no answer at all
        print(f"  ingest on {served.label}: {str(refusal)[:200]}", flush=True)
        return None
    finally:
        data.unlink()
    if result.errors or result.non_2xx:
        print(f"  ingest on {served.label}: {result.errors} socket errors, {result.non_2xx} non-2xx answers")
    return result.requests_per_second * 20


def sizes(served: Served) -> str:
    script = ("import asyncio, sys\n"
              "from sqlalchemy import text\n"
              "from app.db.session import create_engine\n"
              "async def main(url):\n"
              "    engine = create_engine(url)\n"
              "    async with engine.connect() as c:\n"
              "        row = [(await c.execute(text(q))).scalar() for q in (\n"
              "            \"select count(*) from messages where direction = 'inbound'\",\n"
              "            'select count(*) from ticket_events', 'select count(*) from tickets',\n"
              "            \"select count(*) from tickets where status = 'queued'\",\n"
              "            \"select count(*) from tickets where status = 'queued' and shop_id = 'scale-0' and queue <> 'presale'\")]\n"
              "        if engine.dialect.name == 'postgresql':\n"
              "            row.append((await c.execute(text('select pg_database_size(current_database())'))).scalar())\n"
              "            row.append((await c.execute(text('show shared_buffers'))).scalar())\n"
              "    await engine.dispose()\n"
              "    print(*row)\n"
              "asyncio.run(main(sys.argv[1]))\n")
    out = subprocess.run([sys.executable, "-c", script, served.url], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    messages, events, tickets, queued, other = (int(x) for x in out[:5])
    # The server's buffer cache beside the size: ingestion at 1 M messages kept within 10 % of small only when the
    # hot indexes fitted in it (docs/design.md, "At 1,000,000 messages").
    size = f", {int(out[5]) / 2**30:.2f} GiB (server's shared_buffers {out[6]})" if len(out) > 6 else ""
    return (f"{served.label}: {messages:,} buyer messages, {events:,} events, {tickets:,} tickets, {queued:,} queued "
            f"({other:,} of them in scale-0 outside presale){size}")


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def measure(small: Served, big: Served, *, rounds: int, claims: int, ingest_seconds: int,
            only: set[str] | None = None) -> None:
    """Time the operations (`only` those groups: stats, queues, metrics, claims, ingest) on both sizes."""
    operations: list[tuple[str, Callable[[Served], float]]] = [
        ("stats, last 24 h", lambda s: timed(stats_call(s, None))),
        ("stats, 7 days", lambda s: timed(stats_call(s, 7))),
        ("stats, 30 days", lambda s: timed(stats_call(s, 30))),
        ("stats, 92 days", lambda s: timed(stats_call(s, 92))),
        ("GET /v1/queues (admin, one shop)", lambda s: timed(
            lambda: s.http.get("/v1/queues", params={"shop_id": s.shop}, headers=ADMIN))),  # type: ignore[union-attr]
        ("GET /metrics", lambda s: timed(lambda: s.http.get("/metrics"))),  # type: ignore[union-attr]
    ]
    print(f"\n{'operation (ms; ingest messages/s)':42} {'small':>22} {'big':>22} {'big/small':>9}", flush=True)

    def report(name: str, by: dict[str, list[float]]) -> None:
        if not by["small"] or not by["big"]:
            print(f"{name:42} {'(no figure)':>22}", flush=True)
            return
        ratio = statistics.median(by["big"]) / statistics.median(by["small"])
        print(f"{name:42} {fmt(by['small']):>22} {fmt(by['big']):>22} {ratio:9.2f}", flush=True)

    groups = {"stats": "stats", "GET /v1/queues": "queues", "GET /metrics": "metrics"}
    for name, op in operations:
        if only and not any(name.startswith(prefix) and group in only for prefix, group in groups.items()):
            continue
        by: dict[str, list[float]] = {"small": [], "big": []}
        for served in (small, big):
            op(served)  # warm: plans cached, pages read
        for r in range(rounds):
            for served in ((small, big) if r % 2 == 0 else (big, small)):
                by[served.label].append(op(served))
        report(name, by)
    for served in (small, big) if not only or "claims" in only else ():
        presale_work(served, 2 * claims * rounds + 20)
    claim_kinds = (("claim, agent serving presale only", "presale"), ("claim, agent serving every queue", "every"))
    for name, key in () if only and "claims" not in only else claim_kinds:
        by = {"small": [], "big": []}
        for served in (small, big):
            claim_and_resolve(served, getattr(served, key))
        for r in range(rounds):
            for served in ((small, big) if r % 2 == 0 else (big, small)):
                by[served.label].append(
                    statistics.median(claim_and_resolve(served, getattr(served, key)) for _ in range(claims)))
        report(name, by)
    with tempfile.TemporaryDirectory() as tmp:
        by = {"small": [], "big": []}
        for r in range(2 if not only or "ingest" in only else 0):
            for served in ((small, big) if r % 2 == 0 else (big, small)):
                rate = ingest_rate(served, ingest_seconds, Path(tmp))
                if rate is not None:
                    by[served.label].append(rate)
        report("ingest, 20-message webhooks (messages/s)", by)
    print("(median of the rounds, range in brackets; a claim round is the median of "
          f"{claims} claims; ingest is messages/s over {ingest_seconds} s, two rounds)")


@contextmanager
def databases(args: argparse.Namespace) -> Iterator[tuple[str, str, bool]]:
    """The two database URLs, and whether they still need loading."""
    if args.small_url and args.big_url:
        yield args.small_url, args.big_url, False
        return
    with ExitStack() as stack:
        if args.keep:
            urls = [kept_database(args.backend) for _ in range(2)]
        else:
            urls = [stack.enter_context(database(args.backend)) for _ in range(2)]
        yield urls[0], urls[1], True


def kept_database(backend: str) -> str:
    """A fresh database that outlives the run (--keep)."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='scale-')}/triage.db"
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(os.environ.setdefault("TRIAGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"))
    name = f"scale_{time.strftime('%Y%m%d_%H%M%S')}_{random.randrange(10**6)}"

    async def create() -> None:
        conn = await asyncpg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False))
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return base.set(database=name).render_as_string(hide_password=False)


def load(url: str, label: str, messages: int, args: argparse.Namespace, queued: int | None) -> None:
    asyncio.run(upgrade_async(url))
    rng = random.Random(args.seed)
    planned = plan(messages, days=args.days, shops=args.shops, rng=rng)
    loader = Loader(url, days=args.days, shops=args.shops, handled=args.handled, seed=args.seed)
    print(f"loading {label}: {len(planned):,} buyer messages over {args.days:g} days, {args.shops} shops", flush=True)
    report = asyncio.run(loader.run(planned, queued=queued))
    print(f"  {label} loaded in {report.seconds:.0f} s: {report.messages:,} messages ({report.topped_up:,} of them "
          f"to reach {queued or 0:,} queued outside presale), {report.claims:,} claims", flush=True)


async def record_due_breaches(url: str) -> int:
    """The first responses past due by now, recorded as the served app's SLA watch would at its start (the loader's
    clock ran behind the real one until its last tick): otherwise the first rounds time that burst. BreachWatch's
    own loop would read the loader's frozen clock, which this process still has after a load."""
    engine = create_engine(url)
    drivers = await DriverConnections.open(engine, url, size=2)
    try:
        total = 0
        while True:
            breaches, _ = await record_breaches(drivers, now=datetime.now(UTC))
            total += breaches
            if breaches < SLA_BATCH:
                return total
    finally:
        await drivers.close()
        await engine.dispose()


async def roll_days(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        return await roll(create_sessionmaker(engine), now=datetime.now(UTC), limit=10_000)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="buyer messages of the big database")
    parser.add_argument("--small", type=int, default=5_000, help="buyer messages of the small database")
    parser.add_argument("--days", type=float, default=60)
    parser.add_argument("--shops", type=int, default=3)
    parser.add_argument("--queued", type=int, default=None,
                        help="tickets queued outside presale in the measured shop of the big database "
                             "(default: a tenth of --messages)")
    parser.add_argument("--handled", type=float, default=0.7, help="share of episodes the simulated agents take")
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--claims", type=int, default=20, help="claims per round")
    parser.add_argument("--ingest-seconds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--only", nargs="+", choices=["stats", "queues", "metrics", "claims", "ingest"],
                        help="measure only these operations")
    parser.add_argument("--keep", action="store_true", help="keep the databases and print their URLs")
    parser.add_argument("--load-only", action="store_true", help="with --keep: load the databases, measure nothing")
    parser.add_argument("--small-url")
    parser.add_argument("--big-url")
    parser.add_argument("--stats-shop", help="the shop whose statistics are timed (default scale-1, the first "
                                              "shop without the top-up, or scale-0 with one shop)")
    args = parser.parse_args()
    logging.getLogger("app").setLevel(logging.WARNING)
    queued = args.messages // 10 if args.queued is None else args.queued
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    with databases(args) as (small_url, big_url, fresh):
        if fresh:
            load(small_url, "small", args.small, args, None)
            load(big_url, "big", args.messages, args, queued)
        if args.keep:
            print(f"kept: --small-url '{small_url}' --big-url '{big_url}'", flush=True)
            if args.load_only:
                return
        for label, url in (("small", small_url), ("big", big_url)):
            print(f"{label}: {asyncio.run(record_due_breaches(url)):,} breaches came due since the load", flush=True)
        if args.backend == "postgres":
            # As a server with autovacuum would have them (this machine's runs without): the counters' changes
            # table, emptied every second, is otherwise thousands of dead pages that every read scans.
            for url in (small_url, big_url):
                asyncio.run(settle(url))
        for label, url in (("small", small_url), ("big", big_url)):
            # The served app's statistics worker rolls at its start too; rolled here first, so every round of the
            # statistics reads the same days from the daily rollup.
            print(f"{label}: statistics rolled, days per shop: {asyncio.run(roll_days(url))}", flush=True)
        stats_shop = args.stats_shop or f"scale-{min(1, args.shops - 1)}"
        small, big = (Served(label, url, stats_shop=stats_shop) for label, url in (("small", small_url), ("big", big_url)))
        try:
            for served in (small, big):
                start(served)
            for served in (small, big):
                print(sizes(served))
            measure(small, big, rounds=args.rounds, claims=args.claims, ingest_seconds=args.ingest_seconds,
                    only=set(args.only or ()))
        finally:
            for served in (small, big):
                if served.service is not None:
                    served.service.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
