"""Domain errors carry their HTTP status and code; one handler renders every error the same way."""

import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db.faults import FAULT_TYPES, fault_kind, is_unavailable

log = logging.getLogger("app.errors")


class AppError(Exception):
    status = 500
    code = "internal"
    message = "internal error"

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    message = "missing or invalid bearer token"


class NotFound(AppError):
    status = 404
    code = "not_found"
    message = "not found"


class ShopNotFound(NotFound):
    code = "shop_not_found"
    message = "no such shop"


class QueueNotFound(NotFound):
    code = "queue_not_found"
    message = "no such queue"


class AgentNotFound(NotFound):
    code = "agent_not_found"
    message = "no such agent"


class TicketNotFound(NotFound):
    code = "ticket_not_found"
    message = "no such ticket"


class Conflict(AppError):
    status = 409
    code = "conflict"
    message = "conflict"


class ShopExists(Conflict):
    code = "shop_exists"
    message = "a shop with this id exists"


class QueueExists(Conflict):
    code = "queue_exists"
    message = "a queue with this name exists in the shop"


class InvalidInput(AppError):
    status = 422
    code = "validation_error"
    message = "request is not valid"


TOO_DEEP = "the JSON body is nested too deeply"
TOO_DEEP_DETAIL = {"field": "body", "reason": TOO_DEEP, "type": "json_too_deep"}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field_path(loc: tuple[Any, ...]) -> str:
    # ("body", "messages", 0, "text") -> "body.messages[0].text"
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Field paths and reasons of a pydantic error list, never the submitted values."""
    return [
        {"field": _field_path(tuple(err.get("loc", ()))), "reason": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]


RETRY_AFTER_SECONDS = 2


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=headers)


class FaultLog:
    """One log line per kind of database fault per interval, however many requests meet it; then a count."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def record(self, kind: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        log.warning("database unavailable: answering 503", extra={
            "fault": kind, "suppressed_since_last": self._suppressed.pop(kind, 0)})


FAULTS = FaultLog()


def unavailable_response() -> JSONResponse:
    return JSONResponse(error_body("service_unavailable", "the database is unavailable; retry shortly"),
                        status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Registered for the driver and pool error types: unreachable, terminated, locked or exhausted is a 503 with
    # one rate-limited line; anything else of those types is a bug, logged with its traceback as a 500.
    if is_unavailable(exc):
        FAULTS.record(fault_kind(exc))
        return unavailable_response()
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal", "internal error"), status_code=500)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    fields = ", ".join(sorted({d["field"] for d in details}))
    return JSONResponse(error_body("validation_error", f"invalid fields: {fields}", details), status_code=422)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type", 431: "header_fields_too_large"}


def _allowed_methods(request: Request) -> str:
    # Starlette names only the first matching route's methods; several routes may share a path,
    # so the documented paths are the reference.
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), {m.upper() for m in operations})
                 for path, operations in request.app.openapi().get("paths", {}).items()]
        request.app.state.allowed_methods = table
    methods = set().union(*(m for regex, m in table if regex.match(request.url.path)))
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        # FastAPI reports any failure to parse the body as 400; JSON nested past the parser's depth is
        # well-formed yet refused, like every other body the schema cannot take.
        return JSONResponse(error_body("validation_error", TOO_DEEP, [TOO_DEEP_DETAIL]), status_code=422)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette runs this handler in ServerErrorMiddleware, outside RequestIdMiddleware, whose send
    # wrapper never sees this answer: the header is set here from the id the middleware kept.
    state = request.scope.setdefault("state", {})
    request_id = state.get("request_id") or uuid.uuid4().hex
    return JSONResponse(error_body("internal", "internal error"), status_code=500,
                        headers={"X-Request-ID": request_id})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for fault_type in FAULT_TYPES:
        app.add_exception_handler(fault_type, _database_error)
    app.add_exception_handler(Exception, _unexpected)


class WebhookRejected(AppError):
    """A webhook that cannot be trusted: nothing of it is stored."""

    status = 401
    code = "invalid_signature"
    message = "webhook signature does not verify"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    message = "request body is larger than the limit"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    message = "the body must be application/json"


class MalformedJson(AppError):
    status = 400
    code = "invalid_json"
    message = "the body is not valid JSON"


class Unavailable(AppError):
    status = 503
    code = "service_unavailable"
    message = "temporarily unavailable, retry"


class TicketNotHeld(Conflict):
    code = "ticket_not_held"
    message = "the ticket is not held by this agent (never claimed, released, or its lease ran out)"


class TicketAlreadyResolved(Conflict):
    code = "ticket_already_resolved"
    message = "the ticket is already resolved"


class AtCapacity(Conflict):
    code = "at_capacity"
    message = "the agent holds as many open tickets as its capacity allows"


class AgentAtCapacity(Conflict):
    code = "agent_at_capacity"
    message = "the agent named holds as many open tickets as its capacity allows"


class AgentOffline(Conflict):
    code = "agent_offline"
    message = "the agent named is offline: hand tickets only to an agent at its console (online or away)"


class IdempotencyMismatch(AppError):
    status = 422
    code = "idempotency_key_reused"
    message = "this Idempotency-Key was used with a different request"


class RulesetInvalid(AppError):
    """A candidate ruleset that cannot be used; details name the faulty entry."""

    status = 422
    code = "invalid_ruleset"
    message = "the ruleset is not valid"


class RulesetVersionNotFound(NotFound):
    code = "ruleset_version_not_found"
    message = "no such ruleset version"


class TemplateInvalid(AppError):
    """A reply template that cannot be saved; details name the entry (`body.templates[2].text.zh`)."""

    status = 422
    code = "invalid_template"
    message = "a reply template is not valid"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"
    message = "no such delivery endpoint"


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"
    message = "no such delivery"


class DeliveryNotFailed(Conflict):
    code = "delivery_not_failed"
    message = "only a failed delivery can be sent again"
