"""The Dockerfile keeps the rules hadolint cannot know about (CI lints it with hadolint too).

There is no Docker engine in CI, so the image is never built there; these checks read the file:
two stages, the final one without pip installs or compilers, a non-root numeric user before the
command, unbuffered Python, a health check on /healthz through Python, the hypercorn config, and
everything the image needs copied in.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import attrs
import pytest

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
    assert cmd.arguments == '["archer", "serve", "--hypercorn-config", "config/hypercorn.toml"]'


def test_the_image_gets_the_package_and_config(stages: list[list[Instruction]]) -> None:
    build_copies = [shlex.split(i.arguments) for i in stages[0] if i.keyword == "COPY"]
    copied = {source for arguments in build_copies for source in arguments[:-1]}
    assert {"pyproject.toml", "archer"} <= copied
    # A regular install, so the package data (schema.sql, tools.json, clips) is in site-packages.
    installs = [i.arguments for i in stages[0] if i.keyword == "RUN" and "install" in i.arguments]
    assert any(re.search(r"pip install .*\s\.$", arguments) for arguments in installs)
    assert not any(" -e " in arguments for arguments in installs)
    final_copies = [i.arguments for i in stages[-1] if i.keyword == "COPY"]
    assert any(re.search(r"\bconfig \./config$", arguments) for arguments in final_copies)
    assert (ROOT / "config" / "hypercorn.toml").is_file()


def test_base_images_are_not_latest() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert ":latest" not in text
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.1[1-3]-slim-\w+", text)
