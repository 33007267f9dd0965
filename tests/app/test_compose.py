"""``compose.yaml`` and ``.env.example`` name only settings Archer reads.

There is no Docker engine in CI, so the file is checked statically: it parses, it has the
services, health checks and volumes the runbook relies on, and every variable it hands Archer
(or interpolates) is one ``Settings.from_environ`` looks up. The names are collected by running
``from_environ`` on a mapping that records every key asked for, so a new setting needs no list
kept in step here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from archer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARCHER_SERVICES = ("init", "archer")


class RecordingEnviron(Mapping[str, str]):
    """An empty environment that remembers every variable looked up in it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.fixture(scope="module")
def setting_names() -> frozenset[str]:
    environ = RecordingEnviron()
    Settings.from_environ(environ)
    return frozenset(environ.asked)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def environment_names(service: Mapping[str, Any]) -> set[str]:
    """Variable names a service sets, in either of compose's two spellings."""
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return {entry.split("=", 1)[0] for entry in environment}
    return set(environment)


def test_the_recording_environ_sees_the_settings(setting_names: frozenset[str]) -> None:
    """Sanity: the names collected are the real ones."""
    assert {"DATABASE_URL", "WEBHOOK_BASE_URL", "TWILIO_AUTH_TOKEN", "DRAIN_TIMEOUT"} <= (
        setting_names
    )
    assert {"ARCHER_PORT", "PORT", "LOG_FORMAT", "MAX_MESSAGE_BYTES"} <= setting_names


def test_compose_has_the_database_and_archer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"db", "init", "archer"}

    db = services["db"]
    assert db["image"].startswith("postgres:16")
    assert db["environment"]["POSTGRES_DB"] == "archer"
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD"} <= set(db["environment"])
    assert any(str(volume).startswith("pgdata:") for volume in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])

    archer = services["archer"]
    assert archer["build"] == "."
    assert archer["env_file"] == ".env"
    assert "8000:8000" in archer["ports"]
    assert archer["command"] == ["archer", "serve"]  # hypercorn defaults ship in the package
    assert archer["depends_on"]["db"]["condition"] == "service_healthy"
    assert archer["depends_on"]["init"]["condition"] == "service_completed_successfully"
    probe = " ".join(archer["healthcheck"]["test"])
    assert "python" in probe
    assert "/healthz" in probe

    init = services["init"]
    assert init["command"] == ["archer", "db", "init"]
    assert init["depends_on"]["db"]["condition"] == "service_healthy"
    assert init["env_file"] == ".env"

    assert {"pgdata", "spool"} <= set(compose["volumes"])


def test_archer_connects_to_the_compose_database(compose: dict[str, Any]) -> None:
    """Same user, password and database as the db service, with the psycopg driver."""
    db_env = compose["services"]["db"]["environment"]
    url = compose["services"]["archer"]["environment"]["DATABASE_URL"]
    user, password, name = (
        db_env["POSTGRES_USER"],
        db_env["POSTGRES_PASSWORD"],
        db_env["POSTGRES_DB"],
    )
    assert url == f"postgresql+psycopg://{user}:{password}@db:5432/{name}"
    Settings.from_environ({"DATABASE_URL": url})  # a URL Archer accepts


def test_compose_gives_archer_only_settings_that_exist(
    compose: dict[str, Any], setting_names: frozenset[str]
) -> None:
    for name in ARCHER_SERVICES:
        unknown = environment_names(compose["services"][name]) - setting_names
        assert not unknown, f"{name} sets variables Archer never reads: {sorted(unknown)}"


def test_compose_interpolates_only_settings(setting_names: frozenset[str]) -> None:
    """``${VAR}`` in compose.yaml comes from the shell or .env: it too must be a setting."""
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    interpolated = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text.replace("$$", "")))
    assert interpolated <= setting_names


def test_every_name_in_env_example_is_a_setting(setting_names: frozenset[str]) -> None:
    """Set and commented-out (``# NAME=default``) lines alike."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    assert len(names) > 20
    unknown = names - setting_names
    assert not unknown, f".env.example names variables Archer never reads: {sorted(unknown)}"


def test_compose_publishes_the_media_port_the_image_serves(compose: dict[str, Any]) -> None:
    """The image serves media streams on MEDIA_PORT; compose publishes that port."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [media_port] = re.findall(r"MEDIA_PORT=(\d+)", dockerfile)
    assert f"{media_port}:{media_port}" in compose["services"]["archer"]["ports"]


def test_a_configuration_error_does_not_restart_forever(compose: dict[str, Any]) -> None:
    """Exit status 2 (a bad setting) cannot be fixed by restarting: the policy gives up."""
    restart = compose["services"]["archer"]["restart"]
    assert re.fullmatch(r"on-failure:[1-5]", restart), restart
    assert compose["services"]["init"]["restart"] == "no"
