"""round_facts kept once per INSERT statement on PostgreSQL, not once per message.

Ingestion writes a group's messages in one statement. The row trigger of 0019 ran its function and two to four
statements for each buyer message, and planned on a young table without statistics it scanned all of round_facts for
each (docs/design.md, "Service levels from summaries", has the figures). This trigger reads the statement's messages
as a transition table. When every ticket's messages of the statement go one way and arrived together (ingestion's
buyer messages, a reply), three set-based statements do what the row trigger did message by message; otherwise (a
buyer message and a seller's answer to it in one request, say) the same rules run message by message in id order, as
before. SQLite keeps its row triggers of 0019.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One message's rules, those of 0019's triage_round_facts() with `m` for NEW (and
# `ticket` for its record `t`, a name the set-based statements below use as a table's alias).
_ONE_MESSAGE = """
        IF m.direction = 'inbound' THEN
            SELECT status, opened_at, primary_intent INTO ticket FROM tickets WHERE id = m.ticket_id;
            starts := (ticket.status = 'resolved' OR ticket.primary_intent = '')
                      AND NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = m.ticket_id
                                      AND r.episode = m.received_at);
            IF starts THEN
                UPDATE round_facts SET cut = 1 WHERE ticket_id = m.ticket_id AND reply_at IS NULL AND cut = 0;
            END IF;
            IF NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = m.ticket_id AND r.reply_at IS NULL
                           AND r.cut = 0) THEN
                INSERT INTO round_facts (ticket_id, shop_id, episode, started)
                VALUES (m.ticket_id, m.shop_id,
                        CASE WHEN ticket.status = 'resolved' OR ticket.primary_intent = '' THEN m.received_at
                             ELSE ticket.opened_at END,
                        m.received_at);
            END IF;
        ELSIF m.content ->> 'auto_reply' IS NULL THEN
            UPDATE round_facts SET reply_at = least(m.sent_at, m.received_at), replier = m.agent_id
            WHERE ticket_id = m.ticket_id AND reply_at IS NULL AND cut = 0;
        END IF;"""

FUNCTION = f"""
CREATE OR REPLACE FUNCTION triage_round_facts_batch() RETURNS trigger
LANGUAGE plpgsql
-- Each statement looks up a few tickets' rounds by key. Planned with a young table's statistics (or none), the
-- planner hashed or scanned all of round_facts for every statement; per-key index lookups are the right plan at
-- every size, so the function's statements are planned with them alone.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    m record;
    ticket record;
    starts boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM added a GROUP BY a.ticket_id
               HAVING count(DISTINCT a.direction) > 1 OR count(DISTINCT a.received_at) > 1) THEN
        FOR m IN SELECT * FROM added ORDER BY id LOOP{_ONE_MESSAGE}
        END LOOP;
        RETURN NULL;
    END IF;
    -- Buyer messages: per ticket, the first one does what the row rules did; the others found its round open.
    -- A new episode (resolved ticket, or the placeholder of a new conversation) cuts the open round and opens one,
    -- unless this transaction opened it already; otherwise a round opens when none is.
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
                                      AND r.episode = b.received_at)
    ), cut AS (
        UPDATE round_facts r SET cut = 1 FROM starting s
        WHERE r.ticket_id = s.ticket_id AND r.reply_at IS NULL AND r.cut = 0
    )
    INSERT INTO round_facts (ticket_id, shop_id, episode, started)
    SELECT b.ticket_id, b.shop_id, CASE WHEN b.fresh THEN b.received_at ELSE b.opened_at END, b.received_at
    FROM buyer b
    WHERE b.ticket_id IN (SELECT ticket_id FROM starting)
       OR NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = b.ticket_id AND r.reply_at IS NULL
                      AND r.cut = 0)
    ORDER BY b.first_id;
    -- Replies: a ticket's first one answers its open round (the row rules found none open for the next ones).
    UPDATE round_facts r SET reply_at = least(o.sent_at, o.received_at), replier = o.agent_id
    FROM (SELECT DISTINCT ON (a.ticket_id) a.ticket_id, a.sent_at, a.received_at, a.agent_id
          FROM added a WHERE a.direction = 'outbound' AND a.content ->> 'auto_reply' IS NULL
          ORDER BY a.ticket_id, a.id) o
    WHERE r.ticket_id = o.ticket_id AND r.reply_at IS NULL AND r.cut = 0;
    RETURN NULL;
END
$$
"""


def _previous() -> object:
    return op.get_context().script.get_revision("0019").module


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    op.execute("DROP TRIGGER messages_summarised ON messages")
    op.execute("CREATE TRIGGER messages_summarised AFTER INSERT ON messages REFERENCING NEW TABLE AS added "
               "FOR EACH STATEMENT EXECUTE FUNCTION triage_round_facts_batch()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER messages_summarised ON messages")
    op.execute("DROP FUNCTION triage_round_facts_batch()")
    row_trigger = "FOR EACH ROW EXECUTE FUNCTION triage_round_facts()"
    op.execute(next(s for s in _previous().POSTGRES if row_trigger in s))  # type: ignore[attr-defined]
