"""The delivery relay's HTTP/1.1 client (docs/design.md, "The relay's own HTTP client").

A webhook sender needs little of HTTP: POST a small body over a kept-alive connection, read the status and a few
headers, drop the body. httpcore (with or without httpx on top) spent about two thirds of the relay's CPU per
delivery on that (h11's event machinery, anyio's streams and cancel scopes, the pool's bookkeeping); this client is
an asyncio Protocol per connection, whose callbacks parse the answer as it arrives, and one future per exchange.

- `Pool`: one endpoint's connections, at most `max_connections` open at once, kept alive per origin (scheme, host,
  port) for `keepalive` seconds. Each new connection goes to the address `egress.allowed_address` accepts for the
  host at that moment (unless allow_private), TLS verifying the name as written.
- An exchange is bounded: connecting by `connect_timeout` (TLS handshake included), the answer by `read_timeout`
  without a byte and by the caller's whole `timeout` in all.
- The answer: 1xx heads are skipped; the body (Content-Length, chunked, or until close) is read and dropped, at
  most `body_limit` bytes, after which the connection is closed. A connection is kept only when the answer was
  HTTP/1.1, without `Connection: close`, read to its end and followed by nothing; any error drops it.
- No redirects are followed: a 3xx is an answer like any other.
"""

import asyncio
import re
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from app.services import egress

HEAD_LIMIT = 64 * 1024  # bytes of an answer's status line and headers
CHUNK_LINE_LIMIT = 1024
TARGETS_CACHED = 1024  # URLs whose parts a pool remembers
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?")


class HttpError(Exception):
    """The exchange failed: the connection broke, or the answer was not HTTP/1.x as this client reads it."""


class ProtocolError(HttpError):
    """The answer did not parse."""


class ConnectionClosed(HttpError):
    """The server closed the connection before its answer was complete."""


class ConnectTimeout(TimeoutError):
    pass


class ReadTimeout(TimeoutError):
    pass


class PoolTimeout(TimeoutError):
    pass


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # names in lower case

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host (no brackets), port
    start: bytes  # "POST /path?query HTTP/1.1\r\nHost: ...\r\n"


# The parser's states.
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE = range(8)


