"""The periodic whole-service queries read partial indexes, never every ticket ever stored.

Tickets are never deleted, so a query that scans the table grows slower forever: /metrics (every scrape of
every process) and the lease reaper (every second in every process) must stay on their partial indexes. A
partial index is only used when the query's condition implies the index's predicate, which an innocent
rewording breaks; these tests ask each database for its plan.
"""

from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.clock import utcnow
from app.db.claims import COUNTED, EXPIRING, OLDEST, QUIET, QUIET_PENDING, SNOOZED_DUE
from app.db.driver import driver
from app.db.sla import overdue_sql
from app.db.stats import backlog_everywhere_statement

pytestmark = pytest.mark.asyncio


async def plan(app: FastAPI, statement: Any) -> list[str]:
    async with app.state.sessionmaker() as session:
        connection = await session.connection()
        compiled = statement.compile(dialect=connection.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup)
        if connection.dialect.name == "postgresql":
            # Without the choice of a sequential scan, only a missing index shows one in the plan; without the
            # choice of a sort, only an index lacking the order does (on the suite's few rows two partial indexes
            # of queued tickets cost alike, and the one that needs a sort was chosen after some tests' data).
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await connection.exec_driver_sql("SET LOCAL enable_sort = off")
            rows = await connection.exec_driver_sql(f"EXPLAIN {compiled}", params)
        else:
            rows = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        lines = [str(row[-1]) for row in rows]
        await session.rollback()
    return lines


async def plan_text(app: FastAPI, sql: str, *params: Any) -> list[str]:
    """The plan of a statement of the stores on the bare driver (placeholders $1, $2...)."""
    async with driver(app.state.drivers) as db, db.transaction():
        if db.postgres:
            await db.execute("SET LOCAL enable_seqscan = off")
            await db.execute("SET LOCAL enable_sort = off")  # as in plan()
            rows = await db.rows(f"EXPLAIN {sql}", *params)
        else:
            rows = await db.rows(f"EXPLAIN QUERY PLAN {sql}", *params)
    return [str(list(row.values())[-1]) for row in rows]


def whole_table_reads(lines: list[str]) -> list[str]:
    return [line for line in lines if "Seq Scan on tickets" in line
            or (line.strip().startswith("SCAN") and "tickets" in line and "USING" not in line)]


async def test_metrics_read_counters_and_the_queued_index(app: FastAPI) -> None:
    lines = await plan(app, backlog_everywhere_statement())
    assert not whole_table_reads(lines), "\n".join(lines)
    assert any("ix_tickets_queued" in line for line in lines), "\n".join(lines)


async def test_queue_depths_read_counters_and_the_queued_index(app: FastAPI) -> None:
    sql = (f"WITH c AS (SELECT queue, tier, sum(queued) AS n FROM ({COUNTED}) x GROUP BY queue, tier) "
           f"SELECT c.queue, c.tier, c.n, ({OLDEST.format(shop='$1')}) AS opened_at FROM c WHERE c.n > 0")
    lines = await plan_text(app, sql, "s")
    assert not whole_table_reads(lines), "\n".join(lines)
    assert any("ix_tickets_queued" in line for line in lines), "\n".join(lines)


async def test_the_reaper_finds_expired_leases_in_the_held_index(app: FastAPI) -> None:
    async with driver(app.state.drivers) as db:
        skip_locked = db.skip_locked
    lines = await plan_text(app, EXPIRING + skip_locked, datetime.now().astimezone(), 500)
    assert not whole_table_reads(lines), "\n".join(lines)
    assert any("ix_tickets_held" in line for line in lines), "\n".join(lines)


async def test_the_auto_close_pick_reads_the_queued_index(app: FastAPI) -> None:
    async with driver(app.state.drivers) as db:
        skip_locked = db.skip_locked
    lines = await plan_text(app, QUIET + skip_locked, "s", "presale", datetime.now().astimezone(), 500, 4)
    assert not whole_table_reads(lines), "\n".join(lines)
    assert any("ix_tickets_queued" in line for line in lines), "\n".join(lines)


async def test_the_reaper_finds_due_snoozes_and_auto_close_quiet_ones_in_the_pending_indexes(app: FastAPI) -> None:
    async with driver(app.state.drivers) as db:
        skip_locked = db.skip_locked
    now = datetime.now().astimezone()
    for sql, params, index in ((SNOOZED_DUE, (now, 500), "ix_tickets_snoozed"),
                               (QUIET_PENDING, ("s", now, 500), "ix_tickets_pending")):
        lines = await plan_text(app, sql + skip_locked, *params)
        assert not whole_table_reads(lines), "\n".join(lines)
        assert any(index in line for line in lines), "\n".join(lines)


async def test_the_sla_watch_reads_only_unrecorded_breaches_from_the_unanswered_index(app: FastAPI) -> None:
    async with driver(app.state.drivers) as db:
        sql = overdue_sql(db)
    lines = await plan_text(app, sql, datetime.now().astimezone(), 500)
    assert not whole_table_reads(lines), "\n".join(lines)
    assert any("ix_tickets_unanswered" in line for line in lines), "\n".join(lines)


async def test_every_connection_of_the_service_runs_without_jit(app: FastAPI) -> None:
    """Whatever the server's default: its cost threshold is crossed as the tables grow (app/db/session.py)."""
    async with driver(app.state.drivers) as db:
        if not db.postgres:
            pytest.skip("JIT is PostgreSQL's")
        assert (await db.row("SELECT current_setting('jit') AS jit"))["jit"] == "off"
    async with app.state.sessionmaker() as session:
        assert (await session.execute(text("SELECT current_setting('jit')"))).scalar() == "off"
