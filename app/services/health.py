"""Readiness: the database answers and is migrated to the head this code expects."""

from typing import Any

from app.db.probe import database_revision
from app.errors import error_body

PROBE_SECONDS = 1.5  # /readyz answers within 2 s whatever the database does


async def readiness(database_url: str, *, head: str | None,
                    workers: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status code and body of /readyz; the body shows each background worker's state either way."""
    try:
        revision = await database_revision(database_url, timeout=PROBE_SECONDS)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return 503, error_body("database_unreachable", f"database unreachable: {type(exc).__name__}",
                               {"workers": workers})
    if revision != head:
        return 503, error_body("not_migrated", f"database at revision {revision}, expected {head}",
                               {"current": revision, "head": head, "workers": workers})
    return 200, {"status": "ready", "revision": revision, "workers": workers}
