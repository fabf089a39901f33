"""reply_templates: a shop's own reply templates (issue 17), the whole set in one row, replaced as one.

A shop without a row gets the templates that ship with the service (app/triage/rules/replies.yaml). The set is
read whole for every suggestion and written whole by PUT, so one JSON value per shop is one read and one
atomic write; `version` counts the writes, so a console can tell the set changed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "reply_templates",
        sa.Column("shop_id", sa.String(length=64), nullable=False),
        sa.Column("templates", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name=op.f("fk_reply_templates_shop_id_shops"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("shop_id", name=op.f("pk_reply_templates")),
    )


def downgrade() -> None:
    op.drop_table("reply_templates")
