"""Sticky owner: a ticket may be held for one agent for a while (tickets.held_for, held_until), a buyer remembers the
agent who last replied to it (customers.last_agent_id, last_agent_reply_at, kept by the reply write), and a shop says
for how long that agent stays the buyer's (shops.sticky_hours, 72 by default, 0 never).

triage_claim() gains p_online_after (now less the presence timeout): each served queue's probe passes over a queued
ticket held for another agent until later while that agent is online, active and serves the ticket's queue;
otherwise, and once the hold is over, it is anyone's, at its place in the order. The test reads the agent only for
tickets held for someone else (the other terms of the OR come first and PostgreSQL keeps an OR's order). The rest is
migration 0021's.

Existing buyers get the last agent reply found in the messages; snoozed tickets are held for the agent that snoozed
them (the agent of their last `snoozed` event).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_SIGNATURE = "triage_claim(text, text, timestamptz, timestamptz, text, timestamptz)"
NEW_SIGNATURE = "triage_claim(text, text, timestamptz, timestamptz, text, timestamptz, timestamptz)"

# Whether queued ticket t may go to agent {agent} now: not held, its hold over, held for that agent, or held for one
# that is not at its console serving the ticket's queue. SharedTicketStore's claim uses the same test.
CLAIMABLE = ("(t.held_until IS NULL OR t.held_until <= {now} OR t.held_for = {agent} OR NOT EXISTS ("
             "SELECT 1 FROM agents o JOIN agent_queues oq ON oq.agent_id = o.id AND oq.queue = t.queue "
             "WHERE o.id = t.held_for AND o.active AND o.presence = 'online' AND o.seen_at > {online_after}))")

# Migration 0021's function (one probe per served queue) with the hold test in each probe and the new parameter.
_HEAD_BEFORE = "AND t.status = 'queued' AND t.id <> ALL (passed)"
_SIGNATURE_BEFORE = "p_event text, p_touch_before timestamptz)"


def _claim_function() -> str:
    before = str(op.get_context().script.get_revision("0021").module._claim_function())
    assert before.count(_HEAD_BEFORE) == 1 and before.count(_SIGNATURE_BEFORE) == 1
    claimable = CLAIMABLE.format(now="p_now", agent="p_agent", online_after="p_online_after")
    return (before.replace(_HEAD_BEFORE, f"{_HEAD_BEFORE}\n              AND {claimable}")
            .replace(_SIGNATURE_BEFORE, "p_event text, p_touch_before timestamptz, p_online_after timestamptz)"))


# The latest reply an agent sent each buyer, from the messages.
_LAST_REPLY = ("SELECT {column} FROM messages m JOIN tickets t ON t.id = m.ticket_id WHERE t.customer_id = customers.id "
               "AND m.direction = 'outbound' AND m.agent_id IS NOT NULL ORDER BY m.sent_at DESC, m.id DESC LIMIT 1")
_SNOOZER = {"postgresql": "e.data ->> 'agent_id'", "sqlite": "json_extract(e.data, '$.agent_id')"}


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # Plain ALTERs on SQLite too: a copy of tickets would drop the counters' triggers on it.
    op.add_column("tickets", sa.Column("held_for", sa.String(36), nullable=True))
    op.add_column("tickets", sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("customers", sa.Column("last_agent_id", sa.String(36), nullable=True))
    op.add_column("customers", sa.Column("last_agent_reply_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("shops", sa.Column("sticky_hours", sa.Integer(), nullable=False, server_default="72"))
    op.execute(f"UPDATE customers SET last_agent_id = ({_LAST_REPLY.format(column='m.agent_id')}), "
               f"last_agent_reply_at = ({_LAST_REPLY.format(column='m.sent_at')})")
    snoozer = _SNOOZER[op.get_bind().dialect.name]
    op.execute(f"UPDATE tickets SET held_for = (SELECT {snoozer} FROM ticket_events e WHERE e.ticket_id = tickets.id "
               "AND e.kind = 'snoozed' ORDER BY e.id DESC LIMIT 1) WHERE status = 'pending'")
    if _postgres():
        op.create_check_constraint("ck_shops_sticky_range", "shops", "sticky_hours BETWEEN 0 AND 720")
        op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.execute(_claim_function())


def downgrade() -> None:
    if _postgres():
        op.execute(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
        op.execute(op.get_context().script.get_revision("0021").module._claim_function())
        op.drop_constraint("ck_shops_sticky_range", "shops", type_="check")
    with op.batch_alter_table("shops", recreate="never") as batch_op:
        batch_op.drop_column("sticky_hours")
    with op.batch_alter_table("customers", recreate="never") as batch_op:
        batch_op.drop_column("last_agent_reply_at")
        batch_op.drop_column("last_agent_id")
    with op.batch_alter_table("tickets", recreate="never") as batch_op:
        batch_op.drop_column("held_until")
        batch_op.drop_column("held_for")
