"""A claim reads the head of each queue its agent serves and takes the best of them (migration 0021): it must take
the ticket the scan across all of a shop's queued tickets in the claim order took before, for agents serving any
subset of the queues, ties included; skip a candidate another transaction holds rather than wait for it; and read
ix_tickets_claim once per queue served, whatever the other queues hold."""

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.claims import _CLAIM, CLAIM_ORDER_SQL, PostgresTicketStore, SharedTicketStore
from app.db.driver import driver
from tests.db.test_plans import plan_text, whole_table_reads
from tests.db.test_ticket_store import ADMIN, LEASE, TOUCH, OnDemand
from tests.support.queues import new_agent, new_ticket

pytestmark = pytest.mark.asyncio

# name: queue, tier, priority, episode start (minutes before now), opening message. The order is tier, priority
# highest first, episode start, opening message: ties on the first columns are broken by the later ones, and a
# ticket of one queue beats another queue's by each column in turn.
TICKETS = {
    "a": ("presale", 2, 100, 30, 10),
    "b": ("aftersale", 2, 100, 30, 5),    # ties a up to the opening message, which puts it first
    "c": ("complaints", 1, 10, 5, 30),   # the lowest tier wins over any priority
    "d": ("presale", 1, 10, 5, 31),      # ties c up to the opening message
    "e": ("aftersale", 2, 200, 1, 40),   # the highest priority within tier 2
    "f": ("presale", 3, 999, 60, 2),
    "g": ("complaints", 2, 100, 31, 50),  # an older episode beats a lower opening message
    "h": ("aftersale", 2, 100, 30, 6),   # between b and a
    "i": ("complaints", 4, 0, 90, 1),
}
SERVED = [("presale",), ("aftersale",), ("complaints",), ("presale", "aftersale"), ("presale", "complaints"),
          ("aftersale", "complaints"), ("presale", "aftersale", "complaints")]


def expected_order(served: tuple[str, ...]) -> list[str]:
    mine = [name for name, (queue, *_rest) in TICKETS.items() if queue in served]
    return sorted(mine, key=lambda n: (TICKETS[n][1], -TICKETS[n][2], -TICKETS[n][3], TICKETS[n][4]))


def stores(app: FastAPI, database_url: str) -> list[OnDemand]:
    adapters = [SharedTicketStore, PostgresTicketStore] if database_url.startswith("postgresql") else [
        SharedTicketStore]
    return [OnDemand(app, adapter) for adapter in adapters]


async def shaped_tickets(app: FastAPI, client: httpx.AsyncClient, shop: dict[str, Any]) -> dict[str, str]:
    """The tickets of TICKETS in the shop: made through the webhook, then given the table's queue and order."""
    ids = {name: await new_ticket(client, shop, "这个有货吗") for name in TICKETS}
    now = utcnow()
    async with driver(app.state.drivers) as db, db.transaction():
        for name, (queue, tier, priority, minutes, seq) in TICKETS.items():
            await db.execute("UPDATE tickets SET queue = $2, tier = $3, priority = $4, opened_at = $5, "
                             "opened_seq = $6 WHERE id = $1", ids[name], queue, tier, priority,
                             now - timedelta(minutes=minutes), seq)
    return ids


async def across_queues_pick(app: FastAPI, shop_id: str, served: tuple[str, ...]) -> str | None:
    """The claim's pick as it was before migration 0021: one scan of the shop's queued tickets in the claim order."""
    async with driver(app.state.drivers) as db:
        row = await db.row(f"SELECT id FROM tickets WHERE shop_id = $1 AND status = 'queued' "
                           f"AND queue IN ({', '.join(f'${i + 2}' for i in range(len(served)))}) "
                           f"ORDER BY {CLAIM_ORDER_SQL} LIMIT 1", shop_id, *served)
    return None if row is None else str(row["id"])


