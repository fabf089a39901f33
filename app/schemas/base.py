"""The one schema base and the field types shared by every request model."""

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Text PostgreSQL cannot store (NUL) or that is not valid Unicode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("contains NUL or unpaired surrogate characters")
    return value


StorableStr = Annotated[str, AfterValidator(_storable)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["demo"])]
QueueName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["aftersale"])]


class Schema(BaseModel):
    """Unknown fields are refused, so nobody sets status or ownership by adding a key."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ReadSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SlaTargets(Schema):
    """First-response targets in seconds per tier."""

    P1: int = Field(20, ge=1, le=86_400)
    P2: int = Field(30, ge=1, le=86_400)
    P3: int = Field(40, ge=1, le=86_400)
    P4: int = Field(60, ge=1, le=86_400)


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["invalid fields: body.name"])
    details: object | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


Timestamp = datetime
