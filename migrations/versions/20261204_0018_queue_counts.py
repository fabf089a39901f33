"""Queue gauges without counting the tickets: counters kept by triggers, and the oldest wait from an index.

queue_counts holds, per shop, queue and tier, the queued tickets (`queued`) and the open tickets whose first response
is overdue (`overdue`). Triggers on tickets and sla_breaches append each change to queue_count_changes, a table
without index that concurrent writers only insert into, so a claim never waits for another claim's counter; a
worker folds the changes into queue_counts every second (PostgreSQL: one statement, DELETE ... RETURNING into an
upsert, so a change is counted once whether or not it was folded yet). A reader adds up queue_counts and the
changes not folded yet.

- queued: a ticket counts while its status is `queued`, under its shop, queue and tier.
- overdue: an open ticket with no first response counts once the SLA watch recorded its episode's breach
  (sla_breaches, at most a second after the due time), until it is answered, resolved, or reopened as a new episode.
  The trigger on sla_breaches reads the ticket FOR SHARE, and a reply's trigger looks the breach up after its
  update: whichever commits first, the other sees it, so a breach racing a reply is counted and uncounted once.

The trigger on tickets fires only when the status, queue, tier, episode or first response changes (a reply after
the first, a heartbeat or a lease renewal do not); a claim appends one row. ix_tickets_queued gains the tier, so the
oldest queued episode of each queue and tier is its first entry.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")
# A ticket's breach recorded for its current episode (the SLA watch's key).
_BREACHED = "EXISTS (SELECT 1 FROM sla_breaches b WHERE b.ticket_id = {t}.id AND b.opened_at = {t}.opened_at)"
_OPEN = "{t}.status <> 'resolved' AND {t}.first_response_at IS NULL"
# The columns a count depends on; an update that changes none of them is not counted again.
_CHANGED = ("OLD.status IS DISTINCT FROM NEW.status OR OLD.queue IS DISTINCT FROM NEW.queue "
            "OR OLD.tier IS DISTINCT FROM NEW.tier OR OLD.shop_id IS DISTINCT FROM NEW.shop_id "
            "OR OLD.opened_at IS DISTINCT FROM NEW.opened_at "
            "OR (OLD.first_response_at IS NULL) IS DISTINCT FROM (NEW.first_response_at IS NULL)")

POSTGRES_FUNCTIONS = [f"""
CREATE OR REPLACE FUNCTION triage_ticket_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was_open boolean := false;
    is_open boolean := false;
    was_overdue boolean := false;
    is_overdue boolean := false;
    moved boolean := true;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was_open := {_OPEN.format(t='OLD')};
    END IF;
    IF TG_OP <> 'DELETE' THEN
        is_open := {_OPEN.format(t='NEW')};
    END IF;
    IF TG_OP = 'UPDATE' THEN
        moved := was_open <> is_open OR OLD.shop_id <> NEW.shop_id OR OLD.queue <> NEW.queue OR OLD.tier <> NEW.tier
                 OR OLD.opened_at <> NEW.opened_at;
    END IF;
    -- Overdue is looked up only when it may change: a claim or a release keeps the ticket where it was.
    IF moved THEN
        IF was_open THEN
            was_overdue := {_BREACHED.format(t='OLD')};
        END IF;
        IF is_open THEN
            is_overdue := {_BREACHED.format(t='NEW')};
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status = 'queued' OR was_overdue THEN
            INSERT INTO queue_count_changes (shop_id, queue, tier, queued, overdue)
            VALUES (OLD.shop_id, OLD.queue, OLD.tier, -(OLD.status = 'queued')::int, -was_overdue::int);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status = 'queued' OR is_overdue THEN
            INSERT INTO queue_count_changes (shop_id, queue, tier, queued, overdue)
            VALUES (NEW.shop_id, NEW.queue, NEW.tier, (NEW.status = 'queued')::int, is_overdue::int);
        END IF;
    END IF;
    RETURN NULL;
END
$$
""", """
CREATE OR REPLACE FUNCTION triage_breach_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    SELECT shop_id, queue, tier INTO t FROM tickets
    WHERE id = NEW.ticket_id AND opened_at = NEW.opened_at AND status <> 'resolved' AND first_response_at IS NULL
    FOR SHARE;
    IF FOUND THEN
        INSERT INTO queue_count_changes (shop_id, queue, tier, queued, overdue) VALUES (t.shop_id, t.queue, t.tier, 0, 1);
    END IF;
    RETURN NULL;
