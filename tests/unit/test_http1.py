"""The relay's HTTP/1.1 client (app/services/http1.py) against real servers on loopback that answer byte for byte
as each test scripts: keep-alive, chunked and close-delimited bodies, interim answers, broken and slow servers."""

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.services import delivery, http1
from app.services.delivery import DeliveryPolicy

pytestmark = pytest.mark.asyncio

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
CLOSE = None  # a step: the server closes the connection
Step = bytes | float | None  # bytes written, seconds waited, or CLOSE


class Scripted:
    """A server on 127.0.0.1: reads each request (head and Content-Length body) and plays the next script's steps
    (then OK); counts connections and keeps the requests."""

    def __init__(self) -> None:
        self.scripts: deque[list[Step]] = deque()
        self.connections = 0
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection number, head, body)
        self.port = 0
        self._server: asyncio.Server | None = None

    def answer(self, *steps: Step) -> None:
        self.scripts.append(list(steps))

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                self.requests.append((number, head, await reader.readexactly(length)))
                for step in self.scripts.popleft() if self.scripts else [OK]:
                    if step is CLOSE:
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
        except asyncio.CancelledError:
            return  # the test is over
        finally:
            writer.close()

    async def __aenter__(self) -> "Scripted":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    async with Scripted() as running:
        yield running


def pool(*, connections: int = 4, read_timeout: float = 5.0, body_limit: int = 64 * 1024) -> http1.Pool:
    return http1.Pool(max_connections=connections, ssl_context=ssl.create_default_context(), allow_private=True,
                      connect_timeout=5.0, read_timeout=read_timeout, keepalive=5.0, body_limit=body_limit)


async def post(p: http1.Pool, url: str, *, timeout: float = 30.0) -> http1.Response:
    return await p.post(url, {"content-type": "application/json"}, b'{"a":1}', timeout=timeout)


def item(url: str) -> dict[str, Any]:
    return {"type": "reply.created", "created_at": delivery.utcnow(), "data": {}, "event_id": 1,
            "secret": "whsec_" + "A" * 32, "previous_secret": None, "previous_valid_until": None, "url": url}


async def test_a_connection_is_kept_alive_and_reused(server: Scripted) -> None:
    async with pool() as p:
        answers = [await post(p, server.url("/a?x=1")) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert server.connections == 1 and [number for number, _, _ in server.requests] == [1, 1, 1]
    head, body = server.requests[0][1], server.requests[0][2]
    assert head.startswith(b"POST /a?x=1 HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % server.port)
    assert b"content-length: 7\r\n" in head and body == b'{"a":1}'


async def test_a_chunked_answer_in_pieces_is_read_to_its_end_and_the_connection_kept(server: Scripted) -> None:
    answer = (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
              b"5\r\nhello\r\n6;note=1\r\n world\r\n0\r\nx-trailer: yes\r\n\r\n")
    server.answer(*[answer[i:i + 5] for i in range(0, len(answer), 5)])
    async with pool() as p:
        first = await post(p, server.url())
        second = await post(p, server.url())
    assert first.status == 202 and first.header(b"retry-after") == "7" and second.status == 200
    assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection",
])
async def test_an_answer_that_is_not_kept_alive_drops_its_connection(server: Scripted, answer: bytes) -> None:
    server.answer(answer, CLOSE)
    async with pool() as p:
        first = await post(p, server.url())
        second = await post(p, server.url())
    assert first.status == second.status == 200
    assert server.connections == 2