class Connection(asyncio.Protocol):
    """One connection: `exchange` writes a request and waits for the answer, which the callbacks parse as its bytes
    come (no task, no stream object between the socket and the parser)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, body_limit: int) -> None:
        self._loop = loop
        self._body_limit = body_limit
        self.transport: asyncio.Transport | None = None
        self.usable = False  # open, and not out of step with the server
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._state = _IDLE
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._deadline = 0.0
        self._last_data = 0.0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._keep_alive = False
        self._remaining = 0
        self._body = 0

    # --- asyncio's callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.usable = True

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            # Bytes no request asked for (the answer was complete): the connection is out of step with the server,
            # never to be reused.
            self.close()
            return
        self._last_data = self._loop.time()
        self._buffer += data
        try:
            self._parse()
        except ProtocolError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._waiter is None:
            return
        if self._state == _UNTIL_CLOSE:
            self._finish()  # the body's end is the connection's
        else:
            reason = f" ({type(exc).__name__}: {exc})" if exc else ""
            self._fail(ConnectionClosed(f"the server closed the connection before its answer was complete{reason}"))

    # --- the exchange ---

    async def exchange(self, request: bytes, *, read_timeout: float, deadline: float) -> Response:
        """Send `request` (whole, body included) and wait for the answer's head and body."""
        assert self.transport is not None and self._waiter is None
        loop = self._loop
        self._waiter = waiter = loop.create_future()
        self._state = _HEAD
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._last_data = now = loop.time()
        self._timer = loop.call_at(min(now + read_timeout, deadline), self._check_time)
        try:
            self.transport.write(request)
            return await waiter
        finally:
            self._timer.cancel()
            self._waiter = None
            if self._state != _IDLE:  # failed or cancelled midway: what comes next on it cannot be read
                self.close()

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()

    def _check_time(self) -> None:
        now = self._loop.time()
        due = min(self._last_data + self._read_timeout, self._deadline)
        if now >= due:
            what = "the exchange's time ran out" if due == self._deadline else \
                f"no answer byte for {self._read_timeout:g} s"
            self._fail(ReadTimeout(what))
        else:
            self._timer = self._loop.call_at(due, self._check_time)

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _finish(self) -> None:
        self._state = _IDLE
        if not self._keep_alive or self._buffer:
            self.close()  # the server ends it, or sent more than was asked for
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers))

    # --- the parser ---

    def _parse(self) -> None:
        # Each step consumes what it can of the buffer in the current state; False: it waits for more bytes.
        while self._state != _IDLE and _STEPS[self._state](self):
            pass

    def _step_head(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > HEAD_LIMIT:
                raise ProtocolError(f"the answer's head is longer than {HEAD_LIMIT} bytes")
            return False
        head = bytes(buffer[:end])
        del buffer[:end + 4]
        self._head(head)
        return True

    def _take(self) -> bool:
        """Drop up to the rest of the current body part; whether that part is complete."""
        n = min(self._remaining, len(self._buffer))
        del self._buffer[:n]
        self._remaining -= n
        return self._remaining == 0

    def _step_length(self) -> bool:
        if not self._buffer:
            return False
        if self._take():
            self._finish()
        return True

    def _step_chunk_size(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > CHUNK_LINE_LIMIT:
                raise ProtocolError("a chunk's size line is too long")
            return False
        size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
        del buffer[:end + 2]
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise ProtocolError(f"not a chunk size: {size_text[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            self._state = _TRAILERS
        elif self._counted(size):
            self._remaining = size
            self._state = _CHUNK_DATA
        return True

    def _step_chunk_data(self) -> bool:
        if not self._buffer:
            return False
        if self._take():
            self._state = _CHUNK_END
        return True

    def _step_chunk_end(self) -> bool:
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        if buffer[:2] != b"\r\n":
            raise ProtocolError("a chunk does not end with CRLF")
        del buffer[:2]
        self._state = _CHUNK_SIZE_LINE
        return True

    def _step_trailers(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > HEAD_LIMIT:
                raise ProtocolError("the answer's trailers are too long")
            return False
        del buffer[:end + 2]
        if end == 0:
            self._finish()
        return True

    def _step_until_close(self) -> bool:
        n = len(self._buffer)
        del self._buffer[:]
        self._counted(n)
        return False

    def _counted(self, n: int) -> bool:
        """Count `n` more body bytes; past the limit the answer ends here and the connection is closed."""
        self._body += n
        if self._body > self._body_limit:
            self._keep_alive = False
            del self._buffer[:]
            self._finish()
            return False
        return True

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        code = int(status[2])
        headers, length, encoding, close = _fields(lines[1:])
        if code < 200:
            if code == 101:
                raise ProtocolError("the server switched protocols")
            return  # an interim answer (100 Continue, 103): the real one follows
        # An HTTP/1.0 answer is not kept.
        self._status, self._headers, self._keep_alive, self._body = code, headers, not close and status[1] == b"1", 0
        self._body_mode(code, length, encoding)

    def _body_mode(self, code: int, length: int | None, encoding: bytes | None) -> None:
        """How the answer's body ends, from its head."""
        if code in (204, 304):
            self._finish()
        elif encoding is not None and encoding.rsplit(b",", 1)[-1].strip() == b"chunked":
            self._state = _CHUNK_SIZE_LINE  # Transfer-Encoding overrides Content-Length
        elif encoding is not None or length is None:  # encoded some other way, or unsized: it ends with the connection
            self._keep_alive = False
            self._state = _UNTIL_CLOSE
        elif length == 0:
            self._finish()
        elif length > self._body_limit:
            self._keep_alive = False  # more than is read: the answer ends at its head, the connection with it
            self._finish()
        else:
            self._remaining = length
            self._state = _LENGTH


def _fields(lines: list[bytes]) -> tuple[list[tuple[bytes, bytes]], int | None, bytes | None, bool]:
    """An answer's header lines: the headers (names lowered), Content-Length, Transfer-Encoding, and whether it says
    Connection: close."""
    headers = []
    length: int | None = None
    encoding: bytes | None = None
    close = False
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"not a header line: {line[:80]!r}")
        name = name.lower()
        value = value.strip()
        headers.append((name, value))
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ProtocolError(f"a bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            encoding = value.lower()
        elif name == b"connection" and b"close" in value.lower():
            close = True
    return headers, length, encoding, close


_STEPS = {_HEAD: Connection._step_head, _LENGTH: Connection._step_length,
          _CHUNK_SIZE_LINE: Connection._step_chunk_size, _CHUNK_DATA: Connection._step_chunk_data,
          _CHUNK_END: Connection._step_chunk_end, _TRAILERS: Connection._step_trailers,
          _UNTIL_CLOSE: Connection._step_until_close}


class Pool:
    """One endpoint's connections (see the module's docstring)."""

    def __init__(self, *, max_connections: int, ssl_context: ssl.SSLContext, allow_private: bool,
                 connect_timeout: float, read_timeout: float, keepalive: float, body_limit: int,
                 connection: type[Connection] = Connection) -> None:
        self._max = max_connections
        self._ssl = ssl_context
        self._allow_private = allow_private
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive = keepalive
        self._body_limit = body_limit
        self._connection = connection  # another parser in its place: bench/http_client.py
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._open = 0  # connections open or opening
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def post(self, url: str, headers: dict[str, str], body: bytes, *, timeout: float) -> Response:
        """POST `body` to `url` and read the answer, in `timeout` seconds at most in all. Raises egress.UnsafeUrl
        (an address the guard refuses, or not an http(s) URL), TimeoutError, HttpError or OSError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self._targets.get(url) or self._target(url)
        request = b"".join((target.start, "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                            .encode("latin-1"), b"content-length: %d\r\n\r\n" % len(body), body))
        connection = await self._acquire(target.origin, loop, deadline)
        try:
            return await connection.exchange(request, read_timeout=self._read_timeout, deadline=deadline)
        finally:
            self._release(target.origin, connection, loop)

    def _target(self, url: str) -> _Target:
        parts = egress.parse(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~[]")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?[]")
        authority = parts.netloc.rpartition("@")[2]
        if not authority.isascii():
            authority = host.encode("idna").decode("ascii") + (f":{parts.port}" if parts.port else "")
        target = _Target((parts.scheme, host, port), f"POST {path} HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii"))
        if len(self._targets) >= TARGETS_CACHED:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _acquire(self, origin: tuple[str, str, int], loop: asyncio.AbstractEventLoop,
                       deadline: float) -> Connection:
        while True:
            idle = self._idle.get(origin)
            now = loop.time()
            while idle:
                connection = idle.pop()  # the one used last: the least likely to have been closed by the server
                if connection.usable and now - connection.idle_since < self._keepalive:
                    return connection
                connection.close()
                self._open -= 1
            if self._closed:
                raise HttpError("the pool is closed")
            if self._open < self._max or self._close_an_idle_one():
                break
            waiter = loop.create_future()
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, min(self._read_timeout, deadline - now)))
            except TimeoutError:
                raise PoolTimeout(f"no connection free in {self._read_timeout:g} s") from None
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        self._open += 1
        try:
            return await self._connect(origin, loop)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(self, origin: tuple[str, str, int], loop: asyncio.AbstractEventLoop) -> Connection:
        scheme, host, port = origin
        address = await egress.allowed_address(host, port, allow_private=self._allow_private)
        tls = scheme == "https"
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: self._connection(loop, self._body_limit), str(address), port,
                    ssl=self._ssl if tls else None, server_hostname=host if tls else None)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {address} port {port} in {self._connect_timeout:g} s") from None
        return connection

    def _release(self, origin: tuple[str, str, int], connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        if connection.usable and not self._closed:
            connection.idle_since = loop.time()
            self._idle.setdefault(origin, []).append(connection)
        else:
            connection.close()
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_an_idle_one(self) -> bool:
        """Make room by closing a kept connection to another origin (the pool is full)."""
        for connections in self._idle.values():
            if connections:
                connections.pop(0).close()
                self._open -= 1
                return True
        return False