def postgres_claimer(app: FastAPI, agent: dict[str, Any], shop: dict[str, Any]) -> Callable[[], Awaitable[str | None]]:
    """The agent's claim on PostgreSQL's store, as the id of the ticket it took (None: none)."""
    store = OnDemand(app, PostgresTicketStore)

    async def claim() -> str | None:
        now = utcnow()
        claimed = await store.claim(agent_id=agent["id"], shop_id=shop["id"], now=now, lease_until=now + LEASE,
                                    event={}, touch_before=now - TOUCH, online_after=now - TOUCH)
        return None if claimed is None else claimed.state.id

    return claim


@pytest.mark.parametrize("served", SERVED, ids="+".join)
async def test_a_claim_takes_what_the_scan_across_queues_took(served: tuple[str, ...], app: FastAPI,
                                                             database_url: str, client: httpx.AsyncClient,
                                                             new_shop: Callable[..., Any]) -> None:
    for store in stores(app, database_url):
        shop = await new_shop()
        agent = await new_agent(client, ADMIN, shop["id"], queues=served, capacity=len(TICKETS))
        ids = await shaped_tickets(app, client, shop)
        names = {ticket_id: name for name, ticket_id in ids.items()}
        taken = []
        while True:
            before = await across_queues_pick(app, shop["id"], served)
            now = utcnow()
            claimed = await store.claim(agent_id=agent["id"], shop_id=shop["id"], now=now, lease_until=now + LEASE,
                                        event={}, touch_before=now - TOUCH, online_after=now - TOUCH)
            assert (claimed and claimed.state.id) == before, (store, taken)
            if claimed is None:
                break
            taken.append(names[claimed.state.id])
        assert taken == expected_order(served)


async def test_a_candidate_another_transaction_holds_is_passed_over(app: FastAPI, database_url: str,
                                                                   client: httpx.AsyncClient,
                                                                   new_shop: Callable[..., Any]) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: nothing else holds a row while a claim runs")
    shop = await new_shop()
    agent = await new_agent(client, ADMIN, shop["id"], capacity=len(TICKETS))
    ids = await shaped_tickets(app, client, shop)
    order = expected_order(("presale", "aftersale", "complaints"))
    claim = postgres_claimer(app, agent, shop)

    # Another transaction holds the two best (as a claimer or an ingest would): the claim takes the third at once,
    # the next one the fourth; once they are let go, the next claims take them.
    async with driver(app.state.drivers) as other, other.transaction():
        await other.execute("SELECT id FROM tickets WHERE id = $1 OR id = $2 FOR UPDATE", ids[order[0]], ids[order[1]])
        assert await asyncio.wait_for(claim(), 10) == ids[order[2]]
        assert await asyncio.wait_for(claim(), 10) == ids[order[3]]
    assert [await claim(), await claim()] == [ids[order[0]], ids[order[1]]]


async def test_the_claim_reads_the_queue_index(app: FastAPI) -> None:
    lines = await plan_text(app, _CLAIM, "agent", utcnow(), utcnow(), "shop", utcnow())
    assert not whole_table_reads(lines), "\n".join(lines)
    assert any("ix_tickets_claim" in line for line in lines), "\n".join(lines)


