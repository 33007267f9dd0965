"""Logging: JSON lines with the bound call context, stdlib loggers routed the same way."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from archer.logs import configure_logging, mask_phone


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, cache=False)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_json_lines_carry_the_bound_call_context(output: io.StringIO) -> None:
    """A line logged inside ``bound_contextvars`` has the call's ids, level and timestamp."""
    with structlog.contextvars.bound_contextvars(call_sid="CA1", stream_sid="MZ1"):
        structlog.get_logger("archer.test").info("call.started", customer_id=7)
    [line] = output.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["event"] == "call.started"
    assert (entry["call_sid"], entry["stream_sid"], entry["customer_id"]) == ("CA1", "MZ1", 7)
    assert entry["level"] == "info"
    assert entry["timestamp"].endswith("Z")


def test_debug_lines_are_filtered_at_info(output: io.StringIO) -> None:
    """Below the configured level nothing is rendered."""
    structlog.get_logger("archer.test").debug("db.call_saved")
    assert output.getvalue() == ""


def test_standard_library_loggers_render_as_json(output: io.StringIO) -> None:
    """hypercorn's and SQLAlchemy's stdlib lines come out as the same JSON, context included."""
    with structlog.contextvars.bound_contextvars(call_sid="CA2"):
        logging.getLogger("hypercorn.error").warning("something odd")
    entry = json.loads(output.getvalue().splitlines()[-1])
    assert entry["event"] == "something odd"
    assert entry["logger"] == "hypercorn.error"
    assert entry["call_sid"] == "CA2"


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+15555550101", "***0101"), ("anonymous", "***"), ("", ""), (None, "")],
)
def test_phone_numbers_are_masked_to_the_last_four_digits(number: str | None, masked: str) -> None:
    """Only the last four digits of a caller's number may reach a log line."""
    assert mask_phone(number) == masked


def test_secrets_are_redacted_from_every_line() -> None:
    """Secret keys, known secret values and phone numbers never survive rendering."""
    stream = io.StringIO()
    configure_logging(
        "info", "json", stream=stream, cache=False, secrets=("super-secret-auth-token",)
    )
    try:
        log = structlog.get_logger("archer.test")
        log.info(
            "tool.started",
            arguments={"pin": "2468", "account_type": "checking"},
            api_key="sk_car_xyz",
            note="token super-secret-auth-token leaked, caller +15555550101",
            call_sid="CA0387698112233445566778899aabbcc",
        )
        logging.getLogger("twilio.http_client").warning("auth super-secret-auth-token")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    for secret in ("2468", "sk_car_xyz", "super-secret-auth-token", "+15555550101"):
        assert secret not in text
    entry = json.loads(text.splitlines()[0])
    assert entry["arguments"] == {"pin": "***", "account_type": "checking"}
    assert entry["note"] == "token *** leaked, caller ***0101"
    assert entry["call_sid"] == "CA0387698112233445566778899aabbcc"
