"""Turning a raw webhook request into a verified, validated batch: nothing is trusted before this passes."""

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.clock import utcnow
from app.errors import (TOO_DEEP, TOO_DEEP_DETAIL, InvalidInput, MalformedJson, PayloadTooLarge, ShopNotFound,
                        UnsupportedMediaType, WebhookRejected, validation_details)
from app.schemas.webhooks import WebhookBatch
from app.services import signing
from app.services.directory import ShopDirectory, ShopInfo

# A shop's cached secrets are re-read at most this often when a signature does not verify.
SECRET_REFRESH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    shop: ShopInfo
    webhook_id: str
    batch: WebhookBatch


async def read_limited(chunks: "object", *, declared_length: str | None, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes `limit` bytes (before any parsing)."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in chunks:  # type: ignore[attr-defined]
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
    return bytes(body)


async def verify_webhook(directory: ShopDirectory, *, shop_id: str, headers: dict[str, str], body: bytes,
                         tolerance: int) -> VerifiedWebhook:
    """Check shop, signature, content type, JSON and schema, in that order."""
    shop = await directory.get(shop_id)
    if shop is None:
        raise ShopNotFound(f"no shop with id '{shop_id}'")
    now = utcnow()
    try:
        webhook_id = signing.verify(secrets=shop.valid_secrets(now), headers=headers, body=body,
                                    now=now.timestamp(), tolerance=tolerance)
    except WebhookRejected as rejected:
        # A secret rotated by another process is not in our cache yet: look again, rarely.
        if rejected.code != "invalid_signature" or time.monotonic() - shop.loaded_at < SECRET_REFRESH_SECONDS:
            raise
        shop = await directory.get(shop_id, max_age=0)
        if shop is None:
            raise ShopNotFound(f"no shop with id '{shop_id}'") from None
        webhook_id = signing.verify(secrets=shop.valid_secrets(now), headers=headers, body=body,
                                    now=now.timestamp(), tolerance=tolerance)
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the body must be sent as Content-Type: application/json")
    try:
        batch = WebhookBatch.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        if not any(e["type"] == "json_invalid" for e in errors):
            raise _invalid(errors) from None
        batch = _validate_leniently_parsed(body)
    return VerifiedWebhook(shop=shop, webhook_id=webhook_id, batch=batch)


def _validate_leniently_parsed(body: bytes) -> WebhookBatch:
    # pydantic's parser refuses escapes of lone surrogates ("\ud800"), which are valid JSON; the
    # standard library reads them, so the schema can answer 422 naming the field instead of 400.
    def refuse(constant: str) -> None:
        raise ValueError(constant)  # NaN and Infinity are not JSON, for pydantic either

    try:
        parsed = json.loads(body.decode("utf-8"), parse_constant=refuse)
    except ValueError:
        raise MalformedJson("the body is not valid JSON") from None
    except RecursionError:
        raise InvalidInput(TOO_DEEP, details=[TOO_DEEP_DETAIL]) from None
    try:
        return WebhookBatch.model_validate(parsed)
    except ValidationError as exc:
        raise _invalid(exc.errors(include_input=False, include_url=False)) from None


def _invalid(errors: list[Any]) -> InvalidInput:
    details = validation_details([{**e, "loc": ("body", *e["loc"])} for e in errors])
    fields = ", ".join(sorted({d["field"] for d in details}))
    return InvalidInput(f"invalid fields: {fields}", details=details)
