"""A frozen clock for the service under test: every module that reads `app.clock.utcnow` for ingestion, claims,
replies, the SLA watch, the lease reaper and the statistics reads this one instead, moved only by the test."""

from datetime import datetime, timedelta

import pytest

# The modules whose `utcnow` the frozen clock replaces. Webhook signatures keep the real clock (a platform signs with
# it), and so does the delivery relay (its retries wait in real time).
FROZEN_MODULES = ("app.services.ingest", "app.services.sla", "app.services.queues", "app.services.autoclose",
                  "app.routers.agents", "app.routers.stats", "app.routers.admin")


class FrozenClock:
    def __init__(self, at: datetime) -> None:
        self.now = at

    def __call__(self) -> datetime:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def freeze(monkeypatch: pytest.MonkeyPatch, at: datetime) -> FrozenClock:
    """Freeze the service's clock at `at` until the test ends."""
    clock = FrozenClock(at)
    for module in FROZEN_MODULES:
        monkeypatch.setattr(f"{module}.utcnow", clock)
    return clock
