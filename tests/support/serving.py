"""Real service processes for tests and benchmarks: `triage serve` in a subprocess on a free port."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/support/serving.py is two below it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One `triage serve` process against `database_url`; stop() terminates, kill() is kill -9."""

    def __init__(self, database_url: str, admin_token: str, *, port: int | None = None, workers: int = 1,
                 extra_env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        env.update({"TRIAGE_DATABASE_URL": database_url, "TRIAGE_ADMIN_TOKEN": admin_token,
                    "TRIAGE_LOG_LEVEL": "warning", **(extra_env or {})})
        self._log_path = log_path
        self._log = open(log_path or os.devnull, "ab")  # noqa: SIM115  (closed in stop/kill)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"service did not become ready{self._log_tail()}")

    async def ready(self, timeout: float = 30.0) -> None:
        """wait_ready for async tests: the event loop keeps running while the process starts."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1) as http:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"service did not become ready{self._log_tail()}")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"service exited with {self.process.returncode}{self._log_tail()}")

    def _log_tail(self) -> str:
        # Why a server did not start is in its output: show the end of it in the failure.
        if self._log_path is None:
            return ""
        self._log.flush()
        return ":\n" + self._log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log.close()
