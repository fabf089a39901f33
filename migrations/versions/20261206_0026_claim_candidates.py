"""A contended claim locks the best free ticket among the first few of each served queue, not only the one best.

0021's claim read the head of each served queue, took the best, and tried to lock it with SKIP LOCKED; when another
claimer held it, the pick was made again without it. Claimers of one shop read the same head at the same time, so
with 20 of them a claim made six to seven picks on average (bench/queues.py's database level). The first pick is
still the one best head (uncontended, reading more would cost more); once a pick has been lost, the next reads the
first CANDIDATES entries of ix_tickets_claim in each served queue that the agent may take (0024's hold test), and the
locking statement takes the best of them by the claim order that is still queued and not locked by another claimer:
one statement skips every ticket being claimed right now.

The order stays exactly that of the scan across the served queues skipping locked rows. A queue that gave all
CANDIDATES entries may hold better tickets than another queue's candidates behind them, so the candidates stop at
the frontier, the best of such queues' last candidates: every ticket not among the candidates comes after every one
that is. When all of them are locked, they are passed over and the pick is made again, as before.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CANDIDATES = 8

_HEAD = "LANGUAGE plpgsql VOLATILE AS $$"
# 0025's setting, which CREATE OR REPLACE would otherwise drop.
_GENERIC = "LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$"
_LOOP_START = "    LOOP\n"
_LOOP_END = "    END LOOP;\n"
_VARIABLES_BEFORE = "    pick text;\n"
_VARIABLES = "    picks text[];\n    width integer := 1;\n"
_ORDER = "{a}.tier, {a}.priority DESC, {a}.opened_at, {a}.opened_seq"
_KEY = "({a}.tier, -{a}.priority, {a}.opened_at, {a}.opened_seq)"


def _loop(hold_test: str) -> str:
    return f"""    LOOP
        -- The first `width` entries of ix_tickets_claim in each served queue that the agent may take, up to the
        -- frontier: the best last entry of the queues that gave all `width` (their next may beat others' last).
        WITH heads AS MATERIALIZED (
            SELECT h.*, row_number() OVER (PARTITION BY s.queue ORDER BY {_ORDER.format(a='h')}) AS n
            FROM unnest(served) AS s(queue)
            CROSS JOIN LATERAL (
                SELECT t.id, t.tier, t.priority, t.opened_at, t.opened_seq FROM tickets t
                WHERE t.shop_id = p_shop AND t.queue = s.queue AND t.status = 'queued' AND t.id <> ALL (passed)
                  AND {hold_test}
                ORDER BY {_ORDER.format(a='t')}
                LIMIT width) h),
        frontier AS (
            SELECT f.tier, f.priority, f.opened_at, f.opened_seq FROM heads f WHERE f.n = width
            ORDER BY {_ORDER.format(a='f')} LIMIT 1)
        SELECT array_agg(c.id) INTO picks FROM heads c
        WHERE NOT EXISTS (SELECT 1 FROM frontier)
           OR {_KEY.format(a='c')} <= (SELECT {_KEY.format(a='f')[1:-1]} FROM frontier f);
        IF picks IS NULL THEN
            RETURN;
        END IF;
        -- Each statement reads a fresh snapshot: a candidate claimed since is no longer queued when locked, and
        -- one another claimer holds locked is skipped; the best of the rest is taken.
        UPDATE tickets SET status = 'assigned', assigned_agent_id = p_agent, lease_expires_at = p_lease_until,
                           updated_at = p_now
        WHERE id = (SELECT t.id FROM tickets t WHERE t.id = ANY (picks) AND t.status = 'queued'
                    ORDER BY {_ORDER.format(a='t')} LIMIT 1 FOR UPDATE SKIP LOCKED)
          AND status = 'queued'
        RETURNING * INTO claimed;
        EXIT WHEN FOUND;
        passed := passed || picks;
        -- Contended: other claimers are taking the first tickets, so look further along at once.
        width := {CANDIDATES};
    END LOOP;
"""


def _claim_function() -> str:
    script = op.get_context().script
    before = str(script.get_revision("0024").module._claim_function())
    hold_test = script.get_revision("0024").module.CLAIMABLE.format(
        now="p_now", agent="p_agent", online_after="p_online_after")
    start, end = before.index(_LOOP_START), before.index(_LOOP_END) + len(_LOOP_END)
    assert before.count(_HEAD) == 1 and before.count(_VARIABLES_BEFORE) == 1
    return ((before[:start] + _loop(hold_test) + before[end:])
            .replace(_HEAD, _GENERIC).replace(_VARIABLES_BEFORE, _VARIABLES))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_claim_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        script = op.get_context().script
        op.execute(script.get_revision("0024").module._claim_function())
        op.execute(f"ALTER FUNCTION {script.get_revision('0025').module.SIGNATURE} "
                   "SET plan_cache_mode = force_generic_plan")
