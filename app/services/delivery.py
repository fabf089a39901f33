"""The delivery relay (SPEC 9.1, README "Integrating a platform"): every process runs one, as a worker.

Three parts meet in one event loop (docs/design.md, "The relay's hot loop"):

- the pick takes due heads from the outbox (app/db/deliveries.py) in one statement, for every endpoint with room,
  and holds them under a lock that outlasts the longest exchange. It runs when woken: an event committed in this
  process (Notifier.outbox), NOTIFYed by another (LISTEN triage_delivery, app/main.py), or attempts recorded (room
  again, and the next reply of a conversation may be a head now); never more often than PICK_INTERVAL, so a burst
  of wake-ups makes one pick of many. Asleep, it waits for the earliest due retry.
- each endpoint has a lane: at most `concurrency` sends at once over its own pool of kept-alive connections, and
  as many picked ones waiting; a slow endpoint fills only its own lane.
- the recorder writes every finished attempt in one transaction per batch (at most one batch per
  RECORD_INTERVAL), then wakes the pick.

At least once: a delivery is marked delivered only after its 2xx is recorded, so a relay that dies mid-send (or
whose record fails) leaves it to be picked again when its lock runs out. No delivery is sent after its lock has
less than an exchange left, so two processes never send one attempt at once.
"""

import asyncio
import email.utils
import logging
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from app import metrics
from app.clock import utcnow
from app.db.deliveries import Outcome, delivery_store
from app.db.driver import Record
from app.db.errors import StoreUnavailable, translated
from app.db.session import DriverConnections
from app.domain import DeliveryStatus
from app.services import egress, http1, signing
from app.services.notify import Notifier

log = logging.getLogger("app.delivery")

BATCH = 256  # deliveries picked per statement at most
MAX_HELD = 2048  # deliveries one process holds at once (sending or waiting in their lane), over all endpoints
LANE_DEPTH = 2  # a lane holds up to this many times `concurrency`: the next sends are picked before room frees
PICK_INTERVAL = 0.010  # seconds at least between two picks
RECORD_INTERVAL = 0.010  # seconds at least between two batches of recorded attempts
RECORD_BATCH = 1000  # attempts recorded per transaction at most
# Sends are out: the pick looks again after this at the latest (their records wake it sooner), for retries due.
BUSY_RECHECK_SECONDS = 1.0
# With no due delivery in sight the relay still looks this often: a NOTIFY lost while LISTEN reconnected, or
# (SQLite) an event committed by another process, costs at most this long.
IDLE_RECHECK_SECONDS = 30.0
SQLITE_IDLE_RECHECK_SECONDS = 5.0
LANE_IDLE_SECONDS = 60.0  # an endpoint's connections are closed after this long without a send
KEEPALIVE_SECONDS = 5.0  # an idle kept-alive connection is closed after this long
ERROR_TEXT = 300
ANSWER_READ_LIMIT = 64 * 1024  # bytes of an endpoint's answer read (and dropped) before the connection is closed


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How deliveries are sent and retried (the delivery settings, README "Configuration")."""

    max_age: timedelta = timedelta(hours=24)
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    backoff_first: float = 5.0
    backoff_max: float = 3600.0
    concurrency: int = 8
    allow_private: bool = False

    @property
    def exchange_timeout(self) -> float:
        """The longest one attempt may take, resolution and connection included."""
        return egress.RESOLVE_TIMEOUT_SECONDS + self.connect_timeout + 2 * self.read_timeout

    @property
    def lock(self) -> timedelta:
        """How long a relay holds a delivery it picked: past any exchange, so no other process sends it meanwhile."""
        return timedelta(seconds=2 * self.exchange_timeout + 10)


def backoff(attempts: int, policy: DeliveryPolicy, *, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from backoff_first up to backoff_max,
    each within ±20 % so that endpoints coming back do not get every retry at the same instant."""
    base = min(policy.backoff_max, policy.backoff_first * 2 ** max(0, attempts - 1))
    return base * (rng or random).uniform(0.8, 1.2)


def retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


