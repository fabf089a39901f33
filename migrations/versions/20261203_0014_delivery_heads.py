"""The relay's pick without a scan: each conversation's next reply.created delivery to an endpoint is marked as the
head of its line (deliveries.head), so the pick reads only heads, per endpoint, from one partial index.

A delivery without an order (every event but reply.created) is always a head. A reply.created delivery is a head
when it is written and no earlier delivery of its conversation to that endpoint is pending; otherwise the relay
makes it the head when the one before it is delivered or failed (app/db/deliveries.py). Both sides take the same
per-conversation advisory lock first and then read with a fresh snapshot, so a reply committed while the one
before it is being recorded is never left without a head, nor given a second one: triage_delivery_head() is that
lock and read on the writing side, called from the statement that writes the deliveries.

ix_deliveries_ready replaces ix_deliveries_due: pending heads by endpoint and due time, walked one endpoint after
another by the pick (a skip scan) and read in due order within each.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
READY = sa.text("status = 'pending' AND head")

# Whether a new delivery of conversation `p_key` to endpoint `p_endpoint` is the head of its line. VOLATILE, so
# the read after the lock takes a fresh snapshot: it sees a delivery of the same conversation committed while
# the calling statement waited (for the ticket's row, or for this lock), which the statement's own snapshot
# would not. The lock is held to the end of the transaction.
HEAD_FUNCTION = """
CREATE OR REPLACE FUNCTION triage_delivery_head(p_endpoint text, p_key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_key IS NULL THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('triage_delivery_order'), hashtext(p_key));
    RETURN NOT EXISTS (SELECT 1 FROM deliveries
                       WHERE endpoint_id = p_endpoint AND order_key = p_key AND status = 'pending');
END
$$
"""


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("head", sa.Boolean(), nullable=False, server_default=sa.true()))
    # Pending deliveries of a conversation already waiting behind an earlier one are not heads.
    op.execute("UPDATE deliveries SET head = (id = (SELECT min(p.id) FROM deliveries p WHERE p.status = 'pending' "
               "AND p.endpoint_id = deliveries.endpoint_id AND p.order_key = deliveries.order_key)) "
               "WHERE status = 'pending' AND order_key IS NOT NULL")
    # Every statement that writes a delivery says whether it is a head.
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("head", server_default=None, existing_type=sa.Boolean(), existing_nullable=False)
    op.drop_index("ix_deliveries_due", table_name="deliveries", postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index("ix_deliveries_ready", "deliveries", ["endpoint_id", "next_attempt_at"], postgresql_where=READY,
                    sqlite_where=READY)
    if _postgres():
        op.execute(HEAD_FUNCTION)


def downgrade() -> None:
    if _postgres():
        op.execute("DROP FUNCTION triage_delivery_head(text, text)")
    op.drop_index("ix_deliveries_ready", table_name="deliveries", postgresql_where=READY, sqlite_where=READY)
    op.create_index("ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=PENDING,
                    sqlite_where=PENDING)
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("head")
