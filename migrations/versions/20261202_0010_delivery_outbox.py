"""The outbound channel (SPEC 9.1): delivery endpoints, the transactional outbox, deliveries and their attempts.

An event row is written in the transaction of the change that causes it, with one delivery per subscribed
endpoint; relays in every process pick due deliveries (SKIP LOCKED on PostgreSQL, the one write lock on
SQLite) and record each attempt. An outbound message keeps its delivery state beside it (messages.delivery),
so the thread reads it without another statement: triage_thread() returns it too.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
PENDING = sa.text("status = 'pending'")

_MESSAGE_JSON = """json_build_object(
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


def upgrade() -> None:
    op.add_column("messages", sa.Column("delivery", JSON, nullable=True))
    op.create_table(
        "delivery_endpoints",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_mask", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_valid_until", TIME, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name=op.f("fk_delivery_endpoints_shop_id_shops"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_endpoints")),
    )
    op.create_index("ix_delivery_endpoints_shop", "delivery_endpoints", ["shop_id", "created_at"])
    op.create_table(
        "outbox_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name=op.f("fk_outbox_events_shop_id_shops"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=False),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("order_key", sa.String(36), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("locked_until", TIME, nullable=True),
        sa.Column("locked_by", sa.String(40), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("delivered_at", TIME, nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name=op.f("ck_deliveries_status_known")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["delivery_endpoints.id"],
                                name=op.f("fk_deliveries_endpoint_id_delivery_endpoints"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["event_id"], ["outbox_events.id"], name=op.f("fk_deliveries_event_id_outbox_events"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["next_attempt_at"], sqlite_where=PENDING,
                    postgresql_where=PENDING)
    op.create_index("ix_deliveries_order", "deliveries", ["endpoint_id", "order_key", "id"], sqlite_where=PENDING,
                    postgresql_where=PENDING)
    op.create_index("ix_deliveries_shop", "deliveries", ["shop_id", "id"])
    op.create_index("ix_deliveries_message", "deliveries", ["message_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", BIG_ID, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index("ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        for function in thread_functions(_MESSAGE_JSON):
            op.execute(function)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        old = _MESSAGE_JSON.replace("'delivery', m.delivery, ", "")
        for function in thread_functions(old):
            op.execute(function)
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("outbox_events")
    op.drop_table("delivery_endpoints")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("delivery")
