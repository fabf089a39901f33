"""Cross-cutting behaviour: health, readiness, request ids, the error shape, the documented API."""

import json
import logging
from typing import Any

import asyncpg

import httpx
import pytest
from pydantic import BaseModel, TypeAdapter

from app.db.listen import asyncpg_dsn
from app.main import create_app
from tests.conftest import make_settings
from tests.support import BACKENDS, fresh_database

pytestmark = pytest.mark.asyncio


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_readyz_is_503_on_an_unmigrated_database(backend: str, tmp_path: Any) -> None:
    async with fresh_database(backend, tmp_path) as url:
        app = create_app(make_settings(url))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_migrated"


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    app = create_app(make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unreachable"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_start_warns_when_the_server_runs_without_autovacuum(backend: str, tmp_path: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    async with fresh_database(backend, tmp_path) as url:
        off = False
        if backend == "postgres":
            connection = await asyncpg.connect(asyncpg_dsn(url))
            off = await connection.fetchval("SHOW autovacuum") == "off"
            await connection.close()
        app = create_app(make_settings(url))
        with caplog.at_level(logging.WARNING, logger="app"):
            async with app.router.lifespan_context(app):
                pass
    warned = [r for r in caplog.records if "autovacuum is off" in r.getMessage()]
    assert len(warned) == (1 if off else 0)


async def test_request_id_is_echoed_or_minted(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    minted = await client.get("/healthz")
    assert len(minted.headers["x-request-id"]) == 32
    hostile = "a b\u00e9".encode("latin-1") * 100  # spaces, non-ASCII, too long: replaced, never echoed
    replaced = await client.get("/healthz", headers={"X-Request-ID": hostile})
    assert replaced.headers["x-request-id"].isalnum() and len(replaced.headers["x-request-id"]) == 32


async def test_unexpected_errors_are_500_with_the_error_shape_and_a_request_id(tmp_path: Any) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path}/unused.db"))

    async def boom() -> None:
        raise RuntimeError("a bug")
    app.add_api_route("/boom", boom)
    # raise_app_exceptions=False: the server error middleware re-raises after answering, as under uvicorn.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        minted = await http.get("/boom")
        echoed = await http.get("/boom", headers={"X-Request-ID": "req-500"})
    assert minted.status_code == echoed.status_code == 500
    assert minted.json() == {"error": {"code": "internal", "message": "internal error", "details": None}}
    assert len(minted.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "req-500"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/no/such/path", 404, "not_found"),
    ("DELETE", "/healthz", 405, "method_not_allowed"),
])
async def test_framework_errors_have_the_error_shape(client: httpx.AsyncClient, method: str, path: str, status: int,
                                                      code: str) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"]


async def test_malformed_json_is_a_clean_error(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.post("/v1/shops", content=b"{not json", headers={**admin_headers,
                                                                              "Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    assert "error" in response.json()


async def test_openapi_documents_every_operation_with_security(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert {"AdminToken", "AgentToken"} <= set(schemes)
    agent_operations = {(m, p) for p, ops in spec["paths"].items() for m, op in ops.items()
                        if {"AgentToken": []} in op.get("security", [])}
    assert ("post", "/v1/agents/me/claim") in agent_operations and ("get", "/v1/tickets/{ticket_id}") in agent_operations
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            assert operation.get("tags"), (method, path)
    assert (await client.get("/docs")).status_code == 200


def _schema_models() -> dict[str, type[BaseModel]]:
    from app.schemas import admin, base, deliveries, rules, stats, templates, tickets, triage, webhooks

    return {name: value for module in (admin, base, deliveries, rules, stats, templates, tickets, triage, webhooks)
            for name, value in vars(module).items() if isinstance(value, type) and issubclass(value, BaseModel)}


def _documented_examples(spec: dict[str, Any], content: dict[str, Any]) -> tuple[list[Any], Any]:
    """The examples a client sees for one body (its own, or its model's), and a validator of the body, if any."""
    found = [content["example"]] if "example" in content else []
    found += [example["value"] for example in content.get("examples", {}).values()]
    schema, many = content.get("schema", {}), False
    # An optional body is "the model or null".
    schema = next((s for s in schema.get("anyOf", []) if "$ref" in s), schema)
    if schema.get("type") == "array":
        schema, many = schema["items"], True
    if "$ref" not in schema:
        return found, None
    name = schema["$ref"].rsplit("/", 1)[1]
    model = _schema_models()[name.removesuffix("-Input").removesuffix("-Output")]
    found += [[example] if many else example for example in spec["components"]["schemas"][name].get("examples", [])]
    return found, TypeAdapter(list[model] if many else model)  # type: ignore[valid-type]


async def test_every_operation_shows_examples_that_are_valid_bodies(client: httpx.AsyncClient) -> None:
    """Examples for every operation; each request and answer example is one the API accepts/gives."""
    spec = (await client.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            bodies = [("request", c) for c in operation.get("requestBody", {}).get("content", {}).values()]
            bodies += [(status, c) for status, answer in operation["responses"].items() if status.startswith("2")
                       for c in answer.get("content", {}).values()]
            for where, content in bodies:
                found, validator = _documented_examples(spec, content)
                assert found, f"{method} {path}: no example for the {where} body"
                for example in found:
                    if validator is not None:
                        validator.validate_json(json.dumps(example))
                    checked += 1
    assert checked >= 60


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.request("OPTIONS", "/v1/shops", headers=admin_headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(("path", "query", "refused"), [
    ("/v1/shops", "limit=5", ["query.limit"]),                          # ops list takes no parameters
    ("/v1/queues", "shop_idd=demo", ["query.shop_idd"]),                # misspelt admin scope
    ("/v1/shops/demo/stats", "sinc=2026-11-24T00:00:00Z&x=1", ["query.sinc", "query.x"]),  # every unknown named
])
async def test_an_unknown_query_parameter_is_refused_by_name(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                             path: str, query: str, refused: list[str]) -> None:
    response = await client.get(f"{path}?{query}", headers=admin_headers)
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    assert [d["field"] for d in body["details"]] == refused


async def test_known_query_parameters_and_probes_stay_accepted(client: httpx.AsyncClient,
                                                               admin_headers: dict[str, str], new_shop: Any) -> None:
    shop = await new_shop()
    assert (await client.get(f"/v1/queues?shop_id={shop['id']}", headers=admin_headers)).status_code == 200
    assert (await client.get("/healthz?from=lb")).status_code == 200  # probes are not /v1 and stay lenient
