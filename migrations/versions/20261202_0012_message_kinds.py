"""Messages beyond text (SPEC 9.2): each message's kind, and what it carries besides its text (attachments' URLs
and metadata, a product or order card, a system event with its rating) as JSON; triage_thread() returns both.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BEFORE = """json_build_object(
                'id', m.id, 'ticket_id', m.ticket_id, 'direction', m.direction, 'text', m.text,
                'sent_at', m.sent_at, 'received_at', m.received_at, 'order_id', m.order_id, 'agent_id', m.agent_id,
                'triage', m.triage, 'delivery', m.delivery, 'customer_external_id', c.external_id,
                'customer_platform', c.platform, 'customer_nick', c.nick, 'customer_vip_level', c.vip_level,
                'customer_contacts', c.contacts)"""


def thread_functions(message_json: str) -> tuple[str, str]:
    """triage_thread(ticket) and triage_thread(ticket, limit) building each message with `message_json`."""
    whole = f"""
CREATE OR REPLACE FUNCTION triage_thread(p_ticket text)
RETURNS json
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' AS $$
BEGIN
    RETURN (
        SELECT coalesce(json_agg({message_json} ORDER BY m.id), '[]'::json)
        FROM messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id
        WHERE m.ticket_id = p_ticket);
END
$$
"""
    page = f"""
CREATE OR REPLACE FUNCTION triage_thread(p_ticket text, p_limit integer)
RETURNS json
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' AS $$
BEGIN
    RETURN (
        SELECT coalesce(json_agg(page.message ORDER BY page.id), '[]'::json)
        FROM (
            SELECT m.id, {message_json} AS message
            FROM messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id
            WHERE m.ticket_id = p_ticket
            ORDER BY m.id DESC
            LIMIT p_limit) page);
END
$$
"""
    return whole, page



# The same functions as migration 0010's, each message with its kind and content.
_MESSAGE_JSON = _BEFORE.replace("'delivery', m.delivery, ", "'delivery', m.delivery, 'kind', m.kind, 'content', m.content, ")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="text"))
        batch.add_column(sa.Column("content", JSON, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for function in thread_functions(_MESSAGE_JSON):
            op.execute(function)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for function in thread_functions(_BEFORE):
            op.execute(function)
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("content")
        batch.drop_column("kind")
