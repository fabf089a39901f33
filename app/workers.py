"""The home of background work: every loop that runs beside the requests is started, supervised and stopped here.

A worker is a name and a coroutine function that loops until cancelled (the ingest writers, the lease
reaper, the LISTEN connection). If it raises, or returns, it is started again after a pause that doubles
from `BACKOFF_FIRST` up to `BACKOFF_MAX` and starts over once the worker has run for `HEALTHY_AFTER`.
Each worker's state is in `/readyz` (`workers`) and in the metrics `triage_worker_up` and
`triage_worker_restarts_total`.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app import metrics

log = logging.getLogger("app.workers")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0


@dataclass(slots=True)
class Worker:
    name: str
    run: Callable[[], Awaitable[None]]
    state: str = "stopped"  # running, restarting, stopped
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


class Workers:
    """Starts every worker added, restarts one that dies, and stops them all, the last added first."""

    def __init__(self, *, backoff_first: float = BACKOFF_FIRST, backoff_max: float = BACKOFF_MAX,
                 healthy_after: float = HEALTHY_AFTER) -> None:
        self._workers: dict[str, Worker] = {}
        self._backoff_first = backoff_first
        self._backoff_max = backoff_max
        self._healthy_after = healthy_after

    def add(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Register a worker; it starts with `start()` (or at once when the others already run)."""
        if name in self._workers:
            raise ValueError(f"a worker named {name!r} exists")
        worker = self._workers[name] = Worker(name, run)
        if any(w.task is not None for w in self._workers.values() if w is not worker):
            self._launch(worker)

    def start(self) -> None:
        for worker in self._workers.values():
            if worker.task is None:
                self._launch(worker)

    async def stop(self, name: str | None = None) -> None:
        """Stop one worker, or all of them (the last added first); a stopped worker is not restarted."""
        names = [name] if name is not None else list(reversed(self._workers))
        for worker in (self._workers[n] for n in names):
            if worker.task is not None:
                worker.task.cancel()
                await asyncio.gather(worker.task, return_exceptions=True)
                worker.task = None
            worker.state = "stopped"
            metrics.worker_state(worker.name, up=False)

    def health(self) -> dict[str, dict[str, Any]]:
        """Each worker's state, restarts so far and last error, by name."""
        return {name: worker.health() for name, worker in self._workers.items()}

    def _launch(self, worker: Worker) -> None:
        worker.task = asyncio.create_task(self._supervise(worker), name=worker.name)

    async def _supervise(self, worker: Worker) -> None:
        backoff = self._backoff_first
        while True:
            started = time.monotonic()
            worker.state = "running"
            metrics.worker_state(worker.name, up=True)
            try:
                await worker.run()
                worker.last_error = "returned"
                log.error("worker %s returned; restarting it in %.1f s", worker.name, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                worker.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.exception("worker %s died; restarting it in %.1f s", worker.name, backoff)
            worker.state = "restarting"
            worker.restarts += 1
            metrics.worker_state(worker.name, up=False, restarted=True)
            if time.monotonic() - started >= self._healthy_after:
                backoff = self._backoff_first
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)
