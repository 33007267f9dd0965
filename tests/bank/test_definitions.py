"""The client-tool definitions and ``archer tools export``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from archer.bank.definitions import client_tool_problems, load_definitions
from archer.cli import export_tools
from archer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BANK_TOOLS = {
    "verify_caller",
    "collect_pin",
    "get_account_balance",
    "list_recent_transactions",
    "freeze_card",
    "unfreeze_card",
    "transfer_to_human",
    "end_call",
    "review_transaction",  # issue 22
}


def test_every_bank_tool_is_defined_once() -> None:
    """The file defines each banking tool, and nothing else."""
    assert {definition.name for definition in load_definitions()} == BANK_TOOLS


def test_export_prints_valid_cartesia_client_tools() -> None:
    """What ``archer tools export`` prints is a list of valid client tools with JSON Schemas."""
    exported = json.loads(export_tools())
    assert {tool["name"] for tool in exported} == BANK_TOOLS
    for tool in exported:
        assert client_tool_problems(tool) == []
        assert tool["type"] == "client"
        assert tool["expects_response"] is True
        Draft202012Validator.check_schema(tool["parameters"])
        for schema in tool["parameters"]["properties"].values():
            assert schema["type"] in {"string", "integer", "number", "boolean", "array"}


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ({"type": "webhook"}, "type must be 'client'"),
        ({"name": "Verify Caller"}, "lower_snake_case"),
        ({"description": " "}, "description is required"),
        ({"expects_response": "yes"}, "expects_response"),
        ({"parameters": {"type": "array"}}, "JSON Schema object"),
        (
            {"parameters": {"type": "object", "properties": {"x": {"type": "object"}}}},
            "not supported",
        ),
        (
            {
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"type": "integer", "enum": [1]}},
                }
            },
            "enum is only supported on strings",
        ),
        (
            {"parameters": {"type": "object", "properties": {"x": {"type": "array", "items": {}}}}},
            "one scalar type",
        ),
        ({"parameters": {"type": "object", "properties": {}, "required": ["x"]}}, "required"),
        ({"colour": "blue"}, "unknown keys"),
    ],
)
def test_broken_definitions_are_reported(broken: dict[str, object], problem: str) -> None:
    """Each way out of Cartesia's client-tool form is named."""
    good = json.loads(export_tools())[0]
    problems = client_tool_problems({**good, **broken})
    assert any(problem in text for text in problems), problems


def test_loading_a_broken_file_is_a_config_error(tmp_path: Path) -> None:
    """A bad definitions file stops start-up with a message naming the file."""
    path = tmp_path / "tools.json"
    path.write_text('[{"type": "client", "name": "x"}]')
    with pytest.raises(ConfigError, match=r"tools\.json"):
        load_definitions(path)


def test_collect_pin_response_timeout_covers_the_entry_and_the_check() -> None:
    """The agent waits for ``collect_pin`` longer than Archer lets an entry and its check run."""
    from archer.bank.pin_tools import PIN_CHECK_TIMEOUT
    from archer.settings import Settings

    (definition,) = [d for d in load_definitions() if d.name == "collect_pin"]
    defaults = Settings.from_environ({})
    waits = definition.raw["response_timeout_secs"]
    assert waits >= defaults.pin_entry_timeout + PIN_CHECK_TIMEOUT
    assert definition.parameters.get("properties") == {}  # it takes no digits from the agent
