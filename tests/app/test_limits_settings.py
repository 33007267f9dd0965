"""Every ``CallLimits`` field has an environment variable, a positive default, and a line in
``.env.example`` documenting that default. The tests of each limit's behaviour are listed in
tests/e2e/test_limits.py."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from archer.errors import ConfigError
from archer.settings import CallLimits, Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"

#: Each limit, its variable, and a value other than the default that the variable must carry.
LIMITS: dict[str, tuple[str, str, float]] = {
    "twilio_start_timeout": ("TWILIO_START_TIMEOUT", "2.5", 2.5),
    "agent_ready_timeout": ("AGENT_READY_TIMEOUT", "3.5", 3.5),
    "max_call_seconds": ("MAX_CALL_SECONDS", "120", 120.0),
    "flush_timeout": ("FLUSH_TIMEOUT", "0.75", 0.75),
    "stream_token_ttl": ("STREAM_TOKEN_TTL", "15", 15.0),
    "tool_timeout": ("TOOL_TIMEOUT", "4", 4.0),
    "agent_ping_interval": ("AGENT_PING_INTERVAL", "7.5", 7.5),
    "max_message_bytes": ("MAX_MESSAGE_BYTES", "8192", 8192),
    "twilio_media_timeout": ("TWILIO_MEDIA_TIMEOUT", "2.5", 2.5),
}


def _documented() -> dict[str, str]:
    """``NAME -> value`` for every ``NAME=value`` line of .env.example, commented out or not."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pattern = re.compile(r"#?\s*([A-Z][A-Z0-9_]*)=(\S*)")
    return {match[1]: match[2] for line in lines if (match := pattern.fullmatch(line.strip()))}


def test_the_table_lists_every_limit() -> None:
    """No ``CallLimits`` field is missing from the table (a new limit must be added here)."""
    assert set(LIMITS) == set(attrs.fields_dict(CallLimits))


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_each_limit_has_a_positive_default(field: str) -> None:
    """The default is positive, and an empty environment yields it."""
    default = attrs.fields_dict(CallLimits)[field].default
    assert isinstance(default, int | float)
    assert default > 0
    assert getattr(Settings.from_environ({}).limits, field) == default


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_each_limit_is_read_from_its_variable(field: str) -> None:
    """Setting the variable changes that limit, and only that one."""
    variable, text, value = LIMITS[field]
    limits = Settings.from_environ({variable: text}).limits
    assert getattr(limits, field) == value
    assert getattr(limits, field) != attrs.fields_dict(CallLimits)[field].default
    others = {name for name in LIMITS if name != field}
    defaults = CallLimits()
    assert all(getattr(limits, name) == getattr(defaults, name) for name in others)


@pytest.mark.parametrize("field", sorted(LIMITS))
@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_a_bad_limit_is_refused_naming_its_variable(field: str, bad: str) -> None:
    """Zero, negative or non-numeric values stop start-up with the variable's name."""
    variable = LIMITS[field][0]
    with pytest.raises(ConfigError, match=variable):
        Settings.from_environ({variable: bad})


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_each_limit_is_documented_with_its_default(field: str) -> None:
    """.env.example names the variable, with the default as its example value."""
    variable = LIMITS[field][0]
    documented = _documented()
    assert variable in documented, f"{variable} is missing from .env.example"
    assert float(documented[variable]) == attrs.fields_dict(CallLimits)[field].default
