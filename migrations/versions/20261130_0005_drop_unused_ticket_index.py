"""Drop ix_tickets_shop_created: no query reads it, and every ticket insert and update maintained it.

Tickets of a shop are found through the unique (shop_id, platform, conversation_id) index and the claim
indexes; nothing filters or orders tickets by created_at. A claim and a resolve each write a new row version
(status, agent and lease are indexed, so the update is never HOT), and each version cost an entry here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_shop_created")


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index("ix_tickets_shop_created", ["shop_id", "created_at"], unique=False)
