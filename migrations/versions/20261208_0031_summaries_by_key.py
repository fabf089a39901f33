"""The summaries' triggers look up a statement's tickets by key at any table size (PostgreSQL).

bench/ingest.py starts on an empty database, and a PL/pgSQL statement keeps the plan it made on the first calls, when
the tables were empty. Two of those plans grew with the tables instead of with the statement:
  * triage_round_facts_batch() joined the statement's tickets to round_facts as a nested loop whose inner side read
    the whole of ix_round_facts_ticket (no index condition: at zero rows both ways cost the same), once per ticket;
  * triage_episode_facts() marked an episode ended by a sequential scan of episode_facts, once per event.
With 1,800 rounds stored, the first cost 7 ms of a 21-message group. Now every lookup of round_facts names its
tickets as an index condition (a correlated subquery kept apart by OFFSET 0, or `ticket_id = ANY` of the statement's
tickets), and triage_episode_facts() plans its statements with index lookups alone, as the batch function already
did. The rules themselves are 0023's and 0020's, unchanged; SQLite's row triggers are untouched.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BY_KEY = "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"

# The set-based statements of 0023 with each round_facts lookup bound to the statement's tickets.
_BUYERS_AND_REPLIES = """
    WITH buyer AS (
        SELECT a.ticket_id, min(a.shop_id) AS shop_id, min(a.received_at) AS received_at,
               bool_or(t.status = 'resolved' OR t.primary_intent = '') AS fresh, min(t.opened_at) AS opened_at,
               min(a.id) AS first_id
        FROM added a JOIN tickets t ON t.id = a.ticket_id
        WHERE a.direction = 'inbound'
        GROUP BY a.ticket_id
    ), starting AS (
        SELECT b.ticket_id FROM buyer b
        WHERE b.fresh AND NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = b.ticket_id
                                      AND r.episode = b.received_at OFFSET 0)
    ), cut AS (
        UPDATE round_facts r SET cut = 1
        WHERE r.ticket_id = ANY (ARRAY(SELECT ticket_id FROM starting)) AND r.reply_at IS NULL AND r.cut = 0
    )
    INSERT INTO round_facts (ticket_id, shop_id, episode, started)
    SELECT b.ticket_id, b.shop_id, CASE WHEN b.fresh THEN b.received_at ELSE b.opened_at END, b.received_at
    FROM buyer b
    WHERE b.ticket_id IN (SELECT ticket_id FROM starting)
       OR NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = b.ticket_id AND r.reply_at IS NULL
                      AND r.cut = 0 OFFSET 0)
    ORDER BY b.first_id;
    -- Replies: a ticket's first one answers its open round (the row rules found none open for the next ones).
    WITH o AS (
        SELECT DISTINCT ON (a.ticket_id) a.ticket_id, a.sent_at, a.received_at, a.agent_id
        FROM added a WHERE a.direction = 'outbound' AND a.content ->> 'auto_reply' IS NULL
        ORDER BY a.ticket_id, a.id
    )
    UPDATE round_facts r SET reply_at = least(o.sent_at, o.received_at), replier = o.agent_id
    FROM o
    WHERE r.ticket_id = o.ticket_id AND r.ticket_id = ANY (ARRAY(SELECT ticket_id FROM o))
      AND r.reply_at IS NULL AND r.cut = 0;
    RETURN NULL;"""


def _batch_function() -> str:
    """0023's function with the statements above in place of its set-based ones."""
    before = op.get_context().script.get_revision("0023").module.FUNCTION  # type: ignore[attr-defined]
    head, sep, _ = before.partition("    -- Buyer messages: per ticket")
    assert sep and "SET enable_seqscan = off" in head
    rules = "\n    -- Buyer messages: per ticket, the first one does what the row rules did; the others found its round open."
    return head.rstrip() + rules + _BUYERS_AND_REPLIES + "\nEND\n$$\n"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_batch_function())
    op.execute(f"ALTER FUNCTION triage_episode_facts() {_BY_KEY}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER FUNCTION triage_episode_facts() RESET ALL")
    op.execute(op.get_context().script.get_revision("0023").module.FUNCTION)  # type: ignore[attr-defined]
