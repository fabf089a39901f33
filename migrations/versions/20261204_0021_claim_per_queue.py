"""A claim costs the queues its agent serves, not the queued tickets of the others (issue 19).

ix_tickets_claim_shop ordered a shop's queued tickets across its queues, so an agent serving one queue walked the
entries of every other queue before its first match (21,099 rows with 78.5k queued). ix_tickets_claim (queued
tickets by shop, queue, then the claim order: tier, priority highest first, episode start, opening message) replaces
it: ix_tickets_queued (shop, queue, tier, episode start) lacks the priority between tier and episode start, so it
cannot give the claim's order. A shop's queued tickets keep two index entries each.

triage_claim() reads the first entry of each served queue (one probe per queue, no lock), takes the best of them by
the claim order, which is total (the opening message's id breaks every tie), and locks it with SKIP LOCKED. A
candidate another claimer holds, or one claimed since it was read, is passed over and the pick is made again
without it: the same ticket the scan across queues skipping locked rows would have taken, and no row locked but the
one claimed. The rest of the function is migration 0013's.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")
CLAIM_ORDER = ["tier", sa.text("priority DESC"), "opened_at", "opened_seq"]

# Migration 0013's function with its pick (one scan across the served queues, under SKIP LOCKED, from the UPDATE
# up to the event's INSERT) replaced.
_PICK = """    UPDATE tickets SET status = 'assigned', assigned_agent_id = p_agent, lease_expires_at = p_lease_until,
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
"""
_PICK = """    LOOP
        -- The first entry of ix_tickets_claim in each served queue, the best of them by the claim order.
        SELECT c.id INTO pick
        FROM unnest(served) AS s(queue)
        CROSS JOIN LATERAL (
            SELECT t.id, t.tier, t.priority, t.opened_at, t.opened_seq FROM tickets t
            WHERE t.shop_id = p_shop AND t.queue = s.queue AND t.status = 'queued' AND t.id <> ALL (passed)
            ORDER BY t.tier, t.priority DESC, t.opened_at, t.opened_seq
            LIMIT 1) c
        ORDER BY c.tier, c.priority DESC, c.opened_at, c.opened_seq
        LIMIT 1;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        -- Each statement reads a fresh snapshot: a candidate claimed since is no longer queued when locked.
        UPDATE tickets SET status = 'assigned', assigned_agent_id = p_agent, lease_expires_at = p_lease_until,
                           updated_at = p_now
        WHERE id = (SELECT t.id FROM tickets t WHERE t.id = pick AND t.status = 'queued' FOR UPDATE SKIP LOCKED)
          AND status = 'queued'
        RETURNING * INTO claimed;
        EXIT WHEN FOUND;
        passed := passed || pick;
    END LOOP;
"""
_BEFORE_VARIABLES = "    claimed tickets;\n"
_VARIABLES = "    pick text;\n    passed text[] := '{}';\n    claimed tickets;\n"


def _claim_function() -> str:
    before = str(op.get_context().script.get_revision("0013").module.CLAIM_FUNCTION)
    start = before.index("    UPDATE tickets SET status = 'assigned'")
    end = before.index("    INSERT INTO ticket_events")
    return (before[:start] + _PICK + before[end:]).replace(_BEFORE_VARIABLES, _VARIABLES)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # Plain index statements (no batch copy of the table, which would trip the triggers naming it); on PostgreSQL
    # building the index blocks writes to tickets, not reads.
    op.create_index("ix_tickets_claim", "tickets", ["shop_id", "queue", *CLAIM_ORDER],
                    postgresql_where=QUEUED, sqlite_where=QUEUED)
    op.drop_index("ix_tickets_claim_shop", table_name="tickets")
    if _postgres():
        op.execute(_claim_function())


def downgrade() -> None:
    if _postgres():
        op.execute(str(op.get_context().script.get_revision("0013").module.CLAIM_FUNCTION))
    op.create_index("ix_tickets_claim_shop", "tickets", ["shop_id", *CLAIM_ORDER],
                    postgresql_where=QUEUED, sqlite_where=QUEUED)
    op.drop_index("ix_tickets_claim", table_name="tickets")
