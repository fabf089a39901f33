"""Limits every request meets before routing, parsing or authentication, as plain ASGI middleware.

Header size and count (431), NUL in the path (404) or the query (422), body size while it is read (413; the
webhook keeps its own setting and reader), and a client that goes away before its body arrived: a quiet close,
one log line, counted as a 499.
"""

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body

# The webhook reads and limits its own body (TRIAGE_MAX_BODY_BYTES) before it verifies the signature.
_OWN_BODY_LIMIT = re.compile(r"^/v1/shops/[^/]+/webhooks/messages$")
CLIENT_CLOSED = 499  # nginx's name for it: the client closed the connection before the answer


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes the limit: FastAPI passes HTTP exceptions through its parsing."""

    def __init__(self, limit: int) -> None:
        # Closing: the rest of the body is never read, so the connection cannot carry another request.
        super().__init__(413, f"the request body is larger than {limit} bytes", headers={"Connection": "close"})


async def send_error(send: Send, status: int, code: str, message: str, *, details: Any = None,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """One error answer in the service's shape, straight onto the ASGI channel."""
    body = json.dumps(error_body(code, message, details), separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Refuse oversized heads and bodies before the application sees them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int, max_headers: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            await send_error(send, 431, "header_fields_too_large",
                             f"more than {self.max_headers} header fields", headers=[(b"connection", b"close")])
            return
        if sum(len(name) + len(value) for name, value in headers) + len(scope.get("query_string", b"")) \
                > self.max_header_bytes:
            await send_error(send, 431, "header_fields_too_large",
                             f"header fields and query string larger than {self.max_header_bytes} bytes",
                             headers=[(b"connection", b"close")])
            return
        if "\x00" in scope["path"]:
            # No id holds NUL (PostgreSQL cannot even compare with one): nothing is at such a path.
            await send_error(send, 404, "not_found", "no resource at this path (it contains NUL)")
            return
        if b"%00" in scope.get("query_string", b""):
            await _refuse_nul_query(scope, send)
            return
        limit = None if _OWN_BODY_LIMIT.match(scope["path"]) else self.max_body_bytes
        declared = next((value for name, value in headers if name == b"content-length"), None)
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, 413, "payload_too_large", f"the request body is larger than {limit} bytes",
                             headers=[(b"connection", b"close")])
            return
        await _Exchange(self.app, scope, receive, send, limit).run()


async def _refuse_nul_query(scope: Scope, send: Send) -> None:
    names = sorted({name for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                    if "\x00" in name or "\x00" in value})
    details = [{"field": f"query.{name.replace(chr(0), '')}", "reason": "contains NUL", "type": "string_unstorable"}
               for name in names]
    await send_error(send, 422, "validation_error", "invalid fields: " + ", ".join(d["field"] for d in details),
                     details=details)


class _Exchange:
    """One request: counts its body as it is received and notices a client that left mid-body."""

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int | None) -> None:
        self.app, self.scope, self._receive, self._send, self.limit = app, scope, receive, send, limit
        self.received = 0
        self.body_done = False
        self.client_gone = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
            if self.limit is not None and self.received > self.limit:
                raise BodyTooLarge(self.limit)
        elif message["type"] == "http.disconnect" and not self.body_done:
            self.client_gone = True
        return message

    async def send(self, message: Message) -> None:
        if not self.client_gone:
            await self._send(message)

    async def run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception:
            if not self.client_gone:
                raise
        if self.client_gone:
            # Nobody is left to answer: whatever the application made of the cut body (a parse error, a
            # ClientDisconnect) is dropped, and the request is recorded as the client's doing: the access log's
            # one line and the request metrics say 499, no traceback, no 5xx.
            await self._send({"type": "http.response.start", "status": CLIENT_CLOSED, "headers": []})
            await self._send({"type": "http.response.body", "body": b""})
