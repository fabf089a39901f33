"""Schemathesis over every documented operation of a real server, on both databases.

Each operation is called with generated requests (valid and invalid) carrying working credentials: the admin
token, or the token of an agent that serves every queue; webhooks are signed with the shop's real secret.
Path ids are drawn from real shops, agents, queues and tickets as often as from generated strings, so the
deep paths are reached, not only the 404s. Every answer must be below 500 and match the documented schema
(status code, content type, headers, body).
"""

import asyncio
import random
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from app.db.migrate import upgrade_async
from app.main import create_app
from app.settings import Settings
from tests.support.serving import ServiceProcess
from tests.support import ADMIN_TOKEN, BACKENDS, fresh_database
from tests.support.webhooks import encode, message, signed_headers

# slow: `make test-fast` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 30

# Built from the application itself, so every operation the service documents is fuzzed.
_DOCUMENTED = create_app(Settings(_env_file=None, database_url="sqlite+aiosqlite:///:memory:",
                                  admin_token=ADMIN_TOKEN)).openapi()
schema = schemathesis.openapi.from_dict(_DOCUMENTED)

# Real ids of the server under test; filled by the `fuzz_target` fixture before any case is drawn.
KNOWN: dict[str, list[str]] = {}
REQUESTS_SENT: dict[str, Any] = {"count": 0, "operations": set()}


def requests_sent() -> tuple[int, int]:
    return REQUESTS_SENT["count"], len(REQUESTS_SENT["operations"])


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy:
    """Half of the cases aim at ids that exist; the rest keep what was generated."""
    if not path_parameters:
        return st.just(path_parameters)
    real = {name: KNOWN[name] for name in path_parameters if KNOWN.get(name)}
    if not real:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters),
                     st.fixed_dictionaries({name: st.sampled_from(values) for name, values in real.items()})
                     .map(lambda chosen: {**path_parameters, **chosen}))


# Checks the schema cannot express: a queue the shop has, a ruleset that compiles, a reply template with known
# variables and honest wording, a time range in order, a shop named with the admin token. A request failing them
# is well formed yet refused, with 422 naming the field. A delivery URL whose host does not resolve (or resolves
# where deliveries may not go) is one too, and so is a webhook message field that does not fit the message's kind
# (text without text, an event off a system message). So is a ticket handed to an agent who may not take it (of
# another shop, deactivated, its holder already, or not serving the ticket's queue). So are shop hours the schema
# cannot rule out (25:00, an unknown time zone, a shift given twice) and an agent's shift the shop does not have. And a
# snooze's time to come back that is not after now or too far ahead.
SEMANTIC_REFUSALS = {("unknown_queue", None), ("invalid_ruleset", None), ("invalid_template", None), ("range", None),
                     ("missing", "query.shop_id"), ("url_not_allowed", "body.url"), ("kind_rule", None),
                     ("unknown_agent", "body.agent_id"), ("agent_inactive", "body.agent_id"),
                     ("same_agent", "body.agent_id"), ("queue_not_served", "body.agent_id"),
                     ("shop_hours", None), ("unknown_shift", None), ("snooze_until", "body.until")}
# An Idempotency-Key already used with another request: generated keys repeat across generated bodies.
SEMANTIC_CODES = {"idempotency_key_reused"}


