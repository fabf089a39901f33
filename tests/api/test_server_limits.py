"""What `triage serve` does to slow, silent and too many connections, on a real server per database.

The server runs with short settings (1 s timeouts, 2 KiB/s, 8 connections) so each case ends in seconds; the
only waits are the sockets' own, and the assertions are about what the server answered or closed.
"""

import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import ADMIN_TOKEN
from tests.support.serving import ServiceProcess

MAX_CONNECTIONS = 8
SHORT = {"TRIAGE_HEADER_TIMEOUT_SECONDS": "1", "TRIAGE_BODY_TIMEOUT_SECONDS": "1", "TRIAGE_BODY_MIN_RATE": "2048",
         "TRIAGE_KEEPALIVE_SECONDS": "1", "TRIAGE_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}


@pytest.fixture(scope="module")
async def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("serve") / f"service-{uuid.uuid4().hex[:6]}.log"
    process = ServiceProcess(database_url, ADMIN_TOKEN, log_path=log, extra_env=SHORT)
    try:
        await process.ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def connect(server: ServiceProcess) -> Iterator[object]:
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout fails the test)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_and_code(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["code"]


async def test_a_silent_connection_is_closed(connect) -> None:  # type: ignore[no-untyped-def]
    assert read_all(connect()) == b""


async def test_a_half_sent_head_is_408_and_closed(connect) -> None:  # type: ignore[no-untyped-def]
    sock = connect()
    sock.sendall(b"GET /v1/queues HTTP/1.1\r\nHost: t\r\nX-Slow: ")
    assert status_and_code(read_all(sock)) == (408, "request_timeout")


async def test_a_trickled_body_is_refused(connect) -> None:  # type: ignore[no-untyped-def]
    sock = connect()
    sock.sendall(b"POST /v1/triage/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\nContent-Length: 262144\r\n\r\n")
    sock.setblocking(False)
    answer = b""
    for _ in range(200):  # 100 bytes every 50 ms: 2 KB/s at best, for at most 10 s
        try:
            sock.sendall(b" " * 100)
            answer += sock.recv(65536)
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            break
        if answer:
            break
        time.sleep(0.05)
    sock.setblocking(True)
    answer += read_all(sock)
    assert status_and_code(answer) == (408, "request_timeout")


async def test_an_idle_keep_alive_connection_is_closed(connect) -> None:  # type: ignore[no-untyped-def]
    sock = connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = read_all(sock)  # the answer, then the close after the keep-alive timeout
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')


async def test_a_head_that_never_ends_is_refused_while_it_arrives(connect) -> None:  # type: ignore[no-untyped-def]
    sock = connect()
    sent = 0
    try:
        sock.sendall(b"GET /v1/queues HTTP/1.1\r\nHost: t\r\n")
        while sent < 50 * 1024 * 1024:
            sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
            sent += 1012
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert sent < 10 * 1024 * 1024, f"{sent} bytes of head were taken"
    assert status_and_code(read_all(sock)) == (431, "header_fields_too_large")


async def test_one_connection_more_than_the_limit_is_503(connect) -> None:  # type: ignore[no-untyped-def]
    idle = [connect() for _ in range(MAX_CONNECTIONS)]
    sock = connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = read_all(sock)
    assert status_and_code(answer) == (503, "service_unavailable")
    assert b"retry-after: " in answer.lower()
    for other in idle:
        other.close()
