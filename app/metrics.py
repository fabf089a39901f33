"""Prometheus metrics: counters and histograms recorded where things happen, backlog gauges read at scrape time.

With PROMETHEUS_MULTIPROC_DIR set (before this module is imported), prometheus-client keeps every
process's values in files there and a scrape of any process sums them all. The backlog gauges are
not process state at all: each scrape reads them from the database, so every process answers the
same, right numbers.
"""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from app.domain import TIER_NAMES, Presence, tier_name

PRESENCES = tuple(p.value for p in Presence)

# The classic text format: every Prometheus version reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# Anything else a client sends as a method is one label value, so odd requests cannot mint series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

MESSAGES_INGESTED = Counter("triage_messages_ingested", "Buyer messages stored, by their own triage",
                            ["shop", "tier", "intent"])
MESSAGES_DUPLICATE = Counter("triage_messages_duplicate", "Webhook messages already stored, answered as duplicates",
                             ["shop"])
WEBHOOK_REJECTIONS = Counter("triage_webhook_rejections", "Webhook requests refused, by error code", ["reason"])
CLAIMS = Counter("triage_claims", "Tickets claimed by agents", ["shop", "queue"])
LEASE_EXPIRIES = Counter("triage_lease_expiries", "Leases that ran out, putting the ticket back in its queue",
                         ["shop", "queue"])
AUTO_CLOSED = Counter("triage_tickets_auto_closed", "Queued tickets resolved by the auto-close worker after their "
                      "conversation was silent for the shop's auto_close_after_hours", ["shop", "queue"])
TRANSFERS = Counter("triage_transfers", "Tickets moved to another queue by an agent or by lease expiry",
                    ["shop", "to_queue"])
FIRST_RESPONSE = Histogram("triage_first_response_seconds", "From episode start to the first agent reply",
                           ["shop", "tier"],
                           buckets=(5, 10, 20, 30, 40, 60, 90, 120, 300, 600, 1800, 3600, 4 * 3600))
GAUGE_REFRESHES = Counter("triage_metrics_gauge_refreshes", "Times this process read the backlog gauges from the "
                          "database for /metrics (at most once per TRIAGE_METRICS_CACHE_SECONDS)")
SLA_BREACHES = Counter("triage_sla_breaches", "First replies later than their first-response target",
                       ["shop", "tier"])
