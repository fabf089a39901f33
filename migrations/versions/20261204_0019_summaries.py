"""Service levels from summaries: episode_facts and round_facts, kept by triggers in the transaction of each write.

The statistics rebuilt every episode of a window from the event trail, and every buyer round from the shop's
messages: at a million messages, seconds per call, growing with the data. Now:

- episode_facts, one row per episode, is kept by a trigger on ticket_events, by the rules the trail is read with
  (app/db/stats.py): a `created` or `reopened` event opens the row (queue, tier and due time from its data, the
  ticket's customer); later events change the ticket's latest episode: `reranked` lowers the tier and tightens the
  due time, `routed` and `transferred` set the queue, the first `replied` with first_response sets the first reply
  (its agent, and whether it was late), the first `resolved` the resolution (its agent and actor). Other events
  (claims, leases, each message's own) do not fire it.
- round_facts, one row per buyer round, is kept by a trigger on messages. A buyer message on a resolved ticket, or
  on the placeholder of a new conversation (ingestion writes messages before the events and the ticket's state),
  starts an episode: the open round is cut and one opens for the new episode, unless an earlier message of the
  same transaction already did; any other buyer message opens a round when none is open. An agent's reply or a
  seller's message (not the off-hours reply) answers the open round, at the earlier of its sent and received times.

Existing data is summarised from the trail and the messages by the statistics' own reading of them (this revision's
app/db/stats.py), shop by shop, inside the migration's transaction.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
# Which episode an event changes: the ticket's latest.
_LATEST = ("ticket_id = NEW.ticket_id AND opened_at = (SELECT max(f.opened_at) FROM episode_facts f "
           "WHERE f.ticket_id = NEW.ticket_id)")
_EVENT_KINDS = ("'created', 'reopened', 'reranked', 'routed', 'transferred', 'resolved', 'replied'")

POSTGRES = [f"""
CREATE OR REPLACE FUNCTION triage_episode_facts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind IN ('created', 'reopened') THEN
        INSERT INTO episode_facts (ticket_id, opened_at, shop_id, customer_id, queue, tier, due_in)
        SELECT NEW.ticket_id, NEW.at, NEW.shop_id, t.customer_id, NEW.data ->> 'queue', NEW.data ->> 'tier',
               (NEW.data ->> 'due_in')::float
        FROM tickets t WHERE t.id = NEW.ticket_id
        ON CONFLICT DO NOTHING;
    ELSIF NEW.kind = 'reranked' THEN
        UPDATE episode_facts SET tier = least(tier, NEW.data -> 'to' ->> 'tier'),
                                 due_in = least(due_in, (NEW.data ->> 'due_in')::float)
        WHERE {_LATEST};
    ELSIF NEW.kind IN ('routed', 'transferred') THEN
        UPDATE episode_facts SET queue = NEW.data ->> 'to' WHERE {_LATEST};
    ELSIF NEW.kind = 'replied' THEN
        UPDATE episode_facts SET first_response_at = NEW.at,
                                 responder = CASE WHEN NEW.actor LIKE 'agent:%' THEN substr(NEW.actor, 7) END,
                                 answered_late = coalesce((NEW.data ->> 'within_target')::boolean = false, false)
        WHERE {_LATEST} AND first_response_at IS NULL;
    ELSIF NEW.kind = 'resolved' THEN
        UPDATE episode_facts SET resolved_at = NEW.at, resolver = NEW.data ->> 'agent_id', closer = NEW.actor
        WHERE {_LATEST} AND resolved_at IS NULL;
    END IF;
    RETURN NULL;
END
$$
""", """
CREATE OR REPLACE FUNCTION triage_round_facts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    starts boolean;
BEGIN
    IF NEW.direction = 'inbound' THEN
        SELECT status, opened_at, primary_intent INTO t FROM tickets WHERE id = NEW.ticket_id;
        starts := (t.status = 'resolved' OR t.primary_intent = '')
                  AND NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = NEW.ticket_id
                                  AND r.episode = NEW.received_at);
        IF starts THEN
            UPDATE round_facts SET cut = 1 WHERE ticket_id = NEW.ticket_id AND reply_at IS NULL AND cut = 0;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = NEW.ticket_id AND r.reply_at IS NULL
                       AND r.cut = 0) THEN
            INSERT INTO round_facts (ticket_id, shop_id, episode, started)
            VALUES (NEW.ticket_id, NEW.shop_id,
                    CASE WHEN t.status = 'resolved' OR t.primary_intent = '' THEN NEW.received_at ELSE t.opened_at END,
                    NEW.received_at);
        END IF;
    ELSIF NEW.content ->> 'auto_reply' IS NULL THEN
        UPDATE round_facts SET reply_at = least(NEW.sent_at, NEW.received_at), replier = NEW.agent_id
        WHERE ticket_id = NEW.ticket_id AND reply_at IS NULL AND cut = 0;
    END IF;
    RETURN NULL;
