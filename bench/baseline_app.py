"""Baselines for bench/ingest.py, served by uvicorn like the service itself.

/bare: verify the Standard Webhooks signature, parse the same body, answer 202 (the framework's ceiling).
/durable: the same, plus one INSERT per message committed before answering, on the bare driver
(asyncpg or sqlite3 through aiosqlite) with no ORM: the storage ceiling.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.schemas.webhooks import WebhookBatch
from app.services import signing

SECRET = os.environ["BENCH_SECRET"]
DATABASE_URL = os.environ["BENCH_DATABASE_URL"]
DDL = "CREATE TABLE IF NOT EXISTS bench_messages (id {pk}, external_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)"


async def _verified(request: Request) -> WebhookBatch:
    body = await request.body()
    signing.verify(secrets=[SECRET], headers=request.headers, body=body, now=time.time(), tolerance=300)
    return WebhookBatch.model_validate_json(body)


def _answer(batch: WebhookBatch) -> JSONResponse:
    return JSONResponse({"results": [{"message_id": m.message_id} for m in batch.messages]}, status_code=202)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if DATABASE_URL.startswith("postgresql"):
        import asyncpg

        dsn = DATABASE_URL.replace("postgresql+asyncpg", "postgresql")
        pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        await pool.execute(DDL.format(pk="BIGSERIAL PRIMARY KEY"))

        async def store(batch: WebhookBatch) -> None:
            async with pool.acquire() as connection, connection.transaction():
                await connection.executemany("INSERT INTO bench_messages (external_id, body) VALUES ($1, $2)",
                                             [(m.message_id, m.text) for m in batch.messages])
        app.state.store = store
        yield
        await pool.close()
    else:
        import aiosqlite

        db = await aiosqlite.connect(DATABASE_URL.split(":///", 1)[1], isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000"):
            await db.execute(f"PRAGMA {pragma}")
        await db.execute(DDL.format(pk="INTEGER PRIMARY KEY"))

        lock = asyncio.Lock()  # one connection: transactions must not interleave

        async def store(batch: WebhookBatch) -> None:
            async with lock:
                await _store(batch)

        async def _store(batch: WebhookBatch) -> None:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("INSERT INTO bench_messages (external_id, body) VALUES (?, ?)",
                                 [(m.message_id, m.text) for m in batch.messages])
            await db.execute("COMMIT")
        app.state.store = store
        yield
        await db.close()


app = FastAPI(lifespan=lifespan)


@app.post("/bare/{shop_id}/webhooks/messages", status_code=202)
async def bare(shop_id: str, request: Request) -> Any:
    return _answer(await _verified(request))


@app.post("/durable/{shop_id}/webhooks/messages", status_code=202)
async def durable(shop_id: str, request: Request) -> Any:
    batch = await _verified(request)
    await request.app.state.store(batch)
    return _answer(batch)