END
$$
"""]
POSTGRES_TRIGGERS = [
    "CREATE TRIGGER tickets_counted_insert_delete AFTER INSERT OR DELETE ON tickets "
    "FOR EACH ROW EXECUTE FUNCTION triage_ticket_counts()",
    f"CREATE TRIGGER tickets_counted_update AFTER UPDATE ON tickets FOR EACH ROW WHEN ({_CHANGED}) "
    "EXECUTE FUNCTION triage_ticket_counts()",
    "CREATE TRIGGER sla_breaches_counted AFTER INSERT ON sla_breaches FOR EACH ROW "
    "EXECUTE FUNCTION triage_breach_counts()",
]


def _sqlite_side(t: str, sign: str) -> str:
    """SQLite's trigger statement for one side (OLD leaving, NEW arriving) of a change."""
    overdue = f"({_OPEN.format(t=t)} AND {_BREACHED.format(t=t)})"
    return (f"INSERT INTO queue_count_changes (shop_id, queue, tier, queued, overdue) "
            f"SELECT {t}.shop_id, {t}.queue, {t}.tier, {sign}({t}.status = 'queued'), {sign}{overdue} "
            f"WHERE {t}.status = 'queued' OR {overdue};")


SQLITE_TRIGGERS = [
    f"CREATE TRIGGER tickets_counted_insert AFTER INSERT ON tickets BEGIN {_sqlite_side('NEW', '')} END",
    f"CREATE TRIGGER tickets_counted_delete AFTER DELETE ON tickets BEGIN {_sqlite_side('OLD', '-')} END",
    f"CREATE TRIGGER tickets_counted_update AFTER UPDATE ON tickets WHEN {_CHANGED.replace('IS DISTINCT FROM', 'IS NOT')} "
    f"BEGIN {_sqlite_side('OLD', '-')} {_sqlite_side('NEW', '')} END",
    "CREATE TRIGGER sla_breaches_counted AFTER INSERT ON sla_breaches BEGIN "
    "INSERT INTO queue_count_changes (shop_id, queue, tier, queued, overdue) SELECT shop_id, queue, tier, 0, 1 "
    "FROM tickets WHERE id = NEW.ticket_id AND opened_at = NEW.opened_at AND status <> 'resolved' "
    "AND first_response_at IS NULL; END",
]
TRIGGER_NAMES = {"tickets": ["tickets_counted_insert_delete", "tickets_counted_insert", "tickets_counted_delete",
                             "tickets_counted_update"], "sla_breaches": ["sla_breaches_counted"]}
# What the counters start from: the tickets as they are.
INITIAL_COUNTS = (
    "INSERT INTO queue_counts (shop_id, queue, tier, queued, overdue) "
    "SELECT shop_id, queue, tier, sum(queued), sum(overdue) FROM ("
    "SELECT shop_id, queue, tier, 1 AS queued, 0 AS overdue FROM tickets WHERE status = 'queued' UNION ALL "
    f"SELECT shop_id, queue, tier, 0, 1 FROM tickets t WHERE {_OPEN.format(t='t')} AND {_BREACHED.format(t='t')}"
    ") c GROUP BY shop_id, queue, tier")


def upgrade() -> None:
    def columns() -> list[sa.Column[object]]:
        return [sa.Column("shop_id", sa.String(64), nullable=False), sa.Column("queue", sa.String(64), nullable=False),
                sa.Column("tier", sa.SmallInteger(), nullable=False),
                sa.Column("queued", sa.Integer(), nullable=False, server_default="0"),
                sa.Column("overdue", sa.Integer(), nullable=False, server_default="0")]

    op.create_table("queue_counts", *columns(),
                    sa.PrimaryKeyConstraint("shop_id", "queue", "tier", name=op.f("pk_queue_counts")))
    # No key: writers only append, and the fold takes every row.
    op.create_table("queue_count_changes", *columns())
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # The counts start from the tickets as they are at the commit: writes wait meanwhile, reads go on.
        op.execute("LOCK TABLE tickets, sla_breaches IN SHARE MODE")
        for statement in POSTGRES_FUNCTIONS + POSTGRES_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    op.execute(INITIAL_COUNTS)
    op.drop_index("ix_tickets_queued", table_name="tickets")
    op.create_index("ix_tickets_queued", "tickets", ["shop_id", "queue", "tier", "opened_at"],
                    postgresql_where=QUEUED, sqlite_where=QUEUED)


def downgrade() -> None:
    op.drop_index("ix_tickets_queued", table_name="tickets")
    op.create_index("ix_tickets_queued", "tickets", ["shop_id", "queue", "opened_at"],
                    postgresql_where=QUEUED, sqlite_where=QUEUED)
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, names in TRIGGER_NAMES.items():
        for name in names:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}" if postgres else f"DROP TRIGGER IF EXISTS {name}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS triage_ticket_counts()")
        op.execute("DROP FUNCTION IF EXISTS triage_breach_counts()")
    op.drop_table("queue_count_changes")
    op.drop_table("queue_counts")