END
$$
""",
    "CREATE TRIGGER ticket_events_summarised AFTER INSERT ON ticket_events FOR EACH ROW "
    f"WHEN (NEW.kind IN ({_EVENT_KINDS}) AND (NEW.kind <> 'replied' OR NEW.data ->> 'first_response' = 'true')) "
    "EXECUTE FUNCTION triage_episode_facts()",
    "CREATE TRIGGER messages_summarised AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION triage_round_facts()",
]

_SQLITE_NEW_EPISODE = ("EXISTS (SELECT 1 FROM tickets t WHERE t.id = NEW.ticket_id AND (t.status = 'resolved' "
                       "OR t.primary_intent = ''))")
SQLITE = [
    "CREATE TRIGGER episode_facts_opened AFTER INSERT ON ticket_events WHEN NEW.kind IN ('created', 'reopened') BEGIN "
    "INSERT INTO episode_facts (ticket_id, opened_at, shop_id, customer_id, queue, tier, due_in, answered_late) "
    "SELECT NEW.ticket_id, NEW.at, NEW.shop_id, t.customer_id, json_extract(NEW.data, '$.queue'), "
    "json_extract(NEW.data, '$.tier'), json_extract(NEW.data, '$.due_in'), 0 FROM tickets t WHERE t.id = NEW.ticket_id "
    "ON CONFLICT DO NOTHING; END",
    "CREATE TRIGGER episode_facts_reranked AFTER INSERT ON ticket_events WHEN NEW.kind = 'reranked' BEGIN "
    "UPDATE episode_facts SET tier = min(tier, json_extract(NEW.data, '$.to.tier')), "
    "due_in = CASE WHEN json_extract(NEW.data, '$.due_in') IS NULL THEN due_in WHEN due_in IS NULL "
    "THEN json_extract(NEW.data, '$.due_in') ELSE min(due_in, json_extract(NEW.data, '$.due_in')) END "
    f"WHERE {_LATEST}; END",
    "CREATE TRIGGER episode_facts_moved AFTER INSERT ON ticket_events WHEN NEW.kind IN ('routed', 'transferred') BEGIN "
    f"UPDATE episode_facts SET queue = json_extract(NEW.data, '$.to') WHERE {_LATEST}; END",
    "CREATE TRIGGER episode_facts_replied AFTER INSERT ON ticket_events WHEN NEW.kind = 'replied' "
    "AND json_extract(NEW.data, '$.first_response') = 1 BEGIN "
    "UPDATE episode_facts SET first_response_at = NEW.at, "
    "responder = CASE WHEN NEW.actor LIKE 'agent:%' THEN substr(NEW.actor, 7) END, "
    "answered_late = coalesce(json_extract(NEW.data, '$.within_target') = 0, 0) "
    f"WHERE {_LATEST} AND first_response_at IS NULL; END",
    "CREATE TRIGGER episode_facts_resolved AFTER INSERT ON ticket_events WHEN NEW.kind = 'resolved' BEGIN "
    "UPDATE episode_facts SET resolved_at = NEW.at, resolver = json_extract(NEW.data, '$.agent_id'), "
    f"closer = NEW.actor WHERE {_LATEST} AND resolved_at IS NULL; END",
    "CREATE TRIGGER round_facts_buyer AFTER INSERT ON messages WHEN NEW.direction = 'inbound' BEGIN "
    "UPDATE round_facts SET cut = 1 WHERE ticket_id = NEW.ticket_id AND reply_at IS NULL AND cut = 0 "
    f"AND {_SQLITE_NEW_EPISODE} AND NOT EXISTS (SELECT 1 FROM round_facts r WHERE r.ticket_id = NEW.ticket_id "
    "AND r.episode = NEW.received_at); "
    "INSERT INTO round_facts (ticket_id, shop_id, episode, started, cut) SELECT NEW.ticket_id, NEW.shop_id, "
    "CASE WHEN t.status = 'resolved' OR t.primary_intent = '' THEN NEW.received_at ELSE t.opened_at END, "
    "NEW.received_at, 0 FROM tickets t WHERE t.id = NEW.ticket_id AND NOT EXISTS (SELECT 1 FROM round_facts r "
    "WHERE r.ticket_id = NEW.ticket_id AND r.reply_at IS NULL AND r.cut = 0); END",
    "CREATE TRIGGER round_facts_reply AFTER INSERT ON messages WHEN NEW.direction = 'outbound' "
    "AND json_extract(NEW.content, '$.auto_reply') IS NULL BEGIN "
    "UPDATE round_facts SET reply_at = min(NEW.sent_at, NEW.received_at), replier = NEW.agent_id "
    "WHERE ticket_id = NEW.ticket_id AND reply_at IS NULL AND cut = 0; END",
]
TRIGGERS = {"ticket_events": ["ticket_events_summarised", "episode_facts_opened", "episode_facts_reranked",
                              "episode_facts_moved", "episode_facts_replied", "episode_facts_resolved"],
            "messages": ["messages_summarised", "round_facts_buyer", "round_facts_reply"]}


def _backfill() -> None:
    """Every shop's episodes and rounds, read from the trail as the statistics read it."""
    from sqlalchemy.orm import Session

    from app.db import stats

    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    since = datetime(1970, 1, 1, tzinfo=UTC)
    until = datetime(9999, 1, 1, tzinfo=UTC)
    columns = ["ticket_id", "opened_at", "shop_id", "customer_id", "queue", "tier", "due_in", "first_response_at",
               "responder", "answered_late", "resolved_at", "resolver", "closer"]
    # The tables as this revision has them (not the models of whatever revision runs it).
    EF = sa.table("episode_facts", *(sa.column(name) for name in columns))
    RF = sa.table("round_facts", *(sa.column(name) for name in
                                   ("ticket_id", "shop_id", "episode", "started", "reply_at", "replier", "cut")))
    with Session(bind=bind) as session:
        for (shop_id,) in session.execute(sa.text("SELECT id FROM shops")).all():
            ep = stats._trail_episodes(shop_id=shop_id, since=since, until=until)
            session.execute(EF.insert().from_select(columns, sa.select(
                ep.c.ticket_id, ep.c.opened_at, sa.literal(shop_id), ep.c.customer_id,
                # The trail names the running episode's queue from its ticket; the summary keeps its own moves.
                ep.c.queue, ep.c.tier, ep.c.due_in, ep.c.first_response_at, ep.c.responder,
                ep.c.answered_late == 1, ep.c.resolved_at, ep.c.resolver, ep.c.closer)))
            rounds = stats._trail_round_rows(postgres, shop_id=shop_id, since=since)
            session.execute(RF.insert().from_select(
                ["ticket_id", "shop_id", "episode", "started", "reply_at", "replier", "cut"],
                sa.select(rounds.c.ticket_id, sa.literal(shop_id), rounds.c.episode, rounds.c.started,
                          rounds.c.reply_at, rounds.c.replier, rounds.c.cut).where(rounds.c.episode.is_not(None))))
        session.flush()


