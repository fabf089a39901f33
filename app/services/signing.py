"""Standard Webhooks signatures: HMAC-SHA256 over "{id}.{timestamp}.{body}", base64, "v1," prefix."""

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from functools import lru_cache

from app.errors import WebhookRejected
from app.security import WEBHOOK_SECRET_PREFIX


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value a platform sends for this body."""
    digest = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _presented_signatures(header: str) -> list[bytes]:
    presented = []
    for item in header.split():
        version, _, value = item.partition(",")
        if version != "v1" or not value:
            continue  # other schemes (v1a, ...) may come alongside; they are not ours to check
        try:
            presented.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return presented


def verify(*, secrets: Iterable[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: int) -> str:
    """Check headers and signature against any of the shop's valid secrets; return the webhook id."""
    msg_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    missing = [name for name, value in (("webhook-id", msg_id), ("webhook-timestamp", raw_timestamp),
                                        ("webhook-signature", signature)) if not value]
    if missing:
        raise WebhookRejected("missing_signature_headers", f"missing headers: {', '.join(missing)}")
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
        raise WebhookRejected("invalid_timestamp", "webhook-timestamp must be unix seconds")
    timestamp = int(raw_timestamp)
    # Exactly `tolerance` seconds off is still accepted; the clock is whole seconds, as the header is.
    if abs(int(now) - timestamp) > tolerance:
        raise WebhookRejected("timestamp_out_of_tolerance",
                              f"webhook-timestamp is more than {tolerance} s away from the server clock")
    presented = _presented_signatures(signature)
    if presented:
        signed = f"{msg_id}.{raw_timestamp}.".encode() + body
        for secret in secrets:
            expected = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
            if any(hmac.compare_digest(expected, candidate) for candidate in presented):
                return msg_id
    raise WebhookRejected("invalid_signature", "no webhook-signature verifies with the shop's secrets")
