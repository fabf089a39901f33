"""Stale work closes itself (README, "Auto-close"): a queued or snoozed (pending) ticket whose conversation has been
silent for its shop's `auto_close_after_hours` is resolved, with a `resolved` event by `system`. A snooze waits for
the buyer; a buyer silent that long closes it, whatever time it was to come back at.

Every process runs the `auto-close` worker. Its pick locks what it closes and skips what another process (a closer,
a claim, an ingestion) has locked, and closes only tickets still in the status it picked them in, so each ticket is closed once; a buyer
message arriving meanwhile waits for the close and then reopens the ticket as a new episode.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from app import metrics
from app.clock import utcnow
from app.db.claims import TicketStore, claim_store
from app.db.driver import Record
from app.db.errors import translated
from app.db.session import DriverConnections
from app.domain import SYSTEM_ACTOR, EventKind, Tier, rfc3339
from app.services.periodic import every

log = logging.getLogger("app.autoclose")

BATCH = 500
INTERVAL_SECONDS = 60.0
REASON = "auto_close"


async def close_quiet(drivers: DriverConnections, *, now: datetime, limit: int = BATCH) -> dict[tuple[str, str], int]:
    """Resolve every queued or snoozed ticket silent past its shop's hours; how many per (shop, queue)."""
    closed: dict[tuple[str, str], int] = {}
    async with claim_store(drivers) as store:
        for queue, tier in ((q, t) for q in await store.auto_close_queues() for t in Tier):
            shop_id, name, hours = queue["shop_id"], queue["queue"], queue["hours"]
            before = now - timedelta(hours=hours)
            while True:
                # A look first, outside a transaction: most queues have nothing to close, and on SQLite a look
                # takes no write lock.
                if not await store.quiet_tickets(shop_id=shop_id, queue=name, tier=tier, before=before, limit=1,
                                                 lock=False):
                    break
                async with store.transaction():
                    rows = await store.quiet_tickets(shop_id=shop_id, queue=name, tier=tier, before=before,
                                                     limit=limit)
                    await _close(store, rows, now=now, hours=hours)
                _count(closed, shop_id, name, len(rows))
                if len(rows) < limit:
                    break
        for shop in await store.auto_close_shops():
            shop_id, hours = shop["shop_id"], shop["hours"]
            before = now - timedelta(hours=hours)
            while await store.quiet_pending(shop_id=shop_id, before=before, limit=1, lock=False):
                async with store.transaction():
                    rows = await store.quiet_pending(shop_id=shop_id, before=before, limit=limit)
                    await _close(store, rows, now=now, hours=hours)
                for row in rows:
                    _count(closed, shop_id, row["queue"], 1)
                if len(rows) < limit:
                    break
    return closed


async def _close(store: TicketStore, rows: Sequence[Record], *, now: datetime, hours: int) -> None:
    """In the caller's transaction: resolve the picked tickets, each with its event by `system`."""
    await store.close_quiet(rows, now=now)
    await store.add_events([
        {"ticket_id": r["id"], "shop_id": r["shop_id"], "at": now, "kind": EventKind.RESOLVED.value,
         "actor": SYSTEM_ACTOR, "data": {"reason": REASON, "after_hours": hours, "status_before": r.get("status", "queued"),
                                         "last_message_at": rfc3339(r["last_message_at"])}}
        for r in rows])


def _count(closed: dict[tuple[str, str], int], shop_id: str, queue: str, count: int) -> None:
    if count:
        closed[(shop_id, queue)] = closed.get((shop_id, queue), 0) + count
        metrics.tickets_auto_closed(shop_id, queue, count)


class AutoCloser:
    """Run as the `auto-close` worker (app/workers.py)."""

    def __init__(self, drivers: DriverConnections, *, interval: float = INTERVAL_SECONDS) -> None:
        self._drivers = drivers
        self._interval = interval

    async def run_once(self) -> int:
        """Close what is silent now; how many."""
        async with translated():
            closed = await close_quiet(self._drivers, now=utcnow())
        total = sum(closed.values())
        if total:
            log.info("auto-closed %d silent tickets", total)
        return total

    async def run(self) -> None:
        """The worker's loop: a pass every interval; a failed pass is logged and tried at the next."""
        await every(self._interval, self.run_once, what="auto-close", log=log)
