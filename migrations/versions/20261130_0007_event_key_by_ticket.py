"""The event trail is keyed by ticket on PostgreSQL: one index entry fewer for every event appended.

ticket_events was keyed by id alone, with a second index on (ticket_id, id), the order in which a ticket's
trail is read. Nothing looks an event up by id alone, so on PostgreSQL (ticket_id, id) becomes the key and the
second index goes. A claim and a resolve each append an event: counted with callgrind on PostgreSQL 15 (one
consumer, 2,000 claim+resolve pairs), 1,170k -> 1,148k instructions per ticket, 157 bytes less WAL per
ticket, and about 3 % more claim+resolve pairs a second with 20 consumers.
SQLite keeps the rowid key that numbers its events, and the index beside it.

Tried and not taken (measured against 0006):
  - The holder rule as a BEFORE trigger instead of a table check. PostgreSQL reads a table check back from
    its text, plans and compiles it for every UPDATE statement (43k instructions per claim and per resolve),
    and the trigger saves 49k per ticket with one consumer; but a BEFORE UPDATE trigger first locks the row
    it is given (55 more bytes of WAL per ticket), and with 20 consumers the rate did not move. The check
    stays: it is declared where it is read, and costs the same.
  - Updating the picked row by its ctid instead of its id (-15k): when a message re-ranks the ticket between
    the claim's snapshot and its lock, the locked version is one that snapshot cannot see, and the claim
    would come back empty with the ticket still queued.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgres():
        return
    op.execute("ALTER TABLE ticket_events DROP CONSTRAINT pk_ticket_events, "
               "ADD CONSTRAINT pk_ticket_events PRIMARY KEY (ticket_id, id)")
    op.drop_index("ix_ticket_events_ticket", "ticket_events")


def downgrade() -> None:
    if not _postgres():
        return
    op.create_index("ix_ticket_events_ticket", "ticket_events", ["ticket_id", "id"])
    op.execute("ALTER TABLE ticket_events DROP CONSTRAINT pk_ticket_events, ADD CONSTRAINT pk_ticket_events PRIMARY KEY (id)")
