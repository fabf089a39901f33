"""The SLA watch (SPEC 9.1 sla.breached): every process looks once a second for first responses past due.

Each breach is recorded once per episode by its key (app/db/sla.py), with the ticket's `sla_breached` event and
the outbox's sla.breached event in the same transaction, however many processes watch.
"""

import logging
from datetime import datetime

from app.clock import utcnow
from app.db import sla as sla_sql
from app.db.deliveries import delivery_store_for
from app.db.driver import driver
from app.db.errors import translated
from app.db.session import DriverConnections
from app.domain import DeliveryEvent, rfc3339, ticket_event_data
from app.services.notify import Notifier
from app.services.periodic import every

log = logging.getLogger("app.sla")

BATCH = 500


async def record_breaches(drivers: DriverConnections, *, now: datetime, limit: int = BATCH) -> tuple[int, int]:
    """Record every overdue episode not recorded yet, with its events; how many, and how many deliveries."""
    async with driver(drivers) as db:
        # Read first, outside a transaction: on SQLite a look that finds nothing takes no write lock.
        if not await sla_sql.overdue(db, now=now, limit=limit):
            return 0, 0
        breaches = deliveries = 0
        async with db.transaction():
            outbox = delivery_store_for(db)
            # The most overdue are chosen, then recorded in ticket id order: each record locks its ticket (the
            # breach's trigger reads it FOR SHARE), and ingestion locks a group's tickets in id order too, so the
            # two queue behind each other instead of deadlocking (PostgreSQL aborted ingestion groups so).
            chosen = await sla_sql.overdue(db, now=now, limit=limit)
            for ticket in sorted(chosen, key=lambda t: t["id"]):
                if not await sla_sql.record(db, ticket=ticket, now=now):
                    continue
                breaches += 1
                deliveries += await outbox.enqueue(
                    shop_id=ticket["shop_id"], event=DeliveryEvent.SLA_BREACHED, ticket_id=ticket["id"],
                    message_id=None, now=now, data=ticket_event_data(
                        ticket_id=ticket["id"], shop_id=ticket["shop_id"], platform=ticket["platform"],
                        conversation_id=ticket["conversation_id"], tier=ticket["tier"], priority=ticket["priority"],
                        primary=ticket["primary_intent"], queue=ticket["queue"],
                        assigned_agent_id=ticket["assigned_agent_id"], opened_at=rfc3339(ticket["opened_at"]),
                        due_at=rfc3339(ticket["first_response_due_at"]), breached_at=rfc3339(now)))
    return breaches, deliveries


class BreachWatch:
    """Run as the `sla-watch` worker (app/workers.py)."""

    def __init__(self, drivers: DriverConnections, notifier: Notifier, *, interval: float = 1.0) -> None:
        self._drivers = drivers
        self._notifier = notifier
        self._interval = interval

    async def run_once(self) -> int:
        """Record the breaches due now; how many."""
        total = 0
        while True:
            async with translated():
                breaches, deliveries = await record_breaches(self._drivers, now=utcnow())
            if deliveries:
                self._notifier.outbox_written()
            total += breaches
            if breaches < BATCH:
                return total

    async def run(self) -> None:
        """The watch's loop: a look every interval; a failed look is logged and tried again."""
        await every(self._interval, self.run_once, what="SLA watch", log=log)
