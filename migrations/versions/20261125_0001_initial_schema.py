"""Initial schema: shops, secrets, queues, agents, customers, tickets, messages, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are spelled out here, not imported from app.db, so this file never changes meaning.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('shops',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sla_targets', JSON, nullable=False),
    sa.Column('active_ruleset_version', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shops'))
    )
    op.create_table('agents',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('capacity', sa.SmallInteger(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("level IN ('junior', 'mid', 'senior')", name=op.f('ck_agents_level_known')),
    sa.CheckConstraint('capacity BETWEEN 1 AND 50', name=op.f('ck_agents_capacity_range')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_agents_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_agents_token_hash'))
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index('ix_agents_shop', ['shop_id'], unique=False)

    op.create_table('customers',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('nick', sa.String(length=200), nullable=True),
    sa.Column('vip_level', sa.SmallInteger(), nullable=False),
    sa.Column('contacts', sa.Integer(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_customers_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers')),
    sa.UniqueConstraint('shop_id', 'platform', 'external_id', name=op.f('uq_customers_shop_id_platform_external_id'))
    )
    op.create_table('queues',
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=500), nullable=False),
    sa.Column('sla_targets', JSON, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_queues_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('shop_id', 'name', name=op.f('pk_queues'))
    )
    op.create_table('rulesets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('body', JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_rulesets_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rulesets')),
    sa.UniqueConstraint('shop_id', 'version', name=op.f('uq_rulesets_shop_id_version'))
    )
    op.create_table('webhook_secrets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_webhook_secrets_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_secrets'))
    )
    with op.batch_alter_table('webhook_secrets', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_secrets_shop', ['shop_id', 'expires_at'], unique=False)

    op.create_table('agent_queues',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_queues_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shop_id', 'queue'], ['queues.shop_id', 'queues.name'], name=op.f('fk_agent_queues_shop_id_queue_queues'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'queue', name=op.f('pk_agent_queues'))
    )
    op.create_table('idempotency_keys',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.SmallInteger(), nullable=False),
    sa.Column('response', JSON, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_idempotency_keys_agent_id_agents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('tickets',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('conversation_id', sa.String(length=128), nullable=False),
    sa.Column('customer_id', BIGID, nullable=True),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('tier', sa.SmallInteger(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('primary_intent', sa.String(length=32), nullable=False),
    sa.Column('intents', JSON, nullable=False),
    sa.Column('escalated', sa.Boolean(), nullable=False),
    sa.Column('assigned_agent_id', sa.String(length=36), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('unread', sa.Integer(), nullable=False),
    sa.Column('ruleset', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('awaiting_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_message_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('episodes', sa.Integer(), nullable=False),
    sa.CheckConstraint("(status = 'assigned' AND assigned_agent_id IS NOT NULL AND lease_expires_at IS NOT NULL) OR (status <> 'assigned' AND assigned_agent_id IS NULL)", name=op.f('ck_tickets_holder_matches_status')),
    sa.CheckConstraint("status IN ('queued', 'assigned', 'resolved')", name=op.f('ck_tickets_status_known')),
    sa.CheckConstraint('deliveries >= 0', name=op.f('ck_tickets_deliveries_positive')),
    sa.CheckConstraint('priority BETWEEN 0 AND 999', name=op.f('ck_tickets_priority_range')),
    sa.CheckConstraint('tier BETWEEN 1 AND 4', name=op.f('ck_tickets_tier_range')),
    sa.ForeignKeyConstraint(['assigned_agent_id'], ['agents.id'], name=op.f('fk_tickets_assigned_agent_id_agents')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_tickets_customer_id_customers')),
    sa.ForeignKeyConstraint(['shop_id', 'queue'], ['queues.shop_id', 'queues.name'], name=op.f('fk_tickets_shop_id_queue_queues')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_tickets_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets')),
    sa.UniqueConstraint('shop_id', 'platform', 'conversation_id', name=op.f('uq_tickets_shop_id_platform_conversation_id'))
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_agent', ['assigned_agent_id', 'status'], unique=False)
        batch_op.create_index('ix_tickets_claim', ['shop_id', 'queue', 'tier', sa.text('priority DESC'), 'opened_at'], unique=False, postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"))
        batch_op.create_index('ix_tickets_lease', ['lease_expires_at'], unique=False, postgresql_where=sa.text("status = 'assigned'"), sqlite_where=sa.text("status = 'assigned'"))
        batch_op.create_index('ix_tickets_shop_created', ['shop_id', 'created_at'], unique=False)

    op.create_table('messages',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('ticket_id', sa.String(length=36), nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=True),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('order_id', sa.String(length=128), nullable=True),
    sa.Column('agent_id', sa.String(length=36), nullable=True),
    sa.Column('primary_intent', sa.String(length=32), nullable=True),
    sa.Column('tier', sa.SmallInteger(), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=True),
    sa.Column('triage', JSON, nullable=True),
    sa.CheckConstraint("direction IN ('inbound', 'outbound')", name=op.f('ck_messages_direction_known')),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_messages_agent_id_agents')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_messages_shop_id_shops'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_messages_ticket_id_tickets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('shop_id', 'platform', 'external_id', name=op.f('uq_messages_shop_id_platform_external_id'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_shop_received', ['shop_id', 'received_at'], unique=False)
        batch_op.create_index('ix_messages_ticket', ['ticket_id', 'id'], unique=False)

    op.create_table('ticket_events',
    sa.Column('id', BIGID, autoincrement=True, nullable=False),
    sa.Column('ticket_id', sa.String(length=36), nullable=False),
    sa.Column('shop_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('data', JSON, nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_ticket_events_ticket_id_tickets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_events'))
    )
    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.create_index('ix_ticket_events_shop_kind', ['shop_id', 'kind', 'at'], unique=False)
        batch_op.create_index('ix_ticket_events_ticket', ['ticket_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ticket_events', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_events_ticket')
        batch_op.drop_index('ix_ticket_events_shop_kind')

    op.drop_table('ticket_events')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_ticket')
        batch_op.drop_index('ix_messages_shop_received')

    op.drop_table('messages')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_shop_created')
        batch_op.drop_index('ix_tickets_lease', postgresql_where=sa.text("status = 'assigned'"), sqlite_where=sa.text("status = 'assigned'"))
        batch_op.drop_index('ix_tickets_agent')
        batch_op.drop_index('ix_tickets_claim')

    op.drop_table('tickets')
    op.drop_table('idempotency_keys')
    op.drop_table('agent_queues')
    with op.batch_alter_table('webhook_secrets', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_secrets_shop')

    op.drop_table('webhook_secrets')
    op.drop_table('rulesets')
    op.drop_table('queues')
    op.drop_table('customers')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_shop')

    op.drop_table('agents')
    op.drop_table('shops')