async def test_a_server_that_closes_mid_answer_is_an_error_and_the_next_request_gets_a_new_connection(
        server: Scripted) -> None:
    server.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789", CLOSE)
    server.answer(b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel", CLOSE)
    async with pool() as p:
        with pytest.raises(http1.ConnectionClosed):
            await post(p, server.url())
        answer = await delivery.send(p, item(server.url()), policy=DeliveryPolicy(), now=delivery.utcnow())
        after = await post(p, server.url())
    assert answer.kind == "error" and answer.status_code is None and "ConnectionClosed" in (answer.error or "")
    assert after.status == 200 and server.connections == 3


async def test_a_silent_server_times_out_without_holding_the_others(server: Scripted) -> None:
    server.answer(30.0)
    async with Scripted() as other, pool(read_timeout=0.3) as p:
        started = time.monotonic()
        silent = asyncio.create_task(post(p, server.url()))
        healthy = await post(p, other.url())
        healthy_took = time.monotonic() - started
        with pytest.raises(http1.ReadTimeout):
            await silent
        took = time.monotonic() - started
    assert healthy.status == 200 and healthy_took < 0.3
    assert 0.25 < took < 3


async def test_a_trickling_server_is_cut_off_at_the_exchange_deadline(server: Scripted) -> None:
    trickle = [step for _ in range(100) for step in (b"x", 0.05)]
    server.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", *trickle)
    async with pool(read_timeout=1.0) as p:
        started = time.monotonic()
        with pytest.raises(http1.ReadTimeout, match="time ran out"):
            await post(p, server.url(), timeout=0.5)  # never a second without a byte, but 5 s in all
        took = time.monotonic() - started
    assert 0.45 < took < 2


async def test_a_timeout_is_a_timeout_outcome(server: Scripted) -> None:
    server.answer(30.0)
    policy = DeliveryPolicy(read_timeout=0.2, allow_private=True)
    async with delivery.new_pool(policy) as p:
        answer = await delivery.send(p, item(server.url()), policy=policy, now=delivery.utcnow())
    assert answer.kind == "timeout" and answer.status_code is None and "ReadTimeout" in (answer.error or "")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100000,
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"4000\r\n" + b"x" * 0x4000 + b"\r\n" * 1 + b"4000\r\n"
    + b"y" * 0x4000 + b"\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 100000,
])
async def test_a_body_over_the_limit_is_cut_and_its_connection_dropped(server: Scripted, answer: bytes) -> None:
    server.answer(answer, 1.0)
    async with pool(body_limit=20000) as p:
        started = time.monotonic()
        first = await post(p, server.url())
        took = time.monotonic() - started
        second = await post(p, server.url())
    assert first.status == second.status == 200 and took < 1.0  # did not wait for the rest
    assert server.connections == 2


async def test_interim_answers_are_skipped(server: Scripted) -> None:
    server.answer(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
                  b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
    async with pool() as p:
        first = await post(p, server.url())
        second = await post(p, server.url())
    assert first.status == 201 and first.header(b"link") is None and second.status == 200
    assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTZ/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"hello there\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
])
async def test_a_malformed_answer_is_an_error_outcome(server: Scripted, answer: bytes) -> None:
    server.answer(answer, 5.0)
    async with pool() as p:
        with pytest.raises(http1.ProtocolError):
            await post(p, server.url())
    server.answer(answer, 5.0)
    policy = DeliveryPolicy(allow_private=True)
    async with delivery.new_pool(policy) as p:
        outcome = await delivery.send(p, item(server.url()), policy=policy, now=delivery.utcnow())
        again = await delivery.send(p, item(server.url()), policy=policy, now=delivery.utcnow())
    assert outcome.kind == "error" and outcome.status_code is None and "ProtocolError" in (outcome.error or "")
    assert again.status_code == 200  # on a new connection


async def test_bytes_after_the_answer_drop_the_connection(server: Scripted) -> None:
    server.answer(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    async with pool() as p:
        first = await post(p, server.url())
        second = await post(p, server.url())
    assert first.status == second.status == 200 and server.connections == 2


async def test_bytes_arriving_on_an_idle_connection_drop_it(server: Scripted) -> None:
    server.answer(OK, 0.05, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    async with pool() as p:
        first = await post(p, server.url())
        await asyncio.sleep(0.3)
        second = await post(p, server.url())
    assert first.status == second.status == 200 and server.connections == 2


async def test_connections_are_bounded_per_pool(server: Scripted) -> None:
    for _ in range(6):
        server.answer(0.1, OK)
    async with pool(connections=2) as p:
        answers = await asyncio.gather(*[post(p, server.url()) for _ in range(6)])
    assert [a.status for a in answers] == [200] * 6
    assert server.connections == 2


async def test_a_full_pool_makes_room_by_closing_a_kept_connection_to_another_origin(server: Scripted) -> None:
    async with Scripted() as other, pool(connections=1) as p:
        assert (await post(p, server.url())).status == 200
        assert (await post(p, other.url())).status == 200
        assert (await post(p, server.url())).status == 200
    assert server.connections == 2 and other.connections == 1


async def test_a_private_address_is_refused_before_connecting(server: Scripted) -> None:
    p = http1.Pool(max_connections=2, ssl_context=ssl.create_default_context(), allow_private=False,
                   connect_timeout=5.0, read_timeout=5.0, keepalive=5.0, body_limit=1024)
    async with p:
        with pytest.raises(delivery.egress.UnsafeUrl, match="127.0.0.1"):
            await post(p, server.url())
    assert server.connections == 0
