"""Episode summaries say whether a later episode followed (episode_facts.ended), so the statistics read the ticket row
only for the episodes whose figures still depend on it.

A running episode's holder and due time are on its ticket row alone; its queue and resolution are on both (the
summary follows the same events). The statistics now read the ticket of a running episode that no agent answered or
resolved yet, instead of the ticket of every episode of the window. The trigger on ticket_events marks the previous
episode ended when a ticket reopens; existing summaries are marked here, and both tables analysed for the planner.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STARTS = "IF NEW.kind IN ('created', 'reopened') THEN\n"
_ENDED = ("        UPDATE episode_facts SET ended = true WHERE ticket_id = NEW.ticket_id AND opened_at < NEW.at "
          "AND NOT ended;\n")


def _previous() -> object:
    return op.get_context().script.get_revision("0019").module


def upgrade() -> None:
    # A plain ALTER on SQLite too: a copy of the table would trip the triggers that name it.
    op.add_column("episode_facts", sa.Column("ended", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    op.execute("UPDATE episode_facts SET ended = true WHERE EXISTS (SELECT 1 FROM episode_facts later "
               "WHERE later.ticket_id = episode_facts.ticket_id AND later.opened_at > episode_facts.opened_at)")
    before = _previous()
    if op.get_bind().dialect.name == "postgresql":
        function = before.POSTGRES[0]  # type: ignore[attr-defined]
        assert _STARTS in function
        op.execute(function.replace(_STARTS, _STARTS + _ENDED, 1))
        op.execute("ANALYZE episode_facts")
        op.execute("ANALYZE round_facts")
        return
    opened = before.SQLITE[0]  # type: ignore[attr-defined]
    op.execute("DROP TRIGGER episode_facts_opened")
    op.execute(opened.replace(" BEGIN ", " BEGIN UPDATE episode_facts SET ended = 1 WHERE ticket_id = NEW.ticket_id "
                              "AND opened_at < NEW.at AND NOT ended; ", 1))


def downgrade() -> None:
    before = _previous()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(before.POSTGRES[0])  # type: ignore[attr-defined]
    else:
        op.execute("DROP TRIGGER episode_facts_opened")
        op.execute(before.SQLITE[0])  # type: ignore[attr-defined]
    op.drop_column("episode_facts", "ended")
