"""The one schema base and the field types shared by every request model."""

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field,
                      GetJsonSchemaHandler, Strict)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Text PostgreSQL cannot store (NUL) or that is not valid Unicode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("contains NUL or unpaired surrogate characters")
    return value


class _DocumentNoNul:
    """Say in the JSON schema what `_storable` enforces, so clients and fuzzers know NUL is refused."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = "^[^\\x00]*$"
        return schema


def _integral(value: object) -> object:
    # JSON Schema counts 1.0 as an integer; strict mode alone would refuse it, lax mode would take "1".
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


StorableStr = Annotated[str, AfterValidator(_storable), _DocumentNoNul()]


def whole_number(low: int, high: int) -> Any:
    """A JSON integer within [low, high]: 3 and 3.0, never "3" or true. Bounds sit on the integer itself so the
    JSON schema shows them as minimum/maximum."""
    return Annotated[int, Strict(), Ge(low), Le(high), BeforeValidator(_integral)]


Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["demo"])]
QueueName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["aftersale"])]


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    # pydantic would also take unix seconds, even inside a string; the contract says RFC 3339.
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with a zone, e.g. 2026-11-25T08:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    # Stored and compared in UTC; 0001-01-01T00:00:00+01:00 has no UTC equivalent.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be representable in UTC (years 1 to 9999)") from None


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date(value: Any) -> Any:
    # pydantic would also take a number (days or seconds since 1970) or a date-time at midnight.
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Schema(BaseModel):
    """Unknown fields are refused, so nobody sets status or ownership by adding a key."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ReadSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SlaTargets(Schema):
    """First-response targets in seconds per tier."""

    P1: whole_number(1, 86_400) = 20  # type: ignore[valid-type]
    P2: whole_number(1, 86_400) = 30  # type: ignore[valid-type]
    P3: whole_number(1, 86_400) = 40  # type: ignore[valid-type]
    P4: whole_number(1, 86_400) = 60  # type: ignore[valid-type]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["invalid fields: body.name"])
    details: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


Timestamp = datetime
