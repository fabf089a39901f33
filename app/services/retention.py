"""Retention (README, "Retention"): months of messages and events made ahead, and what is past
TRIAGE_RETENTION_DAYS removed.

Every process runs the `retention` worker, a pass at start and every hour. A pass makes the months from the
oldest kept one to MONTHS_AHEAD after the current one (PostgreSQL; a message or event must find its month made),
then removes what is older than the retention: on PostgreSQL whole months, once the last day of a month is past it
(so a month is kept until all of it is), with its messages' idempotency keys; on SQLite rows in batches, each with
its keys. Tickets, customers and the statistics' summaries stay.
"""

import logging
from datetime import datetime, timedelta

from app.clock import utcnow
from app.db.errors import translated
from app.db.retention import Month, Removed, retention_store
from app.db.session import DriverConnections
from app.services.periodic import every

log = logging.getLogger("app.retention")

MONTHS_AHEAD = 3
INTERVAL_SECONDS = 3600.0
RETRY_SECONDS = 60.0
BATCH = 2000
DEFAULT_RETENTION_DAYS = 400


async def make_months(drivers: DriverConnections, *, now: datetime, retention_days: int) -> list[str]:
    """Make the months from the oldest kept to MONTHS_AHEAD after now's; the partitions made."""
    async with retention_store(drivers) as store:
        return await store.ensure_months(Month.of(now - timedelta(days=retention_days)),
                                         Month.of(now).shifted(MONTHS_AHEAD))


async def expire(drivers: DriverConnections, *, now: datetime, retention_days: int, batch: int = BATCH) -> Removed:
    """Remove everything older than the retention; what was removed, added up."""
    before = now - timedelta(days=retention_days)
    partitions: list[str] = []
    messages = events = keys = 0
    while True:
        async with retention_store(drivers) as store:
            step = await store.expire_step(before=before, limit=batch)
        if not step.anything:
            return Removed(partitions=tuple(partitions), messages=messages, events=events, keys=keys)
        partitions += step.partitions
        messages, events, keys = messages + step.messages, events + step.events, keys + step.keys


class RetentionWorker:
    """Run as the `retention` worker (app/workers.py)."""

    def __init__(self, drivers: DriverConnections, *, retention_days: int,
                 interval: float = INTERVAL_SECONDS) -> None:
        self._drivers = drivers
        self._days = retention_days
        self._interval = interval

    async def run_once(self, now: datetime | None = None) -> Removed:
        """Make the months ahead, then remove what is past retention; what was removed."""
        now = now or utcnow()
        async with translated():
            made = await make_months(self._drivers, now=now, retention_days=self._days)
            removed = await expire(self._drivers, now=now, retention_days=self._days)
        if made:
            log.info("made partitions %s", ", ".join(made))
        if removed.anything:
            log.info("removed what is older than %d days: partitions %s, %d messages, %d events, %d keys",
                     self._days, ", ".join(removed.partitions) or "none", removed.messages, removed.events,
                     removed.keys)
        return removed

    async def run(self) -> None:
        """The worker's loop: a pass at start and every interval; a failed pass is logged and tried again within a
        minute."""
        await every(self._interval, self.run_once, what="retention", log=log, retry_within=RETRY_SECONDS)
