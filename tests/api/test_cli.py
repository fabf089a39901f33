"""The `triage` command as a newcomer runs it: migrate, bootstrap, serve, over real HTTP."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import BACKENDS, fresh_database

pytestmark = pytest.mark.asyncio


def _triage(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    return {**env, **extra}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migrate_bootstrap_serve(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        env = _clean_env(TRIAGE_DATABASE_URL=url)
        assert _triage(["migrate"], tmp_path, env).returncode == 0

        first = _triage(["bootstrap", "--if-empty"], tmp_path, env)
        assert first.returncode == 0, first.stderr
        admin_token = (tmp_path / ".env").read_text().split("TRIAGE_ADMIN_TOKEN=")[1].strip()
        assert admin_token in first.stdout and "whsec_" in first.stdout and "agt_" in first.stdout

        again = _triage(["bootstrap", "--if-empty"], tmp_path, env)
        assert again.returncode == 0
        assert admin_token not in again.stdout and "whsec_" not in again.stdout and "agt_" not in again.stdout
        assert _triage(["bootstrap"], tmp_path, env).returncode == 1

        async with serving(tmp_path, env) as (http, output):
            assert (await http.get("/docs")).status_code == 200
            shops = await http.get("/v1/shops", headers={"Authorization": f"Bearer {admin_token}"})
            assert shops.status_code == 200 and [s["id"] for s in shops.json()] == ["demo"]
        assert admin_token not in output[0]
        assert any(line["level"] == "info" and line["logger"] == "app.access" for line in output_lines(output))


async def test_the_log_level_setting_applies_to_the_service_own_logs(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url:
        env = _clean_env(TRIAGE_DATABASE_URL=url, TRIAGE_LOG_LEVEL="WARNING")
        assert _triage(["migrate"], tmp_path, env).returncode == 0
        async with serving(tmp_path, env) as (http, output):
            assert (await http.get("/v1/shops")).status_code == 401  # no admin token set: refused, and warned of
        own = [line for line in output_lines(output) if line["logger"].split(".")[0] == "app"]
        # The request lines (info) are gone; the warning that no admin token is set stays.
        assert [(line["level"], line["msg"].split(":")[0]) for line in own] == [
            ("warning", "TRIAGE_ADMIN_TOKEN is not set")]
    bad = _triage(["serve"], tmp_path, _clean_env(TRIAGE_LOG_LEVEL="chatty"))
    assert bad.returncode != 0 and "log_level" in bad.stderr


def output_lines(output: list[str]) -> list[dict[str, Any]]:
    """The server's log: every line is one JSON object."""
    return [json.loads(line) for line in output[0].splitlines() if line.strip()]


@asynccontextmanager
async def serving(cwd: Path, env: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    """`triage serve` in a subprocess, ready; after the block, its whole output is in the list."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=cwd,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    ready = await http.get("/readyz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
            assert ready.status_code == 200
            yield http, output
    finally:
        server.terminate()
        output.append(server.communicate(timeout=30)[0])