def upgrade() -> None:
    op.create_table(
        "episode_facts",
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.Column("tier", sa.String(2), nullable=True),
        sa.Column("due_in", sa.Float(), nullable=True),
        sa.Column("first_response_at", TIME, nullable=True),
        sa.Column("responder", sa.String(36), nullable=True),
        sa.Column("answered_late", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("resolved_at", TIME, nullable=True),
        sa.Column("resolver", sa.String(36), nullable=True),
        sa.Column("closer", sa.String(80), nullable=True),
        sa.PrimaryKeyConstraint("ticket_id", "opened_at", name=op.f("pk_episode_facts")),
    )
    op.create_index("ix_episode_facts_shop", "episode_facts", ["shop_id", "opened_at"])
    op.create_table(
        "round_facts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("episode", TIME, nullable=False),
        sa.Column("started", TIME, nullable=False),
        sa.Column("reply_at", TIME, nullable=True),
        sa.Column("replier", sa.String(36), nullable=True),
        sa.Column("cut", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_facts")),
    )
    op.create_index("ix_round_facts_ticket", "round_facts", ["ticket_id", "episode"])
    op.create_index("ix_round_facts_shop", "round_facts", ["shop_id", "episode"])
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # The summaries start from the trail as it is at the commit: writes wait meanwhile, reads go on.
        op.execute("LOCK TABLE tickets, messages, ticket_events IN SHARE MODE")
    _backfill()
    for statement in POSTGRES if postgres else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, names in TRIGGERS.items():
        for name in names:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}" if postgres else f"DROP TRIGGER IF EXISTS {name}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS triage_episode_facts()")
        op.execute("DROP FUNCTION IF EXISTS triage_round_facts()")
    op.drop_table("round_facts")
    op.drop_table("episode_facts")
