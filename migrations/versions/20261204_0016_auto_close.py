"""Stale work closes itself: shops.auto_close_after_hours, and the index the closer reads queued tickets from.

A queued ticket whose conversation has been silent for the shop's auto_close_after_hours (72 unless set; 0 turns it
off) is resolved by the `auto-close` worker, with a `resolved` event by `system` (app/services/autoclose.py).
ix_tickets_queued holds only queued tickets, by shop, queue and episode start: a silent ticket opened its episode
at least that long ago (its episode start is at or before its last message), so the closer reads each queue's
oldest entries only. The same index gives a queue's oldest wait in one probe.

Creating the index takes a lock that blocks writes to tickets (not reads) while it is built.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("auto_close_after_hours", sa.Integer(), nullable=False, server_default="72"))
    if op.get_bind().dialect.name == "postgresql":
        # SQLite would copy the shops table to add a check; the API refuses other values on both.
        op.create_check_constraint(op.f("ck_shops_auto_close_range"), "shops", "auto_close_after_hours BETWEEN 0 AND 8760")
    op.create_index("ix_tickets_queued", "tickets", ["shop_id", "queue", "opened_at"], postgresql_where=QUEUED,
                    sqlite_where=QUEUED)


def downgrade() -> None:
    op.drop_index("ix_tickets_queued", table_name="tickets")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_shops_auto_close_range"), "shops", type_="check")
    with op.batch_alter_table("shops") as batch:
        batch.drop_column("auto_close_after_hours")
