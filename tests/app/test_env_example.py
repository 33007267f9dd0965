""".env.example: un-commenting any line gives a valid ``.env`` line, and Archer accepts the lot.

Explanations start with ``##`` and settings with ``# ``, so deleting the first ``#`` of every
line turns each setting on and leaves each explanation a comment. The result is read by the real
``archer`` command: its placeholders are refused as placeholders, everything else is accepted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from archer.settings import GROUPS, Settings, parse_dotenv
from tests.helpers import SERVING_ENV, free_port, run_archer

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
SETTING = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=")


def uncomment(line: str) -> str:
    """The line with its first ``#`` (and the space after it, for a setting) deleted."""
    if line.startswith("# "):
        return line[2:]
    return line.removeprefix("#")


def uncommented_example() -> str:
    return "\n".join(uncomment(line) for line in EXAMPLE.read_text().splitlines()) + "\n"


def example_names() -> set[str]:
    return {m[1] for line in EXAMPLE.read_text().splitlines() if (m := SETTING.match(line))}


def test_every_line_is_a_setting_a_commented_setting_or_an_explanation() -> None:
    """No value carries a trailing explanation; explanations are ``##`` lines of their own."""
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), start=1):
        if not line or line.startswith("##"):
            continue
        assert SETTING.match(line), f".env.example line {number} is neither: {line!r}"
        value = line.partition("=")[2]
        assert "#" not in value, f"line {number} explains after the value"
        assert "(" not in value, f"line {number} explains after the value"


def test_uncommenting_every_line_gives_a_dotenv_with_every_setting() -> None:
    """python-dotenv's rules read every setting of the un-commented example, and nothing else."""
    values = parse_dotenv(uncommented_example())
    assert set(values) == example_names()
    # Every setting Archer reads is in the example (PORT, the platforms', is explained there).
    assert set().union(*GROUPS.values()) - {"PORT"} <= example_names()
    # Every value is well-formed: Settings checks all of them (no command's requirements yet).
    settings = Settings.from_environ({**values, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32})
    assert settings.human_agent_number == "+15555550199"
    assert settings.database_url == "sqlite:///archer.db"  # the last DATABASE_URL line wins


def test_archer_refuses_only_the_placeholders_and_the_blanks(tmp_path: Path) -> None:
    """``archer serve`` on the un-commented example names exactly the five to fill in."""
    (tmp_path / ".env").write_text(uncommented_example())
    result = run_archer("serve", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    named = [
        line.split(": ", 2)[2].split("=")[0].split(" ")[0] for line in result.stderr.splitlines()
    ]
    assert sorted(named) == sorted(SERVING_ENV)
    assert "placeholder from .env.example" in result.stderr
    # A command that needs none of those accepts the file as it is.
    init = run_archer("db", "init", env={}, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "archer.db").is_file()


@pytest.mark.e2e
def test_archer_serves_with_the_uncommented_example(tmp_path: Path) -> None:
    """With the five required settings given (the environment wins), the rest of the
    un-commented example is accepted by ``archer serve``, which answers ``/healthz``."""
    (tmp_path / ".env").write_text(uncommented_example())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "archer", "serve", "--host", "127.0.0.1"],
        env={**SERVING_ENV, "ARCHER_PORT": str(port), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "archer serve did not answer /healthz"
                time.sleep(0.1)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
