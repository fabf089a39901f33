"""Liveness and readiness."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.db.migrate import current_revision
from app.errors import error_body
from app.routers.docs import errors

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
    head = request.app.state.migration_head
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            revision = await current_revision(connection)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JSONResponse(error_body("database_unreachable", f"database unreachable: {type(exc).__name__}"),
                            status_code=503)
    if revision != head:
        return JSONResponse(error_body("not_migrated", f"database at revision {revision}, expected {head}",
                                       {"current": revision, "head": head}), status_code=503)
    return JSONResponse({"status": "ready", "revision": revision})
