"""Cheaper ticket writes: the same rules, checked where they cost less; index entries and key checks nothing needs.

A claim and a resolve each update a ticket and append an event, hundreds of times a second. Much of the
server's work per ticket at revision 0005 was not on the writes but on preparing their checks for every
statement (docs/design.md has the instructions each change saved):
  - PostgreSQL parses and plans every CHECK constraint of a table anew for each UPDATE statement, whether
    or not the statement sets its columns. The four one-column rules (status known, tier 1-4, priority
    0-999, deliveries >= 0) become domains: a domain's check is prepared once per connection and runs only
    where a value is assigned to the column, so a claim (which sets only status of the four) checks one of
    them. The holder rule stays a table check, written with fewer operators (the same
    truth table: assigned exactly when an agent is set; an agent always comes with a lease).
  - ix_tickets_agent now holds only held tickets (`assigned_agent_id IS NOT NULL`, which the holder rule
    makes the same as status = 'assigned', with a predicate that calls no operator): a resolve, a release
    or an expiry no longer adds an entry for a ticket nobody holds. Capacity counts and the agent's ticket
    list read the same index.
  - ix_tickets_claim (per queue) is gone: claims read ix_tickets_claim_shop across an agent's queues
    (migration 0002) and queue depths read the shop's queued tickets; every ticket written paid for both.
  - ix_ticket_events_shop_kind holds only episode starts (created, reopened), the only events stats reads
    through it: the claimed, replied and resolved events no longer add entries. (SQLite keeps it whole:
    it would not use a partial index for the IN list SQLAlchemy binds.)
  - ticket_events.ticket_id loses its foreign key. Events are an append-only trail: every statement that
    appends one takes ticket_id from the ticket row it wrote in the same statement, and no code deletes a
    ticket that has events (ingest deletes only a placeholder that received no message, before any event
    was written for it). The key's check read and locked the ticket row once per event.
    At the end of every test run, tests/conftest.py checks that no event names a missing ticket.
  - tickets.assigned_agent_id loses its foreign key. Only triage_claim() sets it, to the agent whose row it
    has just read (present and active) under that agent's lock, in the same transaction; agents are never
    deleted (deactivated instead; the messages they sent keep a key to them), and a ticket whose holder vanished
    anyway would go back to its queue when the lease ran out, as expiry does not read the agent. The key's
    check read and locked the agent's row (one row, and page, that all of an agent's claims wrote).
    tests/conftest.py checks that no ticket is held by a missing agent.
  - triage_claim() reads the agent in one statement, its queues as an array (see CLAIM_FUNCTION).
SQLite keeps its table checks (they are compiled into each prepared statement, which the driver caches) and
its holder rule in the older, equivalent wording.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")
CLAIM_SHOP = ["shop_id", "tier", sa.text("priority DESC"), "opened_at", "opened_seq"]
EPISODE_STARTS = sa.text("kind IN ('created', 'reopened')")
HELD = sa.text("assigned_agent_id IS NOT NULL")
EVENT_TICKET_FK = "fk_ticket_events_ticket_id_tickets"
HOLDER_AGENT_FK = "fk_tickets_assigned_agent_id_agents"

# (column, domain, base type, name of the table check it replaces (migration 0001), the check on VALUE)
DOMAINS = [
    ("status", "ticket_status", "varchar(16)", "status_known", "VALUE IN ('queued', 'assigned', 'resolved')"),
    ("tier", "ticket_tier", "smallint", "tier_range", "VALUE BETWEEN 1 AND 4"),
    ("priority", "ticket_priority", "integer", "priority_range", "VALUE BETWEEN 0 AND 999"),
    ("deliveries", "ticket_deliveries", "integer", "deliveries_positive", "VALUE >= 0"),
]
HOLDER_BEFORE = ("(status = 'assigned' AND assigned_agent_id IS NOT NULL AND lease_expires_at IS NOT NULL)"
                 " OR (status <> 'assigned' AND assigned_agent_id IS NULL)")
HOLDER_AFTER = ("(status = 'assigned') = (assigned_agent_id IS NOT NULL)"
                " AND (assigned_agent_id IS NULL OR lease_expires_at IS NOT NULL)")


# triage_claim() as in migration 0004, but for how it reads the agent: capacity, the count of held tickets
# (by agent alone: with a status term the planner ANDed in ix_tickets_lease, every held ticket of every
# agent) and the served queues come in one statement, the queues as an array. The pick then tests each
# candidate against the array instead of joining agent_queues again for every row it passes.
CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION triage_claim(p_agent text, p_shop text, p_now timestamptz, p_lease_until timestamptz,
                                        p_event text)
RETURNS SETOF tickets
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    room integer;
    served text[];
    claimed tickets;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('triage_claim'), hashtext(p_agent));
    SELECT a.capacity - (SELECT count(*) FROM tickets h WHERE h.assigned_agent_id = p_agent),
           ARRAY(SELECT q.queue FROM agent_queues q WHERE q.agent_id = p_agent)
      INTO room, served
    FROM agents a WHERE a.id = p_agent AND a.active;
    IF NOT FOUND OR room <= 0 THEN
        RETURN;
    END IF;
    UPDATE tickets SET status = 'assigned', assigned_agent_id = p_agent, lease_expires_at = p_lease_until,
                       updated_at = p_now
    WHERE id = (
        SELECT t.id FROM tickets t
        WHERE t.shop_id = p_shop AND t.status = 'queued' AND t.queue = ANY (served)
        ORDER BY t.tier, t.priority DESC, t.opened_at, t.opened_seq
        LIMIT 1 FOR UPDATE SKIP LOCKED)
      AND status = 'queued'
    RETURNING * INTO claimed;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO ticket_events (ticket_id, shop_id, at, kind, actor, data)
    VALUES (claimed.id, claimed.shop_id, p_now, 'claimed', 'agent:' || p_agent,
            p_event::jsonb || jsonb_build_object('deliveries', claimed.deliveries));
    RETURN NEXT claimed;
END
$$
"""


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _claim_function_0004() -> str:
    return str(op.get_context().script.get_revision("0004").module.CLAIM_FUNCTION)