def accepts_valid_data_or_names_a_semantic_refusal(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' positive-data check, except for a 422 whose every detail is a semantic refusal."""
    if response.status_code == 422:
        if response.json()["error"]["code"] in SEMANTIC_CODES:
            return None
        details = response.json()["error"]["details"]
        if isinstance(details, list) and details and all(
                {(d["type"], None), (d["type"], d["field"])} & SEMANTIC_REFUSALS for d in details):
            return None
    return positive_data_acceptance(ctx, response, case)


AGENT_PLACEHOLDER = "agent-token-of-the-server-under-test"


@schema.auth(refresh_interval=None)
class WorkingCredentials:
    """The admin token, or a token of an agent serving every queue, as each operation's security asks.

    Given to schemathesis as the API's auth, so that its cases without credentials stay without them. Explicit
    examples are drawn before the server exists: agents get a placeholder, swapped for a real token at the call."""

    def get(self, case: Any, context: Any) -> str | None:
        schemes = [name for requirement in case.operation.definition.raw.get("security", []) for name in requirement]
        # Operations open to both get either, decided by the drawn case itself so that a shrunk example replays.
        if "AdminToken" in schemes and ("AgentToken" not in schemes or zlib.crc32(repr(case.query).encode()) % 2):
            return ADMIN_TOKEN
        return AGENT_PLACEHOLDER if "AgentToken" in schemes else None

    def set(self, case: Any, token: str | None, context: Any) -> None:
        if token is not None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def _real_agent_token(case: Any) -> None:
    if case.headers and case.headers.get("Authorization") == f"Bearer {AGENT_PLACEHOLDER}":
        case.headers["Authorization"] = f"Bearer {random.choice(KNOWN['agent_token'])}"


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database, a real `triage serve` on it, and two shops with agents and tickets."""
    manager = fresh_database(request.param, tmp_path_factory.mktemp("fuzz"))
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(manager.__aenter__())
    try:
        loop.run_until_complete(upgrade_async(url))
        log = tmp_path_factory.mktemp("fuzz-log") / "service.log"
        # Delivery endpoints of the fuzzed shops point at a closed port on loopback: deliveries fail and wait.
        server = ServiceProcess(url, ADMIN_TOKEN, extra_env={"TRIAGE_LEASE_SECONDS": "60",
                                                             "TRIAGE_DELIVERY_ALLOW_PRIVATE": "1"}, log_path=log)
        try:
            server.wait_ready()
            _populate(server.base_url)
            yield server.base_url
        finally:
            server.stop()
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


def _populate(base_url: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    KNOWN.clear()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        shops = []
        for _ in range(2):
            shop = http.post("/v1/shops", headers=admin, json={"id": f"fz-{uuid.uuid4().hex[:8]}", "name": "Fuzz"})
            assert shop.status_code == 201, shop.text
            shops.append(shop.json())
        agents = []
        for shop in shops:
            for _ in range(2):
                agent = http.post(f"/v1/shops/{shop['id']}/agents", headers=admin, json={
                    "name": "Fuzz agent", "queues": ["presale", "aftersale", "complaints", "escalations"],
                    "capacity": 50})
                assert agent.status_code == 201, agent.text
                agents.append(agent.json())
            texts = ["亲，快递三天没动了，再不到就给差评", "我要退货", "請問這款有貨嗎", "I will call my lawyer"]
            body = encode({"platform": "taobao", "messages": [message(text, conversation=f"c-{i}")
                                                              for i, text in enumerate(texts)]})
            answer = http.post(f"/v1/shops/{shop['id']}/webhooks/messages", content=body,
                               headers=signed_headers(shop["webhook_secret"], body))
            assert answer.status_code == 202, answer.text
            KNOWN.setdefault("ticket_id", []).extend(r["ticket_id"] for r in answer.json()["results"])
        # Agents of the first shop hold tickets, so replies, transfers and resolves can succeed.
        held = []
        for agent in agents[:2]:
            for _ in range(2):
                claimed = http.post("/v1/agents/me/claim", headers={"Authorization": f"Bearer {agent['token']}"})
                assert claimed.status_code == 200, claimed.text
                held.append((agent, claimed.json()["id"]))
        # An endpoint of the first shop and a delivery to it, so the outbound operations reach real ones.
        endpoint = http.post(f"/v1/shops/{shops[0]['id']}/endpoints", headers=admin, json={
            "url": "http://127.0.0.1:9/closed", "events": ["reply.created", "ticket.escalated"]})
        assert endpoint.status_code == 201, endpoint.text
        agent, ticket_id = held[0]
        assert http.post(f"/v1/tickets/{ticket_id}/replies", json={"text": "好的"},
                         headers={"Authorization": f"Bearer {agent['token']}"}).status_code == 201
        deliveries = http.get(f"/v1/shops/{shops[0]['id']}/deliveries", headers=admin).json()["deliveries"]
    KNOWN["endpoint_id"] = [endpoint.json()["id"]]
    KNOWN["delivery_id"] = [d["id"] for d in deliveries]
    KNOWN["shop_id"] = [shop["id"] for shop in shops]
    KNOWN["secret"] = [shop["webhook_secret"] for shop in shops]
    KNOWN["agent_id"] = [agent["id"] for agent in agents]
    KNOWN["agent_token"] = [agent["token"] for agent in agents[:2]]
    KNOWN["name"] = ["presale", "aftersale", "complaints", "escalations"]


def _shorten_long_polls(case: Any) -> None:
    # A long poll on an empty queue waits its whole `wait` (explicit and boundary examples included): a
    # valid wait is cut short so the run stays quick; invalid ones are sent as generated.
    wait = (case.query or {}).get("wait")
    try:
        seconds = float(wait) if not isinstance(wait, bool) else None
    except (TypeError, ValueError):
        seconds = None
    if seconds is not None and 0.2 < seconds <= 30:
        case.query["wait"] = 0.2


def _signed_call(case: Any, base_url: str, session: requests.Session) -> requests.Response:
    """A webhook as a platform sends it: the exact body bytes signed with the shop's secret (when it has one)."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    prepared = session.prepare_request(requests.Request(**{k: v for k, v in kwargs.items()
                                                           if k in {"method", "url", "headers", "params", "json",
                                                                    "data", "files"}}))
    shop_id = case.path_parameters.get("shop_id")
    if shop_id in KNOWN["shop_id"]:
        secret = KNOWN["secret"][KNOWN["shop_id"].index(shop_id)]
        body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
        prepared.headers.update({k: v for k, v in signed_headers(secret, body).items() if k != "content-type"})
    return session.send(prepared, timeout=30)


CHECKS = {"excluded_checks": [positive_data_acceptance],
          "additional_checks": [accepts_valid_data_or_names_a_semantic_refusal]}


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_every_operation_answers_within_its_documented_schema(case: Any, fuzz_target: str) -> None:
    REQUESTS_SENT["count"] += 1
    REQUESTS_SENT["operations"].add(case.operation.label)
    _shorten_long_polls(case)
    _real_agent_token(case)
    if case.operation.path.endswith("/webhooks/messages"):
        with requests.Session() as session:
            response = _signed_call(case, fuzz_target, session)
        case.validate_response(response, **CHECKS)
    else:
        case.call_and_validate(base_url=fuzz_target, **CHECKS)
