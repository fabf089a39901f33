"""A fragment's conversation is read by a function that plans once per connection (PostgreSQL).

Ingestion reads the open episode's last buyer messages for each fragment it triages (app/db/ingest.py,
open_episode_texts). messages is partitioned by month (0017), and the statement cannot be pruned when it is planned:
each of the 18 partitions was planned again on most calls, 0.8 ms on an empty database and 2 ms a call in
bench/ingest.py, one call per request with a fragment. The function below runs the same statement with one generic
plan per connection, bounded below by the oldest of the episodes asked for, so that only the months since are
opened when it runs.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION triage_episode_texts(shop_ids text[], platforms text[], conversation_ids text[],
                                                latest int)
RETURNS TABLE (n bigint, text text)
LANGUAGE plpgsql STABLE
-- One generic plan, made once per connection, perhaps while tickets is empty: by index lookups alone, the right
-- plan for a few keys at any size.
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    since timestamptz;
BEGIN
    -- The oldest open episode's start, a parameter of the next statement: its plan leaves out the months before
    -- it when it starts, where a bound from a join is only applied row by row after every month was opened.
    SELECT min(t.opened_at) INTO since
    FROM unnest(shop_ids, platforms, conversation_ids) AS k(shop_id, platform, conversation_id)
    JOIN tickets t ON t.shop_id = k.shop_id AND t.platform = k.platform AND t.conversation_id = k.conversation_id
    WHERE t.status <> 'resolved';
    IF since IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT k.n, x.text
    FROM unnest(shop_ids, platforms, conversation_ids) WITH ORDINALITY AS k(shop_id, platform, conversation_id, n)
    CROSS JOIN LATERAL (
        SELECT m.id, m.text::text AS text FROM tickets t JOIN messages m ON m.ticket_id = t.id
        WHERE t.shop_id = k.shop_id AND t.platform = k.platform AND t.conversation_id = k.conversation_id
          AND t.status <> 'resolved' AND m.direction = 'inbound' AND m.received_at >= t.opened_at
          AND m.received_at >= since
        ORDER BY m.id DESC LIMIT latest
    ) x
    ORDER BY k.n, x.id;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION triage_episode_texts(text[], text[], text[], int)")
