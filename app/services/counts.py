"""The queue counters' fold (migration 0018): every process moves the changes the triggers appended into
queue_counts once a second, so a reader of the gauges adds up a few rows, whatever the backlog."""

import asyncio
import logging

from app.db.claims import claim_store
from app.db.errors import StoreUnavailable, translated
from app.db.session import DriverConnections

log = logging.getLogger("app.counts")

INTERVAL_SECONDS = 1.0


class CountFolder:
    """Run as the `queue-counts` worker (app/workers.py)."""

    def __init__(self, drivers: DriverConnections, *, interval: float = INTERVAL_SECONDS) -> None:
        self._drivers = drivers
        self._interval = interval

    async def run_once(self) -> int:
        """Fold the changes there are; how many."""
        async with translated(), claim_store(self._drivers) as store:
            return await store.fold_queue_counts()

    async def run(self) -> None:
        """The worker's loop: a fold every interval; a failed one is logged and tried at the next."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("queue counts fold failed (%s: %s); retrying", type(exc).__name__, exc)
            except Exception:
                log.exception("queue counts fold failed; retrying")
            await asyncio.sleep(self._interval)
