"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from app.routers.docs import errors
from app.services.health import readiness

router = APIRouter(tags=["operations"])


def _example(value: dict[str, str]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": value}}}}


@router.get("/healthz", summary="The process is up", description="Answers 200 whenever the process serves HTTP.",
            responses=_example({"status": "ok"}))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated",
            description="200 when the database answers and its schema is at the migration head; 503 otherwise.",
            responses={**_example({"status": "ready", "revision": "0007"}), **errors(503)})
async def readyz(request: Request) -> JSONResponse:
    status, body = await readiness(request.app.state.engine, head=request.app.state.migration_head)
    return JSONResponse(body, status_code=status)
