"""The ``archer`` command explains itself: every command, every option, defaults, ``--version``."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

import pytest

from archer.cli import build_parser, main
from tests.helpers import run_archer


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and sub-command, by the words that name it (``("db", "seed")``)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def subcommand_summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {
        choice.dest: choice.help or ""
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
    }


ALL = list(commands(build_parser()))


def help_text(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_names_every_command(tmp_path: Path) -> None:
    """``archer --help`` (the real command) lists all nine commands, each with a description."""
    result = run_archer("--help", env={}, cwd=tmp_path)
    assert result.returncode == 0
    summaries = subcommand_summaries(build_parser())
    assert set(summaries) == {
        "serve",
        "db",
        "demo",
        "emulate",
        "bench",
        "spool",
        "tools",
        "keys",  # issue 22
        "call",  # issue 22
    }
    text = " ".join(result.stdout.split())
    for name, summary in summaries.items():
        assert summary
        assert f"{name} {' '.join(summary.split())}" in text
    assert "``" not in result.stdout  # plain text, not reStructuredText


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) or "archer" for p, _ in ALL])
def test_every_command_describes_every_option(
    path: tuple[str, ...], parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    """``archer <cmd> --help``: a one-line description, and each option with its help and
    default."""
    text = " ".join(help_text(path, capsys).split())
    assert "``" not in text
    if path:
        assert parser.description, f"archer {' '.join(path)} has no description"
        assert " ".join(parser.description.split()) in text
    for summary in subcommand_summaries(parser).values():
        assert summary
        assert " ".join(summary.split()) in text
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{action.option_strings or action.dest} has no description"
        for option in action.option_strings:
            assert option in text
        has_default = action.default not in (None, False, argparse.SUPPRESS)
        if has_default and action.option_strings:
            [line] = [
                line
                for line in help_text(path, capsys).split("\n  -")
                # The option's own line: --out, not --outbound.
                if line.lstrip("-").split()[0] == action.option_strings[-1].lstrip("-")
            ]
            assert "default" in line, f"{action.option_strings} does not say its default"


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    """``archer --version`` prints the installed package's version."""
    result = run_archer("--version", env={}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"archer {importlib.metadata.version('archer')}"


def test_demo_outbound_and_transfer_are_either_or(capsys: pytest.CaptureFixture[str]) -> None:
    """``archer demo --outbound`` is its own demo; it cannot also end in a transfer."""
    parser = build_parser()
    args = parser.parse_args(["demo", "--outbound", "--protocol", "line"])
    assert (args.outbound, args.transfer, args.protocol) == (True, False, "line")
    assert parser.parse_args(["demo"]).outbound is False
    assert main(["demo", "--outbound", "--transfer"]) == 2
    assert "two different demos" in capsys.readouterr().err
