"""Most of a ticket's writes change no indexed column again, so PostgreSQL can make them in place (heap-only).

Every buyer message moves its ticket's last_message_at, and ix_tickets_pending_quiet (0022) indexed it: PostgreSQL
then writes a new entry in each of the ticket's indexes for every update (seven, counting partial ones whose
predicate the row meets and those whose predicate columns it reads), and scans later step over the dead ones. The
index becomes ix_tickets_pending (shop alone): the auto-close worker reads a shop's snoozed tickets there and their
last message on the row. With no indexed column changed, an update that finds room on its page adds no index entry;
a fillfactor of 80 leaves that room on the pages written from now on.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_tickets_pending_quiet", "tickets", postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_tickets_pending", "tickets", ["shop_id"], postgresql_where=PENDING, sqlite_where=PENDING)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tickets SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tickets RESET (fillfactor)")
    op.drop_index("ix_tickets_pending", "tickets", postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_tickets_pending_quiet", "tickets", ["shop_id", "last_message_at"], postgresql_where=PENDING,
                    sqlite_where=PENDING)
