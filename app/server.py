"""uvicorn's httptools protocol with the limits it lacks; `triage serve` runs it.

uvicorn bounds only idle keep-alive connections. Here a connection must also finish each request head within
TRIAGE_HEADER_TIMEOUT_SECONDS (a connection that never sends anything is closed then too), keep its head under
TRIAGE_MAX_HEADER_BYTES plus a request line while it arrives (not after the parser took it whole), send its body
at TRIAGE_BODY_MIN_RATE bytes/s once TRIAGE_BODY_TIMEOUT_SECONDS have passed, and find the process under
TRIAGE_MAX_CONNECTIONS open connections; refusals are answered in the service's error shape.
"""

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import RETRY_AFTER_SECONDS, error_body
from app.settings import get_settings

REQUEST_LINE_BYTES = 8192  # the head limit is the header fields' plus this much for the method, target and version
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def _raw_answer(status: int, code: str, message: str) -> bytes:
    body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body)) + body)


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The answer of a process already holding its most connections."""
    body = json.dumps(error_body("service_unavailable", "too many connections; retry shortly"),
                      separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class TriageHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection: timeouts on the head and the body, a head size limit, a connection limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.head_limit = settings.max_header_bytes + REQUEST_LINE_BYTES
        self.head_timeout = settings.header_timeout_seconds
        self.body_grace = settings.body_timeout_seconds
        self.body_min_rate = settings.body_min_rate
        self.max_connections = settings.max_connections
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0
        self._body_seconds = 0.0

    # Head: from the connection's start (or the end of the previous answer) to the end of the header fields.
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.head_limit and not self.transport.is_closing():
            self._refuse(431, "header_fields_too_large", f"request head larger than {self.head_limit} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        over = self.max_connections is not None and len(self.connections) > self.max_connections
        if over:
            self.logger.warning("connection limit reached: answering 503")
            app, self.app = self.app, _busy
        try:
            super().on_headers_complete()
        finally:
            if over:
                self.app = app
        if self.parser is not None and not self.parser.should_upgrade():
            self._body_bytes, self._body_seconds = 0, 0.0
            self._body_timer = self.loop.call_later(1.0, self._check_body_rate)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        # The request is in whole: what arrives next is the head of the next one. (Not when its answer went out:
        # an early answer, such as a 413, can leave body bytes still to come, which are no head.)
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()


    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(408, "request_timeout", f"request head not received within {self.head_timeout} s")
        else:
            self.transport.close()  # connected and silent, or idle between requests: nothing to answer

    def _check_body_rate(self) -> None:
        # Seconds count only while the server reads: when the application has not taken what arrived
        # (reading paused), the client is not the one being slow.
        self._body_timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        if not self.flow.read_paused:
            self._body_seconds += 1.0
        if self._body_bytes < self.body_min_rate * (self._body_seconds - self.body_grace):
            self.logger.warning("request body arrived slower than the minimum rate: closing")
            if self.cycle.response_started:
                self.transport.close()
            else:
                self._refuse(408, "request_timeout", f"request body slower than {self.body_min_rate} bytes/s")
            return
        self._body_timer = self.loop.call_later(1.0, self._check_body_rate)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._stop_timers()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application, if it runs, stops being answered
            self.cycle.message_event.set()
        self.transport.write(_raw_answer(status, code, message))
        self.transport.close()
