"""The ASGI application: `app.main:app`."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from app.db.listen import Listener
from app.db.migrate import head_revision
from app.db.probe import autovacuum_off
from app.db.session import DriverConnections, create_engine, create_sessionmaker
from app.errors import install_error_handlers
from app.limits import LimitsMiddleware
from app.middleware import RequestIdMiddleware
from app.db.deliveries import DELIVERY_CHANNEL
from app.routers import admin, agents, endpoints, health, pages, rules, stats, templates, triage, webhooks
from app.routers.docs import with_extra_schemas
from app.schemas.webhooks import WebhookBatch
from app.services.autoclose import AutoCloser
from app.services.counts import CountFolder
from app.services.directory import ShopDirectory
from app.services.delivery import DeliveryPolicy, Relay
from app.services.ingest import NOTIFY_CHANNEL, Ingestor
from app.services.notify import Notifier
from app.services.queues import LeaseReaper
from app.services.retention import RetentionWorker
from app.services.rollups import RollupWorker
from app.services.sla import BreachWatch
from app.settings import Settings, get_settings
from app.triage import default_ruleset
from app.workers import Workers

log = logging.getLogger("app")
# The collector's thresholds per generation once the app is loaded (see lifespan).
GC_THRESHOLDS = (50_000, 50, 100)

DESCRIPTION = """
Receives buyer chat messages from shop platforms over signed webhooks, decides what each message is
about and how urgent it is, and routes it to the right agent queue. Agent consoles claim work over HTTP.

Every error answers `{"error": {"code", "message", "details"}}`; every answer carries `X-Request-ID`. Any operation
answers `503 service_unavailable` with `Retry-After` while the database cannot be reached. Before it is routed or
its caller authenticated, any request may be refused with `431 header_fields_too_large` (more header fields, or
more bytes of them, than allowed), `413 payload_too_large` (a body past the limit, refused while it arrives) or
`404 not_found` (a path holding NUL); under `triage serve` also with `408 request_timeout` (a head or body that
arrives too slowly) or `503 service_unavailable` (the process holds its most connections).
"""


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """The relay's policy from the delivery settings (README, "Configuration")."""
    return DeliveryPolicy(max_age=timedelta(hours=settings.delivery_max_hours),
                          connect_timeout=settings.delivery_connect_timeout_seconds,
                          read_timeout=settings.delivery_timeout_seconds,
                          backoff_first=settings.delivery_backoff_seconds,
                          backoff_max=settings.delivery_backoff_max_seconds,
                          concurrency=settings.delivery_concurrency, allow_private=settings.delivery_allow_private)


def start_workers(app: FastAPI, settings: Settings) -> Workers:
    """The process's background work, started under supervision: ingest writers, lease reaper, SLA watch,
    auto-close, queue counts, retention, statistics rollup, delivery relay, LISTEN."""
    workers = Workers()
    writers = settings.ingest_writers or (1 if settings.is_sqlite else 3)
    app.state.ingestor = Ingestor(app.state.drivers, app.state.notifier, writers=writers,
                                  sticky_hold_seconds=settings.sticky_hold_seconds)
    for name, run in app.state.ingestor.writers():
        workers.add(name, run)
    # Expired leases are requeued by every process; a short lease is checked more often than once a second.
    app.state.reaper = LeaseReaper(app.state.drivers, app.state.notifier, max_deliveries=settings.max_deliveries,
                                   interval=min(1.0, settings.lease_seconds / 4),
                                   key_retention=timedelta(hours=settings.idempotency_retention_hours),
                                   sticky_hold_seconds=settings.sticky_hold_seconds)
    workers.add("lease-reaper", app.state.reaper.run)
    app.state.sla_watch = BreachWatch(app.state.drivers, app.state.notifier)
    workers.add("sla-watch", app.state.sla_watch.run)
    app.state.auto_closer = AutoCloser(app.state.drivers)
    workers.add("auto-close", app.state.auto_closer.run)
    app.state.count_folder = CountFolder(app.state.drivers)
    workers.add("queue-counts", app.state.count_folder.run)
    app.state.retention = RetentionWorker(app.state.drivers, retention_days=settings.retention_days)
    workers.add("retention", app.state.retention.run)
    app.state.rollups = RollupWorker(app.state.sessionmaker)
    workers.add("stats-rollup", app.state.rollups.run)
    app.state.relay = Relay(app.state.drivers, app.state.notifier, policy=delivery_policy(settings))
    workers.add("delivery-relay", app.state.relay.run)
    app.state.listener = None
    if not settings.is_sqlite:
        # Wake-ups from other processes (ingestion, releases, expiries; outbox events) arrive by LISTEN/NOTIFY.
        app.state.listener = Listener(settings.database_url, {
            NOTIFY_CHANNEL: lambda shop_id: app.state.notifier.notify([shop_id]),
            DELIVERY_CHANNEL: app.state.notifier.outbox_written})
        workers.add("listen", app.state.listener.run)
    workers.start()
    return workers


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size,
                               busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        app.state.engine = engine
        app.state.drivers = await DriverConnections.open(engine, settings.database_url, size=settings.db_pool_size)
        app.state.drivers.thread_page = settings.thread_page
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.directory = ShopDirectory(app.state.sessionmaker)
        default_ruleset()  # compile the shipped rules now, not on the first request
        # Long-lived objects (rules, automaton, app) leave the collector's scans: shorter GC pauses. Nearly all of a
        # request's garbage goes by reference counting; a young collection every 50,000 allocations instead of
        # Python's 700 saved the worker 8-15 % of its CPU per message (docs/design.md, "Ingestion against 0ee7373").
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        app.state.notifier = Notifier()
        app.state.workers = start_workers(app, settings)
        if settings.admin_token is None:
            log.warning("TRIAGE_ADMIN_TOKEN is not set: every ops endpoint answers 401")
        if await autovacuum_off(settings.database_url, timeout=2.0):
            log.warning("autovacuum is off on the PostgreSQL server: plans and dead rows go stale as tables grow "
                        "(README, Running on PostgreSQL)")
        try:
            yield
        finally:
            await app.state.workers.stop()
            app.state.ingestor.close()
            await app.state.drivers.close()
            await engine.dispose()

    app = FastAPI(title="Chat-triage service", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.migration_head = head_revision()
    install_error_handlers(app)
    # Added first, so it runs inside RequestIdMiddleware: its refusals carry a request id and are counted.
    app.add_middleware(LimitsMiddleware, max_body_bytes=settings.max_request_bytes,
                       max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers)
    app.add_middleware(RequestIdMiddleware)
    # Routes are matched in order: the hot paths (webhooks, then the agents' work) first.
    app.include_router(webhooks.router)
    app.include_router(agents.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(endpoints.router)
    app.include_router(triage.router)
    app.include_router(stats.router)
    app.include_router(stats.metrics_router)
    app.include_router(rules.router)
    app.include_router(templates.router)
    app.include_router(pages.router)
    with_extra_schemas(app, WebhookBatch)
    return app


def __getattr__(name: str) -> FastAPI:
    # `app.main:app` is built on first access, so importing this module reads no settings.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
