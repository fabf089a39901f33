"""Shared pieces of the HTTP benchmarks: fresh databases, uvicorn processes, wrk runs."""

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import fresh_database  # noqa: E402
from app.db.listen import asyncpg_dsn  # noqa: E402

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    # Here rather than imported from the tests' helpers: bench/ab_ingest.py runs this module inside older
    # checkouts too, whose helpers lie elsewhere (fresh_database is where it always was).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_cpu_seconds(name: str) -> float:
    """User and system CPU so far of the PostgreSQL backends connected to database `name` (on this host)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                if title.startswith(b"postgres:") and f" {name} ".encode() in title:
                    total += cpu_seconds(int(entry.name))
            except OSError:  # the process ended meanwhile
                continue
    return total


async def vacuum_analyze(url: str) -> None:
    """What autovacuum would have done by now (this machine's server runs without it): dead rows reclaimed and
    the planner's statistics fresh, which also makes every connection plan its cached statements again."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def settle(url: str) -> None:
    """After a bulk load, before timing: vacuum and analyze what was loaded, and checkpoint.

    Otherwise autovacuum works through the load, and the first writes after the next checkpoint log whole
    pages, during whichever run comes next; both disturb the run, not always the same one.
    """
    await vacuum_analyze(url)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh database URL of `backend`, dropped afterwards (PostgreSQL from TRIAGE_TEST_POSTGRES_URL)."""
    os.environ.setdefault("TRIAGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    import tests.support as support

    support.POSTGRES_URL = support.POSTGRES_URL or os.environ["TRIAGE_TEST_POSTGRES_URL"]
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        manager = fresh_database(backend, Path(tmp))
        url = loop.run_until_complete(manager.__aenter__())
        try:
            yield url
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
            loop.close()


class Uvicorn:
    """`uvicorn APP` in a subprocess, one worker, uvloop and httptools, logs off."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")} | env
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--port", str(self.port), "--loop", "uvloop", "--http", "httptools",
             "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=full_env)

    def wait(self, path: str = "/docs", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=1).status_code < 500:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.url} did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@dataclass
class WrkResult:
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, script: Path, data: Path, *, connections: int = 32, seconds: int = 10,
        timeout: int | None = None) -> WrkResult:
    """Run wrk (1 thread) with a Lua script that replays pre-signed requests from `data`; `timeout`: seconds an
    answer may take before wrk counts it as lost (its default is 2)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    waits = [f"--timeout={timeout}s"] if timeout is not None else []
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *waits, "--latency", "-s", str(script),
                          url, "--", str(data)], capture_output=True, text=True, check=True).stdout
    # wrk pads a latency in whole seconds ("1.24s "): the trailing blanks are allowed.
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if "50" not in latency or "99" not in latency:
        raise SystemExit(f"wrk printed no latency distribution for {url}:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(requests=int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1)),  # type: ignore[union-attr]
                     requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
                     p50_ms=_ms(latency["50"]), p99_ms=_ms(latency["99"]),
                     errors=sum(int(x) for x in errors.groups()) if errors else 0,
                     non_2xx=int(non_2xx.group(1)) if non_2xx else 0)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