@dataclass(slots=True)
class Answer:
    """What one attempt got: an HTTP status with its Retry-After, or an error."""

    status_code: int | None = None
    retry_after: str | None = None
    error: str | None = None
    kind: str = "error"  # for the attempts metric: 2xx, 4xx, 5xx, timeout, error, refused


def outcome(answer: Answer, *, item: Record, now: datetime, duration_ms: int, policy: DeliveryPolicy) -> dict[str, Any]:
    """The delivery's state after this attempt: status_code, error, duration_ms, status, next_attempt_at."""
    code = answer.status_code
    result: dict[str, Any] = {"status_code": code, "error": answer.error, "duration_ms": duration_ms,
                              "next_attempt_at": now, "status": DeliveryStatus.PENDING}
    if code is not None and 200 <= code < 300:
        result["status"] = DeliveryStatus.DELIVERED
        return result
    if result["error"] is None:
        result["error"] = f"HTTP {code}"
    if code == 410:
        result["status"] = DeliveryStatus.FAILED
        result["error"] = "HTTP 410 Gone: the endpoint is disabled"
        return result
    wait = retry_after(answer.retry_after, now=now) if code in (429, 503) else None
    if wait is None:
        wait = backoff(item["attempts"] + 1, policy)
    result["next_attempt_at"] = now + timedelta(seconds=wait)
    if result["next_attempt_at"] > item["started_at"] + policy.max_age:
        result["status"] = DeliveryStatus.FAILED
        result["error"] = f"{result['error']}; gave up after {item['attempts'] + 1} attempts"
    return result


