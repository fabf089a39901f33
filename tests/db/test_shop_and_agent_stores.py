"""Contract of the shop and agent stores (app/db/shops.py, app/db/agents.py): one table of cases, run against
the session adapters on each database (the `app` fixture is one per backend).

Each case of CASES runs in a transaction rolled back at its end (tests/support/rollback.py), a store's commit
releasing a savepoint; the cases that post messages through the app meanwhile (CASES_WITH_THE_APP) commit, as
the app must see what they wrote.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from app.clock import utcnow
from app.db.agents import SessionAgentStore
from app.db.errors import ConstraintViolation
from app.db.models import Agent, Queue, Shop, WebhookSecret
from app.db.shops import SessionShopStore
from app.domain import EventKind, Status
from tests.support.queues import new_ticket
from tests.support.rollback import rolled_back_sessions


@dataclass
class World:
    sessions: Any  # a sessionmaker
    shop: dict[str, Any]
    client: Any

    def shops(self) -> Any:
        return _Session(self.sessions, SessionShopStore)

    def agents(self) -> Any:
        return _Session(self.sessions, SessionAgentStore)


class _Session:
    """A store on a session of its own for the block."""

    def __init__(self, sessions: Any, adapter: Any) -> None:
        self._sessions, self._adapter = sessions, adapter

    async def __aenter__(self) -> Any:
        self._session = self._sessions()
        return self._adapter(await self._session.__aenter__())

    async def __aexit__(self, *exc: Any) -> None:
        await self._session.__aexit__(*exc)


def _agent(shop_id: str, **fields: Any) -> Agent:
    return Agent(**{"id": str(uuid.uuid4()), "shop_id": shop_id, "name": "A", "level": "mid", "capacity": 3,
                    "token_hash": uuid.uuid4().hex, "active": True, "created_at": utcnow(), **fields})


async def a_shop_is_stored_with_its_queues_and_secret_once(w: World) -> None:
    now = utcnow()
    shop_id = f"shop-{uuid.uuid4().hex[:10]}"
    async with w.shops() as shops:
        await shops.add(Shop(id=shop_id, name="S", sla_targets={"P1": 15}, created_at=now),
                        queues=[Queue(shop_id=shop_id, name="presale", description="", created_at=now)],
                        secret=WebhookSecret(shop_id=shop_id, secret="s1", created_at=now))
        await shops.commit()
    async with w.shops() as shops:
        shop = await shops.get(shop_id)
        assert shop is not None and shop.sla_targets == {"P1": 15}
        assert await shops.queue_names(shop_id=shop_id) == {"presale"}
        assert await shops.secrets(shop_id=shop_id) == [("s1", None)]
        assert shop_id in [s.id for s in await shops.get_all()] and await shops.count() >= 1
    async with w.shops() as shops:
        with pytest.raises(ConstraintViolation):
            await shops.add(Shop(id=shop_id, name="again", sla_targets={}, created_at=now), queues=[],
                            secret=WebhookSecret(shop_id=shop_id, secret="s2", created_at=now))
            await shops.commit()
        await shops.rollback()
    async with w.shops() as shops:
        assert (await shops.get(shop_id)).name == "S"  # type: ignore[union-attr]


async def old_secrets_verify_until_their_end(w: World) -> None:
    now, shop_id = utcnow(), w.shop["id"]
    async with w.shops() as shops:
        await shops.expire_current_secrets(shop_id=shop_id, at=now + timedelta(hours=1))
        await shops.add_secret(WebhookSecret(shop_id=shop_id, secret="next", created_at=now))
        await shops.commit()
    async with w.shops() as shops:
        assert await shops.valid_secrets(shop_id=shop_id, now=now) == ["next", w.shop["webhook_secret"]]
        assert await shops.valid_secrets(shop_id=shop_id, now=now + timedelta(hours=2)) == ["next"]


async def queues_are_found_by_name(w: World) -> None:
    now, shop_id = utcnow(), w.shop["id"]
    async with w.shops() as shops:
        await shops.add_queue(Queue(shop_id=shop_id, name="vip", description="VIP", sla_targets={"P1": 5},
                                    created_at=now))
        await shops.commit()
    async with w.shops() as shops:
        assert [q.name for q in await shops.queues(shop_id=shop_id)] == \
            ["aftersale", "complaints", "escalations", "presale", "vip"]
        vip = await shops.queue(shop_id=shop_id, name="vip")
        assert vip is not None and vip.sla_targets == {"P1": 5}
        assert await shops.queue(shop_id=shop_id, name="nowhere") is None


async def ruleset_versions_are_numbered_per_shop_and_one_is_active(w: World) -> None:
    now, shop_id = utcnow(), w.shop["id"]
    async with w.shops() as shops:
        assert await shops.next_version(shop_id=shop_id) == 1
        await shops.add_version(shop_id=shop_id, version=1, name="mine", body={"routes": {}}, now=now)
        await shops.set_active_version(shop_id=shop_id, version=1)
        await shops.commit()
    async with w.shops() as shops:
        assert await shops.next_version(shop_id=shop_id) == 2
        with pytest.raises(ConstraintViolation):  # the number is taken
            await shops.add_version(shop_id=shop_id, version=1, name="other", body={}, now=now)
        await shops.rollback()
    later = now + timedelta(minutes=1)
    async with w.shops() as shops:
        await shops.mark_activated(shop_id=shop_id, version=1, now=later)
        await shops.commit()
    async with w.shops() as shops:
        shop = await shops.get(shop_id, lock=True)
        assert shop is not None and shop.active_ruleset_version == 1
        [version] = await shops.versions(shop_id=shop_id)
        assert (version.version, version.name, version.created_at, version.activated_at) == (1, "mine", now, later)
        assert await shops.version_exists(shop_id=shop_id, version=1)
        assert not await shops.version_exists(shop_id=shop_id, version=2)
        row = await shops.ruleset(shop_id=shop_id, version=1)
        assert row is not None and row.body == {"routes": {}}


async def recent_inbound_messages_come_newest_first(w: World) -> None:
    first = await new_ticket(w.client, w.shop, "我要退货")
    second = await new_ticket(w.client, w.shop, "这个有货吗")
    async with w.shops() as shops:
        rows = await shops.recent_inbound(shop_id=w.shop["id"], limit=10)
        assert [(r.ticket_id, r.text) for r in rows] == [(second, "这个有货吗"), (first, "我要退货")]
        assert len(await shops.recent_inbound(shop_id=w.shop["id"], limit=1)) == 1


async def an_agent_is_stored_with_its_queues_and_found_by_token(w: World) -> None:
    agent = _agent(w.shop["id"])
    async with w.agents() as agents:
        await agents.add(agent, queues=["presale", "complaints", "presale"])
        await agents.commit()
    async with w.agents() as agents:
        found = await agents.by_token_hash(agent.token_hash)
        assert found is not None and found.id == agent.id
        assert await agents.queues(agent_ids=[agent.id]) == {agent.id: ["complaints", "presale"]}
        assert await agents.get(shop_id="other-shop", agent_id=agent.id) is None
        stored = await agents.get(shop_id=w.shop["id"], agent_id=agent.id)
        assert stored is not None
        await agents.set_queues(stored, queues=["aftersale"])
        stored.active = False
        await agents.commit()
    async with w.agents() as agents:
        assert await agents.queues(agent_ids=[agent.id]) == {agent.id: ["aftersale"]}
        assert await agents.by_token_hash(agent.token_hash) is None  # inactive
        assert [a.id for a in await agents.get_all(shop_id=w.shop["id"])] == [agent.id]


async def a_deactivated_agents_tickets_go_back_in_the_same_transaction(w: World) -> None:
    agent = _agent(w.shop["id"])
    async with w.agents() as agents:
        await agents.add(agent, queues=["aftersale"])
        await agents.commit()
    ticket_id = await new_ticket(w.client, w.shop, "我要退货")
    now = utcnow()
    async with w.agents() as agents:
        tickets = await agents.tickets()
        claimed = await tickets.claim(agent_id=agent.id, shop_id=w.shop["id"], now=now,
                                      lease_until=now + timedelta(minutes=2), event={},
                                      touch_before=now, online_after=now - timedelta(minutes=2))
        assert claimed is not None and claimed.state.id == ticket_id
        await agents.commit()
    async with w.agents() as agents:
        stored = await agents.get(shop_id=w.shop["id"], agent_id=agent.id)
        stored.active = False  # type: ignore[union-attr]
        await agents.write()
        tickets = await agents.tickets()
        assert [r["id"] for r in await tickets.release_all(agent_id=agent.id, now=now)] == [ticket_id]
        # Not committed: rolled back with the session, the agent still holds it.
    async with w.agents() as agents:
        held = await (await agents.tickets()).agent_tickets(agent_id=agent.id)
        assert [t.state.id for t in held] == [ticket_id] and held[0].state.status == Status.ASSIGNED
        stored = await agents.get(shop_id=w.shop["id"], agent_id=agent.id)
        assert stored is not None and stored.active
        released = await (await agents.tickets()).release_all(agent_id=agent.id, now=now)
        await (await agents.tickets()).add_events([{"ticket_id": ticket_id, "shop_id": w.shop["id"], "at": now,
                                                    "kind": EventKind.RELEASED, "actor": "admin", "data": {}}])
        assert len(released) == 1
        await agents.commit()
    async with w.agents() as agents:
        assert await (await agents.tickets()).agent_tickets(agent_id=agent.id) == []


CASES: list[Callable[[World], Awaitable[None]]] = [
    a_shop_is_stored_with_its_queues_and_secret_once,
    old_secrets_verify_until_their_end,
    queues_are_found_by_name,
    ruleset_versions_are_numbered_per_shop_and_one_is_active,
    an_agent_is_stored_with_its_queues_and_found_by_token,
]
CASES_WITH_THE_APP: list[Callable[[World], Awaitable[None]]] = [
    recent_inbound_messages_come_newest_first,
    a_deactivated_agents_tickets_go_back_in_the_same_transaction,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_shop_and_agent_store_contract(case: Callable[[World], Awaitable[None]], app: FastAPI, client: Any,
                                             new_shop: Any) -> None:
    shop = await new_shop()
    async with rolled_back_sessions(app) as sessions:
        await case(World(sessions, shop, client))


@pytest.mark.parametrize("case", CASES_WITH_THE_APP, ids=lambda case: case.__name__)
async def test_shop_and_agent_store_contract_beside_the_app(case: Callable[[World], Awaitable[None]], app: FastAPI,
                                                            client: Any, new_shop: Any) -> None:
    await case(World(app.state.sessionmaker, await new_shop(), client))


async def test_a_case_leaves_nothing_behind(app: FastAPI, client: Any, new_shop: Any) -> None:
    shop = await new_shop()
    async with rolled_back_sessions(app) as sessions:
        await an_agent_is_stored_with_its_queues_and_found_by_token(World(sessions, shop, client))
    async with app.state.sessionmaker() as session:
        assert await SessionAgentStore(session).get_all(shop_id=shop["id"]) == []
