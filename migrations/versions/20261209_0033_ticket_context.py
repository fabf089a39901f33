"""A ticket keeps its open episode's latest buyer texts, the context a fragment is read in.

Ingestion used to read them from messages for each request with a fragment, on a connection and in a transaction
of its own before the request was queued (migration 0032's function): in bench/ingest.py at 20 messages a request
that read cost the service and PostgreSQL together about 60 µs a message, a sixth of their CPU. Now the writer
keeps them on the ticket it updates anyway (app/services/ingest.py), and prepare, which reads the ticket already,
returns them. Open tickets get theirs from messages here; the function of 0032 has no caller left.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-09
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# Written out here, not imported: a migration keeps the number of its day (app/triage/hybrid.py, CONTEXT_MESSAGES).
LATEST = 3
_LATEST_TEXTS = ("SELECT id, text FROM messages m WHERE m.ticket_id = tickets.id AND m.direction = 'inbound' "
                 f"AND m.text <> '' AND m.received_at >= tickets.opened_at ORDER BY m.id DESC LIMIT {LATEST}")
BACKFILL = {
    "postgresql": ("UPDATE tickets SET context = coalesce((SELECT jsonb_agg(x.text ORDER BY x.id) "
                   f"FROM ({_LATEST_TEXTS}) x), '[]'::jsonb) WHERE status <> 'resolved'"),
    # SQLite's json_group_array takes its rows in the order the subquery gives them.
    "sqlite": ("UPDATE tickets SET context = (SELECT json_group_array(x.text) FROM "
               f"(SELECT * FROM ({_LATEST_TEXTS}) ORDER BY id) x) WHERE status <> 'resolved'"),
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("tickets", sa.Column("context", JSON, nullable=False, server_default="[]"))
    op.execute(BACKFILL[dialect])
    if dialect == "postgresql":
        op.execute("DROP FUNCTION triage_episode_texts(text[], text[], text[], int)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function_of_0032())
    with op.batch_alter_table("tickets", recreate="never") as batch_op:
        batch_op.drop_column("context")


def _function_of_0032() -> str:
    """The function 0032 made, from that migration's own text."""
    path = Path(__file__).with_name("20261208_0032_episode_texts.py")
    spec = importlib.util.spec_from_file_location("migration_0032", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)
