"""triage_claim() and triage_thread(): an agent's claim, and the thread of the ticket it got, in one round trip.

A claim takes a per-agent lock (so one agent's claims run one at a time and its capacity holds), counts the
tickets it holds, takes the most urgent queued ticket of its queues under SKIP LOCKED, and records the
`claimed` event. As separate statements that is five round trips with BEGIN and COMMIT; in a function it is
one. Statements in a VOLATILE PL/pgSQL function each take a fresh snapshot under READ COMMITTED, so the
count after the lock sees the claims this agent committed while we waited for it: the same guarantee as
the separate statements. SQLite needs no function: there one UPDATE ... RETURNING holds the write lock.

triage_thread() returns a ticket's messages (with its customer) as JSON, so a claim or a holder's write can
answer with the thread from the same statement. VOLATILE for the same reason: called after the write in
that statement, it reads with a fresh snapshot, so it sees the write and every message committed before
it (an ingest that held the ticket while we waited for its lock included), where a subquery of the
statement would see only what was committed when the statement began.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Returns the claimed ticket, or no row: agent missing or inactive, at capacity, or nothing queued.
# `p_event` is the event's data without `deliveries`, which comes from the claimed row.
CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION triage_claim(p_agent text, p_shop text, p_now timestamptz, p_lease_until timestamptz,
                                        p_event text)
RETURNS SETOF tickets
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held_limit integer;
    claimed tickets;
BEGIN
    -- One agent's claims run one at a time (so its capacity holds); an advisory lock, unlike a row lock,
    -- writes nothing to the table or the WAL. Released at commit.
    PERFORM pg_advisory_xact_lock(hashtext('triage_claim'), hashtext(p_agent));
    SELECT capacity INTO held_limit FROM agents WHERE id = p_agent AND active;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE tickets SET status = 'assigned', assigned_agent_id = p_agent, lease_expires_at = p_lease_until,
                       updated_at = p_now
    WHERE id = (
        SELECT t.id FROM tickets t
        WHERE t.shop_id = p_shop AND t.status = 'queued'
          AND t.queue IN (SELECT q.queue FROM agent_queues q WHERE q.agent_id = p_agent)
          AND (SELECT count(*) FROM tickets h WHERE h.assigned_agent_id = p_agent AND h.status = 'assigned')
              < held_limit
        -- The order of ix_tickets_claim_shop; rows another claimer holds are skipped, not waited for.
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


# Timestamps in UTC whatever the server's TimeZone, as the API writes them.
THREAD_FUNCTION = """
CREATE OR REPLACE FUNCTION triage_thread(p_ticket text)
RETURNS json
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' AS $$
BEGIN
    RETURN (
        SELECT coalesce(json_agg(json_build_object(
            'id', m.id, 'ticket_id', m.ticket_id, 'direction', m.direction, 'text', m.text,
            'sent_at', m.sent_at, 'received_at', m.received_at, 'order_id', m.order_id, 'agent_id', m.agent_id,
            'triage', m.triage, 'customer_external_id', c.external_id, 'customer_platform', c.platform,
            'customer_nick', c.nick, 'customer_vip_level', c.vip_level, 'customer_contacts', c.contacts)
            ORDER BY m.id), '[]'::json)
        FROM messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id
        WHERE m.ticket_id = p_ticket);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CLAIM_FUNCTION)
        op.execute(THREAD_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS triage_thread(text)")
        op.execute("DROP FUNCTION IF EXISTS triage_claim(text, text, timestamptz, timestamptz, text)")
