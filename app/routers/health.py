"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from app.errors import RETRY_AFTER_SECONDS
from app.routers.docs import errors
from app.services.health import readiness

router = APIRouter(tags=["operations"])


def _example(value: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": value}}}}


@router.get("/healthz", summary="The process is up", description="Answers 200 whenever the process serves HTTP.",
            responses=_example({"status": "ok"}))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated",
            description="200 when the database answers within 1.5 s (on a connection of its own, so a busy pool "
                        "or a locked SQLite file does not hold the probe) and its schema is at the migration head; "
                        "503 otherwise, with Retry-After. Either way the answer shows each background worker (ingest "
                        "writers, lease reaper, LISTEN on PostgreSQL): its state (`running`, `restarting`, `stopped`), restarts and last error.",
            responses={**_example({"status": "ready", "revision": "0007", "workers": {
                "ingest-writer-0": {"state": "running", "restarts": 0, "last_error": None},
                "lease-reaper": {"state": "running", "restarts": 0, "last_error": None}}}), **errors(503)})
async def readyz(request: Request) -> JSONResponse:
    status, body = await readiness(request.app.state.settings.database_url,
                                   head=request.app.state.migration_head, workers=request.app.state.workers.health())
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)
