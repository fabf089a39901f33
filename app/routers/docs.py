"""OpenAPI helpers: every documented error has the one error shape."""

from typing import Any

from app.schemas.base import ErrorResponse

_DESCRIPTIONS = {
    400: "Body is not valid JSON",
    401: "Missing or invalid credentials",
    404: "Unknown resource, or one the caller may not see",
    409: "Conflicts with the current state",
    413: "Body larger than the limit",
    415: "Body is not application/json",
    422: "A field is invalid; `details` lists the field paths (never the values)",
    503: "Not ready",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")} for status in statuses}
