"""The SLA watch's statements: open episodes whose first response is past due, each recorded once.

Written once for both databases: the record's key, not a lock, makes each breach once (an INSERT ... ON CONFLICT
DO NOTHING that another process won returns nothing).
"""

from datetime import datetime

from app.db.driver import Driver, Record, decoded, json_text
from app.db.models import UNBREACHED_POSTGRES, UNBREACHED_SQLITE
from app.domain import EventKind

_OVERDUE = (
    "SELECT t.id, t.shop_id, t.platform, t.conversation_id, t.tier, t.priority, t.primary_intent, t.queue, "
    "t.assigned_agent_id, t.opened_at, t.first_response_due_at FROM tickets t "
    "WHERE {unbreached} AND t.first_response_due_at <= $1 "
    "AND NOT EXISTS (SELECT 1 FROM sla_breaches b WHERE b.ticket_id = t.id AND b.opened_at = t.opened_at) "
    "ORDER BY t.first_response_due_at LIMIT $2")
# ix_tickets_unanswered's predicate word for word (migration 0029); the look into sla_breaches stays for a mark
# that a rewrite of the ticket row could lose.
_OVERDUE_POSTGRES = _OVERDUE.format(unbreached=UNBREACHED_POSTGRES)
_OVERDUE_SQLITE = _OVERDUE.format(unbreached=UNBREACHED_SQLITE)
_RECORD = ("INSERT INTO sla_breaches (ticket_id, opened_at, due_at, at) VALUES ($1, $2, $3, $4) "
           "ON CONFLICT (ticket_id, opened_at) DO NOTHING RETURNING ticket_id")


def overdue_sql(db: Driver) -> str:
    """The look for overdue episodes in the database's words ($1 now, $2 limit)."""
    return _OVERDUE_POSTGRES if db.postgres else _OVERDUE_SQLITE


async def overdue(db: Driver, *, now: datetime, limit: int) -> list[Record]:
    """Open episodes unanswered past their due time and not yet recorded, the most overdue first."""
    return [decoded(r) for r in await db.rows(overdue_sql(db), now, limit)]


async def record(db: Driver, *, ticket: Record, now: datetime) -> bool:
    """Record the episode's breach, with its event in the ticket's trail; False when another process recorded it
    first."""
    if await db.row(_RECORD, ticket["id"], ticket["opened_at"], ticket["first_response_due_at"], now) is None:
        return False
    # Out of the watch's index from now on (the trigger on sla_breaches already holds the ticket's row).
    await db.execute("UPDATE tickets SET breach_recorded_for = opened_at WHERE id = $1 AND opened_at = $2",
                     ticket["id"], ticket["opened_at"])
    await db.execute("INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data) "
                     "VALUES ($1, $2, $3, $4, 'system', $5)", ticket["id"], ticket["shop_id"], now,
                     EventKind.SLA_BREACHED.value, json_text({"due_at": ticket["first_response_due_at"].isoformat()}))
    return True
