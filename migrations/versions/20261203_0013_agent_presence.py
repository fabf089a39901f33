"""Agent presence: what an agent last set (online, away, offline) and when it was last seen; a claim makes it online.

agents.presence holds the status the agent set with PUT /v1/agents/me/presence, or `online` from its last claim;
agents.seen_at its last claim, ticket heartbeat or presence call. An agent silent for the presence timeout is
offline whatever it set (app.domain.presence_at), so nothing has to run to turn it offline.

triage_claim() gains p_touch_before: the claim marks its agent online and seen, but writes the agent's row only
when it was not online or was last seen before p_touch_before (the service passes a few seconds ago). An agent
claiming many times a second then writes its row once every few seconds, not at every claim: the read of the row
the claim already makes tells whether it must. The rest of the function is migration 0006's.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURE = "triage_claim(text, text, timestamptz, timestamptz, text)"

CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION triage_claim(p_agent text, p_shop text, p_now timestamptz, p_lease_until timestamptz,
                                        p_event text, p_touch_before timestamptz)
RETURNS SETOF tickets
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    room integer;
    served text[];
    seen_lately boolean;
    claimed tickets;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('triage_claim'), hashtext(p_agent));
    SELECT a.capacity - (SELECT count(*) FROM tickets h WHERE h.assigned_agent_id = p_agent),
           ARRAY(SELECT q.queue FROM agent_queues q WHERE q.agent_id = p_agent),
           coalesce(a.presence = 'online' AND a.seen_at >= p_touch_before, false)
      INTO room, served, seen_lately
    FROM agents a WHERE a.id = p_agent AND a.active;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A claim says the agent is at its console, at capacity or not.
    IF NOT seen_lately THEN
        UPDATE agents SET presence = 'online', seen_at = p_now WHERE id = p_agent;
    END IF;
    IF room <= 0 THEN
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

PRESENCE_KNOWN = "presence IN ('online', 'away', 'offline')"


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # Batch mode: SQLite adds a check by copying the table (the migration's connection enforces no foreign keys,
    # so the copy touches no row of the tables that refer to agents).
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("presence", sa.String(16), nullable=False, server_default="offline"))
        batch.add_column(sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(op.f("ck_agents_presence_known"), PRESENCE_KNOWN)
    if _postgres():
        op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    if _postgres():
        op.execute("DROP FUNCTION IF EXISTS triage_claim(text, text, timestamptz, timestamptz, text, timestamptz)")
        op.execute(str(op.get_context().script.get_revision("0006").module.CLAIM_FUNCTION))
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint(op.f("ck_agents_presence_known"), type_="check")
        batch.drop_column("seen_at")
        batch.drop_column("presence")