def request_of(item: Record, *, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The body and Standard Webhooks headers of a delivery: the same webhook-id and body at every attempt, signed
    with the endpoint's secret (and its previous one while that is still valid)."""
    body = orjson.dumps({"type": item["type"], "timestamp": item["created_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                         "data": item["data"]})
    webhook_id = f"msg_{item['event_id']}"
    timestamp = int(now.timestamp())
    keys = [item["secret"]]
    if item["previous_secret"] and item["previous_valid_until"] is not None and item["previous_valid_until"] > now:
        keys.append(item["previous_secret"])
    signature = " ".join(signing.sign(key, msg_id=webhook_id, timestamp=timestamp, body=body) for key in keys)
    return body, {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature,
                  "content-type": "application/json", "user-agent": "triage-delivery/1"}


def new_pool(policy: DeliveryPolicy, ssl_context: ssl.SSLContext | None = None) -> http1.Pool:
    """One endpoint's HTTP/1.1 connections: as many as its sends at once, kept alive, each opened only to an
    address the egress guard accepts at that moment; no proxies, no redirects followed.

    The relay's own client (app/services/http1.py), not httpx or httpcore: their exchange machinery cost about two
    thirds of the relay's CPU per delivery (docs/design.md, "The relay's own HTTP client")."""
    return http1.Pool(max_connections=policy.concurrency, ssl_context=ssl_context or httpx.create_ssl_context(),
                      allow_private=policy.allow_private, connect_timeout=policy.connect_timeout,
                      read_timeout=policy.read_timeout, keepalive=KEEPALIVE_SECONDS, body_limit=ANSWER_READ_LIMIT)


async def send(pool: http1.Pool, item: Record, *, policy: DeliveryPolicy, now: datetime) -> Answer:
    """One attempt over the endpoint's pool (a new connection is checked against what the name resolves to
    then), in policy.exchange_timeout at most. The answer's body is read only up to ANSWER_READ_LIMIT, and
    dropped."""
    body, headers = request_of(item, now=now)
    try:
        response = await pool.post(item["url"], headers, body, timeout=policy.exchange_timeout)
    except egress.UnsafeUrl as refused:
        return Answer(error=f"refused: {refused}"[:ERROR_TEXT], kind="refused")
    except TimeoutError as exc:
        return Answer(error=f"timeout ({type(exc).__name__}: {exc})"[:ERROR_TEXT], kind="timeout")
    except (http1.HttpError, OSError) as exc:
        return Answer(error=f"{type(exc).__name__}: {exc}"[:ERROR_TEXT], kind="error")
    code = response.status
    return Answer(status_code=code, retry_after=response.header(b"retry-after"), kind=f"{code // 100}xx")


class Lane:
    """One endpoint's sends in this process: up to `concurrency` at once, the picked ones waiting their turn."""

    __slots__ = ("pool", "waiting", "sending", "last_used")

    def __init__(self, pool: http1.Pool) -> None:
        self.pool = pool
        self.waiting: deque[Record] = deque()
        self.sending = 0
        self.last_used = time.monotonic()

    @property
    def held(self) -> int:
        return self.sending + len(self.waiting)


@dataclass(slots=True)
class Finished:
    """A sent attempt waiting to be recorded."""

    item: Record
    answer: Answer
    at: datetime
    duration_ms: int


class Relay:
    """Picks, sends and records deliveries until cancelled; run as the `delivery-relay` worker (app/workers.py)."""

    def __init__(self, drivers: DriverConnections, notifier: Notifier, *, policy: DeliveryPolicy,
                 pool_factory: Callable[[DeliveryPolicy, ssl.SSLContext | None], http1.Pool]
                 = new_pool) -> None:
        self._drivers = drivers
        self._notifier = notifier
        self.policy = policy
        self._pool_factory = pool_factory
        self._lanes: dict[str, Lane] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._finished: list[Finished] = []
        self._to_record = asyncio.Event()
        self._ssl: ssl.SSLContext | None = None
        self._idle = SQLITE_IDLE_RECHECK_SECONDS if not drivers.postgres else IDLE_RECHECK_SECONDS
        self._lane_room = LANE_DEPTH * policy.concurrency
        self.token = ""

    async def run(self) -> None:
        """The pick loop, with the recorder beside it."""
        # A new token per run: a restarted relay does not mistake the locks of its dead predecessor for its own.
        self.token = f"relay-{secrets.token_hex(8)}"
        recorder = asyncio.create_task(self._recorder())
        try:
            last_pick = last_sweep = 0.0
            while True:
                wait = last_pick + PICK_INTERVAL - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._notifier.outbox.clear()
                last_pick = time.monotonic()
                if last_pick - last_sweep > LANE_IDLE_SECONDS / 2:
                    last_sweep = last_pick
                    self._close_idle_lanes()
                picked, asked = await self._pick()
                if picked and picked == asked:
                    continue  # as many as it asked for: more may be due
                await self._sleep(busy=picked > 0 or bool(self._sends))
        finally:
            await self._stop(recorder)

    async def _pick(self) -> tuple[int, int]:
        """Pick for every endpoint with room in this process; how many were picked, of how many asked for."""
        held = sum(lane.held for lane in self._lanes.values())
        limit = min(BATCH, MAX_HELD - held)
        if limit <= 0:
            return 0, 0
        # Endpoints with less than a whole lane free say how much they have; the others take a whole lane.
        rooms = {endpoint: max(0, self._lane_room - lane.held) for endpoint, lane in self._lanes.items() if lane.held}
        now = utcnow()
        async with translated(), delivery_store(self._drivers) as store:
            items = await store.claim(now=now, lock_until=now + self.policy.lock, token=self.token, rooms=rooms,
                                      room=self._lane_room, limit=limit)
        # Sent only while the lock has an exchange left (the lock's length from the monotonic clock).
        deadline = time.monotonic() + (self.policy.lock.total_seconds() - self.policy.exchange_timeout)
        started = set()
        for item in items:
            item["send_before"] = deadline
            lane = self._lanes.get(item["endpoint_id"])
            if lane is None:
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context()
                lane = self._lanes[item["endpoint_id"]] = Lane(self._pool_factory(self.policy, self._ssl))
            lane.waiting.append(item)
            started.add(item["endpoint_id"])
        for endpoint in started:
            self._start(self._lanes[endpoint])
        return len(items), limit

    def _start(self, lane: Lane) -> None:
        while lane.sending < self.policy.concurrency and lane.waiting:
            item = lane.waiting.popleft()
            if time.monotonic() > item["send_before"]:
                # Waited so long (behind a slow endpoint) that its lock could run out mid-send: left for a pick after.
                log.info("delivery %s: its hold is running out before its turn; left to a later pick", item["id"])
                continue
            lane.sending += 1
            task = asyncio.create_task(self._send(lane, item))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, lane: Lane, item: Record) -> None:
        try:
            started = time.monotonic()
            answer = await send(lane.pool, item, policy=self.policy, now=utcnow())
            self._finished.append(Finished(item, answer, utcnow(), int((time.monotonic() - started) * 1000)))
            self._to_record.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not recorded: its lock runs out and it goes again (at least once).
            log.exception("delivery %s failed unexpectedly", item["id"])
        finally:
            lane.sending -= 1
            lane.last_used = time.monotonic()
            self._start(lane)

    async def _sleep(self, *, busy: bool) -> None:
        if busy:
            wait = BUSY_RECHECK_SECONDS
        else:
            async with translated(), delivery_store(self._drivers) as store:
                due = await store.next_due(busy=[e for e, lane in self._lanes.items() if lane.held >= self._lane_room])
            wait = self._idle if due is None else min(self._idle, (due - utcnow()).total_seconds())
            if wait <= 0:
                wait = 0.05  # due but held by another relay's pick that is committing now
        try:
            await asyncio.wait_for(self._notifier.outbox.wait(), timeout=wait)
        except TimeoutError:
            pass

    async def _recorder(self) -> None:
        last = 0.0
        while True:
            await self._to_record.wait()
            wait = last + RECORD_INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._to_record.clear()
            batch, self._finished = self._finished[:RECORD_BATCH], self._finished[RECORD_BATCH:]
            if self._finished:
                self._to_record.set()
            last = time.monotonic()
            await self._record(batch)
            self._notifier.outbox.set()  # room again, and maybe the next reply of a conversation is a head now

    async def _record(self, batch: list[Finished]) -> None:
        outcomes, disable = [], []
        for done in batch:
            item = done.item
            result = outcome(done.answer, item=item, now=done.at, duration_ms=done.duration_ms, policy=self.policy)
            outcomes.append(Outcome(delivery_id=item["id"], order_key=item["order_key"], at=done.at,
                                    status_code=result["status_code"], error=result["error"],
                                    duration_ms=done.duration_ms, status=result["status"],
                                    next_attempt_at=result["next_attempt_at"]))
            if done.answer.status_code == 410:
                disable.append((item["endpoint_id"], f"the receiver answered 410 Gone at {done.at.isoformat()}"))
        try:
            async with translated(), delivery_store(self._drivers) as store:
                recorded = {r["id"]: r["status"] for r in await store.record(token=self.token, outcomes=outcomes,
                                                                              disable=disable, now=utcnow())}
        except StoreUnavailable as exc:
            # Sent but not recorded: their locks run out and they go again (at least once).
            log.warning("%d attempts not recorded (%s)", len(batch), exc)
            return
        except Exception:
            log.exception("%d attempts not recorded", len(batch))
            return
        for done in batch:
            item = done.item
            shop_id, endpoint_id = item["shop_id"], item["endpoint_id"]
            metrics.delivery_attempted(shop_id, endpoint_id, done.answer.kind)
            status = recorded.get(item["id"])
            if status is None:
                log.warning("delivery %s: lock lost before its attempt was recorded", item["id"])
            elif status == DeliveryStatus.DELIVERED:
                metrics.delivery_finished(shop_id, endpoint_id, "delivered", (done.at - item["created_at"]).total_seconds())
            elif status == DeliveryStatus.FAILED:
                metrics.delivery_finished(shop_id, endpoint_id, "failed")

    def _close_idle_lanes(self) -> None:
        idle_since = time.monotonic() - LANE_IDLE_SECONDS
        for endpoint, lane in list(self._lanes.items()):
            if not lane.held and lane.last_used < idle_since:
                del self._lanes[endpoint]
                task = asyncio.create_task(lane.pool.aclose())
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _stop(self, recorder: asyncio.Task[None]) -> None:
        """Stop sending; record what was sent (briefly: the rest go again once their locks run out)."""
        for task in self._sends:
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        finished, self._finished = self._finished, []
        if finished:
            try:
                async with asyncio.timeout(5):
                    await self._record(finished)
            except TimeoutError:
                pass
        for lane in self._lanes.values():
            await lane.pool.aclose()
        self._lanes.clear()
