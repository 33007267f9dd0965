"""The ``archer`` command as an operator runs it: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import SERVING_ENV as SERVING
from tests.helpers import free_port
from tests.helpers import run_archer as archer


def test_serve_without_a_required_setting_prints_one_line(tmp_path: Path) -> None:
    """A missing setting is one line on stderr naming it, exit status 2, no traceback."""
    env = {k: v for k, v in SERVING.items() if k != "CARTESIA_AGENT_ID"}
    result = archer("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "archer: configuration error: CARTESIA_AGENT_ID is not set; this command needs it"
        " (set it in the environment or in .env)"
    ]


def test_serve_with_a_malformed_setting_prints_one_line(tmp_path: Path) -> None:
    """A malformed setting is one line naming the variable and the value."""
    result = archer("serve", env={**SERVING, "ARCHER_PORT": "http"}, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "ARCHER_PORT='http'" in line


def test_serve_starts_on_sqlite_answers_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    """With only credentials and the base URL, ``archer serve`` serves and exits 0 on SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "archer", "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--hypercorn-config", str(Path(__file__).parents[2] / "config" / "hypercorn.toml")),
        ],
        env={"PATH": os.environ["PATH"], **SERVING},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "archer serve did not become ready"
                time.sleep(0.1)
        assert (tmp_path / "archer.db").is_file()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "server.stopping" in stderr
    assert "twilio-secret-token" not in stderr
    assert "sk_car_secret_key" not in stderr


def test_db_init_and_seed_are_idempotent(tmp_path: Path) -> None:
    """``db init`` then ``db seed`` twice: the second seeding adds nothing."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'bank.db'}"}
    assert archer("db", "init", env=env, cwd=tmp_path).returncode == 0
    first = archer("db", "seed", env=env, cwd=tmp_path)
    second = archer("db", "seed", env=env, cwd=tmp_path)
    assert first.returncode == second.returncode == 0
    assert "customers_created=3" in first.stdout
    assert "customers_created=0" in second.stdout


@pytest.mark.parametrize("command", [["--help"], ["db", "--help"]])
def test_help_is_available(command: list[str], tmp_path: Path) -> None:
    """``--help`` works without any setting."""
    result = archer(*command, env={}, cwd=tmp_path)
    assert result.returncode == 0
    assert "usage: archer" in result.stdout
