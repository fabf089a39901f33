"""Contract of the template store (app/db/templates.py): one table of cases against the shared adapter on each
database (the `app` fixture is one per backend), each case in a transaction rolled back at its end."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.templates import SharedTemplateStore
from tests.support.rollback import rolled_back_driver

pytestmark = pytest.mark.asyncio

SET = [{"id": "hi", "intent": "any", "emotion": "any", "apology": False,
        "text": {"zh": "{buyer_nick}您好 😊", "en": "Hi \"{buyer_nick}\""}},
       {"id": "where", "intent": "logistics", "emotion": "angry", "apology": True,
        "text": {"zh": "訂單{order_id}已催促"}}]


async def a_stored_set_reads_back_whole_and_in_order(store: SharedTemplateStore, shop_id: str) -> None:
    now = utcnow()
    written = await store.put(shop_id=shop_id, templates=SET, now=now)
    read = await store.get(shop_id=shop_id)
    assert read is not None and (read.templates, read.version) == (SET, 1) == (written.templates, written.version)
    assert abs(read.updated_at - now) < timedelta(milliseconds=1)


async def a_second_put_replaces_the_set_and_counts_the_writes(store: SharedTemplateStore, shop_id: str) -> None:
    await store.put(shop_id=shop_id, templates=SET, now=utcnow())
    later = utcnow() + timedelta(seconds=5)
    await store.put(shop_id=shop_id, templates=SET[1:], now=later)
    read = await store.get(shop_id=shop_id)
    assert read is not None and (read.templates, read.version, read.updated_at > utcnow()) == (SET[1:], 2, True)


async def an_empty_set_is_stored_not_the_shipped_one(store: SharedTemplateStore, shop_id: str) -> None:
    await store.put(shop_id=shop_id, templates=[], now=utcnow())
    read = await store.get(shop_id=shop_id)
    assert read is not None and read.templates == []


async def a_shop_that_stored_nothing_reads_none(store: SharedTemplateStore, shop_id: str) -> None:
    assert await store.get(shop_id=shop_id) is None
    await store.put(shop_id=shop_id, templates=SET, now=utcnow())
    assert await store.get(shop_id=shop_id + "-other") is None  # one shop's set is not another's


CASES: list[Callable[[SharedTemplateStore, str], Awaitable[None]]] = [
    a_stored_set_reads_back_whole_and_in_order,
    a_second_put_replaces_the_set_and_counts_the_writes,
    an_empty_set_is_stored_not_the_shipped_one,
    a_shop_that_stored_nothing_reads_none,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
async def test_template_store(case: Callable[[SharedTemplateStore, str], Awaitable[None]], app: FastAPI,
                              new_shop: Any) -> None:
    shop = await new_shop()
    async with rolled_back_driver(app) as db:
        await case(SharedTemplateStore(db), shop["id"])
