"""Claim index across an agent's queues: (shop, tier, priority desc, opened_at) over queued tickets.

An agent serving several queues claims in one order across all of them; ix_tickets_claim (queue second)
serves one queue, so with several the claim sorted every queued ticket of the shop. This index is read
in claim order and the first unlocked ticket of a served queue ends the scan.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index("ix_tickets_claim_shop", ["shop_id", "tier", sa.text("priority DESC"), "opened_at"],
                              unique=False, postgresql_where=QUEUED, sqlite_where=QUEUED)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_claim_shop", postgresql_where=QUEUED, sqlite_where=QUEUED)
