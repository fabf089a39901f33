"""Claim order tie-break (tickets.opened_seq) and an index for purging old idempotency keys.

One group commit gives every ticket it opens the same opened_at, so equal-priority tickets of one
batch tied and came out in physical order. opened_seq is the id of the message that opened the
episode (messages are numbered in the order they were received); both claim indexes end with it.
Open tickets are backfilled from their messages; resolved ones take a new value when they reopen.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
QUEUED = sa.text("status = 'queued'")
CLAIM = ["shop_id", "queue", "tier", sa.text("priority DESC"), "opened_at"]
CLAIM_SHOP = ["shop_id", "tier", sa.text("priority DESC"), "opened_at"]

# The opening message was stored in the same transaction as the episode began: received_at = opened_at,
# and it is the lowest id of the episode's messages.
BACKFILL = """
UPDATE tickets SET opened_seq = COALESCE((
    SELECT min(m.id) FROM messages m
    WHERE m.ticket_id = tickets.id AND m.direction = 'inbound' AND m.received_at >= tickets.opened_at), 0)
WHERE status <> 'resolved'
"""


def _claim_indexes(batch_op: BatchOperations, *, tie_break: bool) -> None:
    tail = ["opened_seq"] if tie_break else []
    batch_op.create_index("ix_tickets_claim", [*CLAIM, *tail], unique=False,
                          postgresql_where=QUEUED, sqlite_where=QUEUED)
    batch_op.create_index("ix_tickets_claim_shop", [*CLAIM_SHOP, *tail], unique=False,
                          postgresql_where=QUEUED, sqlite_where=QUEUED)


def _drop_claim_indexes(batch_op: BatchOperations) -> None:
    batch_op.drop_index("ix_tickets_claim_shop", postgresql_where=QUEUED, sqlite_where=QUEUED)
    batch_op.drop_index("ix_tickets_claim", postgresql_where=QUEUED, sqlite_where=QUEUED)


def upgrade() -> None:
    # A constant server default: SQLite adds the column in place, without copying the table.
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("opened_seq", BIGID, server_default="0", nullable=False))
        _drop_claim_indexes(batch_op)
    op.execute(BACKFILL)
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        _claim_indexes(batch_op, tie_break=True)
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_created")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        _drop_claim_indexes(batch_op)
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("opened_seq")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        _claim_indexes(batch_op, tie_break=False)