REQUEST_DURATION = Histogram("triage_http_request_duration_seconds", "HTTP requests by route template",
                             ["route", "method", "status"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
# Background workers (app/workers.py): a worker's name is fixed by the code and the settings (ingest-writer-N).
WORKER_UP = Gauge("triage_worker_up", "1 while the background worker runs, 0 while it waits to restart or is stopped",
                  ["worker"], multiprocess_mode="livesum")
WORKER_RESTARTS = Counter("triage_worker_restarts", "Background workers restarted after they died", ["worker"])
# Outbound deliveries (app/services/delivery.py): endpoint ids are set by ops, one series per endpoint.
DELIVERIES = Counter("triage_deliveries", "Deliveries finished, by endpoint and outcome (delivered, failed)",
                     ["shop", "endpoint", "outcome"])
DELIVERY_ATTEMPTS = Counter("triage_delivery_attempts", "Requests sent to delivery endpoints, by outcome (2xx, 4xx, "
                            "5xx, timeout, error, refused)", ["shop", "endpoint", "outcome"])
DELIVERY_LATENCY = Histogram("triage_delivery_latency_seconds", "From the event's commit to the endpoint's 2xx answer",
                             ["shop", "endpoint"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))


def delivery_attempted(shop_id: str, endpoint_id: str, outcome: str) -> None:
    DELIVERY_ATTEMPTS.labels(shop_id, endpoint_id, outcome).inc()


def delivery_finished(shop_id: str, endpoint_id: str, outcome: str, seconds: float | None = None) -> None:
    DELIVERIES.labels(shop_id, endpoint_id, outcome).inc()
    if seconds is not None:
        DELIVERY_LATENCY.labels(shop_id, endpoint_id).observe(seconds)


def messages_ingested(shop_id: str, results: Iterable[Any]) -> None:
    """Count one request's committed results (IngestedMessage), new and duplicate."""
    for result in results:
        if result.sender == "seller":
            continue  # the shop's own message: not a buyer message, not triaged
        if result.duplicate:
            MESSAGES_DUPLICATE.labels(shop_id).inc()
        else:
            MESSAGES_INGESTED.labels(shop_id, result.tier, result.primary).inc()


def webhook_rejected(reason: str) -> None:
    WEBHOOK_REJECTIONS.labels(reason).inc()


def ticket_claimed(shop_id: str, queue: str) -> None:
    CLAIMS.labels(shop_id, queue).inc()


def leases_expired(moves: Iterable[tuple[str, str, str]]) -> None:
    """Count expired leases as (shop, queue it was in, queue it went back to); a different queue is an escalation."""
    for shop_id, from_queue, to_queue in moves:
        LEASE_EXPIRIES.labels(shop_id, from_queue).inc()
        if to_queue != from_queue:
            TRANSFERS.labels(shop_id, to_queue).inc()


def tickets_auto_closed(shop_id: str, queue: str, count: int) -> None:
    AUTO_CLOSED.labels(shop_id, queue).inc(count)


def ticket_transferred(shop_id: str, to_queue: str) -> None:
    TRANSFERS.labels(shop_id, to_queue).inc()


def first_response(shop_id: str, tier: int, seconds: float, *, late: bool) -> None:
    """Record a first reply: its delay, and a breach when it came after the target."""
    FIRST_RESPONSE.labels(shop_id, tier_name(tier)).observe(max(0.0, seconds))
    if late:
        SLA_BREACHES.labels(shop_id, tier_name(tier)).inc()


def worker_state(name: str, *, up: bool, restarted: bool = False) -> None:
    WORKER_UP.labels(name).set(1 if up else 0)
    if restarted:
        WORKER_RESTARTS.labels(name).inc()


def request_done(route: str, method: str, status: int, seconds: float) -> None:
    REQUEST_DURATION.labels(route, method if method in METHODS else "other", f"{status // 100}xx").observe(seconds)


class _Snapshot(Collector):
    def __init__(self, families: Sequence[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families


def backlog_families(rows: Iterable[Any], *, now: datetime) -> list[GaugeMetricFamily]:
    """Gauges from one aggregate row per (shop, queue, tier): depth, oldest queued, overdue unanswered."""
    depth = GaugeMetricFamily("triage_queue_depth", "Queued tickets now", labels=["shop", "queue", "tier"])
    oldest = GaugeMetricFamily("triage_queue_oldest_wait_seconds", "Age of the oldest queued episode (0 when empty)",
                               labels=["shop", "queue"])
    overdue = GaugeMetricFamily("triage_first_response_overdue",
                                "Open tickets still unanswered past their first-response due time",
                                labels=["shop", "queue", "tier"])
    queues: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        entry = queues.setdefault((row.shop_id, row.queue), {"depth": dict.fromkeys(TIER_NAMES, 0),
                                                             "overdue": dict.fromkeys(TIER_NAMES, 0), "oldest": None})
        if row.tier is not None:
            entry["depth"][tier_name(row.tier)] += row.depth
            entry["overdue"][tier_name(row.tier)] += row.overdue
        if row.oldest is not None and (entry["oldest"] is None or row.oldest < entry["oldest"]):
            entry["oldest"] = row.oldest
    for (shop_id, queue), entry in sorted(queues.items()):
        for tier in TIER_NAMES:
            depth.add_metric([shop_id, queue, tier], entry["depth"][tier])
            overdue.add_metric([shop_id, queue, tier], entry["overdue"][tier])
        waited = 0.0 if entry["oldest"] is None else max(0.0, (now - entry["oldest"]).total_seconds())
        oldest.add_metric([shop_id, queue], round(waited, 3))
    return [depth, oldest, overdue]


def presence_family(rows: Iterable[Any]) -> GaugeMetricFamily:
    """Active agents per shop and presence now; every presence of a shop with agents is listed, 0 included."""
    family = GaugeMetricFamily("triage_agents", "Active agents by presence now (online, away, offline)",
                               labels=["shop", "presence"])
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row.shop_id, dict.fromkeys(PRESENCES, 0))[row.presence] += row.agents
    for shop_id, by_presence in sorted(counts.items()):
        for presence, agents in by_presence.items():
            family.add_metric([shop_id, presence], agents)
    return family


def oldest_pending_family(rows: Iterable[Any], *, now: datetime) -> GaugeMetricFamily:
    """Per endpoint with pending deliveries, the age of its oldest one."""
    family = GaugeMetricFamily("triage_delivery_oldest_pending_seconds",
                               "Age of the endpoint's oldest pending delivery (endpoints with none are not listed)",
                               labels=["shop", "endpoint"])
    for row in rows:
        family.add_metric([row["shop_id"], row["endpoint_id"]],
                          round(max(0.0, (now - row["created_at"]).total_seconds()), 3))
    return family


def exposition(families: Sequence[GaugeMetricFamily]) -> bytes:
    """This process's (or, in multiprocess mode, every process's) metrics, then the database gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(families))
    return generate_latest(registry) + generate_latest(snapshot)


class CachedAnswer:
    """The /metrics answer of this process, made at most once per `ttl` seconds however many scrape.

    Scrapes arriving while one is made wait for it and share it (also with ttl 0), so twenty scrapers cost one
    aggregate statement and one rendering, not twenty. An answer made without the database is not kept: the
    next scrape tries again.
    """

    def __init__(self, make: Callable[[], Awaitable[tuple[bytes, bool]]], *, ttl: float) -> None:
        self._make = make
        self._ttl = ttl
        self._lock = asyncio.Lock()
        self._answer = b""
        self._made_at = float("-inf")

    async def get(self) -> bytes:
        arrived = time.monotonic()
        if arrived - self._made_at < self._ttl:
            return self._answer
        async with self._lock:
            # Made by another scrape since this one arrived, or within the window: that answer will do.
            if self._made_at >= arrived or time.monotonic() - self._made_at < self._ttl:
                return self._answer
            answer, keep = await self._make()
            if keep:
                self._answer, self._made_at = answer, time.monotonic()
            return answer
