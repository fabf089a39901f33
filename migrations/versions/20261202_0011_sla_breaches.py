"""sla.breached events exactly once per episode: sla_breaches keyed by (ticket, episode start), and the index the
watch reads overdue tickets from.

Every process watches for first responses past due. The one whose INSERT ... ON CONFLICT DO NOTHING stores the
episode's row writes the event, in the same transaction; the others find the key taken. ix_tickets_unanswered
holds only open tickets not yet answered, by due time, so a look once a second reads only the overdue ones.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
UNANSWERED = sa.text("first_response_at IS NULL AND status <> 'resolved'")


def upgrade() -> None:
    op.create_table(
        "sla_breaches",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("due_at", TIME, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "opened_at", name=op.f("pk_sla_breaches")),
    )
    op.create_index("ix_tickets_unanswered", "tickets", ["first_response_due_at"], postgresql_where=UNANSWERED,
                    sqlite_where=UNANSWERED)


def downgrade() -> None:
    op.drop_index("ix_tickets_unanswered", table_name="tickets")
    op.drop_table("sla_breaches")
