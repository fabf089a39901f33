"""Benchmark of the PostgreSQL reply: one statement whose `replied` event body is built in SQL, against the same
reply with the body from reply_event() in Python (BEGIN, update and message in one statement, the event, COMMIT).

`consumers` agents each hold one ticket and reply to it over and over on bare asyncpg connections (no thread
read, as the statements alone are compared); the two ways alternate, round by round, so both meet the same
machine. Prints replies/s of each per round and the median ratio. docs/design.md gives the figures.
Run: .venv/bin/python bench/reply.py [--replies 2000] [--consumers 10] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.clock import utcnow  # noqa: E402
from app.db import claims  # noqa: E402
from app.db.claims import PostgresTicketStore, StoredTicket, reply_event  # noqa: E402
from app.db.driver import PostgresDriver, Record, json_text  # noqa: E402
from app.db.listen import asyncpg_dsn  # noqa: E402
from app.db.migrate import upgrade_async  # noqa: E402
from bench.queues import loaded_team, postgres_database  # noqa: E402

# The reply statement without its event: ticket and outbound message, the event written after it.
_WITHOUT_EVENT = claims._PG_REPLY[:claims._PG_REPLY.index(", e AS (")] + " " + \
    claims._PG_REPLY[claims._PG_REPLY.rindex("SELECT "):] + " FROM t, m"


class EventFromPython(PostgresTicketStore):
    """The reply with its event's body from reply_event(): four round trips instead of one."""

    async def reply(self, *, ticket_id: str, agent_id: str, now: Any, lease_until: Any,
                    text: str) -> tuple[StoredTicket, Record] | None:
        async with self.transaction():
            row = await self.db.row(_WITHOUT_EVENT, ticket_id, agent_id, now, lease_until, text)
            if row is None:
                return None
            message = {k[2:]: row.pop(k) for k in list(row) if k.startswith("m_")}
            held = claims._stored(row)
            assert held is not None
            await self.db.execute(claims._EVENT, held.state.id, held.state.shop_id, now, "replied", f"agent:{agent_id}",
                                  json_text(reply_event(message_id=message["id"], ticket=held.state, now=now,
                                                        lease_until=lease_until)))
        return held, message


async def replies_per_second(store_class: type[PostgresTicketStore], connections: list[Any], held: list[tuple[str, str]],
                             replies: int) -> float:
    async def reply(connection: Any, agent_id: str, ticket_id: str) -> None:
        store = store_class(PostgresDriver(connection))
        store._thread_limit = 0  # the statements alone
        for _ in range(replies):
            now = utcnow()
            assert await store.reply(ticket_id=ticket_id, agent_id=agent_id, now=now,
                                     lease_until=now + timedelta(seconds=600), text="在的，马上帮您查") is not None

    started = time.perf_counter()
    await asyncio.gather(*(reply(c, a, t) for c, (a, t) in zip(connections, held, strict=True)))
    return replies * len(held) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=2000, help="replies per agent per round")
    parser.add_argument("--consumers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    server = os.environ.get("TRIAGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    async with postgres_database(server) as url:
        await upgrade_async(url)
        shop, team = await loaded_team(url, args.consumers, args.consumers)
        connections = [await asyncpg.connect(asyncpg_dsn(url)) for _ in team]
        try:
            held = []
            for agent, connection in zip(team, connections, strict=True):
                now = utcnow()
                claimed = await PostgresTicketStore(PostgresDriver(connection)).claim(
                    agent_id=agent["id"], shop_id=shop["id"], now=now, lease_until=now + timedelta(hours=1), event={},
                    touch_before=now - timedelta(seconds=10), online_after=now - timedelta(seconds=120), thread=False)
                assert claimed is not None
                held.append((agent["id"], claimed.state.id))
            ratios = []
            for round_number in range(args.rounds):
                ways = [PostgresTicketStore, EventFromPython]
                if round_number % 2:
                    ways.reverse()
                rates = {way: await replies_per_second(way, connections, held, args.replies) for way in ways}
                ratio = rates[PostgresTicketStore] / rates[EventFromPython]
                ratios.append(ratio)
                print(f"round {round_number + 1}: one statement {rates[PostgresTicketStore]:.0f} replies/s, "
                      f"event from reply_event() {rates[EventFromPython]:.0f} replies/s, ratio {ratio:.2f}")
            print(f"median ratio (one statement / event from Python): {median(ratios):.2f}")
        finally:
            for connection in connections:
                await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
