"""Retention and partitioning: messages and ticket_events in monthly partitions on PostgreSQL, and message_keys.

Retention (TRIAGE_RETENTION_DAYS, app/services/retention.py) drops whole months: on PostgreSQL, messages are
partitioned by RANGE (received_at) and ticket_events by RANGE (at), one partition per calendar month (UTC), named
messages_y2026m12 and ticket_events_y2026m12. A unique key of a partitioned table must hold its partition key, so
the webhook's idempotency key (shop, platform, message id) cannot stay on messages: it moves to message_keys, one
row per message a webhook delivered, with the answer its first receipt got (ticket, intent, tier, priority, queue),
so a resend is answered without reading messages at all. SQLite gets message_keys too (one ingestion store for both
databases) and keeps its tables unpartitioned; its retention deletes in batches, events by their time
(ix_ticket_events_at, SQLite's only).

Upgrading a populated PostgreSQL database copies both tables into their partitions inside this migration's
transaction, under a SHARE lock: reads go on against the old tables until the commit swaps them in, writes wait for
it. The partitions made cover the months of the data, and every month from fourteen before the migration to three
after it (the retention worker keeps them three months ahead). The downgrade copies them back into plain tables.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_BACK = 14
MONTHS_AHEAD = 3
# The tables partitioned, by their partition key; each one's indexes after the copy (built once, not row by row).
PARTITIONED = {"messages": "received_at", "ticket_events": "at"}
INDEXES = {
    "messages": ["CREATE INDEX ix_messages_ticket ON messages (ticket_id, id)",
                 "CREATE INDEX ix_messages_shop_received ON messages (shop_id, received_at)"],
    "ticket_events": ["CREATE INDEX ix_ticket_events_shop_kind ON ticket_events (shop_id, kind, at) "
                      "WHERE kind IN ('created', 'reopened')"],
}
PRIMARY_KEYS = {"messages": "(id, received_at)", "ticket_events": "(ticket_id, id, at)"}
PLAIN_KEYS = {"messages": "(id)", "ticket_events": "(ticket_id, id)"}
FOREIGN_KEYS = [
    "ALTER TABLE messages ADD CONSTRAINT fk_messages_agent_id_agents FOREIGN KEY (agent_id) REFERENCES agents (id)",
    "ALTER TABLE messages ADD CONSTRAINT fk_messages_shop_id_shops FOREIGN KEY (shop_id) REFERENCES shops (id) "
    "ON DELETE CASCADE",
    "ALTER TABLE messages ADD CONSTRAINT fk_messages_ticket_id_tickets FOREIGN KEY (ticket_id) REFERENCES tickets (id) "
    "ON DELETE CASCADE",
]
KEYS_FROM_MESSAGES = (
    "INSERT INTO message_keys (shop_id, platform, external_id, received_at, ticket_id, primary_intent, tier, priority, "
    "queue) SELECT shop_id, platform, external_id, received_at, ticket_id, primary_intent, tier, priority, {queue} "
    "FROM messages WHERE external_id IS NOT NULL")


MESSAGE_JSON = """json_build_object(
                'id', m.id, 'ticket_id', m.ticket_id, 'direction', m.direction, 'text', m.text,
                'sent_at', m.sent_at, 'received_at', m.received_at, 'order_id', m.order_id, 'agent_id', m.agent_id,
                'triage', m.triage, 'delivery', m.delivery, 'kind', m.kind, 'content', m.content,
                'customer_external_id', c.external_id, 'customer_platform', c.platform, 'customer_nick', c.nick,
                'customer_vip_level', c.vip_level, 'customer_contacts', c.contacts)"""


def thread_functions(pruned: bool) -> list[str]:
    """triage_thread(ticket) and triage_thread(ticket, limit) as migration 0012 made them; `pruned`, reading only
    the partitions from the ticket's month on: its messages were received after it was made (a day of slack for
    the clocks of several processes), so a claim's thread reads one or two partitions, not every month kept."""
    since = "    SELECT t.created_at - interval '1 day' INTO since FROM tickets t WHERE t.id = p_ticket;\n"
    declare = "DECLARE\n    since timestamptz;\n" if pruned else ""
    where = "m.ticket_id = p_ticket AND m.received_at >= since" if pruned else "m.ticket_id = p_ticket"
    whole = f"""
CREATE OR REPLACE FUNCTION triage_thread(p_ticket text)
RETURNS json
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' AS $$
{declare}BEGIN
{since if pruned else ""}    RETURN (
        SELECT coalesce(json_agg({MESSAGE_JSON} ORDER BY m.id), '[]'::json)
        FROM messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id
        WHERE {where});
END
$$
"""
    page = f"""
CREATE OR REPLACE FUNCTION triage_thread(p_ticket text, p_limit integer)
RETURNS json
LANGUAGE plpgsql VOLATILE SET timezone = 'UTC' AS $$
{declare}BEGIN
{since if pruned else ""}    RETURN (
        SELECT coalesce(json_agg(page.message ORDER BY page.id), '[]'::json)
        FROM (
            SELECT m.id, {MESSAGE_JSON} AS message
            FROM messages m JOIN tickets t ON t.id = m.ticket_id LEFT JOIN customers c ON c.id = t.customer_id
            WHERE {where}
            ORDER BY m.id DESC
            LIMIT p_limit) page);
END
$$
"""
    return [whole, page]


