"""The delivery relay (SPEC 9.1, README "Integrating a platform"): every process runs one, as a worker.

It picks due deliveries from the outbox (app/db/deliveries.py), holds each under a lock that outlasts the
longest exchange, sends it signed the Standard Webhooks way with a `webhook-id` that never changes for an
event, and records the attempt. At least once: a delivery is marked delivered only after its 2xx, so a relay
that dies mid-send leaves it to be picked again when its lock runs out. A slow endpoint holds at most
`concurrency` sends of this process; the others' deliveries are picked meanwhile.

It sleeps until the earliest due delivery, and wakes at once when an event is committed in this process
(Notifier.outbox) or NOTIFYed by another (LISTEN triage_delivery, app/main.py).
"""

import asyncio
import email.utils
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from app import metrics
from app.clock import utcnow
from app.db.deliveries import delivery_store
from app.db.driver import Record
from app.db.errors import StoreUnavailable, translated
from app.db.session import DriverConnections
from app.domain import DeliveryStatus
from app.services import egress, signing
from app.services.notify import Notifier

log = logging.getLogger("app.delivery")

BATCH = 100  # deliveries picked per statement
MAX_IN_FLIGHT = 512  # sends of one process at once, over all endpoints
# With no due delivery in sight the relay still looks this often: a NOTIFY lost while LISTEN reconnected, or
# (SQLite) an event committed by another process, costs at most this long.
IDLE_RECHECK_SECONDS = 30.0
SQLITE_IDLE_RECHECK_SECONDS = 5.0
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
    """The delivery's state after this attempt (DeliveryStore.record's `outcome`)."""
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


def new_client(policy: DeliveryPolicy) -> httpx.AsyncClient:
    """The relay's HTTP client: no redirects, no environment proxies, bounded connect and read."""
    timeout = httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False)


async def send(client: httpx.AsyncClient, item: Record, *, policy: DeliveryPolicy, now: datetime) -> Answer:
    """One attempt: the URL checked again against what its name resolves to now, then the request to the checked
    address. The answer's body is read only up to ANSWER_READ_LIMIT, and dropped."""
    body, headers = request_of(item, now=now)
    try:
        target = await egress.check(item["url"], allow_private=policy.allow_private)
    except egress.UnsafeUrl as refused:
        return Answer(error=f"refused: {refused}"[:ERROR_TEXT], kind="refused")
    headers["host"] = target.host
    extensions = {"sni_hostname": target.host.rsplit(":", 1)[0].strip("[]")}
    try:
        async with asyncio.timeout(policy.exchange_timeout):
            request = client.build_request("POST", target.url, content=body, headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                # Read a little of the answer, so a short one leaves the connection for reuse; never more.
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > ANSWER_READ_LIMIT:
                        break
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as exc:
        return Answer(error=f"timeout ({type(exc).__name__})", kind="timeout")
    except httpx.HTTPError as exc:
        return Answer(error=f"{type(exc).__name__}: {exc}"[:ERROR_TEXT], kind="error")
    code = response.status_code
    return Answer(status_code=code, retry_after=response.headers.get("retry-after"), kind=f"{code // 100}xx")


class Relay:
    """Picks and sends due deliveries until cancelled; run as the `delivery-relay` worker (app/workers.py)."""

    def __init__(self, drivers: DriverConnections, notifier: Notifier, *, policy: DeliveryPolicy,
                 client_factory: Callable[[DeliveryPolicy], httpx.AsyncClient] = new_client) -> None:
        self._drivers = drivers
        self._notifier = notifier
        self.policy = policy
        self._client_factory = client_factory
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = SQLITE_IDLE_RECHECK_SECONDS if not drivers.postgres else IDLE_RECHECK_SECONDS
        self.token = ""

    def _busy(self) -> list[str]:
        return [endpoint for endpoint, n in self._in_flight.items() if n >= self.policy.concurrency]

    async def run(self) -> None:
        """The relay's loop: pick, start the sends, sleep until the next due one or a wake-up."""
        # A new token per run: a restarted relay does not mistake the locks of its dead predecessor for its own.
        self.token = f"relay-{secrets.token_hex(8)}"
        async with self._client_factory(self.policy) as client:
            try:
                while True:
                    self._notifier.outbox.clear()
                    if not await self._pick(client):
                        await self._sleep()
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._in_flight.clear()

    async def _pick(self, client: httpx.AsyncClient) -> int:
        room = MAX_IN_FLIGHT - sum(self._in_flight.values())
        if room <= 0:
            return 0
        now = utcnow()
        async with translated(), delivery_store(self._drivers) as store:
            items = await store.claim(now=now, lock_until=now + self.policy.lock, token=self.token,
                                      busy=self._busy(), limit=min(BATCH, room))
            # An endpoint gets no more sends than its room in this process; the rest go back at once.
            surplus = []
            for item in items:
                if self._in_flight[item["endpoint_id"]] >= self.policy.concurrency:
                    surplus.append(item["id"])
                    continue
                self._in_flight[item["endpoint_id"]] += 1
                task = asyncio.create_task(self._deliver(client, item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await store.unlock(ids=surplus, token=self.token)
        return len(items) - len(surplus)

    async def _sleep(self) -> None:
        async with translated(), delivery_store(self._drivers) as store:
            due = await store.next_due(busy=self._busy())
        wait = self._idle if due is None else (due - utcnow()).total_seconds()
        if wait <= 0:
            wait = 0.05  # due but held by another relay's pick that is committing now
        try:
            await asyncio.wait_for(self._notifier.outbox.wait(), timeout=min(wait, self._idle))
        except TimeoutError:
            pass

    async def _deliver(self, client: httpx.AsyncClient, item: Record) -> None:
        try:
            started = time.monotonic()
            answer = await send(client, item, policy=self.policy, now=utcnow())
            duration_ms = int((time.monotonic() - started) * 1000)
            await self._record(item, answer, duration_ms)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            # Sent but not recorded: the lock runs out and the delivery goes again (at least once).
            log.warning("delivery %s: attempt not recorded (%s)", item["id"], exc)
        except Exception:
            log.exception("delivery %s failed unexpectedly", item["id"])
        finally:
            self._in_flight[item["endpoint_id"]] -= 1
            if self._in_flight[item["endpoint_id"]] <= 0:
                del self._in_flight[item["endpoint_id"]]
            self._notifier.outbox.set()  # room again, and maybe the conversation's next reply is pickable

    async def _record(self, item: Record, answer: Answer, duration_ms: int) -> None:
        now = utcnow()
        result = outcome(answer, item=item, now=now, duration_ms=duration_ms, policy=self.policy)
        shop_id = item["shop_id"]
        async with translated(), delivery_store(self._drivers) as store:
            async with store.transaction():
                recorded = await store.record(delivery_id=item["id"], token=self.token, at=now, outcome=result)
                if answer.status_code == 410:
                    await store.disable_endpoint(endpoint_id=item["endpoint_id"], now=now,
                                                 reason=f"the receiver answered 410 Gone at {now.isoformat()}")
        metrics.delivery_attempted(shop_id, item["endpoint_id"], answer.kind)
        if recorded is None:
            log.warning("delivery %s: lock lost before its attempt was recorded", item["id"])
            return
        if result["status"] == DeliveryStatus.DELIVERED:
            metrics.delivery_finished(shop_id, item["endpoint_id"], "delivered",
                                      (now - item["created_at"]).total_seconds())
        elif result["status"] == DeliveryStatus.FAILED:
            metrics.delivery_finished(shop_id, item["endpoint_id"], "failed")
