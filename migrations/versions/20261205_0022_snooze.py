"""Snooze: a ticket may be `pending` (out of every queue) until `snoozed_until` or the buyer's next message.

The status check gains `pending`: on PostgreSQL the ticket_status domain's constraint is replaced; on SQLite the
check is widened in the table's stored definition (sqlite_schema, the procedure SQLite documents for changes that
leave every stored row valid), since copying the table would drop the counters' triggers on it and the claim index
on an expression. ix_tickets_snoozed (due time) serves the lease reaper's wake-ups, ix_tickets_pending_quiet (shop,
last message) the auto-close worker; both hold pending tickets only. Down: pending tickets go back to their queue
first.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = "'queued', 'assigned', 'resolved'"
AFTER = "'queued', 'assigned', 'resolved', 'pending'"
PENDING = sa.text("status = 'pending'")


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _status_values(old: str, new: str) -> None:
    if _postgres():
        op.execute("ALTER DOMAIN ticket_status DROP CONSTRAINT ck_ticket_status")
        op.execute(f"ALTER DOMAIN ticket_status ADD CONSTRAINT ck_ticket_status CHECK (VALUE IN ({new}))")
        return
    bind = op.get_bind()
    stored = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tickets'").scalar_one()
    check = f"CHECK (status IN ({old}))"
    assert stored.count(check) == 1, "the tickets table's status check is not as migration 0006 left it"
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'tickets'",
                         (stored.replace(check, f"CHECK (status IN ({new}))"),))
    # A new schema version makes every connection read the changed definition.
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _status_values(BEFORE, AFTER)
    op.add_column("tickets", sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_tickets_snoozed", "tickets", ["snoozed_until"], postgresql_where=PENDING,
                    sqlite_where=PENDING)
    op.create_index("ix_tickets_pending_quiet", "tickets", ["shop_id", "last_message_at"], postgresql_where=PENDING,
                    sqlite_where=PENDING)


def downgrade() -> None:
    op.execute("UPDATE tickets SET status = 'queued' WHERE status = 'pending'")
    op.drop_index("ix_tickets_pending_quiet", "tickets", postgresql_where=PENDING, sqlite_where=PENDING)
    op.drop_index("ix_tickets_snoozed", "tickets", postgresql_where=PENDING, sqlite_where=PENDING)
    # A plain drop on SQLite too (3.35+): a copy of the table would drop the triggers on it.
    with op.batch_alter_table("tickets", recreate="never") as batch_op:
        batch_op.drop_column("snoozed_until")
    _status_values(AFTER, BEFORE)
