"""triage_claim() runs its statements with generic plans (plan_cache_mode = force_generic_plan on the function).

PL/pgSQL plans each statement with the call's values until a generic plan looks no dearer than the custom ones. The
hold test of 0024 (an OR with a NOT EXISTS per ticket) made the generic plan of the pick look dearer, so every pick
was planned again, and under contention a claim makes several picks (a candidate another claimer locked is passed
over and the pick made again): on bench/queues.py's database level with 20 consumers the backends spent 2.3-2.5 ms of
CPU per claimed and resolved ticket against 1.1 ms before 0024, and the rate halved. The generic plans are the same
probes of ix_tickets_claim by shop and queue (tests/db/test_claim_per_queue.py checks both plans); the function's
statements all look up by keys, so no value could make another plan better.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "triage_claim(text, text, timestamptz, timestamptz, text, timestamptz, timestamptz)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode")
