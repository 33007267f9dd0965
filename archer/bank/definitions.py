"""The client-tool definitions: what the agent is told, and what Archer checks arguments against.

Layer: pure (reads one JSON file). ``archer/bank/tools.json`` is the one file: it ships in the
package, so an installed Archer has it (``archer tools export`` prints it for Cartesia).

Rules: a definition is in Cartesia's client-tool form (../shared/reference/cartesia-agents.md
§5.2): ``type`` ``client``, ``name``, ``description``, ``parameters`` (a JSON Schema object whose
properties are strings, integers, numbers, booleans or arrays of one of those; ``enum`` only on
strings) and ``expects_response``. ``client_tool_problems`` says what breaks that form, so the
file can never drift into something Cartesia would refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

import attrs

from archer.errors import ConfigError

SCALAR_TYPES: Final = frozenset({"string", "integer", "number", "boolean"})
_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: ``response_timeout_secs``: how long the agent waits for the result (``collect_pin`` waits for a
#: person to key a PIN, longer than Cartesia's default).
_OPTIONAL_KEYS: Final = frozenset({"pre_tool_speech", "execution_mode", "response_timeout_secs"})
_PROPERTY_KEYS: Final = frozenset({"type", "description", "enum", "items"})


@attrs.frozen
class ToolDefinition:
    """One client tool as Cartesia registers it."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    expects_response: bool
    raw: Mapping[str, Any] = attrs.field(repr=False, eq=False)


def packaged_definitions_path() -> Path:
    """``tools.json`` as shipped inside the package."""
    return Path(str(resources.files("archer.bank") / "tools.json"))


def load_definitions(path: Path | None = None) -> tuple[ToolDefinition, ...]:
    """Read and check the tool definitions.

    Raises:
        ConfigError: the file is missing, not JSON, or a definition is not a valid client tool.
    """
    source = path if path is not None else packaged_definitions_path()
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tool definitions {source}: {exc}") from None
    if not isinstance(document, list):
        raise ConfigError(f"tool definitions {source}: expected a JSON array")
    definitions = []
    for raw in document:
        problems = client_tool_problems(raw)
        if problems:
            raise ConfigError(f"tool definitions {source}: {'; '.join(problems)}")
        definitions.append(
            ToolDefinition(
                name=raw["name"],
                description=raw["description"],
                parameters=raw["parameters"],
                expects_response=raw["expects_response"],
                raw=raw,
            )
        )
    names = [definition.name for definition in definitions]
    if len(set(names)) != len(names):
        raise ConfigError(f"tool definitions {source}: duplicate names")
    return tuple(definitions)


def client_tool_problems(raw: object) -> list[str]:
    """Everything that keeps ``raw`` from being a valid Cartesia client tool (empty: valid)."""
    if not isinstance(raw, dict):
        return ["a definition is not an object"]
    name = raw.get("name")
    label = name if isinstance(name, str) else "?"
    problems = []
    if raw.get("type") != "client":
        problems.append(f"{label}: type must be 'client'")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"{label}: name must be lower_snake_case, at most 64 characters")
    if not isinstance(raw.get("description"), str) or not raw["description"].strip():
        problems.append(f"{label}: description is required")
    if not isinstance(raw.get("expects_response"), bool):
        problems.append(f"{label}: expects_response must be true or false")
    unknown = set(raw) - {"type", "name", "description", "parameters", "expects_response"}
    if unknown - _OPTIONAL_KEYS:
        problems.append(f"{label}: unknown keys {sorted(unknown - _OPTIONAL_KEYS)}")
    problems.extend(f"{label}: {p}" for p in _parameters_problems(raw.get("parameters")))
    return problems


def _parameters_problems(parameters: object) -> list[str]:
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        return ["parameters must be a JSON Schema object"]
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict):
        return ["parameters.properties must be an object"]
    problems = []
    for key, schema in properties.items():
        if not isinstance(schema, dict):
            problems.append(f"property {key} is not a schema")
            continue
        kind = schema.get("type")
        if kind == "array":
            items = schema.get("items")
            if not isinstance(items, dict) or items.get("type") not in SCALAR_TYPES:
                problems.append(f"property {key}: arrays must hold one scalar type")
        elif kind not in SCALAR_TYPES:
            problems.append(f"property {key}: type {kind!r} is not supported")
        if "enum" in schema and kind != "string":
            problems.append(f"property {key}: enum is only supported on strings")
        if set(schema) - _PROPERTY_KEYS:
            problems.append(
                f"property {key}: unsupported keys {sorted(set(schema) - _PROPERTY_KEYS)}"
            )
    required = parameters.get("required", [])
    if not isinstance(required, list) or not set(required) <= set(properties):
        problems.append("required must list declared properties")
    return problems
