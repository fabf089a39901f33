"""Wake-ups for agents long-polling for work: ingestion signals, claimers wait."""

import asyncio
from collections import defaultdict
from collections.abc import Iterable


class Notifier:
    """In-process wake-ups per shop. A waiter re-checks the database when woken, so a spurious wake is harmless."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        # Set when an outbox event was committed in this process (or NOTIFYed by another): the delivery relay
        # waits on it (app/services/delivery.py).
        self.outbox = asyncio.Event()

    def outbox_written(self, _payload: str = "") -> None:
        self.outbox.set()

    def notify(self, shop_ids: Iterable[str]) -> None:
        for shop_id in set(shop_ids):
            for event in self._waiters.get(shop_id, ()):
                event.set()

    def subscribe(self, shop_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[shop_id].add(event)
        return event

    def unsubscribe(self, shop_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(shop_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[shop_id]
