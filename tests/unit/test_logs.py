"""Log lines are JSON objects, with personal data masked and long texts clipped."""

import json
import logging
import sys

import pytest

from app.logs import MAX_FIELD_CHARS, JsonFormatter, mask_personal_data


@pytest.mark.parametrize(("text", "planted", "kept"), [
    ("call me 13812345678 please", "13812345678", "5678"),                  # mobile
    ("手机+86 138-1234-5678谢谢", "1234-5678", "5678"),                       # formatted, touching Chinese
    ("身份证110101199003071234", "110101199003071234", "1234"),               # ID card
    ("ID 11010119900307123X ok", "11010119900307123X", "123X"),             # ID card with X
    ("card 6222 0212 3456 7890 123", "6222 0212 3456 7890 123", "0123"),    # bank card, grouped
    ("卡号6222021234567890123", "6222021234567890123", "0123"),              # bank card, plain
    ("mail wang.xiao+shop@example.com.cn", "wang.xiao+shop@example.com.cn", "@example.com.cn"),
])
def test_personal_data_is_masked(text: str, planted: str, kept: str) -> None:
    masked = mask_personal_data(text)
    assert planted not in masked
    assert kept in masked


@pytest.mark.parametrize("text", [
    "order o-20261125 shipped",      # order numbers are not phone numbers
    "priority 790 tier P1",
    "request 3f2a9c1e",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask_personal_data(text) == text


def test_formatter_emits_one_masked_clipped_json_object() -> None:
    record = logging.LogRecord("app.test", logging.INFO, __file__, 1, "buyer %s wrote", ("13812345678",), None)
    record.text = "长" * (MAX_FIELD_CHARS + 500)
    record.email = "a.b@example.com"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert "13812345678" not in line and "a.b@example.com" not in line
    assert data["msg"] == "buyer 138****5678 wrote"
    assert len(data["text"]) < MAX_FIELD_CHARS + 50 and data["text"].endswith("more chars]")


def test_a_long_traceback_keeps_its_cause() -> None:
    try:
        try:
            raise ValueError("outer noise " * 1_000)
        except ValueError as noise:
            raise LookupError("the innermost cause") from noise
    except LookupError:
        record = logging.LogRecord("app.errors", logging.ERROR, __file__, 1, "unhandled error", (), None)
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["exc"].endswith("LookupError: the innermost cause")
    assert line["exc"].startswith("[") and len(line["exc"]) < 2 * MAX_FIELD_CHARS + 100
