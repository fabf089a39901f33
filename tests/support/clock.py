"""A frozen clock for the whole service: every module of `app` that reads app.clock.utcnow reads it instead.

The webhook signature check keeps the real clock: the platform signs with its own, and a frozen service clock
days ahead would refuse every request as stale. Background workers (the lease reaper among them) read the frozen
clock too, as they would read a real one.
"""

import sys
from datetime import datetime, timedelta

import pytest

import app.clock

# What a platform's signature is checked against: transport, not the service's notion of time.
REAL_CLOCK_MODULES = frozenset({"app.services.webhooks"})


class FrozenClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def freeze(monkeypatch: pytest.MonkeyPatch, start: datetime | None = None) -> FrozenClock:
    """Freeze the service's clock at `start` (default: now) until the test ends."""
    clock = FrozenClock(start or app.clock.utcnow())
    real = app.clock.utcnow
    for name, module in list(sys.modules.items()):
        if (name == "app" or name.startswith("app.")) and name not in REAL_CLOCK_MODULES \
                and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", clock)
    return clock
