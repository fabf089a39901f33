"""The SLA watch reads only episodes whose breach is not recorded yet: tickets.breach_recorded_for.

ix_tickets_unanswered (migration 0011) held every open ticket not answered yet, breached or not, and the watch
filtered the recorded breaches out with a look into sla_breaches per entry. A backlog nobody answers is all
breached, so each look once a second read the whole backlog: 58,881 pages a look at 200k messages in
bench/scale.py's load, and it grew with the backlog. The watch now marks the ticket with the start of the episode
whose breach it recorded, in the same transaction, and the index leaves such tickets out; a new episode (a
reopening sets opened_at) is in it again without any other write knowing about the mark.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
# Migration 0011's predicate, and app/db/models.py's UNBREACHED_* as of this revision.
UNANSWERED = "first_response_at IS NULL AND status <> 'resolved'"
UNBREACHED_POSTGRES = f"{UNANSWERED} AND breach_recorded_for IS DISTINCT FROM opened_at"
UNBREACHED_SQLITE = f"{UNANSWERED} AND breach_recorded_for IS NOT opened_at"


def upgrade() -> None:
    op.add_column("tickets", sa.Column("breach_recorded_for", TIME, nullable=True))
    op.execute("UPDATE tickets SET breach_recorded_for = opened_at WHERE first_response_at IS NULL "
               "AND status <> 'resolved' AND EXISTS (SELECT 1 FROM sla_breaches b "
               "WHERE b.ticket_id = tickets.id AND b.opened_at = tickets.opened_at)")
    op.drop_index("ix_tickets_unanswered", table_name="tickets")
    op.create_index("ix_tickets_unanswered", "tickets", ["first_response_due_at"],
                    postgresql_where=sa.text(UNBREACHED_POSTGRES), sqlite_where=sa.text(UNBREACHED_SQLITE))


def downgrade() -> None:
    op.drop_index("ix_tickets_unanswered", table_name="tickets")
    op.create_index("ix_tickets_unanswered", "tickets", ["first_response_due_at"],
                    postgresql_where=sa.text(UNANSWERED), sqlite_where=sa.text(UNANSWERED))
    # Plain ALTER on both (SQLite 3.35+): a batch copy of tickets would drop the table's triggers on SQLite.
    op.execute("ALTER TABLE tickets DROP COLUMN breach_recorded_for")
