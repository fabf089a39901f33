"""Real service processes for tests and benchmarks: `triage serve` in a subprocess on a free port."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


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
        self._log = open(log_path or os.devnull, "ab")  # noqa: SIM115  (closed in stop/kill)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("service did not become ready")

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
