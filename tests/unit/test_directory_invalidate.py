"""The shop cache after a rules activation: a reload that read the old state never refills it."""

import asyncio
from typing import Any

from app.services.directory import ShopDirectory, ShopInfo
from app.triage import default_ruleset


class SlowDirectory(ShopDirectory):
    """Loads hand out numbered snapshots; the first load waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__(sessionmaker=None, ttl=0.0)  # type: ignore[arg-type]
        self.loads = 0
        self.release_first = asyncio.Event()

    async def _load(self, shop_id: str) -> ShopInfo | None:
        self.loads += 1
        snapshot = self.loads
        if snapshot == 1:
            await self.release_first.wait()
        return ShopInfo(id=shop_id, sla_targets={"P1": snapshot}, queue_targets={}, secrets=(),
                        ruleset=default_ruleset())


def snapshot(info: Any) -> int:
    return int(info.sla_targets["P1"])


async def test_a_reload_running_across_an_invalidation_does_not_refill_the_cache() -> None:
    directory = SlowDirectory()
    before = asyncio.create_task(directory.get("s"))  # reads the old state, slowly
    await asyncio.sleep(0)
    directory.invalidate("s")                         # the rules were activated meanwhile
    after = await asyncio.wait_for(directory.get("s"), 5)  # a request after the activation: a fresh load
    assert snapshot(after) == 2
    directory.release_first.set()
    assert snapshot(await before) == 1               # the caller that asked before gets what it waited for
    assert snapshot(await directory.get("s", max_age=60)) == 2  # but the cache keeps the newer state
    assert directory.loads == 2
