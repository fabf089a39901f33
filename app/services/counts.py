"""The queue counters' fold (migration 0018): every process moves the changes the triggers appended into
queue_counts once a second, so a reader of the gauges adds up a few rows, whatever the backlog."""

import logging

from app.db.claims import claim_store
from app.db.errors import translated
from app.db.session import DriverConnections
from app.services.periodic import every

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
        await every(self._interval, self.run_once, what="queue counts fold", log=log)
