"""The home of background work (app/workers.py): workers that die are restarted with backoff; stop means stopped."""

import asyncio

from prometheus_client import REGISTRY

from app.workers import Workers


def _restarts(name: str) -> float:
    return REGISTRY.get_sample_value("triage_worker_restarts_total", {"worker": name}) or 0.0


async def test_a_worker_that_dies_is_restarted_with_growing_pauses() -> None:
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def flaky() -> None:
        starts.append(loop.time())
        if len(starts) < 4:
            raise RuntimeError(f"boom {len(starts)}")
        await asyncio.sleep(3600)

    before = _restarts("test-flaky")
    workers = Workers(backoff_first=0.02, backoff_max=1.0)
    workers.add("test-flaky", flaky)
    workers.start()
    try:
        for _ in range(200):
            if len(starts) >= 4:
                break
            await asyncio.sleep(0.01)
        assert len(starts) == 4
        pauses = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert pauses[0] >= 0.02 and pauses[1] >= 0.04 and pauses[2] >= 0.08  # doubling from backoff_first
        health = workers.health()["test-flaky"]
        assert health["state"] == "running" and health["restarts"] == 3
        assert health["last_error"] == "RuntimeError: boom 3"
        assert _restarts("test-flaky") - before == 3
        assert REGISTRY.get_sample_value("triage_worker_up", {"worker": "test-flaky"}) == 1
    finally:
        await workers.stop()
    assert workers.health()["test-flaky"]["state"] == "stopped"
    assert REGISTRY.get_sample_value("triage_worker_up", {"worker": "test-flaky"}) == 0


async def test_a_worker_that_returns_is_restarted_and_a_stopped_one_is_not() -> None:
    runs: list[str] = []

    async def returns() -> None:
        runs.append("returns")

    async def forever() -> None:
        runs.append("forever")
        await asyncio.sleep(3600)

    workers = Workers(backoff_first=0.01, backoff_max=0.01)
    workers.add("test-returns", returns)
    workers.add("test-forever", forever)
    workers.start()
    await asyncio.sleep(0.1)
    assert runs.count("returns") >= 3 and runs.count("forever") == 1
    await workers.stop("test-returns")
    counted = runs.count("returns")
    await asyncio.sleep(0.05)
    assert runs.count("returns") == counted
    assert workers.health()["test-returns"]["state"] == "stopped"
    assert workers.health()["test-forever"]["state"] == "running"
    await workers.stop()
    assert workers.health()["test-forever"]["state"] == "stopped"
