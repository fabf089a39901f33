"""Text the database cannot store (NUL) in any id, query parameter or body field: a 4xx, never a 500.

The table is built from the OpenAPI document, so an operation added later is covered without a new row: every
path parameter (the others real, so each lookup is reached), every query parameter and every string of each
operation's documented request example, one at a time, with the credentials the operation takes.
"""

import copy
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.support import ADMIN_TOKEN
from tests.support.queues import bearer, claim, new_agent, new_ticket
from tests.support.webhooks import signed_headers

SPEC = create_app(Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:",
                           admin_token=ADMIN_TOKEN)).openapi()
NUL = "x\x00y"
ADMIN = bearer(ADMIN_TOKEN)


def _request_examples(operation: dict[str, Any]) -> list[Any]:
    """The documented request bodies of an operation: its own examples, else its model's."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return []
    found = [content["example"]] if "example" in content else []
    found += [example["value"] for example in content.get("examples", {}).values()]
    schema = content.get("schema", {})
    schema = next((s for s in schema.get("anyOf", []) if "$ref" in s), schema)
    name = schema.get("$ref", "/").rsplit("/", 1)[1]
    return found or SPEC["components"]["schemas"].get(name, {}).get("examples", [])


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))


def _cases() -> Iterator[Any]:
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query"):
                    where = f"{parameter['in']}.{parameter['name']}"
                    yield pytest.param(method, path, where, id=f"{method.upper()} {path} {where}")
            for number, example in enumerate(_request_examples(operation)):
                for leaf in _string_leaves(example):
                    where = f"body{number}." + ".".join(map(str, leaf))
                    yield pytest.param(method, path, where, id=f"{method.upper()} {path} {where}")


CASES = list(_cases())


def test_the_table_covers_every_operation_that_takes_an_id() -> None:
    taking = {(m, p) for p, ops in SPEC["paths"].items() for m, op in ops.items()
              if any(x["in"] == "path" for x in op.get("parameters", []))}
    covered = {(case.values[0], case.values[1]) for case in CASES}
    assert taking <= covered and len(taking) >= 28, sorted(taking - covered)


@pytest.fixture(scope="module")
async def world(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """A shop, an agent serving every queue and a ticket it holds."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        shop = (await http.post("/v1/shops", json={"id": f"nul-{uuid.uuid4().hex[:8]}", "name": "NUL"},
                                headers=ADMIN)).json()
        agent = await new_agent(http, ADMIN, shop["id"], capacity=50)
        ticket = await new_ticket(http, shop, "包裹怎么还没到")
        assert (await claim(http, agent)).status_code == 200
        endpoint = (await http.post(f"/v1/shops/{shop['id']}/endpoints", headers=ADMIN, json={
            "url": "http://127.0.0.1:9/never", "events": ["sla.breached"]})).json()
        yield {"shop_id": shop["id"], "agent_id": agent["id"], "ticket_id": ticket, "name": "presale",
               "endpoint_id": endpoint["id"], "delivery_id": "1",
               "secret": shop["webhook_secret"], "agent": agent["headers"]}


def _credentials(operation: dict[str, Any], world: dict[str, Any]) -> dict[str, str]:
    schemes = {name for option in operation.get("security", []) for name in option}
    if "AdminToken" in schemes:
        return ADMIN
    if "AgentToken" in schemes:
        return world["agent"]
    return {}


@pytest.mark.parametrize(("method", "path", "where"), CASES)
async def test_unstorable_text_is_a_4xx(client: httpx.AsyncClient, world: dict[str, Any], method: str, path: str,
                                        where: str) -> None:
    operation = SPEC["paths"][path][method]
    kind, _, name = where.partition(".")
    examples = _request_examples(operation)
    body = copy.deepcopy(examples[int(kind[4:])] if kind.startswith("body") else (examples or [None])[0])
    url = path
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = NUL if where == f"path.{parameter['name']}" else world[parameter["name"]]
            url = url.replace("{" + parameter["name"] + "}", quote(value, safe=""))
    query = f"?{name}={quote(NUL)}" if kind == "query" else ""
    if kind.startswith("body"):
        *parents, last = [int(p) if p.isdigit() else p for p in name.split(".")]
        target = body
        for part in parents:
            target = target[part]
        target[last] = NUL
    content = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **_credentials(operation, world)}
    if path.endswith("/webhooks/messages"):
        headers.update(signed_headers(world["secret"], content or b""))
    response = await client.request(method.upper(), url + query, content=content, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.json()["error"]["code"]
    if kind == "path":
        assert response.status_code in (404, 422), response.text[:300]
