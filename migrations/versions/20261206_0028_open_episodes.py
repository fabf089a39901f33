"""A rolled day leaves its open episodes to the summaries: ix_episode_facts_open.

Migration 0027's worker did not roll a day while any episode of it was open (running, unresolved, answered by no
agent: its breach waits for as_of, and its agent is whoever holds the ticket, which a claim changes without a summary
write); a day with one conversation nobody answers stayed out of the rollup until it was answered or closed, and with
auto-close off, for ever. Now the day is rolled without its open episodes (and their rounds), and a window reads
those from the summaries through this partial index of them. An episode stops being open only by a write to its
summary, which marks its day stale. Days rolled before had no open episode, so they stay as they are.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app/db/models.py's OPEN_EPISODE as of this revision.
OPEN_EPISODE = "NOT ended AND resolved_at IS NULL AND (first_response_at IS NULL OR responder IS NULL)"


def upgrade() -> None:
    op.create_index("ix_episode_facts_open", "episode_facts", ["shop_id", "opened_at"],
                    postgresql_where=sa.text(OPEN_EPISODE), sqlite_where=sa.text(OPEN_EPISODE))


def downgrade() -> None:
    op.drop_index("ix_episode_facts_open", table_name="episode_facts")
