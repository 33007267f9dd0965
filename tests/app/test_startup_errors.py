"""Every start-up mistake a user can make is one line naming the setting or file and the fix.

Each test runs the real ``archer`` command as a process (``run_archer``) from an empty directory
and checks the exit status, the line, and that no traceback reached the terminal.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SERVING_ENV, free_port, run_archer

PREFIX = "archer: configuration error: "


def error_lines(stderr: str) -> list[str]:
    """The lines Archer itself wrote about the error (logs before it are JSON objects)."""
    assert "Traceback" not in stderr, stderr
    assert "ExceptionGroup" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("archer:")]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on for the length of the test."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_archer_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """The web port taken: one line naming ARCHER_PORT and the fix, exit status 2."""
    result = run_archer(
        "serve", "--host", "127.0.0.1", env={**SERVING_ENV, "ARCHER_PORT": str(busy_port)},
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}ARCHER_PORT={busy_port} is already in use on 127.0.0.1: stop what listens"
        " there, or set ARCHER_PORT (or --port) to a free port"
    ]


def test_media_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """The media listener's port taken: the line names MEDIA_PORT, not the web port."""
    env = {**SERVING_ENV, "ARCHER_PORT": str(free_port()), "MEDIA_PORT": str(busy_port)}
    result = run_archer("serve", "--host", "127.0.0.1", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}MEDIA_PORT={busy_port} is already in use on 127.0.0.1: stop what listens"
        " there, or set MEDIA_PORT to a free port (0 serves media on ARCHER_PORT only)"
    ]


def test_missing_hypercorn_config_file(tmp_path: Path) -> None:
    """A --hypercorn-config that is not there: the option and file named, before anything starts."""
    result = run_archer(
        "serve", "--hypercorn-config", "config/hypercorn.toml", env=SERVING_ENV, cwd=tmp_path
    )
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}--hypercorn-config config/hypercorn.toml: no such file; give the path of a"
        " hypercorn TOML file, or leave the option out for Archer's defaults"
    ]
    assert not (tmp_path / "archer.db").exists()  # nothing was started


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keep_alive_timeout = \n", "not valid TOML"),
        ("keepalive_timeout = 75\n", "hypercorn has no setting keepalive_timeout"),
    ],
)
def test_malformed_hypercorn_config_file(tmp_path: Path, text: str, expected: str) -> None:
    """Not TOML, or a key hypercorn does not have: one line naming the file."""
    (tmp_path / "hypercorn.toml").write_text(text)
    result = run_archer(
        "serve", "--hypercorn-config", "hypercorn.toml", env=SERVING_ENV, cwd=tmp_path
    )
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert line.startswith(f"{PREFIX}--hypercorn-config hypercorn.toml: {expected}")


def test_bad_dotenv_line(tmp_path: Path) -> None:
    """A line of .env that is not a setting: the file and line number, and the fix."""
    (tmp_path / ".env").write_text("LOG_LEVEL=info\nthis is not a setting\n")
    result = run_archer("tools", "export", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}.env line 2 is not KEY=value ('this is not a setting'); fix it or start it with #"
    ]
    assert result.stdout == ""


def test_several_missing_settings_are_reported_together(tmp_path: Path) -> None:
    """Three of the five serving settings missing: all three named at once, one line each."""
    env = {
        k: v
        for k, v in SERVING_ENV.items()
        if k not in ("TWILIO_AUTH_TOKEN", "CARTESIA_API_KEY", "CARTESIA_AGENT_ID")
    }
    result = run_archer("serve", env={**env, "LOG_LEVEL": "loud"}, cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}LOG_LEVEL='loud' is not one of debug, info, warning, error",
        *(
            f"{PREFIX}{name} is not set; this command needs it (set it in the environment or"
            " in .env)"
            for name in ("TWILIO_AUTH_TOKEN", "CARTESIA_API_KEY", "CARTESIA_AGENT_ID")
        ),
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [("HUMAN_AGENT_NUMBER", "0207 946 0000"), ("TRANSFER_ALLOWLIST", "+15555550199,555-0198")],
)
def test_phone_numbers_must_be_e164(tmp_path: Path, name: str, value: str) -> None:
    """Phone-number settings are E.164-checked; the line says what E.164 looks like."""
    result = run_archer("serve", env={**SERVING_ENV, name: value}, cwd=tmp_path)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert line.startswith(f"{PREFIX}{name}")
    assert "E.164" in line
    assert "+ and 7 to 15 digits" in line


def test_placeholders_from_the_example_are_refused(tmp_path: Path) -> None:
    """``.env.example``'s stand-ins are refused as placeholders, each on its own line."""
    (tmp_path / ".env").write_text(
        "WEBHOOK_BASE_URL=https://archer.example.com\n"
        "TWILIO_ACCOUNT_SID=ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
    )
    env = {k: v for k, v in SERVING_ENV.items() if k.startswith("CARTESIA") or "TOKEN" in k}
    result = run_archer("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert lines == [
        f"{PREFIX}TWILIO_ACCOUNT_SID='ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' is not a real account"
        " SID: ACxxx… is the placeholder from .env.example",
        f"{PREFIX}WEBHOOK_BASE_URL='https://archer.example.com' is the placeholder from"
        " .env.example; set your own value",
    ]


def test_unreachable_database(tmp_path: Path) -> None:
    """``db init`` against a database nobody serves: DATABASE_URL named, the fix given."""
    url = f"postgresql+psycopg://archer:secret-pw@127.0.0.1:{free_port()}/archer"
    result = run_archer("db", "init", env={"DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith("archer: the database at DATABASE_URL=postgresql+psycopg://archer:")
    assert "Connection refused" in line or "connection failed" in line
    assert line.endswith("check DATABASE_URL and that the database is running and reachable")
    assert "secret-pw" not in result.stderr


def test_each_command_checks_only_what_it_uses(tmp_path: Path) -> None:
    """Bad Twilio and Cartesia settings do not stop commands that never use them."""
    env = {
        "TWILIO_ACCOUNT_SID": "not-a-sid",
        "CARTESIA_WS_URL": "https://not-a-websocket",
        "HUMAN_AGENT_NUMBER": "555",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bank.db'}",
    }
    tools = run_archer("tools", "export", env=env, cwd=tmp_path)
    assert tools.returncode == 0, tools.stderr
    assert run_archer("db", "init", env=env, cwd=tmp_path).returncode == 0
    # ... and a command that uses the database does check it.
    mysql = "mysql://archer:secret-pw@db/archer"
    bad_db = run_archer("db", "init", env={**env, "DATABASE_URL": mysql}, cwd=tmp_path)
    assert bad_db.returncode == 2
    assert error_lines(bad_db.stderr) == [
        f"{PREFIX}DATABASE_URL='mysql://archer:***@db/archer' is not an sqlite:/// or"
        " postgresql+psycopg:// URL"
    ]
    assert "secret-pw" not in bad_db.stderr


def test_emulator_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """The emulators' ports too: the option named, exit status 2, no traceback."""
    result = run_archer(
        "emulate", "cartesia", "--port", str(busy_port), env={"CARTESIA_API_KEY": "k"},
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"{PREFIX}--port {busy_port} is already in use: stop what listens there, or give another"
        " --port"
    ]
