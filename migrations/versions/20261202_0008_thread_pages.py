"""triage_thread(ticket, limit): the latest `limit` messages of a ticket's thread, so that a claim or a holder's
write answers with a page of a long conversation, not all of it (a 3,000-message thread was 19 MB per answer).

Read backwards on ix_messages_ticket (ticket_id, id), returned oldest first like triage_thread(ticket), which
stays for callers of the whole thread. VOLATILE for the same reason as that one (migration 0004).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

THREAD_PAGE_FUNCTION = """
CREATE OR REPLACE FUNCTION triage_thread(p_ticket text, p_limit integer)
RETURNS json
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' AS $$
BEGIN
    RETURN (
        SELECT coalesce(json_agg(page.message ORDER BY page.id), '[]'::json)
        FROM (
            SELECT m.id, json_build_object(
                'id', m.id, 'ticket_id', m.ticket_id, 'direction', m.direction, 'text', m.text,
                'sent_at', m.sent_at, 'received_at', m.received_at, 'order_id', m.order_id, 'agent_id', m.agent_id,
                'triage', m.triage, 'customer_external_id', c.external_id, 'customer_platform', c.platform,
                'customer_nick', c.nick, 'customer_vip_level', c.vip_level, 'customer_contacts', c.contacts) AS message
            FROM messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id
            WHERE m.ticket_id = p_ticket
            ORDER BY m.id DESC
            LIMIT p_limit) page);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(THREAD_PAGE_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS triage_thread(text, integer)")
