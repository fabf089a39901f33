"""Dependency aliases: one place that says how a request gets its session and its caller."""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.db.agents import SessionAgentStore
from app.db.models import Agent
from app.db.session import Session
from app.errors import Unauthorized
from app.security import hash_token, tokens_equal
from app.services.directory import AgentCache
from app.settings import Settings

admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                          description="Ops token from TRIAGE_ADMIN_TOKEN")
agent_bearer = HTTPBearer(auto_error=False, scheme_name="AgentToken",
                          description="Agent token, issued once when the agent is created")


async def get_app_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    async with request.app.state.sessionmaker() as session:
        yield session


def _bearer(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing bearer token in the Authorization header")
    return credentials.credentials


async def _agent_for(session: Session, token: str, refusal: str) -> Agent:
    agent = await SessionAgentStore(session).by_token_hash(hash_token(token))
    if agent is None:
        raise Unauthorized(refusal)
    return agent


async def require_admin(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]) -> None:
    token = _bearer(credentials)
    expected = request.app.state.settings.admin_token
    if expected is None or not tokens_equal(token, expected.get_secret_value()):
        raise Unauthorized("invalid admin token")


async def current_agent(session: Annotated[Session, Depends(get_session, scope="function")],
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_bearer)]) -> Agent:
    token = _bearer(credentials)
    return await _agent_for(session, token, "invalid agent token")


# scope="function": the session closes (and anything uncommitted rolls back) before the answer is sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AdminDep = Annotated[None, Depends(require_admin)]
AgentDep = Annotated[Agent, Depends(current_agent)]


async def admin_or_agent(request: Request, session: Annotated[Session, Depends(get_session, scope="function")],
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)]) -> Agent | None:
    """The admin (None) or the agent behind the bearer token."""
    token = _bearer(credentials)
    expected = request.app.state.settings.admin_token
    if expected is not None and tokens_equal(token, expected.get_secret_value()):
        return None
    return await _agent_for(session, token, "invalid admin or agent token")


async def admin_or_agent_either(
        request: Request, session: Annotated[Session, Depends(get_session, scope="function")],
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


def agent_cache(request: Request) -> AgentCache:
    """The process's agent cache (made on first use, for apps whose lifespan did not make one)."""
    cache: AgentCache | None = getattr(request.app.state, "agent_cache", None)
    if cache is None:
        cache = request.app.state.agent_cache = AgentCache(request.app.state.sessionmaker)
    return cache


async def cached_agent(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_bearer)]) -> Agent:
    """The agent behind the bearer token, from the per-process cache when it was seen in the last seconds."""
    agent = await agent_cache(request).get(hash_token(_bearer(credentials)))
    if agent is None:
        raise Unauthorized("invalid agent token")
    return agent


CachedAgentDep = Annotated[Agent, Depends(cached_agent)]
