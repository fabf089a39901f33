"""OpenAPI helpers: every documented error has the one error shape."""

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

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
    """OpenAPI `responses` entries for the given error statuses (a body that can be 422 can also be 400)."""
    wanted = set(statuses) | ({400} if 422 in statuses else set())
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
            for status in sorted(wanted)}


def with_extra_schemas(app: FastAPI, *models: type[BaseModel]) -> None:
    """Publish models that routes reading raw bodies reference, under components/schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            _document_unknown_query_refusal(spec)
            _restore_example_nulls(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_unknown_query_refusal(spec: dict[str, Any]) -> None:
    # Every /v1 operation refuses an unknown query parameter with 422 (app.deps.no_unknown_query_parameters).
    error = {"description": _DESCRIPTIONS[422],
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for path, operations in spec.get("paths", {}).items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["responses"].setdefault("422", error)


def _app_models(base: type[BaseModel] = BaseModel) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for model in base.__subclasses__():
        if model.__module__.startswith("app."):
            found[model.__name__] = model
        found.update(_app_models(model))
    return found


def _restore_example_nulls(spec: dict[str, Any]) -> None:
    # FastAPI writes the document without any null (exclude_none), examples included, which turns an example
    # answer with a null field into an invalid one. The models' own examples are put back whole.
    models = _app_models()
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        model = models.get(name.removesuffix("-Input").removesuffix("-Output"))
        extra = model.model_config.get("json_schema_extra") if model is not None else None
        if isinstance(extra, dict) and "examples" in extra:
            schema["examples"] = copy.deepcopy(extra["examples"])
