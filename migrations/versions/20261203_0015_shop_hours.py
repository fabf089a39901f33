"""Service hours (issue 16): each shop's time zone, shifts, holiday calendar, closed dates and off-hours reply, and the
shifts each agent works.

Existing shops get the defaults (Asia/Shanghai, day 09:00-18:00 and evening 15:00-24:00 every day, mainland
holidays, no closed dates, no off-hours reply) through the columns' server defaults; existing agents work every
shift (null).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Written out here, not imported: a migration keeps the defaults of its day.
DEFAULT_SHIFTS = ('[{"name":"day","start":"09:00","end":"18:00","days":["mon","tue","wed","thu","fri","sat","sun"]},'
                  '{"name":"evening","start":"15:00","end":"24:00","days":["mon","tue","wed","thu","fri","sat","sun"]}]')


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Shanghai"))
        batch.add_column(sa.Column("shifts", JSON, nullable=False, server_default=DEFAULT_SHIFTS))
        batch.add_column(sa.Column("holidays", sa.String(8), nullable=True, server_default="CN"))
        batch.add_column(sa.Column("closed_dates", JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("off_hours_reply", sa.Text(), nullable=True))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("shifts", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("shifts")
    with op.batch_alter_table("shops") as batch:
        for column in ("off_hours_reply", "closed_dates", "holidays", "shifts", "timezone"):
            batch.drop_column(column)