def upgrade() -> None:
    if _postgres():
        for _, domain, base, name, check in DOMAINS:
            op.execute(f"CREATE DOMAIN {domain} AS {base} CONSTRAINT ck_{domain} CHECK ({check})")
        # One ALTER: the table is rewritten once, its indexes rebuilt once.
        op.execute("ALTER TABLE tickets "
                   + ", ".join(f"DROP CONSTRAINT ck_tickets_{name}" for _, _, _, name, _ in DOMAINS)
                   + ", DROP CONSTRAINT ck_tickets_holder_matches_status, "
                   + ", ".join(f"ALTER COLUMN {column} TYPE {domain}" for column, domain, _, _, _ in DOMAINS)
                   + f", ADD CONSTRAINT ck_tickets_holder_matches_status CHECK ({HOLDER_AFTER})")
        op.drop_constraint(EVENT_TICKET_FK, "ticket_events", type_="foreignkey")
        op.drop_constraint(HOLDER_AGENT_FK, "tickets", type_="foreignkey")
        op.drop_index("ix_ticket_events_shop_kind", "ticket_events")
        op.create_index("ix_ticket_events_shop_kind", "ticket_events", ["shop_id", "kind", "at"],
                        postgresql_where=EPISODE_STARTS)
        op.execute(CLAIM_FUNCTION)
    else:
        with op.batch_alter_table("ticket_events", schema=None) as batch_op:
            batch_op.drop_constraint(EVENT_TICKET_FK, type_="foreignkey")
    # Dropping a key makes SQLite copy the table, and a copy cannot carry an index on an expression
    # ("priority DESC"): ix_tickets_claim_shop is made again after it (on PostgreSQL too, which rebuilt it above).
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_claim_shop", postgresql_where=QUEUED, sqlite_where=QUEUED)
        batch_op.drop_index("ix_tickets_claim", postgresql_where=QUEUED, sqlite_where=QUEUED)
        if not _postgres():
            batch_op.drop_constraint(HOLDER_AGENT_FK, type_="foreignkey")
        batch_op.drop_index("ix_tickets_agent")
        batch_op.create_index("ix_tickets_agent", ["assigned_agent_id"], unique=False,
                              postgresql_where=HELD, sqlite_where=HELD)
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index("ix_tickets_claim_shop", CLAIM_SHOP, unique=False, postgresql_where=QUEUED,
                              sqlite_where=QUEUED)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_claim_shop", postgresql_where=QUEUED, sqlite_where=QUEUED)
        batch_op.create_foreign_key(HOLDER_AGENT_FK, "agents", ["assigned_agent_id"], ["id"])
        batch_op.drop_index("ix_tickets_agent", postgresql_where=HELD, sqlite_where=HELD)
        batch_op.create_index("ix_tickets_agent", ["assigned_agent_id", "status"], unique=False)
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index("ix_tickets_claim_shop", CLAIM_SHOP, unique=False, postgresql_where=QUEUED,
                              sqlite_where=QUEUED)
        batch_op.create_index("ix_tickets_claim", ["shop_id", "queue", *CLAIM_SHOP[1:]], unique=False,
                              postgresql_where=QUEUED, sqlite_where=QUEUED)
    if _postgres():
        op.execute(_claim_function_0004())
        op.drop_index("ix_ticket_events_shop_kind", "ticket_events", postgresql_where=EPISODE_STARTS)
        op.create_index("ix_ticket_events_shop_kind", "ticket_events", ["shop_id", "kind", "at"])
        op.create_foreign_key(EVENT_TICKET_FK, "ticket_events", "tickets", ["ticket_id"], ["id"], ondelete="CASCADE")
        op.execute("ALTER TABLE tickets DROP CONSTRAINT ck_tickets_holder_matches_status, "
                   + ", ".join(f"ALTER COLUMN {column} TYPE {base}" for column, _, base, _, _ in DOMAINS)
                   + ", " + ", ".join(f"ADD CONSTRAINT ck_tickets_{name} CHECK ({check.replace('VALUE', column)})"
                                      for column, _, _, name, check in DOMAINS)
                   + f", ADD CONSTRAINT ck_tickets_holder_matches_status CHECK ({HOLDER_BEFORE})")
        for _, domain, _, _, _ in DOMAINS:
            op.execute(f"DROP DOMAIN {domain}")
    else:
        with op.batch_alter_table("ticket_events", schema=None) as batch_op:
            batch_op.create_foreign_key(EVENT_TICKET_FK, "tickets", ["ticket_id"], ["id"], ondelete="CASCADE")