def _month(year: int, month: int, shift: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + shift
    return index // 12, index % 12 + 1


def _months(first: tuple[int, int], last: tuple[int, int]) -> list[tuple[int, int]]:
    months, current = [], first
    while current <= last:
        months.append(current)
        current = _month(*current, 1)
    return months


def _partition_sql(table: str, year: int, month: int) -> str:
    after = _month(year, month, 1)
    return (f"CREATE TABLE {table}_y{year:04d}m{month:02d} PARTITION OF {table} FOR VALUES FROM "
            f"('{year:04d}-{month:02d}-01 00:00:00+00') TO ('{after[0]:04d}-{after[1]:02d}-01 00:00:00+00')")


def _move_aside(table: str) -> None:
    """Rename the table to {table}_old and its indexes (those of its keys too) to {name}_old, out of the new
    table's way; check and foreign key names belong to their table and need no change."""
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    indexes = [row[0] for row in op.get_bind().execute(sa.text(
        "SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": f"{table}_old"})]
    for name in indexes:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_old")


def _postgres_upgrade() -> None:
    bind = op.get_bind()
    # Reads go on against the old tables until the commit; writes wait for it.
    op.execute("LOCK TABLE messages, ticket_events IN SHARE MODE")
    op.execute(KEYS_FROM_MESSAGES.format(queue="triage ->> 'queue'"))
    now = datetime.now(UTC)
    for table, key in PARTITIONED.items():
        oldest = bind.execute(sa.text(f"SELECT min({key}) FROM {table}")).scalar()
        first = _month(now.year, now.month, -MONTHS_BACK)
        if oldest is not None:
            oldest = oldest.astimezone(UTC)
            first = min(first, (oldest.year, oldest.month))
        last = _month(now.year, now.month, MONTHS_AHEAD)
        newest = bind.execute(sa.text(f"SELECT max({key}) FROM {table}")).scalar()
        if newest is not None:
            newest = newest.astimezone(UTC)
            last = max(last, (newest.year, newest.month))
        _move_aside(table)
        op.execute(f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
                   f"PARTITION BY RANGE ({key})")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY {PRIMARY_KEYS[table]}")
        for year, month in _months(first, last):
            op.execute(_partition_sql(table, year, month))
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
        op.execute(f"DROP TABLE {table}_old")
        for statement in INDEXES[table]:
            op.execute(statement)
    for statement in FOREIGN_KEYS:
        op.execute(statement)
    for table in PARTITIONED:
        op.execute(f"ANALYZE {table}")
    for function in thread_functions(pruned=True):
        op.execute(function)


def _postgres_downgrade() -> None:
    op.execute("LOCK TABLE messages, ticket_events IN SHARE MODE")
    for table in PARTITIONED:
        _move_aside(table)
        op.execute(f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY {PLAIN_KEYS[table]}")
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
        op.execute(f"DROP TABLE {table}_old")  # with its partitions
        for statement in INDEXES[table]:
            op.execute(statement)
    op.execute("ALTER TABLE messages ADD CONSTRAINT uq_messages_shop_id_platform_external_id "
               "UNIQUE (shop_id, platform, external_id)")
    for statement in FOREIGN_KEYS:
        op.execute(statement)
    for function in thread_functions(pruned=False):
        op.execute(function)


def upgrade() -> None:
    op.create_table(
        "message_keys",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("primary_intent", sa.String(32), nullable=True),
        sa.Column("tier", sa.SmallInteger(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("shop_id", "platform", "external_id", name=op.f("pk_message_keys")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_upgrade()
        return
    op.execute(KEYS_FROM_MESSAGES.format(queue="json_extract(triage, '$.queue')"))
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_shop_id_platform_external_id", type_="unique")
    op.create_index("ix_ticket_events_at", "ticket_events", ["at"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres_downgrade()
    else:
        op.drop_index("ix_ticket_events_at", table_name="ticket_events")
        with op.batch_alter_table("messages") as batch:
            batch.create_unique_constraint("uq_messages_shop_id_platform_external_id",
                                           ["shop_id", "platform", "external_id"])
    op.drop_table("message_keys")
