"""A day is rolled seven hours after its end instead of two days: the stale marks start six hours after an episode
opened instead of one day.

A window reads its days not rolled yet from the summaries, episode by episode, and with a two-day wait those were
the last two to three days: at 1 M messages (bench/scale.py, docs/design.md "At 1,000,000 messages") about 5,400
episodes and their rounds, half of a 30-day window's time. Now they are today, and yesterday until 07:00 UTC.

The rule that keeps a rolled day exact is unchanged: a write to an episode opened more than STALE_AFTER ago marks
its day stale, and the worker rolls a day once every episode of it is older than that by a margin longer than any
of the service's transactions (an hour; app/db/rollups.py, ROLL_AFTER). More writes are marked now (an answer
or a close six hours after the episode opened); each costs an insert, and its day is rolled again at the next pass.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STALE_AFTER = "6 hours"


def _triggers(stale_after: str) -> None:
    stats_days = op.get_context().script.get_revision("0027").module
    postgres = op.get_bind().dialect.name == "postgresql"
    stats_days._drop_triggers(postgres)
    build = stats_days._postgres_triggers if postgres else stats_days._sqlite_triggers
    for statement in build(stale_after):
        op.execute(statement)


def upgrade() -> None:
    _triggers(STALE_AFTER)


def downgrade() -> None:
    _triggers(op.get_context().script.get_revision("0027").module.STALE_AFTER)
