"""Service settings, read from TRIAGE_* environment variables and an optional .env file."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.domain import DEFAULT_PRESENCE_TIMEOUT, DEFAULT_STICKY_HOLD_SECONDS

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./triage.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore")

    database_url: str = Field(DEFAULT_SQLITE_URL, description="SQLAlchemy async URL (sqlite+aiosqlite or postgresql+asyncpg)")
    admin_token: SecretStr | None = Field(None, description="Bearer token for the ops endpoints")
    host: str = Field("127.0.0.1", description="Address `triage serve` binds")
    port: int = Field(8000, ge=1, le=65535, description="Port `triage serve` binds")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes for `triage serve`")
    db_pool_size: int | None = Field(None, ge=1, le=200, description="Size of each connection pool of a process (default: 1 on SQLite, 10 on PostgreSQL); on PostgreSQL a process opens up to 2 x size + 1 connections")
    ingest_writers: int | None = Field(None, ge=1, le=32, description="Concurrent ingest transactions per process (default: 1 on SQLite, 3 on PostgreSQL)")
    sqlite_busy_timeout_ms: int = Field(10_000, ge=5_000, description="How long a SQLite writer waits for the lock")
    lease_seconds: int = Field(120, ge=1, le=3600, description="Agent lease on a claimed ticket")
    max_deliveries: int = Field(3, ge=1, le=100, description="Expired leases before a ticket moves to escalations")
    secret_overlap_hours: float = Field(24.0, ge=0, le=24 * 30, description="How long a rotated webhook secret keeps verifying")
    webhook_tolerance_seconds: int = Field(300, ge=1, le=3600, description="Allowed clock skew of webhook-timestamp, either way")
    max_body_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest accepted webhook body")
    max_request_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest accepted request body on every route but the webhook (which has TRIAGE_MAX_BODY_BYTES)")
    max_header_bytes: int = Field(32 * 1024, ge=4096, le=1024 * 1024, description="Largest total size of a request's header fields and query string")
    max_headers: int = Field(100, ge=16, le=1000, description="Most header fields a request may carry")
    keepalive_seconds: float = Field(5.0, gt=0, le=300, description="`triage serve`: an idle keep-alive connection is closed after this long")
    header_timeout_seconds: float = Field(10.0, gt=0, le=300, description="`triage serve`: a request head must arrive within this long (a silent new connection is closed then)")
    body_timeout_seconds: float = Field(10.0, gt=0, le=300, description="`triage serve`: after this long a request body must have arrived at TRIAGE_BODY_MIN_RATE on average")
    body_min_rate: int = Field(8192, ge=1, le=100 * 1024 * 1024, description="`triage serve`: slowest accepted body, bytes per second, once TRIAGE_BODY_TIMEOUT_SECONDS passed")
    max_connections: int = Field(1000, ge=1, le=100_000, description="`triage serve`: open connections per process; a request on one more is 503")
    metrics_cache_seconds: float = Field(5.0, ge=0, le=300, description="/metrics reads the backlog gauges from the database at most this often per process")
    metrics_token: SecretStr | None = Field(None, description="Bearer token /metrics requires; unset, /metrics is open")
    thread_page: int = Field(50, ge=1, le=1000, description="The latest messages a ticket's answer carries; GET /v1/tickets/{id}/messages pages through the rest")
    sticky_hold_seconds: int = Field(DEFAULT_STICKY_HOLD_SECONDS, ge=0, le=3600, description="How long a ticket held for a buyer's last agent (or the agent that snoozed it) waits for that agent while it is online; 0: no holds")
    claim_recheck_seconds: float = Field(1.0, gt=0, le=60, description="A claim waiting for work looks at the queues at least this often: a wake-up lost between processes costs at most this long, and a client gone is noticed then")
    presence_timeout_seconds: int = Field(DEFAULT_PRESENCE_TIMEOUT, ge=10, le=86_400, description="An agent with no claim (a long poll's re-checks count), ticket heartbeat or presence call for this long is offline")
    default_agent_capacity: int = Field(5, ge=1, le=50, description="Open tickets an agent may hold unless set per agent")
    retention_days: int = Field(400, ge=93, le=36_500, description="Messages and ticket events older than this many days are removed (on PostgreSQL a month once all of it is older); at least 93, so every statistics range finds its data")
    idempotency_retention_hours: float = Field(24.0, gt=0, le=24 * 365, description="How long an agent write's Idempotency-Key is remembered")
    delivery_allow_private: bool = Field(False, description="Let delivery endpoints reach loopback, private, link-local and metadata addresses (tests and local demos only)")
    delivery_max_hours: float = Field(24.0, gt=0, le=24 * 30, description="A delivery still not answered 2xx this long after its first attempt is failed")
    delivery_connect_timeout_seconds: float = Field(5.0, gt=0, le=60, description="Connecting to a delivery endpoint may take this long")
    delivery_timeout_seconds: float = Field(15.0, gt=0, le=300, description="A delivery endpoint must send its answer's head within this long after the request (each read, and the whole exchange at most twice this plus the connect timeout)")
    delivery_backoff_seconds: float = Field(5.0, gt=0, le=3600, description="Wait before the first retry of a failed delivery; each later one waits twice as long (with jitter), up to TRIAGE_DELIVERY_BACKOFF_MAX_SECONDS")
    delivery_backoff_max_seconds: float = Field(3600.0, gt=0, le=86_400, description="Longest wait between two attempts of one delivery (Retry-After may ask for longer)")
    delivery_concurrency: int = Field(8, ge=1, le=256, description="Deliveries a process sends to one endpoint at once")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Least severe level logged, by the service and by uvicorn alike")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
