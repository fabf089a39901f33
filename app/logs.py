"""JSON log lines, one object per line, with personal data masked in every line."""

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

# Record attributes that are not extra fields; uvicorn's color_message repeats msg with terminal escapes.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
MAX_FIELD_CHARS = 2_000  # no field, and so no buyer text, reaches the log whole

# Longest patterns first: an 18-character ID card must not be taken for a phone number inside it.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])")
_BANK_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){15,18}\d(?!\d)")
_PHONE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")


def _keep_tail(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "*" * max(len(digits) - 4, 0) + digits[-4:]


def _mask_email(match: re.Match[str]) -> str:
    local, _, domain = match.group().partition("@")
    return f"{local[:1]}***@{domain}"


def mask_personal_data(text: str) -> str:
    """Mask e-mail addresses, Chinese ID-card numbers, bank-card and phone numbers."""
    text = _EMAIL.sub(_mask_email, text)
    text = _ID_CARD.sub(lambda m: "*" * 14 + m.group()[-4:], text)
    text = _BANK_CARD.sub(_keep_tail, text)
    return _PHONE.sub(lambda m: m.group()[:3] + "****" + m.group()[-4:], text)


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return value[:MAX_FIELD_CHARS] + f"...[{len(value) - MAX_FIELD_CHARS} more chars]"
    return value


def _clip_traceback(text: str) -> str:
    # The cause is at the end of a traceback: keep the innermost frames and the exception line.
    if len(text) > 2 * MAX_FIELD_CHARS:
        return f"[{len(text) - 2 * MAX_FIELD_CHARS} chars of outer frames left out]..." + text[-2 * MAX_FIELD_CHARS:]
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _clip(record.getMessage()),
        }
        line.update({k: _clip(v) for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = _clip_traceback(self.formatException(record.exc_info))
        return mask_personal_data(json.dumps(line, ensure_ascii=False, default=str))


def log_config(level: str) -> dict[str, Any]:
    """LOG_CONFIG with `level` for the service's own loggers (uvicorn's log_level sets only uvicorn's)."""
    return {**LOG_CONFIG, "root": {**LOG_CONFIG["root"], "level": level.upper()}}


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {"uvicorn.access": {"level": "WARNING"}, "alembic": {"level": "WARNING"}},
}
