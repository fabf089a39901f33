"""CPU per request of the relay's HTTP/1.1 client against httpx and httpcore (docs/design.md, "The relay's own
HTTP client"): the same POST (a webhook's size and headers) to the same local receiver (bench/delivery.py's, in a
process of its own), WINDOW requests at once over one pool, as one relay lane sends; each client in turn, for
several rounds, under uvloop as the service runs.

- **httpx**: httpx.AsyncClient (the baseline the relay started from).
- **httpcore**: httpcore.AsyncConnectionPool, httpx's transport, which the relay called directly before.
- **ours**: app/services/http1.py's Pool with its own response parser.
- **ours + h11**: the same pool and connections, the answer parsed by h11 (the parser httpcore uses), each
  request also passed through h11's client state machine as using it requires.

Printed per client and round: requests/s and CPU µs per request of this process, and the ratio of each client's
CPU per request to httpx's and to httpcore's in the same round. The machine's load moves the rates; the CPU per
request moves less.

    .venv/bin/python bench/http_client.py [--requests 20000] [--rounds 3]
"""

import argparse
import asyncio
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import httpcore
import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.services import http1  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.delivery import Receiver  # noqa: E402

WINDOW = int(Settings.model_fields["delivery_concurrency"].default)
BODY = (b'{"type":"reply.created","timestamp":"2026-12-02T08:00:00.000000Z","data":{"shop_id":"bench","text":"'
        + "亲，已经帮您催快递了".encode() + b'","created_at":"2026-12-02T08:00:00.000000Z"}}')
HEADERS = {"webhook-id": "msg_1", "webhook-timestamp": "1764662400", "webhook-signature": "v1," + "A" * 44,
           "content-type": "application/json", "user-agent": "triage-delivery/1"}


class H11Connection(http1.Connection):
    """http1.Connection with h11 reading the answer (and its client state machine told of each request)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._h11 = h11.Connection(h11.CLIENT)

    async def exchange(self, request: bytes, *, read_timeout: float, deadline: float) -> http1.Response:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        target = lines[0].split(b" ")[1]
        headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        self._h11.send(h11.Request(method=b"POST", target=target, headers=headers))
        self._h11.send(h11.Data(data=body))
        self._h11.send(h11.EndOfMessage())
        return await super().exchange(request, read_timeout=read_timeout, deadline=deadline)

    def _parse(self) -> None:
        connection = self._h11
        connection.receive_data(bytes(self._buffer))
        del self._buffer[:]
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                raise http1.ProtocolError(str(exc)) from None
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response):
                self._status, self._headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.EndOfMessage):
                self._keep_alive = connection.our_state is h11.DONE and connection.their_state is h11.DONE
                if self._keep_alive:
                    connection.start_next_cycle()
                self._finish()
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise http1.ProtocolError("closed")


async def loop_of(post: Callable[[], Awaitable[int]], count: int) -> tuple[float, float]:
    """`count` posts, WINDOW at once: (requests/s, CPU µs per request)."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await post() == 200

    for _ in range(WINDOW):  # warm: connections open
        await post()
    cpu, began = time.process_time(), time.monotonic()
    await asyncio.gather(*[worker() for _ in range(WINDOW)])
    took, cpu = time.monotonic() - began, time.process_time() - cpu
    return count / took, cpu / count * 1e6


async def with_httpx(url: str, count: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=WINDOW, max_keepalive_connections=WINDOW)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        async def post() -> int:
            return (await client.post(url, content=BODY, headers=HEADERS)).status_code
        return await loop_of(post, count)


async def with_httpcore(url: str, count: int) -> tuple[float, float]:
    headers = list(HEADERS.items())
    timeouts = {"connect": 5.0, "read": 15.0, "write": 15.0, "pool": 15.0}
    async with httpcore.AsyncConnectionPool(max_connections=WINDOW, max_keepalive_connections=WINDOW,
                                            keepalive_expiry=5.0, retries=0) as pool:
        async def post() -> int:
            async with pool.stream("POST", url, headers=headers, content=BODY,
                                   extensions={"timeout": timeouts}) as response:
                async for _ in response.aiter_stream():
                    pass
            return response.status
        return await loop_of(post, count)


def ours(connection: type[http1.Connection]) -> Callable[[str, int], Awaitable[tuple[float, float]]]:
    async def run(url: str, count: int) -> tuple[float, float]:
        async with http1.Pool(max_connections=WINDOW, ssl_context=ssl.create_default_context(), allow_private=True,
                              connect_timeout=5.0, read_timeout=15.0, keepalive=5.0, body_limit=64 * 1024,
                              connection=connection) as pool:
            async def post() -> int:
                return (await pool.post(url, HEADERS, BODY, timeout=45.0)).status
            return await loop_of(post, count)
    return run


CLIENTS = {"httpx": with_httpx, "httpcore": with_httpcore, "ours": ours(http1.Connection),
           "ours + h11": ours(H11Connection)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="posts per client and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    receiver = Receiver()  # bench/delivery.py's, started and answering
    url = f"{receiver.url}/e0"
    try:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {WINDOW} requests at once, "
              f"{args.requests:,} per client and round")
        for round_ in range(1, args.rounds + 1):
            figures = {name: uvloop.run(client(url, args.requests)) for name, client in CLIENTS.items()}
            base, core = figures["httpx"][1], figures["httpcore"][1]
            print(f"round {round_} (load {os.getloadavg()[0]:.1f})")
            for name, (rate, cpu) in figures.items():
                print(f"  {name:<11} {rate:>7,.0f} requests/s, CPU {cpu:>4.0f} µs per request; "
                      f"x{cpu / base:.2f} of httpx's, x{cpu / core:.2f} of httpcore's")
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
