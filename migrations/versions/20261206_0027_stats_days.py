"""Statistics over long windows from a daily rollup: stats_days and stats_stale_days.

A window of 30 or 92 days holds tens of thousands of episodes; reading and aggregating each one's summary in SQL
costs tens of microseconds. The statistics worker (app/services/rollups.py) keeps, per shop and UTC day whose
figures can no longer change by themselves, one row: each episode's measures and each round's, packed (app/db/
figures.py), with the names of their queues, tiers and agents, and from when (settled_at) the figures hold. A window
aggregates its rolled days' rows and its other days' summaries in memory, exactly as the statement would.

A write that changes a summary of a day that may be rolled (its episode opened more than a day ago) appends the day
to stats_stale_days in the same transaction, from a trigger on episode_facts and round_facts: a comparison, and a
plain insert for the rare write to an old episode (no key, so no writer waits for another). The statistics read
a stale day from the summaries until the worker has rolled it again.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
# The worker rolls a day two days after its end (app/db/rollups.py, ROLL_AFTER): a write marks anything older than
# one, so a transaction open for up to a day still marks what it changes.
STALE_AFTER = "1 day"
# (table, its day column)
SUMMARIES = (("episode_facts", "opened_at"), ("round_facts", "episode"))


def _postgres_triggers(stale_after: str = STALE_AFTER) -> list[str]:
    statements = []
    for table, column in SUMMARIES:
        statements.append(f"""
CREATE OR REPLACE FUNCTION triage_{table}_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO stats_stale_days (shop_id, day) VALUES (OLD.shop_id, (OLD.{column} AT TIME ZONE 'UTC')::date);
    ELSE
        INSERT INTO stats_stale_days (shop_id, day) VALUES (NEW.shop_id, (NEW.{column} AT TIME ZONE 'UTC')::date);
    END IF;
    RETURN NULL;
END
$$""")
        # clock_timestamp(): the time of the write, not of its transaction's start.
        statements.append(f"CREATE TRIGGER {table}_stale AFTER INSERT OR UPDATE ON {table} FOR EACH ROW "
                          f"WHEN (NEW.{column} < clock_timestamp() - interval '{stale_after}') "
                          f"EXECUTE FUNCTION triage_{table}_stale()")
        statements.append(f"CREATE TRIGGER {table}_stale_gone AFTER DELETE ON {table} FOR EACH ROW "
                          f"WHEN (OLD.{column} < clock_timestamp() - interval '{stale_after}') "
                          f"EXECUTE FUNCTION triage_{table}_stale()")
    return statements


def _sqlite_triggers(stale_after: str = STALE_AFTER) -> list[str]:
    statements = []
    for table, column in SUMMARIES:
        for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            # Times are stored as naive UTC text ('YYYY-MM-DD HH:MM:SS...'), which compares as text.
            statements.append(
                f"CREATE TRIGGER {table}_stale_{event.lower()} AFTER {event} ON {table} "
                f"WHEN {row}.{column} < datetime('now', '-{stale_after}') BEGIN "
                f"INSERT INTO stats_stale_days (shop_id, day) VALUES ({row}.shop_id, date({row}.{column})); END")
    return statements


def upgrade() -> None:
    op.create_table(
        "stats_days",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("settled_at", TIME, nullable=False),
        sa.Column("rolled_at", TIME, nullable=False),
        sa.Column("names", sa.Text(), nullable=False),
        sa.Column("episodes", sa.LargeBinary(), nullable=False),
        sa.Column("rounds", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "day", name=op.f("pk_stats_days")),
    )
    op.create_table(
        "stats_stale_days",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stats_stale_days")),
    )
    op.create_index("ix_stats_stale_days_shop", "stats_stale_days", ["shop_id", "day"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _postgres_triggers() if postgres else _sqlite_triggers():
        op.execute(statement)


def _drop_triggers(postgres: bool) -> None:
    if postgres:
        for table, _ in SUMMARIES:
            op.execute(f"DROP TRIGGER {table}_stale ON {table}")
            op.execute(f"DROP TRIGGER {table}_stale_gone ON {table}")
            op.execute(f"DROP FUNCTION triage_{table}_stale()")
    else:
        for table, _ in SUMMARIES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_stale_{event}")


def downgrade() -> None:
    _drop_triggers(op.get_bind().dialect.name == "postgresql")
    op.drop_index("ix_stats_stale_days_shop", table_name="stats_stale_days")
    op.drop_table("stats_stale_days")
    op.drop_table("stats_days")
