"""Limits that hold before routing, parsing and authentication, against real servers on both databases.

Oversized bodies (413, refused while read, the server's peak memory measured), oversized heads (431), JSON
nested past the parser (422), and clients that leave mid-body (a quiet 499: no 5xx, no traceback).
"""

import json
import select
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ADMIN_TOKEN
from tests.support.queues import eventually
from tests.support.serving import ServiceProcess
from tests.support.webhooks import encode, message, signed_headers

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MB = 1024 * 1024


@pytest.fixture(scope="module")
async def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServiceProcess]:
    """One `triage serve` per database for the module."""
    log = tmp_path_factory.mktemp("limits") / f"service-{uuid.uuid4().hex[:6]}.log"
    process = ServiceProcess(database_url, ADMIN_TOKEN, log_path=log)
    try:
        await process.ready()
        yield process
    finally:
        process.stop()


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water resident set (VmHWM) since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def connection(server: ServiceProcess) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        yield sock
    finally:
        sock.close()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def stream_until_answered(sock: socket.socket, head: bytes, *, total: int, chunk: bytes) -> tuple[int, dict, bytes, int]:
    """Send `head`, then body chunks (chunked encoding) until `total` bytes or an answer comes; the bytes sent."""
    sock.sendall(head)
    sent = 0
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(framed)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    status, headers, body = read_answer(sock)
    return status, headers, body, sent


async def test_a_100_mb_unauthenticated_body_is_refused_while_read(server: ServiceProcess,
                                                                   connection: socket.socket) -> None:
    before = peak_rss_bytes(server.process.pid)
    head = (b"POST /v1/triage/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    status, headers, body, sent = stream_until_answered(connection, head, total=100 * MB, chunk=b"x" * 65536)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert headers.get("x-request-id")
    assert sent < 20 * MB, f"{sent} bytes were sent before the answer"
    growth = peak_rss_bytes(server.process.pid) - before
    print(f"100 MB body: 413 after {sent / MB:.1f} MB sent, server peak RSS {growth / MB:+.1f} MB")
    assert growth < 50 * MB, f"peak RSS grew by {growth / MB:.1f} MB"

    # Declared too large: refused from the header alone, before any of the body is sent.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(f"POST /v1/shops HTTP/1.1\r\nHost: t\r\nContent-Length: {100 * MB}\r\n\r\n".encode())
        status, _, body = read_answer(sock)
    finally:
        sock.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("name", "size", "count"), [
    ("x-filler", MB, 1),              # one 1 MB header field
    ("x-field", 10, 150),             # more fields than allowed, each small
])
async def test_oversized_heads_are_431(server: ServiceProcess, name: str, size: int, count: int) -> None:
    fields = "".join(f"{name}-{i}: {'a' * size}\r\n" for i in range(count)).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        try:
            sock.sendall(b"GET /v1/queues HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole head was sent: the answer is still readable
        status, _, body = read_answer(sock)
    finally:
        sock.close()
    assert status == 431, body
    assert json.loads(body)["error"]["code"] == "header_fields_too_large"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_json_nested_past_the_parser_is_422(server: ServiceProcess, depth: int) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, headers=ADMIN) as http:
        shop = (await http.post("/v1/shops", json={"id": f"deep-{uuid.uuid4().hex[:8]}", "name": "Deep"})).json()
        for path, body in [("/v1/triage/classify", _nested(depth)),
                           ("/v1/triage/classify", '{"text": ' + _nested(depth) + "}"),
                           (f"/v1/shops/{shop['id']}/rules/validate", '{"ruleset": ' + _nested(depth) + "}")]:
            response = await http.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text[:200])
            assert response.json()["error"]["code"] == "validation_error"
        webhook = ('{"platform": "taobao", "messages": ' + _nested(depth) + "}").encode()
        response = await http.post(f"/v1/shops/{shop['id']}/webhooks/messages", content=webhook,
                                   headers=signed_headers(shop["webhook_secret"], webhook))
        assert response.status_code == 422, response.text[:200]


def status_classes(text: str) -> dict[tuple[str, str], float]:
    """Requests counted per (route, status class)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "triage_http_request_duration_seconds_count":
                key = (sample.labels["route"], sample.labels["status"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


async def test_a_client_leaving_mid_body_is_a_quiet_499(server: ServiceProcess, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, headers=ADMIN) as http:
        shop = (await http.post("/v1/shops", json={"id": f"gone-{uuid.uuid4().hex[:8]}", "name": "Gone"})).json()
        body = encode({"platform": "taobao", "messages": [message("在吗" * 2000)]})
        signed = signed_headers(shop["webhook_secret"], body)
        before = status_classes((await http.get("/metrics")).text)
        cases = [(f"/v1/shops/{shop['id']}/webhooks/messages", signed),
                 ("/v1/triage/classify", {"content-type": "application/json", **ADMIN}),
                 ("/v1/shops", {"content-type": "application/json", **ADMIN})]
        for path, headers in cases:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\n{fields}Content-Length: {len(body)}\r\n\r\n".encode()
                         + body[: len(body) // 2])
            time.sleep(0.1)  # the server has started on the request before the client goes
            sock.close()

        def client_errors(counts: dict[tuple[str, str], float]) -> float:
            return sum(v for (_, status), v in counts.items() if status == "4xx")

        async def all_three_counted() -> bool:
            return client_errors(status_classes((await http.get("/metrics")).text)) >= client_errors(before) + 3
        await eventually(all_three_counted, timeout=10)
        counts = status_classes((await http.get("/metrics")).text)
        assert not {key: v for key, v in counts.items() if key[1] == "5xx"}, counts
        webhook = ("/v1/shops/{shop_id}/webhooks/messages", "4xx")
        assert counts.get(webhook, 0) == before.get(webhook, 0) + 1, counts
    server_log = server._log_path.read_text(errors="replace") if server._log_path else ""
    assert "Traceback" not in server_log and '"level": "error"' not in server_log, server_log[-2000:]
