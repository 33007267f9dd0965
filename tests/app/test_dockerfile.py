"""The Dockerfile keeps the rules hadolint cannot know about (CI lints it with hadolint too).

There is no Docker engine in CI, so the image is never built there; these checks read the file:
two stages, the final one without pip installs or compilers, a non-root numeric user before the
command, unbuffered Python, a health check on /healthz through Python, dependencies installed
from the lock in a layer before the code is copied, and the lock itself current with
pyproject.toml (``scripts/lock.sh`` regenerates it).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "apt-get", "git", "curl", "wget")


@attrs.frozen
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    """Instructions grouped by stage (the ARGs before the first FROM are dropped)."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions((ROOT / "Dockerfile").read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def test_multi_stage(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    assert " AS build" in stages[0][0].arguments
    final = stages[-1]
    assert any(i.keyword == "COPY" and i.arguments.startswith("--from=build") for i in final), (
        "the final stage copies what the build stage installed"
    )


def test_final_stage_has_no_build_tools_or_installs(stages: list[list[Instruction]]) -> None:
    for instruction in stages[-1]:
        if instruction.keyword != "RUN":
            continue
        words = set(re.findall(r"[\w+.-]+", instruction.arguments))
        assert not words & set(BUILD_TOOLS), instruction
        assert "pip" not in words, f"install in the build stage: {instruction}"


def test_runs_as_a_numeric_non_root_user(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    keywords = [i.keyword for i in final]
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the final stage names a USER"
    user = users[-1].arguments.split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert keywords.index("USER") < keywords.index("CMD")


def test_environment_health_check_and_command(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    env = " ".join(i.arguments for i in final if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    (healthcheck,) = (i for i in final if i.keyword == "HEALTHCHECK")
    assert '"python"' in healthcheck.arguments
    assert "/healthz" in healthcheck.arguments
    (cmd,) = (i for i in final if i.keyword == "CMD")
    assert cmd.arguments == '["archer", "serve"]'  # the hypercorn defaults are in the package


def test_the_image_gets_the_package_and_config(stages: list[list[Instruction]]) -> None:
    build_copies = [shlex.split(i.arguments) for i in stages[0] if i.keyword == "COPY"]
    copied = {source for arguments in build_copies for source in arguments[:-1]}
    assert {"pyproject.toml", "archer"} <= copied
    # A regular install, so the package data (schema.sql, tools.json, clips) is in site-packages.
    installs = [i.arguments for i in stages[0] if i.keyword == "RUN" and "install" in i.arguments]
    assert any(re.search(r"pip install .*--no-deps \.(\s|$)", arguments) for arguments in installs)
    assert not any(" -e " in arguments for arguments in installs)
    # Nothing from the checkout's config/ is needed at run time.
    final_copies = [i.arguments for i in stages[-1] if i.keyword == "COPY"]
    assert not any("config" in arguments for arguments in final_copies)


def test_dependencies_have_their_own_layer_before_the_code(
    stages: list[list[Instruction]],
) -> None:
    """The lock is copied and installed before any of Archer's code is copied."""
    build = stages[0]

    def index(predicate: Callable[[Instruction], bool]) -> int:
        [found] = [n for n, instruction in enumerate(build) if predicate(instruction)]
        return found

    copy_lock = index(lambda i: i.keyword == "COPY" and "requirements.lock" in i.arguments)
    install_lock = index(
        lambda i: i.keyword == "RUN" and "--requirement requirements.lock" in i.arguments
    )
    copy_code = index(
        lambda i: i.keyword == "COPY" and re.search(r"\barcher\b", i.arguments) is not None
    )
    assert copy_lock < install_lock < copy_code
    assert "pip check" in build[copy_code + 1].arguments


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock pins exactly: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_the_lock_is_current() -> None:
    """Every dependency in pyproject.toml is pinned in the lock, inside its range; the lock was
    made with the image's Python (the markers are evaluated for it)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [minor] = re.findall(r"ARG PYTHON_IMAGE=python:3\.(\d+)-", text)
    header = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()[:3]
    assert any(f"Python 3.{minor}." in line for line in header), header
    environment = {"python_version": f"3.{minor}", "sys_platform": "linux"}
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for dependency in map(Requirement, project["dependencies"]):
        if dependency.marker is not None and not dependency.marker.evaluate(environment):
            continue
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{name} is not in requirements.lock: run scripts/lock.sh"
        assert dependency.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {dependency.specifier}:"
            " run scripts/lock.sh"
        )
        for extra in dependency.extras:  # psycopg[binary] brings psycopg-binary
            assert canonicalize_name(f"{name}-{extra}") in pins


def test_the_licence_is_apache_2() -> None:
    """LICENSE holds the Apache License 2.0 text pyproject.toml declares (and the wheel ships)."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


def test_base_images_are_not_latest() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert ":latest" not in text
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.1[1-3]-slim-\w+", text)
