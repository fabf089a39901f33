"""A dedicated PostgreSQL connection that LISTENs on channels and hands each payload to its channel's callback."""

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger("app.listen")
APPLICATION_NAME = "triage-listener"


def asyncpg_dsn(url: str) -> str:
    """The plain libpq-style DSN asyncpg takes, from a SQLAlchemy `postgresql+asyncpg://` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """LISTEN on each channel of `channels` outside the pool, one connection for them all; reconnects (with
    backoff) when the connection is lost."""

    def __init__(self, url: str, channels: Mapping[str, Callable[[str], None]], *,
                 ping_seconds: float = 5.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._channels = dict(channels)
        self._ping_seconds = ping_seconds
        self.listening = asyncio.Event()
        self.connections = 0

    def _deliver(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        self._channels[channel](payload)

    async def run(self) -> None:
        """LISTEN until cancelled, run as a worker (app/workers.py); a lost connection is reopened here."""
        backoff = 0.1
        while True:
            lost = asyncio.Event()
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10,
                                                   server_settings={"application_name": APPLICATION_NAME})
                connection.add_termination_listener(lambda _c: lost.set())
                for channel in self._channels:
                    await connection.add_listener(channel, self._deliver)
                self.connections += 1
                self.listening.set()
                backoff = 0.1
                while not lost.is_set():
                    # A ping finds a connection that died silently (no termination callback on a cut network).
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=self._ping_seconds)
                    except TimeoutError:
                        await asyncio.wait_for(connection.execute("SELECT 1"), timeout=self._ping_seconds)
                log.warning("LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1f s", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.listening.clear()
                if connection is not None and not connection.is_closed():
                    connection.terminate()
