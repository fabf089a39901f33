"""A real HTTP receiver on loopback for delivery tests: records every request, answers as each path is scripted.

It runs in a thread of its own (one thread per request), so a scripted hang holds only that request, never the
event loop of the service under test.
"""

import http.server
import ssl
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.services import signing


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hang when long)


class Receiver:
    """`url(path)` to point an endpoint at; `script(path, Reply, ...)` for the next answers there (then 200)."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: a certificate and its key to answer HTTPS with."""
        self.received: list[Received] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.release = threading.Event()  # set: hangs end at once
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802  (the standard library's name)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request (kill -9): nothing arrived, nothing is answered
                with receiver._lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.monotonic()))
                    script = receiver._scripts.get(self.path)
                    reply = script.popleft() if script else Reply()
                if reply.delay:
                    receiver.release.wait(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a hang closed its end: nothing to report

        self._server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path].extend(replies)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]


def verify(received: Received, secret: str, *, tolerance: int = 300) -> str:
    """The webhook id, when the request verifies the Standard Webhooks way with `secret` (the same code checks the
    service's own inbound webhooks); WebhookRejected otherwise."""
    return signing.verify(secrets=[secret], headers=received.headers, body=received.body, now=time.time(),
                          tolerance=tolerance)
