"""Dependency aliases: one place that says how a request gets its session and its caller."""

import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import repositories as repo
from app.db.models import Agent
from app.errors import Unauthorized
from app.security import hash_token, tokens_equal
from app.settings import Settings

admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                          description="Ops token from TRIAGE_ADMIN_TOKEN")
agent_bearer = HTTPBearer(auto_error=False, scheme_name="AgentToken",
                          description="Agent token, issued once when the agent is created")


async def get_app_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


def _bearer(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token in the Authorization header")
    return credentials.credentials


async def _agent_for(session: AsyncSession, token: str, refusal: str) -> Agent:
    agent = await repo.agent_by_token_hash(session, hash_token(token))
    if agent is None:
        raise Unauthorized(refusal)
    # End the read now: on SQLite the one pooled connection must be free for the work that follows.
    session.expunge(agent)
    await session.rollback()
    return agent


async def require_admin(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]) -> None:
    token = _bearer(credentials)
    expected = request.app.state.settings.admin_token
    if expected is None or not tokens_equal(token, expected.get_secret_value()):
        raise Unauthorized("invalid admin token")


async def current_agent(session: Annotated[AsyncSession, Depends(get_session, scope="function")],
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_bearer)]) -> Agent:
    token = _bearer(credentials)
    return await _agent_for(session, token, "invalid agent token")


# scope="function": the session closes (and anything uncommitted rolls back) before the answer is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AdminDep = Annotated[None, Depends(require_admin)]
AgentDep = Annotated[Agent, Depends(current_agent)]


async def admin_or_agent(request: Request, session: Annotated[AsyncSession, Depends(get_session, scope="function")],
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]) -> Agent | None:
    """The admin (None) or the agent behind the bearer token."""
    token = _bearer(credentials)
    expected = request.app.state.settings.admin_token
    if expected is not None and tokens_equal(token, expected.get_secret_value()):
        return None
    return await _agent_for(session, token, "invalid admin or agent token")


async def admin_or_agent_either(
        request: Request, session: Annotated[AsyncSession, Depends(get_session, scope="function")],
        _admin: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_bearer)]) -> Agent | None:
    """Like admin_or_agent, declaring both bearer schemes in the OpenAPI document."""
    return await admin_or_agent(request, session, credentials)


AdminOrAgentDep = Annotated[Agent | None, Depends(admin_or_agent_either)]


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> Iterator[str]:
    yield from (param.alias for param in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


async def no_unknown_query_parameters(request: Request) -> None:
    """A misspelt query parameter (`?wiat=30`) is a 422 naming it, not silently ignored."""
    route = request.scope.get("route")
    if not request.query_params or route is None or not hasattr(route, "dependant"):
        return
    known = _QUERY_NAMES.get(id(route))
    if known is None:
        known = _QUERY_NAMES[id(route)] = frozenset(_query_names(route.dependant))
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "Unknown query parameter", "type": "extra_forbidden"}
                                      for name in unknown])


# For the /v1 routers: an unknown query parameter is refused there (probes and /metrics stay lenient).
STRICT_QUERY = [Depends(no_unknown_query_parameters)]


AGENT_CACHE_SECONDS = 5.0


class AgentCache:
    """Agents by token hash for a few seconds: the agent hot path (claim, reply, resolve) skips one transaction.

    A deactivated agent keeps reading and writing its held tickets for at most AGENT_CACHE_SECONDS; claims
    re-check `active` in the database, so it gets no new work meanwhile.
    """

    def __init__(self, ttl: float = AGENT_CACHE_SECONDS) -> None:
        self._ttl = ttl
        self._agents: dict[str, tuple[Agent, float]] = {}

    async def get(self, request: Request, token: str) -> Agent:
        token_hash = hash_token(token)
        cached = self._agents.get(token_hash)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        async with request.app.state.sessionmaker() as session:
            agent = await _agent_for(session, token, "invalid agent token")
        if len(self._agents) > 10_000:
            self._agents = {k: v for k, v in self._agents.items() if v[1] > now}
        self._agents[token_hash] = (agent, now + self._ttl)
        return agent

    def forget(self, agent_id: str) -> None:
        """Drop the agent now (deactivated, or its token replaced); other processes drop it within the TTL."""
        self._agents = {k: v for k, v in self._agents.items() if v[0].id != agent_id}


def agent_cache(request: Request) -> AgentCache:
    cache: AgentCache | None = getattr(request.app.state, "agent_cache", None)
    if cache is None:
        cache = request.app.state.agent_cache = AgentCache()
    return cache


async def cached_agent(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_bearer)]) -> Agent:
    """The agent behind the bearer token, from the per-process cache when it was seen in the last seconds."""
    return await agent_cache(request).get(request, _bearer(credentials))


CachedAgentDep = Annotated[Agent, Depends(cached_agent)]
