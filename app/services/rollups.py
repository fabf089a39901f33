"""The statistics worker: rolls each shop's settled days into the daily rollup (app/db/rollups.py), so statistics
over long windows read a row per day and key instead of every episode's summary.

Every process runs it, a pass at start and every INTERVAL_SECONDS: per shop, the days from its first episode that ended
at least ROLL_AFTER ago (app/db/rollups.py) not rolled yet or marked stale, each in its own short transaction, at most DAYS_PER_PASS per shop and pass.
Workers of several processes skip a shop another is rolling.
"""

import logging
from datetime import datetime

from app.clock import utcnow
from app.db import rollups
from app.db.session import SessionFactory
from app.services.periodic import every

log = logging.getLogger("app.rollups")

INTERVAL_SECONDS = 600.0
DAYS_PER_PASS = 120


async def roll(sessionmaker: SessionFactory, *, now: datetime, limit: int = DAYS_PER_PASS) -> dict[str, int]:
    """One pass over every shop; the days rolled per shop."""
    rolled: dict[str, int] = {}
    for shop_id, days in (await rollups.due(sessionmaker, now=now)).items():
        for day in days[:limit]:
            done = await rollups.roll_alone(sessionmaker, shop_id=shop_id, day=day, now=now)
            if done is None:
                log.info("statistics of %s: another worker is rolling them", shop_id)
                break
            rolled[shop_id] = rolled.get(shop_id, 0) + int(done)
    return rolled


class RollupWorker:
    """Run as the `stats-rollup` worker (app/workers.py via app/main.py)."""

    def __init__(self, sessionmaker: SessionFactory, *, interval: float = INTERVAL_SECONDS) -> None:
        self._sessionmaker = sessionmaker
        self._interval = interval

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """Roll what is due; the days rolled per shop."""
        rolled = await roll(self._sessionmaker, now=now or utcnow())
        if rolled:
            log.info("rolled the statistics of %s", ", ".join(f"{shop} ({n} days)" for shop, n in rolled.items()))
        return rolled

    async def run(self) -> None:
        await every(self._interval, self.run_once, what="statistics rollup", log=log)