@pytest.mark.parametrize("plan", ["custom", "generic"])
async def test_the_claim_functions_pick_probes_each_served_queue(plan: str, app: FastAPI, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("triage_claim() is PostgreSQL's")
    async with driver(app.state.drivers) as db:
        source = (await db.row("SELECT prosrc FROM pg_proc WHERE proname = 'triage_claim'"))["prosrc"]
    pick = re.search(r"(WITH heads AS MATERIALIZED.*?)\s*;", source, re.S)
    assert pick is not None, source
    sql = re.sub(r"\bpassed\b", "$3::text[]", re.sub(r"\bserved\b", "$2::text[]", pick.group(1)))
    sql = sql.replace("p_shop", "$1").replace("p_agent", "$4").replace("p_now", "$5::timestamptz")
    sql = sql.replace("p_online_after", "$6::timestamptz").replace(" INTO picks", "")
    sql = re.sub(r"\bwidth\b", "$7::integer", sql)
    async with driver(app.state.drivers) as db, db.transaction():
        # Without the choice of a sequential scan, only a missing index shows one in the plan.
        await db.execute("SET LOCAL enable_seqscan = off")
        if plan == "custom":
            rows = await db.rows(f"EXPLAIN {sql}", "shop", ["presale", "aftersale"], [], "agent", utcnow(), utcnow(), 8)
        else:
            # The plan the function runs (migration 0025): made once for any values, as PREPARE makes it here.
            await db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await db.execute(f"PREPARE pick (text, text[], text[], text, timestamptz, timestamptz, integer) AS {sql}")
            try:
                rows = await db.rows("EXPLAIN EXECUTE pick ('shop', '{presale,aftersale}', '{}', 'agent', now(), now(), 8)")
            finally:
                await db.execute("DEALLOCATE pick")
    lines = [str(list(row.values())[-1]) for row in rows]
    if plan == "generic":
        assert any("$1" in line for line in lines), "\n".join(lines)  # the shop is a parameter: a generic plan
    scans = [line for line in lines if " on tickets" in line]
    assert scans and all("Index Scan using ix_tickets_claim on tickets" in line for line in scans), "\n".join(lines)
    # The index gives each queue's order: the only sorts are of the few heads the probes return (their numbering per
    # queue, and the frontier), none of a queue's tickets.
    sorts = [line for line in lines if re.match(r"\s*(->\s*)?Sort\b", line) and "Sort Key" not in line]
    assert len(sorts) <= 2, "\n".join(lines)
    assert all(re.search(r"Nested Loop|CTE Scan on heads", following) for following in
               (lines[lines.index(sort) + 2] for sort in sorts)), "\n".join(lines)


async def test_the_claim_function_plans_once_for_any_values(app: FastAPI, database_url: str) -> None:
    """Planned again at every call, the hold test's pick cost more CPU than the claim's own work (migration 0025)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("triage_claim() is PostgreSQL's")
    async with driver(app.state.drivers) as db:
        config = (await db.row("SELECT proconfig FROM pg_proc WHERE proname = 'triage_claim'"))["proconfig"]
    assert config == ["plan_cache_mode=force_generic_plan"], config


async def test_a_contended_claim_looks_further_along_without_leaving_the_order(app: FastAPI, database_url: str,
                                                                              client: httpx.AsyncClient,
                                                                              new_shop: Callable[..., Any]) -> None:
    """A lost pick makes the next read the first eight of each queue (migration 0026); the candidates stop at the
    best last one of a queue that gave all eight, so a ticket beyond them is never passed for a worse one."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: nothing else holds a row while a claim runs")
    shop = await new_shop()
    agent = await new_agent(client, ADMIN, shop["id"], queues=("presale", "aftersale"), capacity=20)
    # Presale p0..p10, oldest first; aftersale a0..a2, each younger than p10: the order is p0..p10, then a0..a2.
    shape = {f"p{i}": ("presale", 60 - i) for i in range(11)} | {f"a{j}": ("aftersale", 40 - j) for j in range(3)}
    ids = {name: await new_ticket(client, shop, "这个有货吗") for name in shape}
    now = utcnow()
    async with driver(app.state.drivers) as db, db.transaction():
        for seq, (name, (queue, minutes)) in enumerate(shape.items()):
            await db.execute("UPDATE tickets SET queue = $2, tier = 2, priority = 100, opened_at = $3, opened_seq = $4 "
                             "WHERE id = $1", ids[name], queue, now - timedelta(minutes=minutes), seq + 1)
    claim = postgres_claimer(app, agent, shop)

    # Other claimers hold p0..p9. The first look (p0) is lost; the next eight of presale (p1..p8) end at p8, and
    # aftersale's a0 comes after it, so a0 is no candidate; p1..p8 are held too; then p9 is held and p10 is free.
    held = [ids[f"p{i}"] for i in range(10)]
    async with driver(app.state.drivers) as other, other.transaction():
        await other.execute("SELECT id FROM tickets WHERE id = ANY ($1::text[]) FOR UPDATE", held)
        assert await asyncio.wait_for(claim(), 10) == ids["p10"]
        assert await asyncio.wait_for(claim(), 10) == ids["a0"]
    assert [await claim() for _ in range(3)] == [ids["p0"], ids["p1"], ids["p2"]]
